#!/bin/sh
# Print the image's constraints: ours without the torch pair, plus the torch and torchvision that the
# base image already holds (their installed distribution versions), so that pip keeps the base's torch
# and never installs a second one.
set -eu
grep -vE '^(torch|torchvision)==' "$1"
python -c 'from importlib.metadata import version; print("torch==" + version("torch")); print("torchvision==" + version("torchvision"))'

#!/bin/sh
# Print the image's constraints: ours without the torch pair, plus the torch and torchvision that the
# base image already holds, so that pip keeps the base's torch and never installs a second one.
set -eu
grep -vE '^(torch|torchvision)==' "$1"
python -c 'import torch, torchvision; print("torch==" + torch.__version__); print("torchvision==" + torchvision.__version__)'

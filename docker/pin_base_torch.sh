#!/bin/sh
# Print the image install's torch constraints: the torch and torchvision that the base image already holds (their
# installed distribution versions), so that pip keeps the base's torch and never installs a second one.
# The requirements (requirements/train.txt, serve.txt -> constraints.txt) pin no torch: the host's torch pins
# (requirements/torch.txt) never reach the image install.
#   docker/pin_base_torch.sh > torch-constraints.txt
#   pip install -c torch-constraints.txt -r requirements/train.txt
set -eu
python - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in ("torch", "torchvision"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"pin_base_torch: the base image holds no {name} (BASE_IMAGE must be a PyTorch image)")
PY

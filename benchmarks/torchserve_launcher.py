"""Starts the official AWS PyTorch serving stack (sagemaker-pytorch-inference on TorchServe) as SageMaker would.

Run with the peer venv's python, not ours (it imports nothing from dogbreed). The toolkit hard-codes
``/etc/sagemaker-ts.properties`` and a model store under the working directory; this launcher points
both at a private directory so that it runs unprivileged beside other servers, adds a metrics port of
its own, and otherwise starts the toolkit's unchanged ``serving.main`` path with its default handler.

    python torchserve_launcher.py STATE_DIR   (env: SAGEMAKER_BASE_DIR, SAGEMAKER_BIND_TO_PORT, ...)
"""

import os
import sys


def main() -> None:
    state = os.path.abspath(sys.argv[1])
    os.makedirs(state, exist_ok=True)
    os.chdir(state)  # TorchServe writes logs/ under the working directory
    from sagemaker_pytorch_serving_container import serving, torchserve  # the peer's toolkit, only in its venv

    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    defaults = os.path.join(state, "default-ts.properties")
    with open(torchserve.DEFAULT_TS_CONFIG_FILE) as source, open(defaults, "w") as target:
        target.write(source.read().rstrip("\n") + f"\nmetrics_address=http://127.0.0.1:{port + 2}\n")
    torchserve.DEFAULT_TS_CONFIG_FILE = defaults
    torchserve.TS_CONFIG_FILE = os.path.join(state, "sagemaker-ts.properties")
    torchserve.MODEL_STORE = os.path.join(state, "models")
    serving.main()


if __name__ == "__main__":
    main()

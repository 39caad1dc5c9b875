"""The parts of ``make bench-transform`` that the at-size test uses too: the photos of a dogImages test split in one
folder, a Batch Transform over them in the SageMaker SDK's local mode, the same image serving them over HTTP, and
what the answers score.

Every answer is the serve image's JSON (``{"predictions": [[{"breed", "probability", "index"}, ...]]}``); photos are
keyed by file name (dogImages names are unique across breeds).
"""

from __future__ import annotations

import http.client
import json
import queue
import shutil
import subprocess
import time
from pathlib import Path

from dogbreed.launch.local_transform import LocalTransform, run_local_transform

from .serve_load import run_clients


def head_only_flags(weights: Path) -> list[str]:
    """A quick recipe that trains well on CPU: tf_efficientnet_lite0's ImageNet weights, the head alone, 2 epochs
    (about two minutes for dogs10 on two cores)."""
    return ["--model", "tf_efficientnet_lite0", "--pretrained-weights", str(weights), "--train-layers", "head",
            "--epochs", "2", "--batch-size", "64", "--lr", "0.01", "--augment", "false", "--num-workers", "1"]


def train(data: Path, work: Path, flags: list[str]) -> Path:
    """``dogbreed local-train`` (the image's train entry, in process); returns the model folder."""
    from dogbreed.local import local_train

    work.mkdir(parents=True, exist_ok=True)
    with open(work / "stdout.log", "w") as log:
        code, _ = local_train(data, work, flags, stdout=log)
    if code != 0:
        raise RuntimeError(f"training failed ({code}):\n{(work / 'stdout.log').read_text()[-3000:]}")
    return work / "opt_ml" / "model"


def breed_of(folder: Path) -> str:
    """``001.Australian_terrier`` -> ``Australian terrier`` (what model.json's class names hold)."""
    return folder.name.split(".", 1)[1].replace("_", " ")


def gather_photos(test_dir: Path, dest: Path, per_breed: int | None = None) -> dict[str, str]:
    """Copy each photo of ``test_dir/<NNN.Breed>/`` into ``dest`` itself (local mode reads the files of the input
    folder, not those below it); returns each photo's breed by file name."""
    dest.mkdir(parents=True, exist_ok=True)
    breeds = {}
    for folder in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir())[:per_breed]:
            if path.name in breeds:
                raise ValueError(f"{path.name} is in two breeds' folders: one folder of photos needs unique names")
            shutil.copyfile(path, dest / path.name)
            breeds[path.name] = breed_of(folder)
    return breeds


def top1(answer: dict) -> dict:
    return answer["predictions"][0][0]


def accuracy(answers: dict[str, dict], breeds: dict[str, str]) -> float:
    return sum(top1(answers[name])["breed"] == breed for name, breed in breeds.items()) / len(breeds)


def transform(image: str, model: Path, photos: Path, out: Path, environment: dict | None = None) -> dict:
    """A local Batch Transform job over the folder ``photos`` (one photo an object): each photo's answer, the job's
    wall seconds (container start and stop included) and its steady rate, from the first answer written to the last
    (local mode sends one request at a time: MaxConcurrentTransforms 1)."""
    job = LocalTransform(image=image, model=model, input_dir=photos, output_dir=out,
                         environment=tuple(sorted((environment or {}).items())))
    start = time.perf_counter()
    outputs = run_local_transform(job)
    wall = time.perf_counter() - start
    answers = {path.name.removesuffix(".out"): json.loads(path.read_text()) for path in outputs}
    written = sorted(path.stat().st_mtime for path in outputs)
    span = written[-1] - written[0]
    rate = (len(written) - 1) / span if len(written) > 1 and span > 0 else float("nan")
    return {"answers": answers, "wall_s": wall, "images_per_s": rate}


def transform_json_lines(image: str, model: Path, records: Path, out: Path, environment: dict | None = None,
                         max_payload_mb: int = 6) -> list[dict]:
    """A local Batch Transform job over one JSON-lines file (SplitType Line, MultiRecord, up to ``max_payload_mb``
    of lines a request): its answer lines, in order."""
    job = LocalTransform(image=image, model=model, input_dir=records, output_dir=out, max_payload_mb=max_payload_mb,
                         content_type="application/jsonlines", split_type="Line", batch_strategy="MultiRecord",
                         accept="application/jsonlines", environment=tuple(sorted((environment or {}).items())))
    (output,) = run_local_transform(job)
    return [json.loads(line) for line in output.read_text().splitlines() if line.strip()]


class Container:
    """``docker run IMAGE serve`` with the model folder as /opt/ml/model, on a loopback port; stopped on exit."""

    def __init__(self, image: str, model_dir: Path, port: int, environment: dict | None = None):
        self.image, self.model_dir, self.port = image, Path(model_dir), port
        self.environment = environment or {}
        self.name = f"dogbreed-transform-bench-{port}"

    def __enter__(self) -> Container:
        env = [flag for key, value in self.environment.items() for flag in ("-e", f"{key}={value}")]
        subprocess.run(["docker", "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8080", *env,
                        "-v", f"{self.model_dir.resolve()}:/opt/ml/model:ro", self.image, "serve"],
                       check=True, capture_output=True, timeout=120)
        return self

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                if self.get("/ping")[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.image} did not answer /ping within {timeout:.0f} s:\n{self.logs()[-2000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def __exit__(self, *exc) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=120)


def drive(port: int, photos: dict[str, Path], concurrency: int) -> dict:
    """Every photo posted once to ``/invocations`` by ``concurrency`` clients, each on a keep-alive connection of its
    own: each photo's answer (None where it failed), the errors and the rate over the whole run."""
    work: queue.Queue = queue.Queue()
    for name, path in photos.items():
        work.put((name, path.read_bytes()))
    answers: dict[str, dict | None] = {}
    headers = {"Content-Type": "image/jpeg", "Accept": "application/json"}

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            try:
                name, body = work.get_nowait()
            except queue.Empty:
                break
            try:
                connection.request("POST", "/invocations", body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                answers[name] = json.loads(raw) if response.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                answers[name] = None
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.close()

    wall = run_clients(client, concurrency)
    errors = sum(answer is None for answer in answers.values())
    return {"answers": answers, "errors": errors, "images_per_s": (len(photos) - errors) / wall, "wall_s": wall}


def image_size(image: str) -> int | None:
    """Bytes, uncompressed, as ``docker image inspect`` says; None where the image is not here."""
    done = subprocess.run(["docker", "image", "inspect", image, "--format", "{{.Size}}"], capture_output=True, text=True)
    return int(done.stdout.strip()) if done.returncode == 0 else None

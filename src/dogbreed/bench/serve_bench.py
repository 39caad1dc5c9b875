"""``make bench-serve``: latency and throughput of the local endpoint beside the model's pure forward time.

A ResNet50 with a 133-breed head (the seed's model; serving cost does not depend on the weights'
values) is written as training would write it, then:
- in process, in this run: JPEG decode + preprocessing, and the forward pass alone, for one 224-px image;
- over HTTP on loopback: p50/p99 latency and throughput at concurrency 1 and 4 (real requests, real server);
- the serve container's cold start, where docker and the serving image are present.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image

from .. import models
from ..presets import to_rgb
from ..serving.client import wait_until_classifying
from . import report


def make_model(arch: str, directory: Path, num_classes: int = 133) -> Path:
    torch.manual_seed(0)
    model = models.build(arch, num_classes).eval()
    names = [f"Breed {i}" for i in range(num_classes)]
    models.save_artifacts(directory, model, arch, names, models.default_preprocessing(arch))
    return directory


def test_jpeg(size=(320, 240)) -> bytes:
    shared = Path("../shared/data/dogs10/test")
    if shared.is_dir():
        path = sorted(next(iter(sorted(shared.iterdir()))).iterdir())[0]
        image = Image.open(path).convert("RGB")
        image = image.resize((224, int(224 * image.height / image.width)))
    else:
        import random

        from ..sample import draw_example

        image = draw_example(1, 224, random.Random(0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def percentile(values, q):
    values = sorted(values)
    index = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[index]


def in_process(model_dir: Path, body: bytes, rounds: int, threads: int) -> dict:
    from ..serving.predictor import Predictor

    predictor = Predictor(model_dir, threads=threads)
    predictor.warm_up(3)
    decode, forward = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        image = to_rgb(Image.open(io.BytesIO(body)))
        batch = predictor.tensor([image])
        decode.append(time.perf_counter() - start)
        batch = predictor.acc.prepare_batch(batch)
        start = time.perf_counter()
        with torch.inference_mode(), predictor.acc.autocast():
            predictor.model(batch)
        forward.append(time.perf_counter() - start)
    return {"decode_ms": 1e3 * statistics.median(decode), "forward_ms": 1e3 * statistics.median(forward),
            "setup": predictor.acc.describe()}


def load(url_host: str, port: int, body: bytes, concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker():
        connection = http.client.HTTPConnection(url_host, port, timeout=120)
        for _ in range(per_thread):
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": "image/jpeg"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(url_host, port, timeout=120)
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"p50_ms": 1e3 * percentile(latencies, 50), "p99_ms": 1e3 * percentile(latencies, 99),
            "throughput": len(latencies) / wall, "errors": errors[0], "requests": len(latencies) + errors[0]}




def start_local_server(model_dir: Path, port: int, workers: int | None):
    command = [sys.executable, "-m", "dogbreed.cli", "local-serve", "--model", str(model_dir), "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(process) -> None:
    import signal

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def container_cold_start(model_dir: Path, body: bytes, image: str, port: int) -> float | None:
    if not shutil.which("docker") or subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        return None
    name = f"dogbreed-bench-{port}"
    start = time.perf_counter()
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                    "-v", f"{model_dir}:/opt/ml/model:ro", image, "serve"], check=True, capture_output=True)
    try:
        wait_until_classifying("127.0.0.1", port, body)
        return time.perf_counter() - start
    finally:
        subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", 60)))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--port", type=int, default=28080)
    parser.add_argument("--image", default=os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest"))
    args = parser.parse_args(argv)
    from ..serving.server import default_workers

    workers = args.workers or default_workers()
    cores = os.cpu_count() or 1
    threads = max(1, cores // workers)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        model_dir = make_model(args.model, work / "model")
        body = test_jpeg()
        pure = in_process(model_dir, body, rounds=20, threads=threads)
        base_ms = pure["decode_ms"] + pure["forward_ms"]
        print(f"in process: decode+preprocess {pure['decode_ms']:.1f} ms, forward {pure['forward_ms']:.1f} ms ({pure['setup']}, {threads} threads)", flush=True)
        process = start_local_server(model_dir, args.port, workers)
        try:
            cold = wait_until_classifying("127.0.0.1", args.port, body, process)
            rows, results = [], {"in_process": pure, "cold_start_local_s": cold, "workers": workers}
            for concurrency in (1, 4):
                load("127.0.0.1", args.port, body, concurrency, max(8, args.requests // 4))  # warm every worker
                result = load("127.0.0.1", args.port, body, concurrency, args.requests)
                results[f"c{concurrency}"] = result
                overhead = result["p50_ms"] / base_ms
                rows.append([f"local server, concurrency {concurrency}", f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}",
                             f"{result['throughput']:.2f}", result["errors"], f"{overhead:.2f}x"])
                print(f"concurrency {concurrency}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                      f"{result['throughput']:.2f} req/s, {result['errors']} errors; p50 / (decode + forward) = {overhead:.2f}x", flush=True)
        finally:
            stop(process)
        docker_cold = container_cold_start(model_dir, body, args.image, args.port + 1)
        results["cold_start_container_s"] = docker_cold
        rows.append(["in process: decode + preprocess + forward", f"{base_ms:.1f}", "", f"{1e3 / base_ms:.2f}", "", "1.00x"])
        notes = [
            f"Model: {args.model}, 133 classes, one {len(body) // 1024} KB 224-px JPEG; {workers} worker(s) x {threads} thread(s); "
            f"{args.requests} timed requests per row after a warm-up; in-process set-up {pure['setup']}.",
            f"Cold start (process start to the first correct answer): local server {cold:.1f} s"
            + (f", serve container {docker_cold:.1f} s." if docker_cold is not None else "; serve container: no docker image here."),
        ]
        report.save("serve", {"title": "Serving latency and throughput (loopback HTTP)",
                              "headers": ["what", "p50 ms", "p99 ms", "req/s", "errors", "p50 / in-process"],
                              "rows": rows, "results": results, "notes": notes})
        print(f"wrote {report.REPORT}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench-serve``: our endpoint beside the official AWS PyTorch serving stack, same model, same machine.

A ResNet50 with a 133-breed head (the seed's model; serving cost does not depend on the weights'
values) is written as training would write it, then, in one run:
- in process: JPEG decode + preprocessing, and the forward pass alone, for one 224-px image;
- our local server over loopback HTTP: p50/p99 latency and throughput at concurrency 1, 4 and 16, sent
  the JPEG;
- the peer (sagemaker-pytorch-inference on TorchServe, its default handler, the same model as TorchScript,
  see :mod:`.torchserve_peer`) at the same concurrencies, sent the same image already preprocessed as
  ``application/x-npy`` (its default handler decodes no images: the peer is spared the decoding we do);
- identical top-1 answers on real photos, cold starts (local server, serve container, peer) and the
  peak memory of each worker process.
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
from ..serving.client import wait_until_correct
from . import report

CONCURRENCY = (1, 4, 16)


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
            "setup": predictor.describe(), "top1": predictor.top_k([Image.open(io.BytesIO(body))], 1)[0][0]["index"]}


def load(url_host: str, port: int, body: bytes, concurrency: int, requests: int, content_type: str = "image/jpeg") -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker():
        connection = http.client.HTTPConnection(url_host, port, timeout=120)
        for _ in range(per_thread):
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
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


def container_cold_start(model_dir: Path, body: bytes, expected: int, image: str, port: int) -> float | None:
    """Seconds from ``docker run`` to the serve container's first correct answer for ``body`` (top-1
    ``expected``, the in-process model's); None where docker or the image is absent."""
    if not shutil.which("docker") or subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode:
        return None
    name = f"dogbreed-bench-{port}"
    start = time.perf_counter()
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8080",
                    "-v", f"{model_dir}:/opt/ml/model:ro", image, "serve"], check=True, capture_output=True)
    try:
        wait_until_correct("127.0.0.1", port, body, expected)
        return time.perf_counter() - start
    finally:
        subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True)


def test_images(count: int) -> list[bytes]:
    """Real dog photos as 224-px-wide JPEGs (the synthetic sample where ../shared is absent)."""
    shared = Path("../shared/data/dogs10/test")
    bodies = []
    if shared.is_dir():
        paths = [p for folder in sorted(shared.iterdir()) for p in sorted(folder.iterdir())[:3]]
        for path in paths[:count]:
            image = Image.open(path).convert("RGB")
            image = image.resize((224, int(224 * image.height / image.width)))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            bodies.append(buffer.getvalue())
        return bodies
    import random

    from ..sample import draw_example

    for index in range(count):
        buffer = io.BytesIO()
        draw_example(index % 10, 224, random.Random(index)).save(buffer, "JPEG", quality=90)
        bodies.append(buffer.getvalue())
    return bodies


def worker_peak_mb(server_pid: int, marker: str = "model_service_worker") -> float | None:
    """The largest peak resident size (VmHWM) among the server's model worker processes: its descendants,
    and those in its process group (TorchServe's frontend is re-parented when its launcher exits)."""
    import psutil

    group = os.getpgid(server_pid)
    descendants = {child.pid for child in psutil.Process(server_pid).children(recursive=True)}
    peaks = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            ours = process.pid in descendants or os.getpgid(process.pid) == group
            if not ours or marker not in " ".join(process.info["cmdline"] or []):
                continue
            for line in open(f"/proc/{process.pid}/status"):
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except (psutil.NoSuchProcess, ProcessLookupError, OSError):
            continue
    return max(peaks) if peaks else None


def sweep(name: str, port: int, body: bytes, content_type: str, requests: int) -> tuple[list[list], dict]:
    rows, results = [], {}
    for concurrency in CONCURRENCY:
        count = max(requests, 4 * concurrency)
        load("127.0.0.1", port, body, concurrency, max(2 * concurrency, count // 4), content_type)  # warm every worker
        result = load("127.0.0.1", port, body, concurrency, count, content_type)
        results[f"c{concurrency}"] = result
        rows.append([name, concurrency, f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}", f"{result['throughput']:.2f}",
                     result["errors"]])
        print(f"{name}, concurrency {concurrency}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['throughput']:.2f} req/s, {result['errors']} errors", flush=True)
    return rows, results


def our_top1(port: int, bodies: list[bytes]) -> list[int]:
    from ..serving.client import invoke_url

    return [invoke_url(f"http://127.0.0.1:{port}", body, "image/jpeg", top_k=1)["predictions"][0][0]["index"] for body in bodies]


def run_peer(model_dir: Path, work: Path, port: int, workers: int | None, bodies: list[bytes], requests: int,
             sweep_load: bool = True, label: str = "TorchServe peer") -> dict:
    from ..serving.predictor import Predictor
    from . import torchserve_peer as peer

    base = work / f"peer-{model_dir.name}-{workers or 'default'}"
    peer.export_torchscript(model_dir, base)
    predictor = Predictor(model_dir, precision="fp32", graph="eager")
    tensors = predictor.tensor([Image.open(io.BytesIO(b)) for b in bodies])
    npy = [peer.npy_body(t[None]) for t in tensors]
    expected = int(predictor.tensor_probabilities(tensors[:1])[0].argmax())  # the in-process answer for npy[0]
    process = peer.start(base, port, workers, base / "state", work / f"peer-{model_dir.name}-{workers or 'default'}.log")
    rows, results, memory = [], {}, None
    try:
        cold = peer.wait_ready(port, npy[0], process, expected)
        top1 = [int(torch.tensor(peer.logits(port, body)).argmax()) for body in npy]
        if sweep_load:
            rows, results = sweep(label, port, npy[0], "application/x-npy", requests)
            memory = worker_peak_mb(process.pid)
    finally:
        peer.stop(process)
    return {"rows": rows, "results": results, "cold_start_s": cold, "top1": top1, "worker_peak_mb": memory,
            "versions": peer.versions(), "body_kb": len(npy[0]) // 1024}


def answers_model(work: Path) -> tuple[Path, str] | None:
    """A model whose answers mean something, for the identical-answers check: tf_efficientnet_lite0 with
    its real ImageNet weights and 1,000-class head (a randomly initialised ResNet50 gives every photo the
    same class). None where ../shared/weights is absent."""
    weights = Path("../shared/weights/tf_efficientnet_lite0.in1k.pth")
    if not weights.is_file():
        return None
    model = models.build("tf_efficientnet_lite0", 1000)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    directory = work / "answers"
    models.save_artifacts(directory, model.eval(), "tf_efficientnet_lite0", [f"ImageNet class {i}" for i in range(1000)],
                          models.default_preprocessing("tf_efficientnet_lite0"))
    return directory, "tf_efficientnet_lite0 with its real ImageNet weights (1,000 classes)"


def compare_answers(model_dir: Path, work: Path, port: int, workers: int | None, peer_workers: int,
                    bodies: list[bytes]) -> tuple[int, list[int]]:
    """(top-1 answers identical between ours and the peer, ours) for one model on the same photos."""
    from ..serving.predictor import Predictor

    expected = Predictor(model_dir).top_k([Image.open(io.BytesIO(bodies[0]))], 1)[0][0]["index"]
    process = start_local_server(model_dir, port, workers)
    try:
        wait_until_correct("127.0.0.1", port, bodies[0], expected, process)
        ours = our_top1(port, bodies)
    finally:
        stop(process)
    theirs = run_peer(model_dir, work, port + 10, peer_workers, bodies, 0, sweep_load=False)["top1"]
    return sum(a == b for a, b in zip(ours, theirs, strict=True)), ours


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Our endpoint beside the official AWS PyTorch serving stack, the same model on the same machine")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--requests", type=int, default=int(os.environ.get("BENCH_REQUESTS", 60)))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--port", type=int, default=28080)
    parser.add_argument("--image", default=os.environ.get("SERVE_IMAGE", "dogbreed-serve:latest"))
    parser.add_argument("--answers", type=int, default=20, help="real photos whose top-1 answers are compared")
    args = parser.parse_args(argv)
    from ..serving.server import default_workers, engine_enabled
    from . import torchserve_peer

    engine = engine_enabled()
    workers = args.workers or default_workers(engine)
    peer_workers = args.workers or default_workers()
    cores = os.cpu_count() or 1
    threads = cores if engine else max(1, cores // workers)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        model_dir = make_model(args.model, work / "model")
        bodies = test_images(args.answers)
        body = bodies[0]
        pure = in_process(model_dir, body, rounds=20, threads=threads)
        base_ms = pure["decode_ms"] + pure["forward_ms"]
        print(f"in process: decode+preprocess {pure['decode_ms']:.1f} ms, forward {pure['forward_ms']:.1f} ms "
              f"({pure['setup']}, {threads} threads)", flush=True)
        process = start_local_server(model_dir, args.port, args.workers)
        try:
            cold = wait_until_correct("127.0.0.1", args.port, body, pure["top1"], process)
            ours_top1 = our_top1(args.port, bodies)
            rows, ours = sweep("ours (JPEG in)", args.port, body, "image/jpeg", args.requests)
            ours_memory = worker_peak_mb(process.pid)
            engine_memory = worker_peak_mb(process.pid, "dogbreed.serving.batcher")
        finally:
            stop(process)
        results = {"in_process": pure, "cold_start_local_s": cold, "workers": workers, "ours": ours,
                   "ours_worker_peak_mb": ours_memory, "ours_engine_peak_mb": engine_memory}
        notes = []
        peer = None
        if torchserve_peer.available():
            # the peer twice: TorchServe's own worker count (one per core, its SageMaker default) and one
            # worker with all cores; each of our figures is set beside the better of the two
            runs = [run_peer(model_dir, work, args.port + 10, None, bodies, args.requests,
                             label="TorchServe peer, its default workers (npy in)"),
                    run_peer(model_dir, work, args.port + 30, 1, bodies, args.requests,
                             label="TorchServe peer, 1 worker (npy in)")]
            peer = runs[1]
            for run in runs:
                rows += run["rows"]
            same = sum(a == b for a, b in zip(ours_top1, peer["top1"], strict=True))
            results["peer"] = [{k: v for k, v in run.items() if k != "rows"} for run in runs]
            results["top1_identical"] = [same, len(bodies)]
            for concurrency in CONCURRENCY:
                mine = ours[f"c{concurrency}"]
                best_p50 = min(run["results"][f"c{concurrency}"]["p50_ms"] for run in runs)
                best_rate = max(run["results"][f"c{concurrency}"]["throughput"] for run in runs)
                results[f"ratio_c{concurrency}"] = {"p50": best_p50 / mine["p50_ms"],
                                                    "throughput": mine["throughput"] / best_rate}
                rows.append(["**ours / the better peer**", concurrency, f"**{best_p50 / mine['p50_ms']:.2f}x** faster",
                             "", f"**{mine['throughput'] / best_rate:.2f}x**", ""])
            notes.append(f"Peer: {peer['versions']} in its own venv (make torchserve-peer), default handler, the same weights "
                         f"traced to TorchScript, measured with TorchServe's default worker count and with 1 worker; "
                         f"it is sent the "
                         f"image already preprocessed ({peer['body_kb']} KB float32 npy), we are sent the JPEG and decode it. "
                         f"Identical top-1 answers on {len(bodies)} photos, this model: {same}/{len(bodies)} "
                         f"({len(set(ours_top1))} distinct answers).")
            real = answers_model(work)
            if real:
                same_real, real_top1 = compare_answers(real[0], work, args.port + 40, args.workers, peer_workers, bodies)
                results["top1_identical_real_weights"] = [same_real, len(bodies)]
                notes.append(f"Identical top-1 answers, {real[1]}, ours (JPEG) vs the peer (npy) on the same {len(bodies)} "
                             f"photos: {same_real}/{len(bodies)} ({len(set(real_top1))} distinct answers).")
        else:
            notes.append("Peer: not measured (no TorchServe peer venv here: make torchserve-peer).")
        docker_cold = container_cold_start(model_dir, body, pure["top1"], args.image, args.port + 1)
        results["cold_start_container_s"] = docker_cold
        rows.append(["in process: decode + preprocess + forward", 1, f"{base_ms:.1f}", "", f"{1e3 / base_ms:.2f}", ""])
        notes[:0] = [
            f"Model: {args.model}, 133 classes, {len(body) // 1024} KB 224-px JPEG of a real dog; ours: "
            + (f"{workers} decoding workers and one batching model engine with {threads} threads"
               if engine else f"{workers} worker(s) x {threads} thread(s)")
            + f", {pure['setup']}; {args.requests} timed requests per row (at least 4 per client) after a warm-up.",
            f"Cold start (process start to the first correct answer): local server {cold:.1f} s"
            + (f", serve container {docker_cold:.1f} s" if docker_cold is not None else ", serve container: no docker image here")
            + (f", TorchServe peer {peer['cold_start_s']:.1f} s." if peer else "."),
            "Peak resident memory per worker process (VmHWM): ours "
            + (f"{ours_memory:.0f} MB" if ours_memory else "n/a")
            + (f" per decoding worker, {engine_memory:.0f} MB for the model engine" if engine_memory else "")
            + (f", peer {peer['worker_peak_mb']:.0f} MB." if peer and peer["worker_peak_mb"] else "."),
        ]
        report.save("serve", {"title": "Serving latency and throughput (loopback HTTP), beside the AWS PyTorch serving stack",
                              "headers": ["server", "concurrency", "p50 ms", "p99 ms", "req/s", "errors"],
                              "rows": rows, "results": results, "notes": notes})
        print(f"wrote {report.REPORT}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

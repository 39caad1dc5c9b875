"""``dogbreed profile report PATH|JOB_NAME --out DIR``: one HTML page from a run's profile folder.

JOB_NAME: a training job's output.tar.gz, found from its description (``job_outputs.fetch_output``).
PATH: a local run's work dir, an output data dir, a ``profile/`` folder, an ``output.tar.gz`` (what
SageMaker uploads) or an S3 URI of one. The page holds the step-time split (data loading vs compute), set
beside the profiled job's wall time (what the training steps leave for evaluation, checkpoints and
set-up), the top operators of the torch.profiler trace, utilisation over time as plots, and what to
change when the data loader is the bottleneck.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
import tarfile
import tempfile
from pathlib import Path

from ..errors import DataError

DATA_BOUND = 0.2  # a data-loading share above this is worth fixing


def find_profile(path: str, s3=None) -> Path:
    """The profile folder in ``path`` (see the module's docstring); ``s3``: the client for an S3 URI."""
    if path.startswith("s3://"):
        import boto3  # the AWS SDK loads only for an S3 URI

        bucket, _, key = path[5:].partition("/")
        local = Path(tempfile.mkdtemp(prefix="dogbreed-profile-")) / Path(key).name
        (s3 or boto3.client("s3")).download_file(bucket, key, str(local))
        path = str(local)
    candidate = Path(path)
    if candidate.is_file() and candidate.name.endswith(".tar.gz"):
        target = Path(tempfile.mkdtemp(prefix="dogbreed-profile-"))
        with tarfile.open(candidate) as tar:
            tar.extractall(target, filter="data")
        candidate = target
    for option in (candidate, candidate / "profile", candidate / "data" / "profile", candidate / "opt_ml/output/data/profile"):
        if (option / "steps.jsonl").is_file():
            return option
    raise DataError(f"no profile (steps.jsonl) under {path}")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def step_split(steps: list[dict], wall_s: float | None = None) -> dict:
    """Training steps split into waiting for data and compute; with ``wall_s`` (the profiled job's wall
    time, the hook's summary.json), also what the steps leave of it (evaluation, checkpoints, set-up)."""
    train = [s for s in steps if s["mode"] == "train"]
    if not train:
        split = {"steps": 0, "data_s": 0.0, "compute_s": 0.0, "total_s": 0.0, "data_share": 0.0}
    else:
        data = sum(s["data_s"] for s in train)
        compute = sum(s["compute_s"] for s in train)
        split = {"steps": len(train), "data_s": data, "compute_s": compute, "total_s": data + compute,
                 "data_share": data / (data + compute) if data + compute else 0.0,
                 "median_step_ms": 1e3 * statistics.median(s["data_s"] + s["compute_s"] for s in train)}
    if wall_s is not None:
        split.update(wall_s=float(wall_s), other_s=max(0.0, float(wall_s) - split["total_s"]))
    return split


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode()


def plots(system: list[dict], steps: list[dict]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    if system:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        t = [s["t"] for s in system]
        ax.plot(t, [s["cpu_percent"] for s in system], label="CPU %")
        ax.plot(t, [s["memory_percent"] for s in system], label="memory %")
        if any("gpu_percent" in s for s in system):
            ax.plot(t, [s.get("gpu_percent", 0) for s in system], label="GPU %")
        ax.set_xlabel("seconds")
        ax.set_ylim(0, 105)
        ax.legend(loc="lower right")
        ax.set_title("utilisation over time")
        fig.tight_layout()
        images["utilisation"] = _png(fig)
        plt.close(fig)
    train = [s for s in steps if s["mode"] == "train"]
    if train:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        x = range(len(train))
        ax.bar(x, [s["compute_s"] * 1e3 for s in train], label="compute", color="#4c72b0")
        ax.bar(x, [s["data_s"] * 1e3 for s in train], bottom=[s["compute_s"] * 1e3 for s in train], label="waiting for data",
               color="#dd8452")
        ax.set_xlabel("training step")
        ax.set_ylabel("ms")
        ax.legend()
        ax.set_title("step time: compute and data loading")
        fig.tight_layout()
        images["steps"] = _png(fig)
        plt.close(fig)
    return images


def advice(split: dict) -> list[str]:
    if split["data_share"] > DATA_BOUND:
        return [
            f"The data loader is the bottleneck: {100 * split['data_share']:.0f}% of step time is spent waiting for batches.",
            "Raise --num-workers (one per spare core), or move to an instance with more CPUs per GPU.",
            "Decode less: keep JPEGs near the training size "
            "(Pillow's draft mode already decodes large JPEGs at a reduced scale).",
            "For head-only training, turn augmentation off and cache the frozen features (--feature-cache).",
            "On GPUs, pinned memory and a larger prefetch factor keep the device busy.",
        ]
    return [f"Compute-bound ({100 * (1 - split['data_share']):.0f}% of step time is compute): "
            "the data loader keeps up; look at the top operators, precision (--precision) and batch size."]


def render(profile: Path, out: Path) -> Path:
    steps = _jsonl(profile / "steps.jsonl")
    system = _jsonl(profile / "system.jsonl")
    ops = json.loads((profile / "ops.json").read_text()) if (profile / "ops.json").is_file() else {"ops": [], "steps": 0}
    recorded = json.loads((profile / "summary.json").read_text()) if (profile / "summary.json").is_file() else {}
    split = step_split(steps, recorded.get("wall_s"))
    images = plots(system, steps)
    rows = "".join(
        f"<tr><td>{html.escape(o['name'])}</td><td>{o['calls']}</td>"
        f"<td>{o['self_cpu_ms']:.1f}</td><td>{o['cpu_total_ms']:.1f}</td></tr>"
        for o in ops["ops"][:15]
    )
    tips = "".join(f"<li>{html.escape(t)}</li>" for t in advice(split))
    pictures = "".join(f'<h3>{name}</h3><img alt="{name}" src="data:image/png;base64,{data}">' for name, data in images.items())
    wall = (f"<p id=\"wall\">The profiled job ran {split['wall_s']:.3f} s: the training steps {split['total_s']:.3f} s "
            f"({100 * split['total_s'] / split['wall_s']:.1f}%), "
            f"the rest (evaluation, checkpoints, set-up) {split['other_s']:.3f} s.</p>"
            if split.get("wall_s") else "")
    peak_rss = max((s.get("rss_mb", 0) for s in system), default=0)
    mean_cpu = statistics.mean(s["cpu_percent"] for s in system) if system else 0
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>dogbreed profile report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>\
</head><body>
<h1>dogbreed profile report</h1>
<p>Source: {html.escape(str(profile))}</p>
<h2>Step time</h2>
<table id="split"><tr><th>part</th><th>seconds</th><th>share</th></tr>
<tr><td>data loading (waiting for batches)</td><td>{split['data_s']:.3f}</td>\
<td>{100 * split['data_share']:.1f}%</td></tr>
<tr><td>compute (forward, backward, optimizer)</td><td>{split['compute_s']:.3f}</td>\
<td>{100 * (1 - split['data_share']):.1f}%</td></tr>
<tr><td>total over {split['steps']} training steps</td><td>{split['total_s']:.3f}</td><td>100.0%</td></tr></table>
{wall}<p>Median step: {split.get('median_step_ms', 0):.1f} ms. \
Mean CPU use {mean_cpu:.0f}%, peak memory of the job {peak_rss:.0f} MB.</p>
<h2>What to change</h2><ul>{tips}</ul>
<h2>Top operators (torch.profiler, per step over {ops.get('steps', 0)} traced steps)</h2>
<table id="ops"><tr><th>operator</th><th>calls</th><th>self CPU ms</th><th>CPU total ms</th></tr>{rows}</table>
<h2>Over time</h2>{pictures}
</body></html>"""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "profile-report.html"
    target.write_text(page)
    (out / "profile-summary.json").write_text(json.dumps({"split": split, "top_ops": ops["ops"][:5]}, indent=2))
    return target


def cmd_profile_report(args, s3=None) -> int:
    profile = find_profile(args.path, s3)
    target = render(profile, Path(args.out))
    summary = json.loads((Path(args.out) / "profile-summary.json").read_text())["split"]
    print(f"report: {target}")
    print(f"step time: data {summary['data_s']:.2f} s ({100 * summary['data_share']:.0f}%), "
          f"compute {summary['compute_s']:.2f} s, "
          f"total {summary['total_s']:.2f} s over {summary['steps']} steps"
          + (f" of the job's {summary['wall_s']:.2f} s" if summary.get("wall_s") else ""))
    return 0

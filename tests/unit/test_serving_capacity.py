"""The decoding workers' default count: from the cores and from the memory the container may use."""

from __future__ import annotations

from pathlib import Path

from dogbreed.serving import capacity


def _files(root: Path, v2: str | None, v1: str | None, total_kb: int = 16 * 1024 * 1024):
    tmp_path = root / f"case{len(list(root.iterdir()))}"
    tmp_path.mkdir()
    paths = []
    for name, text in (("memory.max", v2), ("memory.limit_in_bytes", v1)):
        path = tmp_path / name
        if text is not None:
            path.write_text(text + "\n")
        paths.append(path)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {total_kb} kB\nMemFree:        1234 kB\n")
    return tuple(paths), meminfo


def test_the_memory_is_the_cgroup_limit_else_memtotal(tmp_path):
    assert capacity.container_memory_mb(*_files(tmp_path, str(3 * 1024**3), None))[0] == 3072  # docker --memory=3g (v2)
    assert capacity.container_memory_mb(*_files(tmp_path, None, str(2 * 1024**3)))[0] == 2048  # cgroup v1
    memory, source = capacity.container_memory_mb(*_files(tmp_path, "max", None))
    assert memory == 16384 and source.endswith("meminfo MemTotal")
    assert capacity.container_memory_mb(*_files(tmp_path, None, "9223372036854771712"))[0] == 16384  # v1: no limit


def test_workers_are_twice_the_cores_as_far_as_the_memory_carries_them(tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"\0" * (98 * capacity.MB))  # a ResNet50's weights
    big = capacity.plan_workers(16, tmp_path, (65536, "test"))
    assert big.workers == 32  # the cores bound it
    small = capacity.plan_workers(16, tmp_path, (3072, "test"))
    used = small.engine_mb + small.front_mb + small.reserve_mb + small.workers * capacity.WORKER_MB
    assert 1 <= small.workers < 32 and used <= 3072  # the memory bounds it
    assert capacity.plan_workers(16, tmp_path, (1024, "test")).workers == 1  # never none
    assert capacity.plan_workers(2, tmp_path, (65536, "test")).workers == 4
    text = small.describe()
    assert f"{small.workers} decoding worker(s)" in text and "3072 MB (test)" in text and f"engine ~{small.engine_mb} MB" in text


def test_a_sixteen_core_host_with_a_serverless_default_stays_inside_it(tmp_path):
    """The issue's case: 2 x cores on a 16-core host would have been 32 workers; in 4 GB the plan fits."""
    plan = capacity.plan_workers(16, None, (4096, "serverless"))
    assert plan.engine_mb + plan.front_mb + plan.workers * capacity.WORKER_MB <= 4096 - plan.reserve_mb


def test_request_threads_are_as_many_as_the_memory_carries_each_decoding_its_largest_image(tmp_path):
    """Eight 40-MP RGBA PNGs at once once killed a 4 GB container (16 threads, each counted at 150 MB)."""
    (tmp_path / "model.pth").write_bytes(b"\0" * (98 * capacity.MB))
    threads, why = capacity.plan_request_threads(16, tmp_path, (4096, "serverless"))
    engine = capacity.engine_estimate_mb(tmp_path)
    assert 2 <= threads < 8 and engine + capacity.NATIVE_BASE_MB + threads * capacity.REQUEST_PEAK_MB <= 4096
    assert f"{threads} request thread(s)" in why and "4096 MB (serverless)" in why
    assert capacity.plan_request_threads(16, tmp_path, (65536, "test"))[0] == 16  # the bound given
    assert capacity.plan_request_threads(16, tmp_path, (1024, "test"))[0] == 2  # never fewer

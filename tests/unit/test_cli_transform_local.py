"""``dogbreed transform --local``: the LocalTransform the flags and the config ask for (the job itself, docker and
the SDK's local mode, is tests/integration/test_transform_local.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dogbreed import cli
from dogbreed.launch import local_transform


@pytest.fixture
def jobs(monkeypatch, tmp_path):
    """run_local_transform replaced from outside: records each job and writes one .out per input file."""
    monkeypatch.chdir(tmp_path)  # no ./dogbreed.toml of the checkout's
    monkeypatch.delenv("DOGBREED_CONFIG", raising=False)
    ran = []

    def fake(job, name=None):
        ran.append(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        outputs = [job.output_dir / f"{p.name}.out" for p in sorted(job.input_dir.iterdir())]
        for out in outputs:
            out.write_text("{}")
        return outputs

    monkeypatch.setattr(local_transform, "run_local_transform", fake)
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "in" / name).write_bytes(b"jpeg")
    (tmp_path / "model.tar.gz").write_bytes(b"archive")
    return ran


def _run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


def test_the_flags_make_the_local_job(jobs, tmp_path, capsys):
    code, out, err = _run(["transform", "--local", "--model", "model.tar.gz", "--input", "in", "--output", "out",
                           "--image", "dogbreed-serve-cpu:test", "--content-type", "application/jsonlines",
                           "--split-type", "Line", "--batch-strategy", "MultiRecord", "--max-payload-mb", "12"], capsys)
    assert code == 0, err
    (job,) = jobs
    assert job == local_transform.LocalTransform(
        image="dogbreed-serve-cpu:test", model=Path("model.tar.gz"), input_dir=Path("in"), output_dir=Path("out"),
        content_type="application/jsonlines", split_type="Line", batch_strategy="MultiRecord", max_payload_mb=12,
        accept="application/jsonlines")
    assert out.splitlines() == ["image=dogbreed-serve-cpu:test", "outputs=3", "output=out"]


def test_the_defaults_are_the_configs_then_the_local_image(jobs, tmp_path, capsys):
    assert _run(["transform", "--local", "--model-data", "model.tar.gz", "--input", "in", "--output", "out"],
                capsys)[0] == 0
    assert jobs[-1].image == "dogbreed-serve:latest" and jobs[-1].split_type == "None"
    assert jobs[-1].content_type == "application/x-image" and jobs[-1].accept == "application/json"
    config = tmp_path / "dogbreed.toml"
    config.write_text('serve_image = "r/dogbreed-serve:gpu"\nserve_image_cpu = "r/dogbreed-serve-cpu:1"\n'
                      '[transform]\nmax_payload_mb = 20\n')
    assert _run(["transform", "--local", "--model", "model.tar.gz", "--input", "in", "--output", "out", "--config",
                 str(config)], capsys)[0] == 0
    assert jobs[-1].image == "r/dogbreed-serve-cpu:1" and jobs[-1].max_payload_mb == 20
    config.write_text('serve_image = "r/dogbreed-serve:gpu"\n')
    assert _run(["transform", "--local", "--model", "model.tar.gz", "--input", "in", "--output", "out", "--config",
                 str(config)], capsys)[0] == 0
    assert jobs[-1].image == "r/dogbreed-serve:gpu"


@pytest.mark.parametrize("argv, needle", [
    (["--model", "missing.tar.gz", "--input", "in"], "--model missing.tar.gz: no such file or directory"),
    (["--model-data", "s3://b/model.tar.gz", "--input", "in"], "takes a model here, not s3://b/model.tar.gz"),
    (["--input", "in"], "transform --local needs --model"),
    (["--model", "model.tar.gz", "--input", "nowhere"], "--input nowhere: no such folder"),
])
def test_a_wrong_model_or_input_is_one_line_before_any_job(jobs, capsys, argv, needle):
    code, _, err = _run(["transform", "--local", *argv, "--output", "out"], capsys)
    assert code != 0 and jobs == []
    assert err.startswith("dogbreed: error:") and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_failed_job_is_one_line(jobs, monkeypatch, capsys):
    def failed(job, name=None):
        raise RuntimeError("local transform dogbreed-local-transform-1 ended Failed")

    monkeypatch.setattr(local_transform, "run_local_transform", failed)
    code, out, err = _run(["transform", "--local", "--model", "model.tar.gz", "--input", "in", "--output", "out"], capsys)
    assert code == 1 and "outputs=" not in out
    assert err.startswith("dogbreed: error:") and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("local transform dogbreed-local-transform-1 ended Failed")


def test_model_without_local_is_refused(jobs, capsys):
    code, _, err = _run(["transform", "--model", "model.tar.gz", "--input", "s3://b/in", "--output", "s3://b/out"],
                        capsys)
    assert code != 0 and "--model is for --local" in err and jobs == []


def test_a_model_folder_goes_to_the_job_with_every_artifact(tmp_path):
    """A model trained with pretrained weights keeps its dog check's ImageNet head beside model.pth: a job given
    the folder must mount it too, or the server refuses the model (/ping 503) and the job never starts."""
    from dogbreed.launch.local_transform import _model_folder

    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.pth", "model.json", "imagenet_head.pth"):
        (model / name).write_bytes(name.encode())
    (tmp_path / "scratch").mkdir()
    folder = _model_folder(model, tmp_path / "scratch")
    assert sorted(p.name for p in folder.iterdir()) == ["imagenet_head.pth", "model.json", "model.pth"]


def test_the_job_s_compose_projects_are_brought_down_even_when_it_fails(tmp_path, monkeypatch):
    """The SDK leaves a container that never became healthy running: every compose project under the job's root
    is brought down (a stand-in docker-compose on PATH records the call)."""
    import os

    from dogbreed.launch.local_transform import _stop_containers

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fake = bin_dir / "docker-compose"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "root" / "tmpabc"
    project.mkdir(parents=True)
    (project / "docker-compose.yaml").write_text("services: {}\n")
    _stop_containers(tmp_path / "root")
    assert calls.read_text().split() == ["-f", str(project / "docker-compose.yaml"), "down", "--timeout", "5"]

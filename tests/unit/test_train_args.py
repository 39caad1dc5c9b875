import pytest

from dogbreed.toolkit_entry import hyperparameters_to_argv
from dogbreed.training import entry
from dogbreed.training.args import parse_args
from dogbreed.training.errors import TrainingError
from dogbreed.training.setup import warmup_cosine


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "-0.1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "resnet5000"], "unknown model"),
    (["--data-fraction", "1.5"], "--data-fraction"),
    (["--epochs", "two"], "--epochs"),
    (["--pretrained-weights", "/no/such/file.pth"], "no such file"),
    (["--precision", "fp16"], "fp16"),
    (["--momentum", "nan"], "--momentum: must be a finite number, got 'nan'"),
    (["--warmup-epochs", "nan"], "--warmup-epochs"),
    (["--epochs", "1e9"], "--epochs: invalid int value: '1e9'"),
])
def test_bad_hyperparameters_fail_before_any_data_is_read(argv, needle):
    with pytest.raises(TrainingError) as info:
        parse_args(argv)
    assert needle in str(info.value)


def test_bad_hyperparameter_run_writes_the_failure_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    code, reason = entry.run(["--lr", "-1", "--data-dir", str(tmp_path / "missing")])
    assert code == 1 and "--lr" in reason
    assert "--lr" in (tmp_path / "output" / "failure").read_text()


def test_hyperparameters_as_sagemaker_gives_them():
    # the toolkit JSON-decodes SageMaker's strings; booleans and numbers come back as text flags
    argv = hyperparameters_to_argv({"lr": 0.01, "batch-size": "64", "augment": False, "sagemaker_region": "x",
                                    "train_layers": "head"})
    assert argv == ["--augment", "false", "--batch-size", "64", "--lr", "0.01", "--train-layers", "head"]
    args = parse_args(argv + ["--pretrained-weights", "none"])
    assert (args.lr, args.batch_size, args.augment, args.train_layers) == (0.01, 64, False, "head")


def test_schedule_warms_up_then_decays_to_zero():
    factor = warmup_cosine(100, 10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-9)


def _config(tmp_path, argv):
    from dogbreed.distributed import DistInfo
    from dogbreed.env import SageMakerEnv
    from dogbreed.training import config

    smenv = SageMakerEnv(base=tmp_path, model_dir=tmp_path / "model", output_data_dir=tmp_path / "out",
                         output_dir=tmp_path / "output", checkpoint_dir=tmp_path / "ckpt", job_name="job-1",
                         channels={"train": tmp_path / "train", "resume": tmp_path / "earlier"})
    return config.build(parse_args(argv), smenv, DistInfo(), use_cuda=False)


def test_the_run_configuration_is_frozen_once_built(tmp_path):
    import dataclasses

    run = _config(tmp_path, ["--pretrained-weights", "none", "--lr", "0.01"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.lr = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.epochs = 99
    with pytest.raises(TypeError):  # the channels cannot be changed through the frozen value either
        run.channels["train"] = tmp_path
    assert (run.lr, run.epochs, run.label_smoothing) == (0.01, 10, 0.1)  # defaults resolved once, when built
    assert run.checkpoint_dir == tmp_path / "ckpt" / "job-1" and run.model_dir == tmp_path / "model"
    assert run.resume_from == str(tmp_path / "earlier") and dict(run.channels) == {"train": tmp_path / "train"}


def test_the_configuration_has_one_field_a_flag():
    from dogbreed.training import args, config

    dests = [a.dest for a in args.get_args_parser()._actions if a.dest != "help"]
    assert list(config.FLAGS) == dests


FLOAT_FLAGS = ["--lr", "--backbone-lr-ratio", "--weight-decay", "--momentum", "--label-smoothing", "--warmup-epochs",
               "--data-fraction", "--min-crop-scale"]


def test_the_float_flags_are_all_listed_here():
    from dogbreed.training import args

    defaults = {a.option_strings[0]: a.default for a in args.get_args_parser()._actions if a.option_strings}
    floats = {flag for flag, default in defaults.items() if isinstance(default, float)} | {"--label-smoothing"}
    assert floats == set(FLOAT_FLAGS)


@pytest.mark.parametrize("flag", FLOAT_FLAGS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_every_float_flag_refuses_non_finite_values_as_typed(flag, value):
    with pytest.raises(TrainingError) as info:
        parse_args(["--pretrained-weights", "none", f"{flag}={value}"])  # "-inf" alone would read as a flag
    assert f"{flag}: must be a finite number, got '{value}'" in str(info.value)


def test_the_toolkit_hands_numbers_over_as_they_were_typed(tmp_path):
    """The toolkit JSON-decodes SageMaker's strings ("1e9" -> 1000000000.0); the flags keep the typed text."""
    import json

    from dogbreed.toolkit_entry import as_typed

    written = tmp_path / "hyperparameters.json"
    written.write_text(json.dumps({"epochs": "1e9", "lr": "0.010", "model": '"resnet18"', "augment": "false"}))
    decoded = {"epochs": 1e9, "lr": 0.01, "model": "resnet18", "augment": False}
    argv = hyperparameters_to_argv(as_typed(decoded, written))
    assert argv == ["--augment", "false", "--epochs", "1e9", "--lr", "0.010", "--model", "resnet18"]
    with pytest.raises(TrainingError, match="'1e9'"):
        parse_args(argv)
    assert as_typed(decoded, tmp_path / "missing.json") == decoded

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


@pytest.mark.parametrize("flag,value", [("--lr", "1e39"), ("--momentum", "1e300"), ("--weight-decay", "1e300"),
                                        ("--backbone-lr-ratio", "4e38"), ("--warmup-epochs", "1E40")])
def test_a_float_flag_beyond_float32_is_refused_naming_the_flag_and_the_value_as_typed(flag, value):
    """The optimizer holds float32 scalars: beyond them torch fails mid-run naming no flag."""
    with pytest.raises(TrainingError) as info:
        parse_args(["--pretrained-weights", "none", flag, value])
    assert f"{flag}: must be at most 3.403e+38 in size (the optimizer holds float32), got '{value}'" in str(info.value)


def test_a_learning_rate_whose_adamw_step_overflows_is_refused_as_typed():
    with pytest.raises(TrainingError, match=r"^--lr 1e38 is too large for the optimizer: .* at most 3.403e\+37"):
        parse_args(["--pretrained-weights", "none", "--lr", "1e38"])
    with pytest.raises(TrainingError, match=r"^--lr 1e30 x --backbone-lr-ratio 1e30 is too large"):
        parse_args(["--pretrained-weights", "none", "--optimizer", "sgd", "--lr", "1e30", "--backbone-lr-ratio", "1e30"])
    args = parse_args(["--pretrained-weights", "none", "--optimizer", "sgd", "--lr", "1e38"])  # SGD steps by lr
    assert args.lr == 1e38


def test_float_flags_keep_their_text_as_typed_and_their_value_as_a_plain_float(tmp_path):
    args = parse_args(["--pretrained-weights", "none", "--lr", "1e30", "--weight-decay", "0.00010"])
    assert args.as_typed == {"lr": "1e30", "weight_decay": "0.00010"}
    assert type(args.lr) is float and type(args.weight_decay) is float and args.lr == 1e30  # what checkpoints pickle
    config = _config(tmp_path, ["--pretrained-weights", "none", "--lr", "1e30", "--optimizer", "sgd"])
    assert dict(config.as_typed) == {"lr": "1e30"} and "as_typed" not in config.hyperparameters()

    from dogbreed.training.setup import divergence_advice
    assert divergence_advice(config) == "lower --lr 1e30, --weight-decay 0.0001 or --momentum 0.9"
    adamw = _config(tmp_path, ["--pretrained-weights", "none", "--weight-decay", "1e30"])
    assert divergence_advice(adamw) == "lower --lr 0.001 or --weight-decay 1e30"


def test_a_refused_resume_shows_the_settings_as_typed():
    from dogbreed import checkpoint
    from dogbreed.training.resume import shown_as_typed

    saved = shown_as_typed({"lr": 0.003, "epochs": 3, "weight_decay": 1e-4}, {"lr": "0.003"})
    now = shown_as_typed({"lr": 1e30, "epochs": 3, "weight_decay": 1e-4}, {"lr": "1e30", "weight_decay": "1e-4"})
    assert checkpoint.differences(saved, now) == "lr: 0.003 -> 1e30"
    assert checkpoint.differences(saved, shown_as_typed({"lr": 0.003, "epochs": 3, "weight_decay": 1e-4},
                                                        {"lr": "0.0030"})) == ""  # the value decides, not the text

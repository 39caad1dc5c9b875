import pytest

from dogbreed import train
from dogbreed.toolkit_entry import hyperparameters_to_argv


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "-0.1"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--model", "resnet5000"], "unknown model"),
    (["--data-fraction", "1.5"], "--data-fraction"),
    (["--epochs", "two"], "--epochs"),
    (["--pretrained-weights", "/no/such/file.pth"], "no such file"),
    (["--precision", "fp16"], "fp16"),
])
def test_bad_hyperparameters_fail_before_any_data_is_read(argv, needle):
    with pytest.raises(train.TrainingError) as info:
        train.parse_args(argv)
    assert needle in str(info.value)


def test_bad_hyperparameter_run_writes_the_failure_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    code, reason = train.run(["--lr", "-1", "--data-dir", str(tmp_path / "missing")])
    assert code == 1 and "--lr" in reason
    assert "--lr" in (tmp_path / "output" / "failure").read_text()


def test_hyperparameters_as_sagemaker_gives_them():
    # the toolkit JSON-decodes SageMaker's strings; booleans and numbers come back as text flags
    argv = hyperparameters_to_argv({"lr": 0.01, "batch-size": "64", "augment": False, "sagemaker_region": "x",
                                    "train_layers": "head"})
    assert argv == ["--augment", "false", "--batch-size", "64", "--lr", "0.01", "--train-layers", "head"]
    args = train.parse_args(argv + ["--pretrained-weights", "none"])
    assert (args.lr, args.batch_size, args.augment, args.train_layers) == (0.01, 64, False, "head")


def test_schedule_warms_up_then_decays_to_zero():
    factor = train.warmup_cosine(100, 10)
    assert factor(0) == pytest.approx(0.1)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-9)

"""One error family: every error a user can act on is a DogbreedError, and the command prints any failure as one line."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, NoRegionError

from dogbreed import checkpoint, cli, errors
from dogbreed.launch import data_prepare, jobs, validate
from dogbreed.training import entry as train  # its TrainingError and Interrupted


@pytest.mark.parametrize("cls", [errors.ConfigError, errors.DataError, errors.ModelError, errors.InvokeError, errors.GpuError,
                                 train.TrainingError, train.Interrupted, checkpoint.CheckpointError,
                                 data_prepare.PrepareError, jobs.JobError, validate.ValidationError])
def test_every_user_error_is_a_dogbreed_error(cls):
    assert issubclass(cls, errors.DogbreedError)


def test_describe_gives_our_message_alone_and_others_their_class():
    assert errors.describe(train.TrainingError("the loss became nan: lower --lr\nmore")) == "the loss became nan: lower --lr"
    assert errors.describe(KeyError("x")) == "KeyError: 'x'"
    assert errors.describe(errors.DataError()) == "DataError"


def test_describe_gives_aws_errors_one_line_with_a_hint():
    exc = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "CreateTrainingJob")
    line = errors.describe(exc)
    assert line.startswith("CreateTrainingJob: AccessDeniedException: not allowed (the credentials lack a permission")
    assert "\n" not in line
    assert errors.describe(NoRegionError()).startswith("no AWS region")


def test_training_failure_reason_is_the_message_of_any_dogbreed_error():
    assert errors.describe(checkpoint.CheckpointError("disk full")) == "disk full"
    assert errors.describe(errors.ConfigError("bf16 needs a GPU")) == "bf16 needs a GPU"
    assert errors.describe(MemoryError()).startswith("out of memory")


def test_the_command_prints_one_line_and_exits_non_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["invoke", str(tmp_path / "missing.jpg")])
    assert exited.value.code == 1
    assert capsys.readouterr().err == f"dogbreed: error: {tmp_path / 'missing.jpg'}: no such file\n"

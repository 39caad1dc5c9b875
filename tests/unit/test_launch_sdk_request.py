"""The CreateTrainingJob request comes from SDK v3's private ModelTrainer._create_training_job_args: a release
that changes it is refused in one line, before anything is sent."""

from __future__ import annotations

import pytest

from dogbreed.errors import ConfigError, describe
from dogbreed.launch import jobs

API_FORM = {"AlgorithmSpecification": {"TrainingImage": "i"}, "RoleArn": "r", "ResourceConfig": {}, "StoppingCondition": {},
            "OutputDataConfig": {}, "TrainingJobName": "sdk-name"}


class Trainer:
    def __init__(self, answer):
        self.answer = answer

    def _create_training_job_args(self, input_data_config=None, boto3=False):
        return self.answer if boto3 else {"training_job_name": "sdk-name"}


class Renamed:
    def _training_job_request(self, input_data_config=None):
        return API_FORM


class NewArguments:
    def _create_training_job_args(self, inputs=None, api_form=False):
        return API_FORM


def test_the_sdks_request_in_the_apis_form_is_taken():
    assert jobs.training_request(Trainer(dict(API_FORM)), []) == API_FORM


@pytest.mark.parametrize("trainer, found", [
    (Renamed(), "no such method"),
    (NewArguments(), "TypeError: "),
    (Trainer({"training_job_name": "x", "algorithm_specification": {}}), "keys ['algorithm_specification'"),
    (Trainer(None), "None"),
])
def test_an_sdk_that_changed_the_private_method_is_refused_in_one_line(trainer, found):
    with pytest.raises(ConfigError) as raised:
        jobs.training_request(trainer, [])
    line = describe(raised.value)
    assert "\n" not in line and found in line
    assert line.startswith("sagemaker ") and "_create_training_job_args(boto3=True) no longer gives" in line


def test_the_guard_names_the_release_the_constraints_pin():
    """A bump of the sagemaker pin must bring the guard (and its message) with it."""
    import re
    from pathlib import Path

    constraints = (Path(__file__).resolve().parents[2] / "requirements" / "constraints.txt").read_text()
    assert re.search(r"^sagemaker==(\S+)", constraints, re.M)[1] == jobs.TESTED_SDK
    with pytest.raises(ConfigError, match=f"tested with sagemaker {re.escape(jobs.TESTED_SDK)} "):
        jobs.training_request(Renamed(), [])

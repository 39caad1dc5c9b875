"""Endpoints against moto: deploy, redeploy (UpdateEndpoint), clean-up; every resource asserted after each step.

moto has no UpdateEndpoint: ``Updates`` answers it in place of AWS (a botocore ``before-call`` handler on the
client, outside the code under test), moving moto's endpoint onto the new config, or, as AWS does when an
update fails, leaving it on the old one with a FailureReason.
"""

from __future__ import annotations

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from dogbreed.launch import endpoints, jobs
from dogbreed.launch.waits import JobError
from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import SERVE_IMAGE, SERVE_IMAGE_CPU, _call, _session_capturing, serving_config

MODEL_DATA = "s3://dogbreed-test/runs/models/job/output/model.tar.gz"
ENDPOINT = "dogbreed-redeploy"


@pytest.fixture
def config(tmp_path):
    from dogbreed.launch.config import load

    return load(str(serving_config(tmp_path)))


class Updates:
    """UpdateEndpoint in AWS's place: ``fail`` leaves the endpoint on its old config with a reason (AWS's rollback);
    ``refuse`` answers the call itself with a ValidationException; ``lag`` describes show the endpoint unchanged
    (InService on the old config) before the update shows."""

    def __init__(self, client, fail: str | None = None, refuse: bool = False, lag: int = 0):
        self.calls: list[dict] = []
        self.fail, self.refuse, self.lag, self.pending = fail, refuse, lag, None
        client.meta.events.register("before-call.sagemaker.UpdateEndpoint", self.answer)
        client.meta.events.register("before-call.sagemaker.DescribeEndpoint", self.describe)

    def describe(self, **_):
        if self.pending is None:
            return
        if self.lag:
            self.lag -= 1
        else:
            apply, self.pending = self.pending, None
            apply()

    def answer(self, params, **_):
        import json

        from moto.sagemaker.models import sagemaker_backends

        params = json.loads(params["body"])  # the request as botocore serialized it
        self.calls.append(params)
        if self.refuse:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "UpdateEndpoint")
        from moto.core.utils import utcnow

        endpoint = sagemaker_backends["123456789012"][REGION].endpoints[params["EndpointName"]]

        def apply():
            endpoint.last_modified_time = utcnow()
            if self.fail:
                endpoint.failure_reason = self.fail
            else:
                endpoint.endpoint_config_name = params["EndpointConfigName"]

        self.pending = apply
        return AWSResponse("https://sagemaker", 200, {}, None), {"EndpointArn": endpoint.arn}


def resources(sm) -> dict:
    """Every endpoint (with its config), endpoint config and model moto holds."""
    return {"endpoints": {e["EndpointName"]: sm.describe_endpoint(EndpointName=e["EndpointName"])["EndpointConfigName"]
                          for e in sm.list_endpoints()["Endpoints"]},
            "configs": {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]},
            "models": {m["ModelName"] for m in sm.list_models()["Models"]}}


def _deploy(config, session, **kwargs):
    model = jobs.build_model(config, session, MODEL_DATA)
    jobs.deploy(config, model, ENDPOINT, out=lambda line: None, **kwargs)
    return model.name


def test_deploy_twice_updates_the_endpoint_and_leaves_no_orphan(aws, config):
    session, calls = _session_capturing(config)
    updates = Updates(session.sagemaker_client)
    first = _deploy(config, session)
    assert _call(calls, "CreateEndpointConfig")["EndpointConfigName"] == first  # named after the model
    assert resources(aws) == {"endpoints": {ENDPOINT: first}, "configs": {first}, "models": {first}}
    tags = aws.list_tags(ResourceArn=aws.describe_model(ModelName=first)["ModelArn"])["Tags"]
    assert {"Key": "dogbreed:endpoint", "Value": ENDPOINT} in tags

    second = _deploy(config, session)
    assert second != first
    assert [c["EndpointConfigName"] for c in updates.calls] == [second]
    assert [op for op, _ in calls].count("CreateEndpoint") == 1  # the second deploy updated, never re-created
    assert resources(aws) == {"endpoints": {ENDPOINT: second}, "configs": {second}, "models": {second}}


def test_keep_old_keeps_the_replaced_config_and_model_and_delete_removes_all(aws, config):
    session, _ = _session_capturing(config)
    Updates(session.sagemaker_client)
    first = _deploy(config, session)
    second = _deploy(config, session, keep_old=True)
    assert resources(aws) == {"endpoints": {ENDPOINT: second}, "configs": {first, second}, "models": {first, second}}
    deleted = jobs.delete_endpoint(aws, ENDPOINT)
    assert sorted(deleted) == sorted([f"endpoint {ENDPOINT}", f"endpoint config {first}", f"endpoint config {second}",
                                      f"model {first}", f"model {second}"])
    assert resources(aws) == {"endpoints": {}, "configs": set(), "models": set()}


@pytest.mark.parametrize("lag", [0, 3])
def test_an_update_that_shows_late_is_waited_for(aws, config, lag):
    """AWS may still describe the endpoint InService on its old config just after UpdateEndpoint: that is not a
    rollback, and nothing may be deleted then."""
    session, _ = _session_capturing(config)
    first = _deploy(config, session)
    Updates(session.sagemaker_client, lag=lag)
    second = _deploy(config, session)
    assert first != second
    assert resources(aws) == {"endpoints": {ENDPOINT: second}, "configs": {second}, "models": {second}}


def test_a_failed_update_rolls_back_and_deletes_only_what_it_made(aws, config):
    session, _ = _session_capturing(config)
    first = _deploy(config, session)
    Updates(session.sagemaker_client, fail="the new model's container did not pass /ping")
    with pytest.raises(JobError, match="stayed on .*did not pass /ping .*what this deploy created is deleted"):
        _deploy(config, session)
    assert resources(aws) == {"endpoints": {ENDPOINT: first}, "configs": {first}, "models": {first}}


def test_a_refused_update_call_leaves_no_orphan(aws, config):
    session, _ = _session_capturing(config)
    first = _deploy(config, session)
    Updates(session.sagemaker_client, refuse=True)
    with pytest.raises(ClientError, match="refused"):
        _deploy(config, session)
    assert resources(aws) == {"endpoints": {ENDPOINT: first}, "configs": {first}, "models": {first}}


def test_a_refused_create_endpoint_leaves_no_orphan(aws, config):
    session, _ = _session_capturing(config)

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ResourceLimitExceeded", "Message": "no quota"}}, "CreateEndpoint")

    session.sagemaker_client.meta.events.register("before-call.sagemaker.CreateEndpoint", refuse)
    with pytest.raises(ClientError, match="no quota"):
        _deploy(config, session)
    assert resources(aws) == {"endpoints": {}, "configs": set(), "models": set()}


def test_a_detached_redeploy_keeps_the_old_until_the_update_ends(aws, config):
    session, _ = _session_capturing(config)
    Updates(session.sagemaker_client)
    first = _deploy(config, session)
    lines = []
    model = jobs.build_model(config, session, MODEL_DATA)
    jobs.deploy(config, model, ENDPOINT, wait=False, out=lines.append)
    session.sagemaker_client.describe_endpoint(EndpointName=ENDPOINT)  # the update shows (Updates applies it)
    assert resources(aws) == {"endpoints": {ENDPOINT: model.name}, "configs": {first, model.name},
                              "models": {first, model.name}}
    assert lines and first in lines[0] and f"dogbreed delete {ENDPOINT}" in lines[0]
    jobs.delete_endpoint(aws, ENDPOINT)
    assert resources(aws) == {"endpoints": {}, "configs": set(), "models": set()}


def test_delete_of_nothing_is_one_clear_error(aws):
    from dogbreed.errors import ConfigError

    with pytest.raises(ConfigError, match="no endpoint dogbreed-none"):
        endpoints.delete_endpoint(aws, "dogbreed-none")


@pytest.mark.parametrize("serving,image,ami,env", [
    ({"instance_type": "ml.g4dn.12xlarge"}, SERVE_IMAGE, "al2023-ami-sagemaker-inference-gpu-4-1",
     {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}),  # moto's instance types stop at g4dn: the families are unit-tested
    ({"instance_type": "ml.g4dn.xlarge"}, SERVE_IMAGE, "al2023-ami-sagemaker-inference-gpu-4-1",
     {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}),
    ({"instance_type": "ml.m5.large"}, SERVE_IMAGE_CPU, None, {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}),
    ({"serverless": True}, SERVE_IMAGE_CPU, None,
     {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60", "SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}),
    ({"instance_type": "ml.m5.large", "image": "cuda"}, SERVE_IMAGE, None, {"SAGEMAKER_MODEL_SERVER_TIMEOUT": "60"}),
], ids=["4 T4s", "T4", "CPU", "serverless", "CPU told cuda"])
def test_the_image_the_ami_and_the_environment_follow_the_hardware(aws, config, serving, image, ami, env):
    for key, value in serving.items():
        config.set_path(f"serving.{key}", value)
    session, calls = _session_capturing(config)
    _deploy(config, session, wait=False)
    container = _call(calls, "CreateModel")["PrimaryContainer"]
    assert container["Image"] == image and container["Environment"] == env
    variant = _call(calls, "CreateEndpointConfig")["ProductionVariants"][0]
    assert variant.get("InferenceAmiVersion") == ami
    described = aws.describe_endpoint_config(EndpointConfigName=_call(calls, "CreateModel")["ModelName"])
    assert described["ProductionVariants"][0]["ModelName"] == _call(calls, "CreateModel")["ModelName"]


def test_a_gpu_family_our_torch_cannot_use_is_refused_before_any_call(aws, config):
    from dogbreed.launch.validate import ValidationError

    config.set_path("serving.instance_type", "ml.p3.2xlarge")
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match="V100 .*no kernels"):
        _deploy(config, session, wait=False)
    assert calls == [] and resources(aws) == {"endpoints": {}, "configs": set(), "models": set()}


SUBNET, GROUP = "subnet-0123456789abcdef0", "sg-0123456789abcdef0"
KEY = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_vpc_kms_and_isolation_reach_every_create_request(aws, config):
    """Issue 21: the settings are sent to training, tuning, models, endpoint configs and transforms, and every
    request is checked against botocore's service model on the way (session.py's hook)."""
    from dogbreed.launch import apimodel, transform

    for key, value in {"vpc.subnets": [SUBNET], "vpc.security_group_ids": [GROUP], "kms_key": KEY,
                       "network_isolation": True, "train_image": SERVE_IMAGE.replace("serve", "train"),
                       "hyperparameters.pretrained-weights": "none"}.items():  # isolated: no ImageNet download
        config.set_path(key, value)
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-secure")
    jobs.start_tuning(config, session, "dogbreed-hpo-secure")
    _deploy(config, session, wait=False)
    job = transform.plan(config, session, MODEL_DATA, "s3://dogbreed-test/photos/", "s3://dogbreed-test/answers/")
    transform.start(config, job)
    vpc = {"Subnets": [SUBNET], "SecurityGroupIds": [GROUP]}
    for definition in (_call(calls, "CreateTrainingJob"), _call(calls, "CreateHyperParameterTuningJob")["TrainingJobDefinition"]):
        assert definition["VpcConfig"] == vpc and definition["EnableNetworkIsolation"] is True
        assert definition["OutputDataConfig"]["KmsKeyId"] == KEY
        # the default ml.g4dn.xlarge keeps its storage on local NVMe, encrypted by its hardware: AWS refuses a volume key
        assert "VolumeKmsKeyId" not in definition["ResourceConfig"]
    models = [params for op, params in calls if op == "CreateModel"]
    assert len(models) == 2 and all(m["VpcConfig"] == vpc and m["EnableNetworkIsolation"] is True for m in models)
    assert _call(calls, "CreateEndpointConfig")["KmsKeyId"] == KEY
    sent = _call(calls, "CreateTransformJob")
    assert sent["TransformOutput"]["KmsKeyId"] == KEY and sent["TransformResources"]["VolumeKmsKeyId"] == KEY
    for op, params in calls:
        if op in apimodel.CHECKED:
            assert apimodel.problems(op, params) == [], op


def test_delete_skips_what_is_gone_but_stops_at_any_other_refusal(aws, config):
    """A ValidationException "Could not find ..." is a resource already gone; any other (here: an endpoint that cannot
    be deleted while it updates, answered in AWS's place by a before-call handler) is an error, not a deletion."""
    session, _ = _session_capturing(config)
    Updates(session.sagemaker_client)
    model = _deploy(config, session)

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ValidationException",
                                     "Message": f"Cannot delete endpoint {ENDPOINT} while it is Updating"}},
                          "DeleteEndpoint")

    aws.meta.events.register("before-call.sagemaker.DeleteEndpoint", refuse)
    with pytest.raises(ClientError, match="while it is Updating"):
        jobs.delete_endpoint(aws, ENDPOINT)
    assert resources(aws)["endpoints"] == {ENDPOINT: model}  # nothing reported deleted, nothing behind it removed
    aws.meta.events.unregister("before-call.sagemaker.DeleteEndpoint", refuse)
    assert endpoints.remove(aws, [("model", "dogbreed-never-made")]) == []  # moto's "Could not find model": gone
    assert sorted(jobs.delete_endpoint(aws, ENDPOINT)) == sorted([f"endpoint {ENDPOINT}", f"endpoint config {model}",
                                                                  f"model {model}"])

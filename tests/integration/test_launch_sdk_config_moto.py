"""The SageMaker SDK's config (an admin's file and a user's, merged) against moto: its VPC, network isolation and
KMS keys are the defaults of every Create request the launchers send, dogbreed.toml wins where it sets one, and
its values are checked like the toml's. Also: volume keys on instance types with local NVMe storage."""

from __future__ import annotations

import pytest

from dogbreed.launch import jobs, transform
from dogbreed.launch.validate import ValidationError
from tests.integration.conftest import REGION
from tests.integration.test_launch_moto import ROLE, SERVE_IMAGE, _call, _session_capturing

MODEL_DATA = "s3://dogbreed-test/runs/models/job/output/model.tar.gz"
ADMIN_SUBNET, ADMIN_GROUP = "subnet-0aaaaaaaaaaaaaaa1", "sg-0aaaaaaaaaaaaaaa1"
ADMIN_KEY = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
USER_KEY = f"arn:aws:kms:{REGION}:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab"  # a Multi-Region key
ADMIN_VPC = {"Subnets": [ADMIN_SUBNET], "SecurityGroupIds": [ADMIN_GROUP]}

ADMIN = f"""SchemaVersion: '1.0'
SageMaker:
  TrainingJob:
    VpcConfig: {{Subnets: [{ADMIN_SUBNET}], SecurityGroupIds: [{ADMIN_GROUP}]}}
    EnableNetworkIsolation: true
    OutputDataConfig: {{KmsKeyId: alias/admin-output}}
    ResourceConfig: {{VolumeKmsKeyId: '{{volume}}'}}
  Model:
    VpcConfig: {{Subnets: [{ADMIN_SUBNET}], SecurityGroupIds: [{ADMIN_GROUP}]}}
    EnableNetworkIsolation: true
"""
USER = f"""SchemaVersion: '1.0'
SageMaker:
  EndpointConfig:
    KmsKeyId: '{USER_KEY}'
  TransformJob:
    TransformOutput: {{KmsKeyId: alias/user-output}}
    TransformResources: {{VolumeKmsKeyId: '{USER_KEY}'}}
"""


@pytest.fixture
def sdk_files(tmp_path, monkeypatch):
    """Write the admin's and the user's SageMaker config files where the SDK's overrides point; returns a writer."""
    def write(volume: str = ADMIN_KEY):
        admin, user = tmp_path / "admin.yaml", tmp_path / "user.yaml"
        admin.write_text(ADMIN.replace("{volume}", volume))
        user.write_text(USER)
        monkeypatch.setenv("SAGEMAKER_ADMIN_CONFIG_OVERRIDE", str(admin))
        monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(user))

    write()
    return write


def _config(tmp_path, extra: str = ""):
    """A dogbreed.toml with training on ml.m5.xlarge (EBS storage) and no ImageNet download; ``extra``: more tables."""
    from dogbreed.launch.config import load

    path = tmp_path / "dogbreed.toml"
    path.write_text(f'region = "{REGION}"\nrole = "{ROLE}"\nbucket = "dogbreed-test"\nprefix = "runs"\n'
                    f'serve_image = "{SERVE_IMAGE}"\ntrain_image = "{SERVE_IMAGE.replace("serve", "train")}"\n'
                    '[wait]\npoll_s = 0\n[training]\ninstance_type = "ml.m5.xlarge"\n'
                    '[hyperparameters]\npretrained-weights = "none"\n' + extra)
    return load(str(path))


def _launch_all(config):
    """Training, tuning, a deploy and a transform through the launchers; every request as botocore sent it."""
    session, calls = _session_capturing(config)
    jobs.start_training(config, session, "dogbreed-train-sdk")
    jobs.start_tuning(config, session, "dogbreed-hpo-sdk")
    jobs.deploy(config, jobs.build_model(config, session, MODEL_DATA), "dogbreed-sdk", wait=False)
    transform.start(config, transform.plan(config, session, MODEL_DATA, "s3://dogbreed-test/photos/",
                                           "s3://dogbreed-test/answers/"))
    return calls


def _training_definitions(calls):
    return [_call(calls, "CreateTrainingJob"), _call(calls, "CreateHyperParameterTuningJob")["TrainingJobDefinition"]]


def test_the_sdk_configs_reach_every_create_request(aws, tmp_path, sdk_files):
    calls = _launch_all(_config(tmp_path))
    for definition in _training_definitions(calls):
        assert definition["VpcConfig"] == ADMIN_VPC and definition["EnableNetworkIsolation"] is True
        assert definition["OutputDataConfig"]["KmsKeyId"] == "alias/admin-output"
        assert definition["ResourceConfig"]["VolumeKmsKeyId"] == ADMIN_KEY
    models = [params for op, params in calls if op == "CreateModel"]
    assert len(models) == 2 and all(m["VpcConfig"] == ADMIN_VPC and m["EnableNetworkIsolation"] is True for m in models)
    assert _call(calls, "CreateEndpointConfig")["KmsKeyId"] == USER_KEY  # the user's file, merged with the admin's
    sent = _call(calls, "CreateTransformJob")
    assert sent["TransformOutput"]["KmsKeyId"] == "alias/user-output"
    assert sent["TransformResources"]["VolumeKmsKeyId"] == USER_KEY


def test_dogbreed_toml_wins_where_it_sets_a_value(aws, tmp_path, sdk_files):
    toml_vpc = {"Subnets": ["subnet-0bbbbbbbbbbbbbbb2"], "SecurityGroupIds": ["sg-0bbbbbbbbbbbbbbb2"]}
    extra = ('[vpc]\nsubnets = ["subnet-0bbbbbbbbbbbbbbb2"]\nsecurity_group_ids = ["sg-0bbbbbbbbbbbbbbb2"]\n'
             '[kms_key]\noutput = "alias/toml-output"\n')
    config = _config(tmp_path, extra)
    config.set_path("network_isolation", False)  # an explicit false wins over the admin's true
    calls = _launch_all(config)
    for definition in _training_definitions(calls):
        assert definition["VpcConfig"] == toml_vpc and definition["EnableNetworkIsolation"] is False
        assert definition["OutputDataConfig"]["KmsKeyId"] == "alias/toml-output"
        assert definition["ResourceConfig"]["VolumeKmsKeyId"] == ADMIN_KEY  # not set in the toml: the admin's
    models = [params for op, params in calls if op == "CreateModel"]
    assert all(m["VpcConfig"] == toml_vpc and "EnableNetworkIsolation" not in m for m in models)
    assert _call(calls, "CreateEndpointConfig")["KmsKeyId"] == USER_KEY
    sent = _call(calls, "CreateTransformJob")
    assert sent["TransformOutput"]["KmsKeyId"] == "alias/toml-output"
    assert sent["TransformResources"]["VolumeKmsKeyId"] == USER_KEY


def test_a_key_in_the_sdk_config_is_checked_like_the_tomls(aws, tmp_path, sdk_files):
    sdk_files(volume="alias/admin-volume")  # training's VolumeKmsKeyId takes a key ID or key ARN only
    config = _config(tmp_path)
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match=r"SageMaker\.TrainingJob\.ResourceConfig\.VolumeKmsKeyId in the SageMaker "
                                              r"config 'alias/admin-volume' is not a KMS key ID or key ARN"):
        jobs.start_training(config, session, "dogbreed-train-alias")
    assert calls == [] and aws.list_training_jobs()["TrainingJobSummaries"] == []


def test_serverless_refuses_the_admins_vpc_in_one_line(aws, tmp_path, sdk_files):
    config = _config(tmp_path)
    config.set_path("serving.serverless", True)
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match=r"serverless endpoints take no VPC or network isolation .*"
                                              r"SageMaker\.Model\.VpcConfig in the SageMaker config") as refused:
        jobs.deploy(config, jobs.build_model(config, session, MODEL_DATA), "dogbreed-sdk-serverless", wait=False)
    assert "\n" not in str(refused.value)
    assert calls == [] and aws.list_models()["Models"] == []


def test_the_admins_network_isolation_refuses_the_imagenet_download(aws, tmp_path, sdk_files):
    config = _config(tmp_path)
    config.set_path("hyperparameters.pretrained-weights", "imagenet")
    session, calls = _session_capturing(config)
    with pytest.raises(ValidationError, match=r"SageMaker\.TrainingJob\.EnableNetworkIsolation in the SageMaker config: "
                                              r"the training container cannot download the ImageNet weights"):
        jobs.start_training(config, session, "dogbreed-train-isolated")
    assert calls == []
    # the weights as a 'pretrained' channel need no network
    jobs.start_training(config, session, "dogbreed-train-isolated", pretrained_uri="s3://dogbreed-test/weights/r50.pth")
    assert _call(calls, "CreateTrainingJob")["EnableNetworkIsolation"] is True


def test_no_volume_key_on_instance_types_with_local_storage(aws, tmp_path, capsys):
    """CreateTrainingJob, CreateEndpointConfig and CreateTransformJob refuse a volume key on types with local NVMe
    storage (their hardware encrypts it), such as the default ml.g4dn.xlarge: it is left out, with a one-line
    notice; the output keys still go."""
    config = _config(tmp_path)
    config.set_path("kms_key", ADMIN_KEY)
    for name in ("training.instance_type", "serving.instance_type", "transform.instance_type"):
        config.set_path(name, "ml.g4dn.xlarge")
    calls = _launch_all(config)
    for definition in _training_definitions(calls):
        assert "VolumeKmsKeyId" not in definition["ResourceConfig"]
        assert definition["OutputDataConfig"]["KmsKeyId"] == ADMIN_KEY
    assert "KmsKeyId" not in _call(calls, "CreateEndpointConfig")
    sent = _call(calls, "CreateTransformJob")
    assert "VolumeKmsKeyId" not in sent["TransformResources"] and sent["TransformOutput"]["KmsKeyId"] == ADMIN_KEY
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dogbreed: notice: ")]
    assert len(notices) == 4  # training, tuning, the endpoint config, the transform job
    assert all("ml.g4dn.xlarge" in line and "local NVMe" in line for line in notices)


def test_a_volume_key_goes_where_the_storage_is_ebs(aws, tmp_path, capsys):
    config = _config(tmp_path)  # training on ml.m5.xlarge, serving ml.m5.large, transform ml.m5.xlarge: EBS only
    config.set_path("kms_key", ADMIN_KEY)
    calls = _launch_all(config)
    assert all(d["ResourceConfig"]["VolumeKmsKeyId"] == ADMIN_KEY for d in _training_definitions(calls))
    assert _call(calls, "CreateEndpointConfig")["KmsKeyId"] == ADMIN_KEY
    assert _call(calls, "CreateTransformJob")["TransformResources"]["VolumeKmsKeyId"] == ADMIN_KEY
    assert "dogbreed: notice:" not in capsys.readouterr().err

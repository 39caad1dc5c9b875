"""launch/instances.py: the AMI table against botocore's service model, the per-family check, the serve image choice,
the largest batch a GPU holds."""

from __future__ import annotations

import re

import pytest

from dogbreed.launch import instances
from dogbreed.launch.config import Config


def _shape(name: str):
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker").shape_for(name)


def test_every_inference_ami_in_the_table_is_one_botocore_offers():
    offered = set(_shape("ProductionVariantInferenceAmiVersion").enum)
    used = {f.inference_ami for f in instances.GPU_FAMILIES.values() if f.inference_ami}
    assert used and used <= offered, used - offered


def test_every_transform_ami_in_the_table_is_one_the_api_documents():
    documented = set(re.findall(r"al2-ami-sagemaker-batch-gpu-\d+",
                                _shape("TransformResources").members["TransformAmiVersion"].documentation))
    used = {f.transform_ami for f in instances.GPU_FAMILIES.values() if f.transform_ami}
    assert used and used <= documented, used - documented


def test_every_batch_transform_gpu_family_is_in_the_table():
    families = {t.split(".")[1] for t in _shape("TransformInstanceType").enum}
    gpu = {f for f in families if re.fullmatch(r"[gp]\d+[a-z]*", f)}
    assert gpu <= set(instances.GPU_FAMILIES), gpu - set(instances.GPU_FAMILIES)


@pytest.mark.parametrize("instance,ami,field,needle", [
    ("ml.g4dn.xlarge", instances.INFERENCE_AMI, "InferenceAmiVersion", None),
    ("ml.g5.2xlarge", instances.TRANSFORM_AMI, "TransformAmiVersion", None),
    ("ml.g4dn.xlarge", None, "InferenceAmiVersion", "needs InferenceAmiVersion al2023-ami-sagemaker-inference-gpu-4-1"),
    ("ml.g5.xlarge", "al2-ami-sagemaker-inference-gpu-2", "InferenceAmiVersion", "not 'al2-ami-sagemaker-inference-gpu-2'"),
    ("ml.m5.large", instances.INFERENCE_AMI, "InferenceAmiVersion", "has no GPU: send no InferenceAmiVersion"),
    ("ml.m5.large", None, "InferenceAmiVersion", None),
    ("ml.p3.2xlarge", None, "InferenceAmiVersion", "no kernels for it"),
    ("ml.g9x.xlarge", None, "TransformAmiVersion", "a GPU family dogbreed has no TransformAmiVersion for"),
])
def test_the_ami_is_checked_per_family(instance, ami, field, needle):
    problem = instances.ami_problem(instance, ami, field)
    if needle is None:
        assert problem is None
    else:
        assert problem and needle in problem and "\n" not in problem


def test_gpu_types_get_the_field_and_cpu_types_none():
    assert instances.inference_ami("ml.g6e.xlarge") == {"InferenceAmiVersion": instances.INFERENCE_AMI}
    assert instances.transform_ami("ml.g4dn.xlarge") == {"TransformAmiVersion": instances.TRANSFORM_AMI}
    assert instances.inference_ami("ml.m5.large") == {} and instances.transform_ami("ml.c5.xlarge") == {}
    assert instances.inference_ami(None) == {}


def _config(**values) -> Config:
    config = Config()
    for key, value in {"serve_image": "cuda-image", "serve_image_cpu": "cpu-image", **values}.items():
        config.set_path(key, value)
    return config


@pytest.mark.parametrize("values,instance,serverless,image", [
    ({}, "ml.g5.xlarge", False, "cuda-image"),
    ({}, "ml.m5.large", False, "cpu-image"),
    ({}, "ml.g5.xlarge", True, "cpu-image"),  # serverless has no GPU whatever the instance type says
    ({"serving.image": "cuda"}, "ml.m5.large", False, "cuda-image"),
    ({"serving.image": "cpu"}, "ml.g5.xlarge", False, "cpu-image"),
    ({"serve_image_cpu": None}, "ml.m5.large", False, "cuda-image"),
])
def test_the_serve_image_follows_the_hardware_and_the_config_overrides(values, instance, serverless, image):
    assert instances.serve_image(_config(**values), instance, serverless)[0] == image


def test_the_largest_batch_follows_the_gpu_memory():
    assert instances.largest_batch("resnet50", "ml.g4dn.xlarge") == 256  # a T4, 16 GB
    assert instances.largest_batch("resnet50", "ml.p4de.24xlarge") == 1024  # an A100, 80 GB
    assert instances.largest_batch("resnet50", "ml.m5.large") is None  # no GPU: nothing to check
    assert instances.largest_batch("some-new-net", "ml.g4dn.xlarge") is None
    assert instances.largest_batch("resnet50", "ml.g4dn.xlarge", 320) == 128  # twice the pixels: half the batch
    assert instances.largest_batch("resnet50", "ml.g4dn.xlarge", 112) == 1024


def test_families_without_batch_transform_get_no_transform_ami_and_say_so():
    import botocore.session

    offered = botocore.session.get_session().get_service_model("sagemaker").shape_for("TransformInstanceType").enum
    for family, known in instances.GPU_FAMILIES.items():
        has_transform = any(kind.split(".")[1] == family for kind in offered)
        assert (known.transform_ami is not None) == (has_transform and not known.unsupported), family
    assert instances.transform_ami("ml.p5.48xlarge") == {}
    assert "offers no TransformAmiVersion" in instances.ami_problem("ml.p5.48xlarge", None, "TransformAmiVersion")

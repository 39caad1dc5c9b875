"""launch/apimodel.py: a request walked against botocore's SageMaker service model finds what botocore's own
parameter validation lets through (enums, maximums, patterns) as well as what it catches."""

from __future__ import annotations

from dogbreed.launch import apimodel

GOOD_CONFIG = {"EndpointConfigName": "dogbreed-model-1", "ProductionVariants": [
    {"VariantName": "AllTraffic", "ModelName": "dogbreed-model-1", "InstanceType": "ml.g5.xlarge",
     "InitialInstanceCount": 1, "InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1"}],
    "Tags": [{"Key": "dogbreed:endpoint", "Value": "dogbreed"}]}


def _with(variant: dict) -> dict:
    return {**GOOD_CONFIG, "ProductionVariants": [{**GOOD_CONFIG["ProductionVariants"][0], **variant}]}


def test_a_good_request_has_no_problem():
    assert apimodel.problems("CreateEndpointConfig", GOOD_CONFIG) == []


def test_an_enum_value_the_api_lacks_is_named_with_its_path():
    found = apimodel.problems("CreateEndpointConfig", _with({"InferenceAmiVersion": "al2-ami-sagemaker-batch-gpu-535"}))
    assert found == ["CreateEndpointConfig.ProductionVariants[0].InferenceAmiVersion: 'al2-ami-sagemaker-batch-gpu-535' "
                     "is not one of the API's values (" + ", ".join(
                         apimodel.service_model().shape_for("ProductionVariantInferenceAmiVersion").enum) + ")"]


def test_lengths_patterns_ranges_members_and_required_ones():
    found = apimodel.problems("CreateEndpointConfig", {
        "EndpointConfigName": "x" * 64, "Surprise": 1,
        "ProductionVariants": [{"VariantName": "bad name", "ModelName": "m", "InitialInstanceCount": 0}]})
    text = "\n".join(found)
    assert "CreateEndpointConfig.EndpointConfigName: 64 characters; the API takes at most 63" in text
    assert "CreateEndpointConfig.Surprise: no such member in the API" in text
    assert "CreateEndpointConfig.ProductionVariants[0].VariantName: 'bad name' does not match the API's pattern" in text
    assert "ProductionVariants[0].InitialInstanceCount: 0; the API takes at least 1" in text
    missing = apimodel.problems("CreateEndpointConfig", {"ProductionVariants": []})
    assert "CreateEndpointConfig.EndpointConfigName: required" in missing
    assert any("ProductionVariants: 0 items; the API takes at least 1" in p for p in missing)


def test_types_are_checked_and_a_pattern_python_cannot_read_is_left_to_aws():
    found = apimodel.problems("CreateEndpointConfig", _with({"InitialInstanceCount": "1"}))
    assert found == ["CreateEndpointConfig.ProductionVariants[0].InitialInstanceCount: a whole number, not '1'"]
    # Tag keys use Java's \p{L} classes: not compiled here, so any key of a legal length passes
    assert apimodel._pattern(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$") is None
    assert apimodel.problems("CreateEndpointConfig", {**GOOD_CONFIG, "Tags": [{"Key": "ключ", "Value": "v"}]}) == []


def test_the_runtime_service_is_checked_too():
    request = {"EndpointName": "dogbreed", "InputLocation": "s3://b/k.jpg", "ContentType": "image/jpeg"}
    assert apimodel.problems("InvokeEndpointAsync", request, service="sagemaker-runtime") == []
    found = apimodel.problems("InvokeEndpointAsync", {**request, "InvocationTimeoutSeconds": 7200},
                              service="sagemaker-runtime")
    assert found == ["InvokeEndpointAsync.InvocationTimeoutSeconds: 7200; the API takes at most 3600"]

"""iam/*.json: what the policies grant, scoped as they should be, and in step with launch/validate.py."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from dogbreed.launch import validate

IAM = Path(__file__).resolve().parents[2] / "iam"
LOG_GROUPS = "arn:aws:logs:*:*:log-group:/aws/sagemaker/*"


def _load(name: str) -> dict:
    return json.loads((IAM / name).read_text())


def _listed(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def _statements(name: str, action_glob: str) -> list[dict]:
    return [s for s in _load(name)["Statement"] if any(fnmatch.fnmatchcase(a, action_glob) for a in _listed(s["Action"]))]


@pytest.mark.parametrize("name", sorted(p.name for p in IAM.glob("*.json")))
def test_every_policy_is_valid_json_of_the_current_version(name):
    document = _load(name)
    assert document["Version"] == "2012-10-17"
    assert all(s["Effect"] in ("Allow", "Deny") for s in document["Statement"])


def test_the_job_role_writes_logs_only_to_sagemaker_log_groups():
    statements = _statements("dogbreed-policy.json", "logs:*")
    assert statements, "the job's role must be able to write its logs"
    for statement in statements:
        assert _listed(statement["Resource"]) == [LOG_GROUPS], statement
        assert all(a.startswith("logs:") for a in _listed(statement["Action"])), "logs and other services share a statement"
    granted = {a for s in statements for a in _listed(s["Action"])}
    assert {"logs:CreateLogStream", "logs:PutLogEvents"} <= granted


def test_no_policy_grants_logs_on_every_resource():
    for name in ("dogbreed-policy.json", "dogbreed-launcher-policy.json"):
        for statement in _statements(name, "logs:*"):
            for resource in _listed(statement["Resource"]):
                assert resource != "*" and ":log-group:/aws/sagemaker/" in resource, (name, statement)


def test_put_metric_data_only_into_sagemaker_namespaces():
    statements = _statements("dogbreed-policy.json", "cloudwatch:PutMetricData")
    assert statements
    for statement in statements:
        assert _listed(statement["Action"]) == ["cloudwatch:PutMetricData"]
        condition = statement["Condition"]["StringLike"]["cloudwatch:namespace"]
        namespaces = _listed(condition)
        assert namespaces and all(n.startswith("/aws/sagemaker/") for n in namespaces), namespaces
        # the namespaces SageMaker publishes training and endpoint metrics to are inside it
        for used in ("/aws/sagemaker/TrainingJobs", "/aws/sagemaker/Endpoints"):
            assert any(fnmatch.fnmatchcase(used, n) for n in namespaces)
        assert not any(fnmatch.fnmatchcase("MyApp/Custom", n) for n in namespaces)


def test_the_trust_policy_names_the_source_account():
    statements = _statements("dogbreed-trust.json", "sts:AssumeRole")
    assert statements
    for statement in statements:
        assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "ACCOUNT"


def test_validation_reads_the_launcher_policy_lines_it_names():
    lines = (IAM / "dogbreed-launcher-policy.json").read_text().splitlines()
    grants = validate.grants()
    for key, default in (("sagemaker", validate.DEFAULT_SAGEMAKER_RESOURCE), ("passrole", validate.DEFAULT_PASSROLE_RESOURCE)):
        assert [g.resource for g in grants[key]] == [default], "validate.py's defaults differ from the policy file"
        number = int(re.search(r"line (\d+)$", grants[key][0].where).group(1))
        assert json.dumps(default) in lines[number - 1]


def test_validation_name_patterns_match_the_policy_resources():
    """A name validate.py lets through is one the policy grants, and one it refuses is one the policy does not."""
    (statement,) = _statements("dogbreed-launcher-policy.json", "sagemaker:CreateTrainingJob")
    resources = _listed(statement["Resource"])

    def iam_allows(arn: str) -> bool:  # IAM globbing: * and ? only; REGION and ACCOUNT are placeholders
        patterns = [r.replace("REGION", "eu-west-1").replace("ACCOUNT", "123456789012") for r in resources]
        return any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns)

    for kind in validate.NAME_KINDS:
        for name, ok in (("dogbreed-x", True), ("dogbreed", True), ("DogBreed-X", True), ("mnist-x", False),
                         ("x-dogbreed", False)):
            arn = f"arn:aws:sagemaker:eu-west-1:123456789012:{kind}/{name.lower()}"
            assert iam_allows(arn) is ok, arn
            assert (validate.name_problem(kind, name) is None) is ok, (kind, name)
    (passrole,) = _statements("dogbreed-launcher-policy.json", "iam:PassRole")
    role = _listed(passrole["Resource"])[0].replace("ACCOUNT", "123456789012")
    assert validate.role_problem(role) is None
    assert validate.role_problem(role + "-other") is not None


def test_the_launcher_policy_grants_what_the_launchers_call():
    granted = {a for s in _load("dogbreed-launcher-policy.json")["Statement"] for a in _listed(s["Action"])}
    called = {
        "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
        "sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
        "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint", "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel",
        "sagemaker:InvokeEndpoint", "iam:PassRole",
        "logs:GetLogEvents", "logs:DescribeLogStreams",  # jobs.training_log_printer while `dogbreed train` waits
    }
    assert called <= granted, called - granted


def test_the_job_role_pulls_every_image_the_launchers_pick():
    """deploy and transform run dogbreed-serve-cpu on CPU instances and serverless: the role must pull it too."""
    resources = {r for s in _statements("dogbreed-policy.json", "ecr:BatchGetImage") for r in _listed(s["Resource"])}
    for repo in ("dogbreed-train", "dogbreed-serve", "dogbreed-serve-cpu"):
        assert f"arn:aws:ecr:REGION:ACCOUNT:repository/{repo}" in resources


def test_the_launcher_may_redeploy_transform_and_invoke_async():
    granted = {a for s in _load("dogbreed-launcher-policy.json")["Statement"] for a in _listed(s["Action"])}
    assert {"sagemaker:UpdateEndpoint", "sagemaker:CreateTransformJob", "sagemaker:DescribeTransformJob",
            "sagemaker:InvokeEndpointAsync", "sagemaker:ListModels", "sagemaker:ListEndpointConfigs"} <= granted

"""One region order for every verb (launch/config.region_and_source): the config, AWS_REGION, AWS_DEFAULT_REGION,
then the AWS profile's; and the instance types whose local storage takes no volume KMS key."""

from __future__ import annotations

import pytest

from dogbreed.errors import ConfigError
from dogbreed.launch import instances
from dogbreed.launch.config import load, region_and_source


@pytest.fixture
def no_region(tmp_path, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "DOGBREED_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    profile = tmp_path / "aws-config"
    profile.write_text("[default]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(profile))
    monkeypatch.chdir(tmp_path)  # no ./dogbreed.toml
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/dogbreed.toml
    return tmp_path


def test_the_order_is_config_then_aws_region_then_aws_default_region_then_profile(no_region, monkeypatch):
    toml = no_region / "elsewhere.toml"
    toml.write_text('region = "eu-west-1"\n')
    monkeypatch.setenv("AWS_REGION", "us-east-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    assert region_and_source(load(str(toml))) == ("eu-west-1", str(toml))
    assert region_and_source(load(str(toml), {"region": "eu-north-1"})) == ("eu-north-1", "--region")
    assert region_and_source(load()) == ("us-east-2", "AWS_REGION")
    monkeypatch.delenv("AWS_REGION")
    assert region_and_source(load()) == ("us-west-2", "AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert region_and_source(load()) == ("ap-south-1", "the AWS profile")


def test_no_region_anywhere_says_where_to_set_one(no_region):
    (no_region / "aws-config").write_text("[default]\n")
    with pytest.raises(ConfigError, match="no AWS region: set region in dogbreed.toml"):
        region_and_source(load())


@pytest.mark.parametrize("instance_type,local", [
    ("ml.g4dn.xlarge", True), ("ml.g5.2xlarge", True), ("ml.g6e.xlarge", True), ("ml.p3dn.24xlarge", True),
    ("ml.p4d.24xlarge", True), ("ml.p5e.48xlarge", True), ("ml.trn1.32xlarge", True), ("ml.m5d.large", True),
    ("ml.c5d.xlarge", True), ("ml.r5d.large", True), ("ml.m6id.large", True),
    ("ml.m5.large", False), ("ml.c5.xlarge", False), ("ml.p3.2xlarge", False), ("ml.inf2.xlarge", False),
    ("ml.c5n.xlarge", False), (None, False),
])
def test_instance_types_with_local_storage(instance_type, local):
    assert instances.has_local_storage(instance_type) is local

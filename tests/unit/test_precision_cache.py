"""The engine's measured set-up is kept per device, CPU model, torch, model and threads, and read back whole."""

from __future__ import annotations

import json

from dogbreed.serving import precision_cache as cache


def test_a_setup_is_read_back_for_the_same_key_only(tmp_path):
    path = tmp_path / "state" / "precision.json"
    key = cache.cache_key("2.9.1", "resnet50", 224, 2)
    assert cache.cpu_model() in key and "torch 2.9.1" in key and key.startswith("cpu")
    assert cache.cached_setup(path, key) is None  # nothing measured yet
    cache.remember_setup(path, key, "bf16", True)
    cache.remember_setup(path, cache.cache_key("2.9.1", "resnet50", 224, 4), "fp32", False)
    assert cache.cached_setup(path, key) == ("bf16", True)
    assert cache.cached_setup(path, cache.cache_key("2.10.0", "resnet50", 224, 2)) is None  # another torch
    assert cache.cached_setup(path, cache.cache_key("2.9.1", "resnet50", 224, 2, device="cuda:0")) is None  # another device
    assert cache.cached_setup(path, cache.cache_key("2.9.1", "resnet50", 224, 4)) == ("fp32", False)  # the layout too


def test_a_damaged_strange_or_precision_only_cache_means_measure_again(tmp_path):
    path = tmp_path / "precision.json"
    path.write_text("{not json")
    assert cache.cached_setup(path, "k") is None
    path.write_text('{"k": {"precision": "fp64", "channels_last": true}}')
    assert cache.cached_setup(path, "k") is None
    path.write_text('{"k": "fp32"}')  # an older engine's entry: no layout
    assert cache.cached_setup(path, "k") is None
    path.write_text('["k"]')
    assert cache.cached_setup(path, "k") is None
    assert cache.cached_setup(None, "k") is None
    cache.remember_setup(path, "k", "fp32", True)  # replaces the damaged file
    assert cache.cached_setup(path, "k") == ("fp32", True)
    assert json.loads(path.read_text()) == {"k": {"precision": "fp32", "channels_last": True}}

"""The engine's measured precision is kept per CPU model, torch, model and threads, and read back."""

from __future__ import annotations

from dogbreed.serving import precision_cache as cache


def test_a_precision_is_read_back_for_the_same_key_only(tmp_path):
    path = tmp_path / "state" / "precision.json"
    key = cache.cache_key("2.9.1", "resnet50", 224, 2)
    assert cache.cpu_model() in key and "torch 2.9.1" in key
    assert cache.cached_precision(path, key) is None  # nothing measured yet
    cache.remember_precision(path, key, "bf16")
    cache.remember_precision(path, cache.cache_key("2.9.1", "resnet50", 224, 4), "fp32")
    assert cache.cached_precision(path, key) == "bf16"
    assert cache.cached_precision(path, cache.cache_key("2.10.0", "resnet50", 224, 2)) is None  # another torch
    assert cache.cached_precision(path, cache.cache_key("2.9.1", "resnet50", 224, 4)) == "fp32"


def test_a_damaged_or_strange_cache_means_measure_again(tmp_path):
    path = tmp_path / "precision.json"
    path.write_text("{not json")
    assert cache.cached_precision(path, "k") is None
    path.write_text('{"k": "fp64"}')
    assert cache.cached_precision(path, "k") is None
    assert cache.cached_precision(None, "k") is None
    cache.remember_precision(path, "k", "fp32")  # replaces the damaged file
    assert cache.cached_precision(path, "k") == "fp32"

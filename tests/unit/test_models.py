import pickle

import pytest
import torch

from dogbreed import models
from dogbreed.presets import Preprocessing


def test_torchvision_and_timm_models_get_a_new_head():
    resnet = models.build("resnet18", 7)
    assert resnet.fc.out_features == 7
    lite = models.build("tf_efficientnet_lite0", 4)
    assert lite.get_classifier().out_features == 4


def test_unknown_model_is_refused():
    with pytest.raises(models.ModelError, match="unknown model"):
        models.check_arch("resnet5000")


@pytest.mark.parametrize("layers,expected_prefixes", [
    ("head", {"fc"}),
    ("last", {"layer4", "fc"}),
])
def test_what_is_trained(layers, expected_prefixes):
    model = models.build("resnet18", 3)
    trainable, total = models.set_trainable(model, layers)
    prefixes = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert prefixes == expected_prefixes
    assert 0 < trainable < total


def test_last_stage_of_a_timm_model():
    model = models.build("tf_efficientnet_lite0", 3)
    models.set_trainable(model, "last")
    trained = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
               for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"blocks.6", "conv_head", "bn2", "classifier"}


def test_backbone_weights_load_and_a_foreign_file_is_refused(tmp_path):
    source = models.build("resnet18", 1000)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    target = models.build("resnet18", 5)
    left_out = models.load_backbone_weights(target, path)
    assert set(left_out) == {"fc.weight", "fc.bias"}
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    other = tmp_path / "other.pth"
    torch.save(models.build("resnet34", 1000).state_dict(), other)
    with pytest.raises(models.ModelError, match="does not fit"):
        models.load_backbone_weights(models.build("resnet18", 5), other)


class Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/dogbreed-pwned",))


def test_pickle_payload_in_pretrained_weights_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv1.weight": Payload()}))
    with pytest.raises(models.ModelError, match="cannot read"):
        models.load_backbone_weights(models.build("resnet18", 2), path)


def test_artifacts_round_trip(tmp_path):
    model = models.build("resnet18", 3).eval()
    prep = Preprocessing(64, 73)
    models.save_artifacts(tmp_path, model, "resnet18", ["A", "B", "C"], prep)
    loaded, meta, prep2 = models.load_artifacts(tmp_path)
    assert meta["class_names"] == ["A", "B", "C"] and prep2 == prep
    assert {"torch", "torchvision", "dogbreed"} <= set(meta["versions"])
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), loaded(x), atol=1e-5)


def test_default_preprocessing_follows_the_model():
    assert models.default_preprocessing("resnet50") == Preprocessing(224, 256)
    lite = models.default_preprocessing("tf_efficientnet_lite0")
    assert (lite.input_size, lite.resize, lite.mean, lite.interpolation) == (224, 256, (0.5, 0.5, 0.5), "bicubic")


def test_a_distilled_models_first_classifier_is_its_head():
    """timm's distilled models name two classifiers in a tuple: the head's lr groups must still find the head."""
    import timm

    model = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=3)
    assert isinstance(model.pretrained_cfg["classifier"], tuple)
    head = models.head_name(model) + "."
    assert head == "head." and any(name.startswith(head) for name, _ in model.named_parameters())

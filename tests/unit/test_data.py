import io
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from dogbreed import data
from dogbreed.presets import Preprocessing


def _tree(root: Path, splits=("train", "valid", "test"), classes=("001.Affenpinscher", "002.Alaskan_malamute"), n=4):
    for split in splits:
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (i * 20, 100, 50)).save(folder / f"img_{i}.jpg")
    return root


def test_display_names_from_folders():
    assert data.display_name("001.Affenpinscher") == "Affenpinscher"
    assert data.display_name("005.Alaskan_malamute") == "Alaskan malamute"


def test_three_channels_or_one_channel_holding_the_splits(tmp_path):
    root = _tree(tmp_path / "d")
    one = data.find_splits({"train": root})
    three = data.find_splits({"train": root / "train", "valid": root / "valid", "test": root / "test"})
    assert one == three == {s: root / s for s in data.SPLITS}


def test_missing_valid_split_is_a_readable_error(tmp_path):
    root = _tree(tmp_path / "d", splits=("train", "test"))
    with pytest.raises(data.DataError, match="missing 'valid' split"):
        data.find_splits({"train": root})


def test_empty_class_fails_clearly(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "train" / "003.Empty").mkdir()
    with pytest.raises(data.DataError, match="003.Empty"):
        data.load_splits({"train": root})


def test_stratified_fraction_is_per_class_and_seeded():
    samples = [(Path(f"c{c}/{i}.jpg"), c) for c in range(3) for i in range(50)]
    a = data.stratified_fraction(samples, 0.1, seed=1)
    b = data.stratified_fraction(samples, 0.1, seed=1)
    c = data.stratified_fraction(samples, 0.1, seed=2)
    assert a == b and a != c
    assert Counter(label for _, label in a) == {0: 5, 1: 5, 2: 5}
    tiny = data.stratified_fraction(samples[:2] + samples[50:52], 0.1, seed=0)
    assert Counter(label for _, label in tiny) == {0: 1, 1: 1}  # never drops a class


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = _tree(tmp_path / "d", n=3)
    bad = root / "train" / "001.Affenpinscher" / "broken.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "JPEG")
    bad.write_bytes(buffer.getvalue()[:40])  # a truncated JPEG
    (root / "train" / "002.Alaskan_malamute" / "text.jpg").write_text("not an image")
    splits = data.load_splits({"train": root})
    dataset = data.ImageSamples(splits.samples["train"], Preprocessing(32, 36).eval_transform())
    loader = data.make_loader(dataset, 4, data.ShardSampler(len(dataset)), num_workers=0)
    images, unreadable = 0, []
    for _batch, labels, lost in loader:
        images += len(labels)
        unreadable.extend(lost)
    assert images == 6
    assert sorted(dataset.samples[i][0].name for i in unreadable) == ["broken.jpg", "text.jpg"]


def test_shard_sampler_covers_every_index_once():
    shards = [[index for index, _ in data.ShardSampler(11, rank, 3, shuffle=True, seed=5)] for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_padded_shards_give_every_rank_the_same_number_of_samples():
    # 11 images on 2 ranks: DistributedSampler-style padding repeats one, so both ranks take 6 samples
    shards = [[index for index, _ in data.ShardSampler(11, rank, 2, shuffle=True, seed=3, pad=True)] for rank in range(2)]
    assert [len(shard) for shard in shards] == [6, 6]
    assert set(sum(shards, [])) == set(range(11))
    assert len(data.ShardSampler(11, 1, 2, pad=True)) == 6 and len(data.ShardSampler(11, 1, 2)) == 5


def test_an_augmentation_depends_on_the_seed_and_epoch_not_on_the_global_rng(tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(torch.randint(0, 256, (80, 96, 3), dtype=torch.uint8).numpy()).save(noise)
    dataset = data.ImageSamples([(noise, 0)], Preprocessing(32, 36).train_transform(True, normalize=False))
    item = (0, data.sample_seed(9, 1, 0))
    torch.manual_seed(1)
    a = dataset[item][0]
    torch.manual_seed(2)
    b = dataset[item][0]
    assert a.dtype == torch.uint8 and torch.equal(a, b)  # same (image, seed): same crop, whatever the global RNG
    later = [dataset[(0, data.sample_seed(9, epoch, 0))][0] for epoch in (2, 3, 4)]
    assert not all(torch.equal(a, other) for other in later)  # another epoch: another crop

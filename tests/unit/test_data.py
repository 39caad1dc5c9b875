import io
import shutil
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


def test_a_class_without_one_readable_training_image_is_an_error_naming_it(tmp_path):
    root = _tree(tmp_path / "d", n=2)
    for image in (root / "train" / "002.Alaskan_malamute").iterdir():
        image.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(data.DataError, match=r"no readable training image in class '002.Alaskan_malamute' \(2 file"):
        data.load_splits({"train": root})
    (root / "train" / "002.Alaskan_malamute" / "good.jpg").write_bytes((root / "train/001.Affenpinscher/img_0.jpg").read_bytes())
    assert len(data.load_splits({"train": root}).samples["train"]) == 5  # one readable image is enough


def test_under_data_fraction_a_draw_of_unreadable_images_asks_for_more_of_the_data(tmp_path):
    root = _tree(tmp_path / "d", splits=("train", "valid"), n=10)
    malamutes = sorted((root / "train" / "002.Alaskan_malamute").iterdir())
    for image in malamutes[1:]:  # one readable photo of ten
        image.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    found = data.list_samples(root / "train", data.list_classes(root / "train"), "train")
    seed = next(s for s in range(100) if malamutes[0] not in {p for p, _ in data.stratified_fraction(found, 0.1, s)})
    with pytest.raises(data.DataError, match=r"among those --data-fraction 0.1 drew; .* raise --data-fraction"):
        data.load_splits({"train": root}, fraction=0.1, seed=seed)
    malamutes[0].write_bytes(b"\xff\xd8\xff\xe0 not a jpeg either")  # now none is readable: the files are the fault
    with pytest.raises(data.DataError, match=r"every file failed to decode; replace them or remove the class folder"):
        data.load_splits({"train": root}, fraction=0.1, seed=seed)


def test_a_class_missing_from_valid_or_test_is_a_warning_kept_for_the_metrics(tmp_path, caplog):
    root = _tree(tmp_path / "d", classes=("001.Affenpinscher", "002.Alaskan_malamute", "003.Beagle"))
    shutil.rmtree(root / "valid" / "003.Beagle")
    for image in (root / "test" / "002.Alaskan_malamute").iterdir():
        image.unlink()
    with caplog.at_level("WARNING", logger="dogbreed.data"):
        splits = data.load_splits({"train": root})
    assert splits.missing_classes == {"valid": ["Beagle"], "test": ["Alaskan malamute"]}
    assert splits.warnings == ["the 'test' split has no image of 1 class(es): Alaskan malamute",
                               "the 'valid' split has no image of 1 class(es): Beagle"]
    assert "'valid' split has no image of 1 class(es): Beagle" in caplog.text
    assert data.load_splits({"train": _tree(tmp_path / "whole")}).warnings == []


def test_a_valid_or_test_class_of_unreadable_files_is_a_warning_like_a_missing_one(tmp_path, caplog):
    root = _tree(tmp_path / "d", classes=("001.Affenpinscher", "002.Alaskan_malamute", "003.Beagle"))
    for image in (root / "valid" / "003.Beagle").iterdir():
        image.write_bytes(b"")
    (root / "test" / "001.Affenpinscher" / "img_0.jpg").write_bytes(b"")  # one readable image left: no warning
    with caplog.at_level("WARNING", logger="dogbreed.data"):
        splits = data.load_splits({"train": root})
    assert splits.unreadable_classes == {"valid": ["Beagle"]}
    assert splits.warnings == ["the 'valid' split has no readable image of 1 class(es): Beagle (every file failed "
                               "to decode)"]
    assert "no readable image of 1 class(es): Beagle" in caplog.text


@pytest.mark.parametrize("split", ["valid", "test"])
def test_a_valid_or_test_split_without_one_readable_image_is_an_error(tmp_path, split):
    root = _tree(tmp_path / "d")
    for image in (root / split).rglob("*.jpg"):
        image.write_bytes(b"")
    with pytest.raises(data.DataError, match=rf"the '{split}' split holds no readable image: every one of its 8 file"):
        data.load_splits({"train": root})


def test_symbolic_links_out_of_the_channel_are_refused_naming_the_link(tmp_path):
    root = _tree(tmp_path / "d")
    outside = _tree(tmp_path / "elsewhere", splits=("train",), classes=("009.Outsider",))
    link = root / "train" / "001.Affenpinscher" / "stray.jpg"
    link.symlink_to(outside / "train" / "009.Outsider" / "img_0.jpg")
    with pytest.raises(data.DataError, match=f"{link} is a symbolic link to .*elsewhere.*outside the channel"):
        data.load_splits({"train": root})
    link.unlink()
    folder_link = root / "valid" / "001.Affenpinscher"
    shutil.rmtree(folder_link)
    folder_link.symlink_to(outside / "train" / "009.Outsider", target_is_directory=True)
    with pytest.raises(data.DataError, match=f"'valid' split: {folder_link} is a symbolic link"):  # the link, not a file
        data.load_splits({"train": root / "train", "valid": root / "valid"})


def test_links_inside_the_channel_and_a_linked_channel_are_accepted(tmp_path):
    root = _tree(tmp_path / "d")
    (root / "train" / "001.Affenpinscher" / "again.jpg").symlink_to(root / "valid" / "001.Affenpinscher" / "img_0.jpg")
    channel = tmp_path / "channel"
    channel.symlink_to(root, target_is_directory=True)  # as the SDK's local mode and local.layout link channels
    splits = data.load_splits({"train": channel})
    assert len(splits.samples["train"]) == 9


def test_few_shot_subsets_hold_no_links_out_of_their_folder(tmp_path):
    source = _tree(tmp_path / "full", n=8)
    subset = data.write_few_shot(source, tmp_path / "few", shots=3, valid_shots=2, seed=0)
    assert not [p for p in subset.rglob("*") if p.is_symlink()]
    splits = data.load_splits({"train": subset})
    assert [len(splits.samples[s]) for s in data.SPLITS] == [6, 4, 16]

"""The dogImages layout: splits, class names, a stratified fraction, images that may be corrupt, loaders."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import DataError
from .presets import open_rgb

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# dogImages numbers its class folders (001.Affenpinscher) so that they sort in label order; the number is no part of the name
_PREFIX = re.compile(r"^\d+[._-]")


def display_name(folder: str) -> str:
    """``001.Affenpinscher`` -> ``Affenpinscher``; ``005.Alaskan_malamute`` -> ``Alaskan malamute``."""
    return _PREFIX.sub("", folder).replace("_", " ").strip()


def _is_split_dir(path: Path) -> bool:
    return path.is_dir() and any(child.is_dir() for child in path.iterdir())


def find_splits(channels: dict[str, Path], required=("train", "valid")) -> dict[str, Path]:
    """Split folders from SageMaker channels: ``train``/``valid``/``test`` channels holding class
    folders, or a single ``train`` channel (or a plain root) holding ``train/ valid/ test/``."""
    channels = {name: Path(path) for name, path in channels.items()}
    splits: dict[str, Path] = {}
    root_candidates = [channels[n] for n in ("train", "data", "root") if n in channels]
    for root in root_candidates:
        if (root / "train").is_dir():
            for split in SPLITS:
                if (root / split).is_dir():
                    splits[split] = root / split
            break
    for split in SPLITS:
        if split not in splits and split in channels and channels[split].is_dir():
            splits[split] = channels[split]
    missing = [s for s in required if s not in splits]
    if missing:
        looked = ", ".join(f"{k}={v}" for k, v in sorted(channels.items())) or "no channels"
        raise DataError(
            f"missing {' and '.join(repr(m) for m in missing)} split: give the channels train, valid "
            f"and test (class folders inside), or one train channel holding train/ valid/ test/ "
            f"(looked in {looked})"
        )
    for split, path in splits.items():
        if not _is_split_dir(path):
            raise DataError(f"the {split!r} split at {path} holds no class folders")
    return splits


def list_classes(split_dir: Path) -> list[str]:
    # Sorted folder names are the label order: the same on every host and rank, and the order model.json records.
    # Hidden folders are tools' leftovers (.ipynb_checkpoints, sync state), never classes.
    return sorted(child.name for child in Path(split_dir).iterdir() if child.is_dir() and not child.name.startswith("."))


def list_samples(split_dir: Path, class_folders: list[str], split: str) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    present = set(list_classes(split_dir))
    unknown = present - set(class_folders)  # a class only valid/test hold would have no output of the head
    if unknown:
        raise DataError(f"the {split!r} split has classes that train lacks: {', '.join(sorted(unknown)[:5])}")
    for index, folder in enumerate(class_folders):
        folder_path = Path(split_dir) / folder
        files = (
            sorted(p for p in folder_path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if folder_path.is_dir()
            else []
        )
        if not files and split == "train":
            raise DataError(f"class {folder!r} has no images in the train split ({folder_path})")
        samples.extend((path, index) for path in files)
    if not samples:
        raise DataError(f"the {split!r} split at {split_dir} holds no images")
    return samples


def stratified_fraction(samples: list[tuple[Path, int]], fraction: float, seed: int) -> list[tuple[Path, int]]:
    """A seeded subset holding ``fraction`` of every class (at least one image each)."""
    if fraction >= 1.0:
        return list(samples)
    by_class: dict[int, list[tuple[Path, int]]] = defaultdict(list)
    for sample in samples:
        by_class[sample[1]].append(sample)
    rng = random.Random(seed)
    chosen: list[tuple[Path, int]] = []
    for label in sorted(by_class):
        items = by_class[label]
        k = max(1, round(len(items) * fraction))  # every class keeps an image, so every output of the head trains
        chosen.extend(rng.sample(items, k))
    return sorted(chosen, key=lambda s: (s[1], str(s[0])))  # the order of the draw is no part of the result


class Samples(Dataset):
    """A split's (path, label) pairs, indexed as the sampler hands them over: an index, or ``(index, seed)``."""

    def __init__(self, samples):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, item) -> tuple[int, int | None, Path, int]:
        """(index, seed or None, path, label)."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        path, label = self.samples[index]
        return index, seed, path, label


class ImageSamples(Samples):
    """(image, label, index) triples; an image that cannot be decoded yields ``Unreadable(index)``.

    The sampler may hand over ``(index, seed)``: the transform then draws its randomness from that
    seed alone, so an augmentation depends on (seed, epoch, image) and not on which worker, process
    or restart decoded it. That is what lets loader workers live across epochs and a resumed run
    repeat the epoch it lost exactly.
    """

    def __init__(self, samples, transform, draft_size: int | None = None):
        super().__init__(samples)
        self.transform = transform
        self.draft_size = draft_size

    def __getitem__(self, item):
        index, seed, path, label = self.sample(item)
        try:
            image = open_rgb(path, self.draft_size)
        except Exception as exc:  # any decode failure: the image is skipped and counted, never fatal
            log.debug("skipping unreadable image %s: %s", path, exc)
            return Unreadable(index)
        if seed is None:
            return self.transform(image), label, index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label, index

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


@dataclass(frozen=True)
class Unreadable:
    index: int


def collate_skipping(batch):
    """Stack the readable images; the third element holds the indices of the unreadable ones, so that
    an image is reported once however many epochs read it."""
    good = [item for item in batch if not isinstance(item, Unreadable)]
    unreadable = tuple(item.index for item in batch if isinstance(item, Unreadable))
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), unreadable
    images = torch.stack([item[0] for item in good])
    labels = torch.tensor([item[1] for item in good], dtype=torch.long)
    return images, labels, unreadable


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """One augmentation seed per (run seed, epoch, image), spread over 62 bits."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + index * 40_503) % (1 << 62)


class ShardSampler(Sampler):
    """Every ``world_size``-th index from ``rank``, optionally shuffled per epoch; yields ``(index, seed)``.

    ``pad``: repeat the first indices so that every rank gets the same number (as DistributedSampler
    does). Training needs it: DDP ranks must take the same number of steps or the gradient all-reduce
    hangs. Evaluation leaves it off, so every image counts once.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0,
                 pad: bool = False):
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.seed, self.epoch, self.pad = shuffle, seed, 0, pad

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.length))
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        if self.pad and self.length:
            total = -(-self.length // self.world_size) * self.world_size
            order += (order * (total // self.length + 1))[: total - self.length]
        return order

    def __iter__(self):
        return iter([(index, sample_seed(self.seed, self.epoch, index)) for index in self._order()[self.rank :: self.world_size]])

    def __len__(self) -> int:
        if self.pad:
            return -(-self.length // self.world_size)
        return len(range(self.rank, self.length, self.world_size))


@dataclass
class Splits:
    class_folders: list[str]
    class_names: list[str]
    samples: dict[str, list[tuple[Path, int]]]
    # split -> the classes (display names) it lacks: scores there say nothing about them; a warning, not an error
    missing_classes: dict[str, list[str]] = field(default_factory=dict)
    # split -> the classes it holds files of, none readable: as good as missing, and the same warning's reason
    unreadable_classes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """The data's warnings as sentences (logged by :func:`load_splits`; for metrics.json's ``data_warnings``)."""
        missing = [f"the {split!r} split has no image of {len(names)} class(es): {', '.join(names)}"
                   for split, names in sorted(self.missing_classes.items())]
        return missing + [f"the {split!r} split has no readable image of {len(names)} class(es): {', '.join(names)} "
                          f"(every file failed to decode)" for split, names in sorted(self.unreadable_classes.items())]


def channel_of(split_dir: Path, channels: dict[str, Path]) -> Path:
    """The channel folder ``split_dir`` lies in (itself, or the channel holding train/ valid/ test/)."""
    split_dir = Path(split_dir)
    for channel in map(Path, channels.values()):
        if split_dir == channel or channel in split_dir.parents:
            return channel
    return split_dir


def link_leaving(path: Path, root: Path) -> Path | None:
    """The symbolic link on ``path`` (the file or a folder above it, below ``root``) that leads out of ``root``,
    else None. ``root`` itself may be a link (the SDK's local mode links channels to the user's folders)."""
    real_root = Path(root).resolve()
    if Path(path).resolve().is_relative_to(real_root):
        return None
    inside = [part for part in [Path(path), *Path(path).parents] if part != root and part.is_relative_to(root)]
    for part in reversed(inside):  # the outermost link names what the user made
        if part.is_symlink() and not part.resolve().is_relative_to(real_root):
            return part
    return Path(path)


def refuse_links_out(samples: list[tuple[Path, int]], root: Path, split: str) -> None:
    """Every image must lie in its channel: a link out of it would train on files nobody chose as data."""
    for path, _ in samples:
        link = link_leaving(path, root)
        if link is not None:
            raise DataError(f"the {split!r} split: {link} is a symbolic link to {link.resolve()}, outside the channel "
                            f"{root}; copy the images into the channel instead")


def readable(path: Path) -> bool:
    try:
        open_rgb(path, draft_size=8)  # the smallest JPEG scale: a check, not a decode for training
    except Exception:  # noqa: BLE001 - any decode failure makes the image unreadable
        return False
    return True


def first_readable(paths: list[Path]) -> Path | None:
    return next((path for path in paths if readable(path)), None)


def _by_class(samples: list[tuple[Path, int]]) -> dict[int, list[Path]]:
    by_class: dict[int, list[Path]] = defaultdict(list)
    for path, label in samples:
        by_class[label].append(path)
    return by_class


def refuse_unreadable_classes(samples: list[tuple[Path, int]], class_folders: list[str],
                              whole: list[tuple[Path, int]] | None = None, fraction: float = 1.0) -> None:
    """A class with no readable training image would keep an output the model never learnt: refused, named.
    ``whole``: the split before --data-fraction took ``fraction`` of it; where the class has readable files the
    draw left out, the advice is to raise --data-fraction, not to replace the files."""
    by_class = _by_class(samples)
    unseen = [(label, len(paths)) for label, paths in sorted(by_class.items()) if first_readable(paths) is None]
    if not unseen:
        return
    named = ", ".join(f"{class_folders[label]!r} ({count} file(s))" for label, count in unseen)
    if whole is not None and fraction < 1:
        everything = _by_class(whole)
        drawn = {label: set(paths) for label, paths in by_class.items()}
        left_out = [label for label, _ in unseen
                    if first_readable([p for p in everything[label] if p not in drawn[label]]) is not None]
        if left_out:
            raise DataError(f"no readable training image in class {named} among those --data-fraction {fraction:g} "
                            f"drew; the class has readable files the draw left out: raise --data-fraction, or "
                            f"replace the unreadable files")
    raise DataError(f"no readable training image in class {named}: every file failed to decode; replace them "
                    f"or remove the class folder")


def missing_classes(samples: dict[str, list[tuple[Path, int]]], class_folders: list[str]) -> dict[str, list[str]]:
    """Per valid/test split, the classes it holds no image of (display names)."""
    missing = {}
    for split, found in samples.items():
        labels = {label for _, label in found}
        absent = [display_name(folder) for label, folder in enumerate(class_folders) if label not in labels]
        if split != "train" and absent:
            missing[split] = absent
    return missing


def unreadable_classes(samples: dict[str, list[tuple[Path, int]]], class_folders: list[str]) -> dict[str, list[str]]:
    """Per valid/test split, the classes it holds files of but no readable one (display names). Raises DataError
    where that is every class of the split: an evaluation over no image scores nothing, and would say loss 0."""
    found = {}
    for split, pairs in samples.items():
        by_class = _by_class(pairs)
        unseen = [label for label, paths in sorted(by_class.items()) if first_readable(paths) is None]
        if split == "train" or not unseen:
            continue
        if len(unseen) == len(by_class):
            raise DataError(f"the {split!r} split holds no readable image: every one of its {len(pairs)} file(s) "
                            f"failed to decode; replace them")
        found[split] = [display_name(class_folders[label]) for label in unseen]
    return found


def load_splits(channels: dict[str, Path], fraction: float = 1.0, seed: int = 0) -> Splits:
    """The data set in ``channels`` (SageMaker channel name -> folder; see :func:`find_splits`).

    Takes a stratified, seeded ``fraction`` of every split. Returns :class:`Splits`: the class folders (sorted:
    the label order), their display names, per split the ``(path, label)`` samples, and the classes valid/test
    lack or hold no readable image of (logged as warnings). Raises DataError where the train split has fewer than 2
    classes or a class without one readable image, a split holds no images or no readable one, valid/test hold a
    class train lacks, or a symbolic link leads out of its channel.
    """
    dirs = find_splits(channels)
    class_folders = list_classes(dirs["train"])
    if len(class_folders) < 2:
        raise DataError(f"the train split at {dirs['train']} has {len(class_folders)} class folder(s); need at least 2")
    samples, whole = {}, {}
    for split, path in dirs.items():
        whole[split] = list_samples(path, class_folders, split)
        refuse_links_out(whole[split], channel_of(path, channels), split)
        samples[split] = stratified_fraction(whole[split], fraction, seed)
    refuse_unreadable_classes(samples["train"], class_folders, whole["train"], fraction)
    splits = Splits(class_folders, [display_name(f) for f in class_folders], samples,
                    missing_classes(samples, class_folders), unreadable_classes(samples, class_folders))
    for warning in splits.warnings:
        log.warning("%s: their scores leave these classes out", warning)
    return splits


# Loader workers start from forkserver's server, a fresh single-threaded process, never by forking the training process:
# that one runs threads (the profiler's SystemMonitor, gloo/NCCL, the queue feeders of other loaders' workers), and a
# fork taken while one of them holds a lock leaves the child waiting on that lock forever (the DDP test's hang).
# forkserver rather than spawn: the server imports torch and the decoders once, so each worker is a fork of a ready
# process, not a new interpreter importing torch. Time to a loader's first batch, 2 busy cores: spawn 7 s (1 worker)
# to 38 s (4 workers) for every loader; forkserver 6 s once per process, then 0.2-0.7 s; fork 0.1-0.7 s.
WORKER_START_METHOD = "forkserver"
WORKER_PRELOAD = ("torch", "torchvision.transforms", "PIL.Image", "dogbreed.data")


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context every loader's workers start in (see WORKER_START_METHOD)."""
    context = multiprocessing.get_context(WORKER_START_METHOD)
    context.set_forkserver_preload(list(WORKER_PRELOAD))  # read once, when the server starts
    return context


def start_worker_server() -> None:
    """Start the workers' server now (it is a new interpreter, safe to start beside threads), so that its imports
    overlap the set-up instead of delaying the first loader."""
    if WORKER_START_METHOD == "forkserver":
        from multiprocessing import forkserver

        worker_context()
        forkserver.ensure_running()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler,
    num_workers: int,
    pin_memory: bool = False,
    drop_last: bool = False,
    collate_fn=collate_skipping,
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
        drop_last=drop_last,
        # Workers live across epochs and evaluations (a restart costs seconds of imports per worker);
        # augmentations are seeded per image by the sampler, so this changes no result.
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (no space, and no symbolic link out of the channel, which
    :func:`load_splits` refuses), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_few_shot(source: Path, target: Path, shots: int = 5, valid_shots: int = 2, seed: int = 0) -> Path:
    """A dogImages-layout subset of ``source`` in ``target``, made of hard links (copies across file systems): per
    class ``shots`` train and ``valid_shots`` valid images, drawn (seeded) from the source's own train split, so the two
    never share an image; the source's test split whole, untouched. For measuring a recipe where data is scarce."""
    source, target = Path(source).resolve(), Path(target)
    train_dir = find_splits({"train": source}, required=("train", "test"))
    rng = random.Random(seed)
    for folder in list_classes(train_dir["train"]):
        files = sorted(p for p in (train_dir["train"] / folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if len(files) < shots + valid_shots:
            raise DataError(f"class {folder!r} has {len(files)} train images: fewer than {shots} + {valid_shots}")
        drawn = rng.sample(files, shots + valid_shots)
        for split, chosen in (("train", drawn[:shots]), ("valid", drawn[shots:])):
            for path in chosen:
                _link_or_copy(path, target / split / folder / path.name)
    for path in sorted(train_dir["test"].rglob("*")):
        if path.is_file():
            _link_or_copy(path, target / "test" / path.relative_to(train_dir["test"]))
    return target

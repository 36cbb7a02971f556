"""Datasets: names, deterministic train/validation splits and loaders.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), resized and made
  3-channel. Ships with scikit-learn, so the default runs offline.
- `cifar10`: torchvision's CIFAR-10, downloaded into data/downloads on first use.
- `imagefolder:<path>`: a user's own images, one folder per class (a malware-image set, for instance).
- `fake`: torchvision FakeData, random images for energy-only benchmarks (accuracy is meaningless).
- `fake-text`: random token sequences in two balanced classes, each marked by a few tokens of its own,
  for text models offline (learnable whatever the tokenizer's vocabulary).

The split is a seeded permutation, so a seed always gives the same train and validation examples.

Measure the model, not the input pipeline: images are resized once per dataset and size, before any
measured window, into a tensor (in memory, or for a large set a file under the cache folder that later
runs reuse), never per image per epoch inside the training loop; a batch is then a gather and a
normalisation. On CUDA the loaders pin their batches (so copies to the GPU are asynchronous) and keep
their worker processes alive across epochs (`persistent_workers`), started when the loader is first
iterated, before the first measured window; `num_workers = "auto"` takes them from the cores available.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenlab.core.errors import ConfigError, GreenLabError, suggest

NAMES = ("digits", "cifar10", "fake", "fake-text")
IMAGEFOLDER_PREFIX = "imagefolder:"
# ImageNet statistics: pretrained torchvision models expect inputs normalised with them.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_TEXT_LENGTH = 32
_TEXT_VOCAB = 128
# Resized images up to this size stay in memory; a larger set is written once under the cache folder and
# mapped from there by every run (CIFAR-10 at 224 px is 7.5 GB of bytes).
MEMORY_CACHE_BYTES = 512 * 2**20
# `num_workers = "auto"` on CUDA: a gather and a normalisation per batch need few workers; more would take
# cores from the process that feeds the GPU.
AUTO_WORKERS_MAX = 4
AUTO = "auto"


def data_dir() -> Path:
    return Path(os.environ.get("GREENLAB_DATA_DIR", "data")) / "downloads"


def cache_dir() -> Path:
    """Where resized datasets too large for memory are kept, one file per dataset and size."""
    return Path(os.environ.get("GREENLAB_DATA_DIR", "data")) / "cache"


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may run on: its CPU affinity, lowered by a cgroup quota (a container)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def worker_count(setting: int | str, device_type: str, cores: int | None = None) -> int:
    """DataLoader workers for `num_workers`: a number as given; "auto" is none off CUDA (the batches are
    cached tensors, and a worker would take a core from the training threads) and on CUDA one per spare
    core, at most AUTO_WORKERS_MAX, so the next batch is ready while the GPU computes."""
    if isinstance(setting, int):
        return setting
    if device_type != "cuda":
        return 0
    return max(0, min(AUTO_WORKERS_MAX, (cores or usable_cores()) - 1))


def check_name(name: str, key_path: str) -> None:
    if name in NAMES:
        return
    if name.startswith(IMAGEFOLDER_PREFIX):
        path = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"image folder '{path}' does not exist; give a folder with one subfolder per class", key=key_path
            )
        return
    raise ConfigError(
        f"unknown dataset '{name}'{suggest(name, NAMES)} (known: {', '.join(NAMES)}, imagefolder:<path>)", key=key_path
    )


def modality(name: str) -> str:
    return "text" if name == "fake-text" else "image"


def default_image_size(dataset: str, model_input: int, model_min_input: int) -> int:
    """Small datasets train at a small resolution (the model's minimum, at least 32 px) so CPU runs
    stay quick; real image sets use the model's own input size, as a fine-tuning study would."""
    if dataset in ("digits",):
        return max(32, model_min_input)
    return model_input


@dataclass
class DataBundle:
    train: Any  # DataLoader
    val: Any  # DataLoader
    num_classes: int
    n_train: int
    n_val: int
    input_description: str
    num_workers: int = 0
    pin_memory: bool = False
    cache: str = "none"  # where the resized images are: memory, a file's path, or none (generated text)

    def pipeline(self) -> dict[str, Any]:
        """The input pipeline as a run records it."""
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "cache": self.cache,
        }

    def start_workers(self) -> None:
        """Start the loaders' persistent workers now (before the measured windows), not at the first batch
        of the first phase: the first iteration of a loader forks them and keeps them for the run."""
        if self.num_workers > 0:
            for loader in (self.train, self.val):
                if getattr(loader, "_iterator", None) is None:
                    iter(loader)

    def close(self) -> None:
        """Stop and reap the loaders' workers, so their CPU time is the child's own when it ends."""
        for loader in (self.train, self.val):
            iterator = getattr(loader, "_iterator", None)
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            if iterator is not None:
                loader._iterator = None


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


class CachedImages:
    """Images resized once: a tensor [N, C, S, S] (uint8 from image files, float32 for digits), possibly
    mapped from a cache file, and their labels. An item is a view, so a batch costs one gather."""

    def __init__(self, images: Any, labels: Any) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.images[index], self.labels[index]


class _NormaliseCollate:
    """Stack cached images into a batch, as float, 3-channel and normalised with ImageNet's statistics:
    the same values a per-image ToTensor and Normalize gave, at one vectorised step per batch (a class, so
    DataLoader workers receive it pickled)."""

    def __call__(self, items: list[tuple[Any, Any]]) -> tuple[Any, Any]:
        import torch

        images = torch.stack([torch.as_tensor(image) for image, _ in items])
        labels = torch.as_tensor([int(label) for _, label in items])
        images = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        images = images.expand(-1, 3, -1, -1)
        mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_STD).view(1, 3, 1, 1)
        return (images - mean) / std, labels


def _resized_bytes(dataset: Any, size: int) -> tuple[Any, Any]:
    """Every image of a PIL dataset resized to size x size once, as uint8 [N, 3, S, S], and the labels."""
    import numpy as np
    import torch

    images = np.empty((len(dataset), 3, size, size), dtype=np.uint8)
    labels = _fill(dataset, size, images)
    return torch.from_numpy(images), torch.as_tensor(labels)


def _fill(dataset: Any, size: int, out: Any) -> list[int]:
    """Resize each image with the transform a per-image pipeline used (so the pixels are the same) into
    `out`; returns the labels."""
    import numpy as np
    from torchvision import transforms

    resize = transforms.Resize((size, size))
    labels = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        out[index] = np.asarray(resize(image.convert("RGB")), dtype=np.uint8).transpose(2, 0, 1)
        labels.append(int(label))
    return labels


def _cached(dataset: Any, size: int, key: str) -> tuple[CachedImages, str]:
    """The dataset resized once: in memory when small, else mapped from a cache file written the first time
    (atomically: a crash or a second run leaves no half-written file under the final name)."""
    import numpy as np
    import torch

    nbytes = len(dataset) * 3 * size * size
    if nbytes <= MEMORY_CACHE_BYTES:
        images, labels = _resized_bytes(dataset, size)
        return CachedImages(images, labels), "memory"
    folder = cache_dir()
    path = folder / f"{key}-{size}px.npy"
    labels_path = path.with_suffix(".labels.npy")
    if not (path.exists() and labels_path.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(dataset), 3, size, size))
        labels = _fill(dataset, size, images)
        images.flush()
        del images
        labels_partial = labels_path.with_name(f".{labels_path.name}.{os.getpid()}.part")
        with open(labels_partial, "wb") as handle:
            np.save(handle, np.asarray(labels, dtype=np.int64))
        os.replace(labels_partial, labels_path)
        os.replace(partial, path)
    # Copy-on-write: torch wants a writable array, and nothing here writes to it.
    images = np.load(path, mmap_mode="c")
    return CachedImages(torch.from_numpy(images), torch.from_numpy(np.load(labels_path))), str(path)


def _folder_key(path: Path) -> str:
    """A cache key that changes when any file of the image folder does (name, size, modification time)."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"imagefolder-{digest.hexdigest()[:16]}"


def load(
    name: str,
    *,
    image_size: int,
    batch_size: int,
    seed: int,
    val_fraction: float,
    train_limit: int | None = None,
    num_workers: int | str = 0,
    tokenizer: Any = None,
    shuffle_seed: int | None = None,
    device_type: str = "cpu",
) -> DataBundle:
    """Build train and validation loaders for `name`.

    `seed` fixes the data (the split, generated datasets); `shuffle_seed` (default: `seed`) the order in
    which training batches are drawn, so repeats can draw independently from the same split.
    `device_type` is where the batches go: on "cuda" they are pinned and `num_workers = "auto"` takes
    workers from the spare cores (see `worker_count`).
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    collate: Any = None
    cache = "none"
    if name == "digits":
        import torch.nn.functional as F
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        # Resized once here, not per batch in the loop: interpolation treats each image alone, so the values
        # are the ones a per-batch resize gave.
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        dataset: Any = CachedImages(images, torch.tensor(digits.target))
        num_classes = 10
        collate, cache = _NormaliseCollate(), "memory"
        description = f"3x{image_size}x{image_size} (8x8 digits resized)"
    elif name == "cifar10":
        from torchvision.datasets import CIFAR10

        root = data_dir()
        try:
            files = CIFAR10(str(root), train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure of the library becomes the user's one-line error
            raise GreenLabError(
                f"could not download CIFAR-10 into {root} ({type(exc).__name__}: {exc}); connect to the "
                f'internet once, or place cifar-10-python.tar.gz in {root}, or use dataset = "digits"'
            ) from None
        dataset, cache = _cached(files, image_size, "cifar10-train")
        num_classes = 10
        collate = _NormaliseCollate()
        description = f"3x{image_size}x{image_size}"
    elif name.startswith(IMAGEFOLDER_PREFIX):
        from torchvision.datasets import ImageFolder

        path = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        try:
            files = ImageFolder(str(path))
            dataset, cache = _cached(files, image_size, _folder_key(path))
        except (FileNotFoundError, OSError) as exc:
            raise GreenLabError(f"cannot read image folder {path}: {exc}") from None
        num_classes = len(files.classes)
        collate = _NormaliseCollate()
        description = f"3x{image_size}x{image_size} ({num_classes} classes from {path})"
    elif name == "fake":
        from torchvision.datasets import FakeData

        size = train_limit or 512
        files = FakeData(size=size, image_size=(3, image_size, image_size), num_classes=10, random_offset=seed)
        dataset, cache = _cached(files, image_size, f"fake-{size}-seed{seed}")
        num_classes = 10
        collate = _NormaliseCollate()
        description = f"3x{image_size}x{image_size} (random)"
    elif name == "fake-text":
        dataset, num_classes = _fake_text(seed, tokenizer)
        description = f"{_TEXT_LENGTH} tokens (random)"
    else:
        raise ConfigError(f"unknown dataset '{name}'")

    train_idx, val_idx = _split(len(dataset), val_fraction, seed)
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    generator = torch.Generator().manual_seed(seed if shuffle_seed is None else shuffle_seed)
    workers = worker_count(num_workers, device_type)
    # Pinned batches copy to the GPU asynchronously (the loop's non_blocking copies); workers that persist
    # are forked once, before the measured windows, not again at every epoch inside them.
    loading: dict[str, Any] = {
        "collate_fn": collate,
        "num_workers": workers,
        "pin_memory": device_type == "cuda",
        "persistent_workers": workers > 0,
    }
    train = DataLoader(
        Subset(dataset, train_idx),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        drop_last=len(train_idx) > batch_size,
        **loading,
    )
    val = DataLoader(Subset(dataset, val_idx), batch_size=batch_size, shuffle=False, **loading)
    return DataBundle(
        train=train,
        val=val,
        num_classes=num_classes,
        n_train=len(train_idx),
        n_val=len(val_idx),
        input_description=description,
        num_workers=workers,
        pin_memory=loading["pin_memory"],
        cache=cache,
    )


# fake-text: each class plants a few tokens of its own among random background tokens. Ids below
# _TEXT_FIRST_ID are left alone (padding, [CLS], [SEP] and the like in real vocabularies).
_TEXT_FIRST_ID = 5
_TEXT_MARKERS_PER_CLASS = 8
_TEXT_MARKERS_PER_SEQUENCE = 4
_TEXT_EXAMPLES = 1024


def _fake_text(seed: int, tokenizer: Any, num_classes: int = 2) -> tuple[Any, int]:
    """Balanced, learnable token sequences, offline: exactly 1/num_classes of the examples per class, and
    each sequence carries _TEXT_MARKERS_PER_SEQUENCE marker tokens of its class at random places among
    background tokens that are never markers. A bag of words separates the classes perfectly; a text model
    has to learn which tokens matter, whatever the tokenizer's vocabulary size.
    """
    import torch
    from torch.utils.data import Dataset

    generator = torch.Generator().manual_seed(seed + 1)
    vocab = _TEXT_VOCAB if tokenizer is None else min(int(tokenizer.vocab_size), 30000)
    first_background = _TEXT_FIRST_ID + num_classes * _TEXT_MARKERS_PER_CLASS
    labels = torch.arange(_TEXT_EXAMPLES) % num_classes
    labels = labels[torch.randperm(_TEXT_EXAMPLES, generator=generator)]
    ids = torch.randint(first_background, vocab, (_TEXT_EXAMPLES, _TEXT_LENGTH), generator=generator)
    markers = (
        _TEXT_FIRST_ID
        + labels[:, None] * _TEXT_MARKERS_PER_CLASS
        + torch.randint(0, _TEXT_MARKERS_PER_CLASS, (_TEXT_EXAMPLES, _TEXT_MARKERS_PER_SEQUENCE), generator=generator)
    )
    positions = torch.rand(_TEXT_EXAMPLES, _TEXT_LENGTH, generator=generator).argsort(1)[:, :_TEXT_MARKERS_PER_SEQUENCE]
    ids.scatter_(1, positions, markers)
    labels = labels.long()

    class TokenDataset(Dataset):
        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, index: int) -> tuple[dict[str, Any], Any]:
            return (
                {"input_ids": ids[index], "attention_mask": torch.ones(_TEXT_LENGTH, dtype=torch.long)},
                labels[index],
            )

    return TokenDataset(), num_classes

"""Datasets: names, deterministic train/validation splits and loaders.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), resized per batch
  and made 3-channel. Ships with scikit-learn, so the default runs offline.
- `cifar10`: torchvision's CIFAR-10, downloaded into data/downloads on first use.
- `imagefolder:<path>`: a user's own images, one folder per class (a malware-image set, for instance).
- `fake`: torchvision FakeData, random images for energy-only benchmarks (accuracy is meaningless).
- `fake-text`: random token sequences in two balanced classes, each marked by a few tokens of its own,
  for text models offline (learnable whatever the tokenizer's vocabulary).

The split is a seeded permutation, so a seed always gives the same train and validation examples.
"""

from __future__ import annotations

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


def data_dir() -> Path:
    return Path(os.environ.get("GREENLAB_DATA_DIR", "data")) / "downloads"


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


def _split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


class _ResizeCollate:
    """Stack 8x8 digits and resize the whole batch at once: one interpolate call per batch, not per image,
    and no full-resolution copy of the dataset held in memory."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[Any, Any]:
        import torch
        import torch.nn.functional as F

        images = torch.stack([image for image, _ in items])
        labels = torch.tensor([label for _, label in items])
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        images = images.expand(-1, 3, -1, -1)
        mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_STD).view(1, 3, 1, 1)
        return (images - mean) / std, labels


def _image_transform(size: int) -> Any:
    from torchvision import transforms

    return transforms.Compose(
        [transforms.Resize((size, size)), transforms.ToTensor(), transforms.Normalize(_MEAN, _STD)]
    )


def load(
    name: str,
    *,
    image_size: int,
    batch_size: int,
    seed: int,
    val_fraction: float,
    train_limit: int | None = None,
    num_workers: int = 0,
    tokenizer: Any = None,
    shuffle_seed: int | None = None,
) -> DataBundle:
    """Build train and validation loaders for `name`.

    `seed` fixes the data (the split, generated datasets); `shuffle_seed` (default: `seed`) the order in
    which training batches are drawn, so repeats can draw independently from the same split.
    """
    import torch
    from torch.utils.data import DataLoader, Subset, TensorDataset

    collate = None
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        dataset: Any = TensorDataset(images, torch.tensor(digits.target))
        num_classes = 10
        collate = _ResizeCollate(image_size)
        description = f"3x{image_size}x{image_size} (8x8 digits resized)"
    elif name == "cifar10":
        from torchvision.datasets import CIFAR10

        root = data_dir()
        try:
            dataset = CIFAR10(str(root), train=True, download=True, transform=_image_transform(image_size))
        except Exception as exc:  # noqa: BLE001 - any failure of the library becomes the user's one-line error
            raise GreenLabError(
                f"could not download CIFAR-10 into {root} ({type(exc).__name__}: {exc}); connect to the "
                f'internet once, or place cifar-10-python.tar.gz in {root}, or use dataset = "digits"'
            ) from None
        num_classes = 10
        description = f"3x{image_size}x{image_size}"
    elif name.startswith(IMAGEFOLDER_PREFIX):
        from torchvision.datasets import ImageFolder

        path = Path(name[len(IMAGEFOLDER_PREFIX) :]).expanduser()
        try:
            dataset = ImageFolder(str(path), transform=_image_transform(image_size))
        except (FileNotFoundError, OSError) as exc:
            raise GreenLabError(f"cannot read image folder {path}: {exc}") from None
        num_classes = len(dataset.classes)
        description = f"3x{image_size}x{image_size} ({num_classes} classes from {path})"
    elif name == "fake":
        from torchvision.datasets import FakeData

        size = train_limit or 512
        dataset = FakeData(
            size=size,
            image_size=(3, image_size, image_size),
            num_classes=10,
            transform=_image_transform(image_size),
            random_offset=seed,
        )
        num_classes = 10
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
    train = DataLoader(
        Subset(dataset, train_idx),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=len(train_idx) > batch_size,
    )
    val = DataLoader(
        Subset(dataset, val_idx), batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers
    )
    return DataBundle(
        train=train,
        val=val,
        num_classes=num_classes,
        n_train=len(train_idx),
        n_val=len(val_idx),
        input_description=description,
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

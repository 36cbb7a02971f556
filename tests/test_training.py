"""Datasets and the training loop: deterministic splits, correct metrics, reproducible CPU training."""

from __future__ import annotations

import pytest
import torch

from greenlab.core import datasets, training, zoo
from greenlab.core.errors import ConfigError


def _digits(seed: int, size: int = 16):
    return datasets.load("digits", image_size=size, batch_size=32, seed=seed, val_fraction=0.2)


def test_digits_split_is_deterministic_by_seed():
    a, b, c = _digits(0), _digits(0), _digits(1)
    assert a.n_train + a.n_val == 1797 and a.num_classes == 10
    assert a.train.dataset.indices == b.train.dataset.indices
    assert a.val.dataset.indices == b.val.dataset.indices
    assert a.val.dataset.indices != c.val.dataset.indices
    assert not set(a.train.dataset.indices) & set(a.val.dataset.indices)
    images, labels = next(iter(a.val))
    assert images.shape == (32, 3, 16, 16) and labels.shape == (32,)


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        datasets.check_name("cifar-10", "defaults.dataset")
    with pytest.raises(ConfigError, match="does not exist"):
        datasets.check_name(f"imagefolder:{tmp_path / 'none'}", "defaults.dataset")


def test_imagefolder(tmp_path):
    from PIL import Image

    for label in ("benign", "malware"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.new("RGB", (20, 20), color=(i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    data = datasets.load(f"imagefolder:{tmp_path}", image_size=16, batch_size=4, seed=0, val_fraction=0.2)
    assert data.num_classes == 2 and data.n_train + data.n_val == 10


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (200,), generator=generator)
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, labels,
                              torch.randint(0, 5, (200,), generator=generator))
    expected = f1_score(labels.numpy(), predictions.numpy(), average="macro")
    assert abs(training.macro_f1(predictions, labels, 5) - expected) < 1e-9


def _train_once(seed: int) -> list[training.EpochResult]:
    training.seed_everything(seed)
    data = _digits(seed)
    model = zoo.build_model("tinycnn", data.num_classes, pretrained=False)
    phases = []
    results = training.train(model, data.train, data.val, device=torch.device("cpu"), num_classes=10, epochs=2,
                             optimizer="adam", lr=0.01, max_train_batches=25,
                             on_phase=lambda epoch, phase, edge: phases.append((epoch, phase, edge)))
    assert phases[:4] == [(1, "train", "begin"), (1, "train", "end"), (1, "eval", "begin"), (1, "eval", "end")]
    return results


def test_training_learns_and_is_reproducible_on_cpu():
    first, second = _train_once(0), _train_once(0)
    assert [r.train_loss for r in first] == [r.train_loss for r in second]
    assert [r.val_accuracy for r in first] == [r.val_accuracy for r in second]
    assert first[-1].val_accuracy > 0.3  # well above the 10 % of chance after two epochs
    assert first[-1].train_loss < first[0].train_loss

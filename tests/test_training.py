"""Datasets and the training loop: deterministic splits, correct metrics, reproducible CPU training."""

from __future__ import annotations

import pytest
import torch

from greenlab.core.errors import ConfigError
from greenlab.core.train import datasets, training, zoo
from greenlab.core.train.child_events import EpochFinished


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
    predictions = torch.where(
        torch.rand(200, generator=generator) < 0.6, labels, torch.randint(0, 5, (200,), generator=generator)
    )
    expected = f1_score(labels.numpy(), predictions.numpy(), average="macro")
    assert abs(training.macro_f1(predictions, labels, 5) - expected) < 1e-9


def _train_once(seed: int) -> list[EpochFinished]:
    training.seed_everything(seed)
    data = _digits(seed)
    model = zoo.build_model("tinycnn", data.num_classes, pretrained=False)
    phases = []
    results = training.train(
        model,
        data.train,
        data.val,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=2,
        optimizer="adam",
        lr=0.01,
        max_train_batches=25,
        on_phase=lambda epoch, phase, edge: phases.append((epoch, phase, edge)),
    )
    assert phases[:4] == [(1, "train", "begin"), (1, "train", "end"), (1, "eval", "begin"), (1, "eval", "end")]
    return results


def test_training_learns_and_is_reproducible_on_cpu():
    first, second = _train_once(0), _train_once(0)
    assert [r.train_loss for r in first] == [r.train_loss for r in second]
    assert [r.val_accuracy for r in first] == [r.val_accuracy for r in second]
    assert first[-1].val_accuracy > 0.3  # well above the 10 % of chance after two epochs
    assert first[-1].train_loss < first[0].train_loss


def test_repeats_draw_their_own_order_from_one_split():
    first = datasets.load("digits", image_size=16, batch_size=32, seed=0, val_fraction=0.2, shuffle_seed=0)
    second = datasets.load("digits", image_size=16, batch_size=32, seed=0, val_fraction=0.2, shuffle_seed=1)
    assert first.train.dataset.indices == second.train.dataset.indices  # the same examples...
    assert first.val.dataset.indices == second.val.dataset.indices
    _, labels_a = next(iter(first.train))
    _, labels_b = next(iter(second.train))
    assert not torch.equal(labels_a, labels_b)  # ...drawn in another order


def test_a_runs_seed_is_the_grids_seed_plus_its_repeat():
    from greenlab.core.plan.config import expand_grid, parse_experiments

    grid = expand_grid(
        parse_experiments(
            '[defaults]\nseed = 7\nrepeats = 3\npretrained = false\n[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n'
        )
    )
    assert [r.seed for r in grid] == [7, 8, 9]


@pytest.mark.parametrize("vocab", [None, 30522])
def test_fake_text_is_balanced_and_learnable(vocab):
    class Tokenizer:
        vocab_size = vocab

    data = datasets.load(
        "fake-text", image_size=0, batch_size=1024, seed=0, val_fraction=0.2, tokenizer=Tokenizer() if vocab else None
    )
    dataset = data.train.dataset.dataset
    ids = torch.stack([dataset[i][0]["input_ids"] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))])
    share = float(labels.float().mean())
    assert 0.45 <= share <= 0.55  # balanced: a constant guess scores about half
    # Learnable: a bag of words fitted on the training split separates the validation split.
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    rows = torch.arange(len(ids)).repeat_interleave(ids.shape[1])
    bags = csr_matrix(
        (torch.ones(ids.numel()).numpy(), (rows.numpy(), ids.flatten().numpy())), shape=(len(ids), int(ids.max()) + 1)
    )
    train, val = data.train.dataset.indices, data.val.dataset.indices
    classifier = LogisticRegression(max_iter=1000).fit(bags[train], labels[train].numpy())
    assert classifier.score(bags[val], labels[val].numpy()) > 0.95


def _tiny_loader(n=32, batch=8):
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_train_runs_the_after_step_hooks_after_every_step():
    from greenlab.core.train.compression import TrainingHooks

    seen = []
    model = zoo.build_model("tinycnn", 10, pretrained=False)
    loader = _tiny_loader()
    hooks = TrainingHooks(after_step=[lambda m: seen.append(m)])
    training.train(
        model,
        loader,
        loader,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=2,
        optimizer="sgd",
        lr=0.01,
        hooks=hooks,
    )
    assert len(seen) == 2 * len(loader) and all(m is model for m in seen)


def test_train_runs_forward_passes_under_the_hooks_autocast():
    from greenlab.core.train.compression import TrainingHooks

    model = zoo.build_model("tinycnn", 10, pretrained=False)
    dtypes = []
    model[-1].register_forward_hook(lambda module, inputs, output: dtypes.append((module.training, output.dtype)))
    loader = _tiny_loader(n=16)
    training.train(
        model,
        loader,
        loader,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=1,
        optimizer="sgd",
        lr=0.01,
        hooks=TrainingHooks(autocast_dtype=torch.bfloat16),
    )
    assert {d for training_mode, d in dtypes if training_mode} == {torch.bfloat16}  # training steps
    assert {d for training_mode, d in dtypes if not training_mode} == {torch.bfloat16}  # evaluation
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights alone


def test_train_scales_the_loss_when_the_hooks_ask(monkeypatch):
    from greenlab.core.train.compression import TrainingHooks

    scaled = []

    class SpyScaler(torch.amp.GradScaler):
        def scale(self, outputs):
            scaled.append(float(outputs.detach()))
            return super().scale(outputs)

    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    model = zoo.build_model("tinycnn", 10, pretrained=False)
    loader = _tiny_loader(n=16)
    training.train(
        model,
        loader,
        loader,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=1,
        optimizer="sgd",
        lr=0.01,
        hooks=TrainingHooks(grad_scaler=True),
    )
    assert len(scaled) == len(loader)


# -- measure the model, not the input pipeline -------------------------------------------------------------
class SleepyImages(torch.utils.data.Dataset):
    """A dataset whose every item takes `delay` seconds to load: an input pipeline slower than the model."""

    def __init__(self, n=24, delay=0.02):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=generator)
        self.y = torch.randint(0, 10, (n,), generator=generator)
        self.delay = delay
        self.loaded = 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        import time

        time.sleep(self.delay)
        self.loaded += 1
        return self.x[index], self.y[index]


def test_a_slow_input_pipeline_shows_as_data_wait_and_makes_the_run_input_bound():
    from greenlab.core.run.measurement import input_bound

    sleepy = torch.utils.data.DataLoader(SleepyImages(), batch_size=8)
    (result,) = training.train(
        zoo.build_model("tinycnn", 10, pretrained=False),
        sleepy,
        sleepy,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=1,
        optimizer="sgd",
        lr=0.01,
    )
    # 24 items of 20 ms each phase: at least 0.48 s waited, whatever this machine's speed.
    assert result.train_data_wait_s >= 0.45 and result.eval_data_wait_s >= 0.45
    assert result.train_data_wait_s <= result.train_s
    note = input_bound(result.train_data_wait_s, result.train_s)
    assert note is not None and "num_workers" in note and "input_bound" in note
    assert input_bound(0.1, 1.0) is None  # 10 %: the model's time, not the loader's


def test_the_loop_never_loads_a_batch_it_will_not_use():
    sleepy = SleepyImages(n=40, delay=0.0)
    loader = torch.utils.data.DataLoader(sleepy, batch_size=8)
    training.train(
        zoo.build_model("tinycnn", 10, pretrained=False),
        loader,
        loader,
        device=torch.device("cpu"),
        num_classes=10,
        epochs=1,
        optimizer="sgd",
        lr=0.01,
        max_train_batches=2,
        max_eval_batches=1,
    )
    assert sleepy.loaded == (2 + 1) * 8


def test_auto_workers_follow_the_device_and_the_cores(tmp_path):
    assert datasets.worker_count("auto", "cpu", cores=16) == 0  # cached tensors: a worker would take a core
    assert datasets.worker_count("auto", "cuda", cores=16) == datasets.AUTO_WORKERS_MAX
    assert datasets.worker_count("auto", "cuda", cores=2) == 1
    assert datasets.worker_count("auto", "cuda", cores=1) == 0
    assert datasets.worker_count(3, "cpu") == 3
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a container limited to 1.5 CPUs
    assert datasets.usable_cores(quota) == min(2, datasets.usable_cores(tmp_path / "none"))


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true but no accelerator")
def test_cuda_loaders_pin_keep_their_workers_and_reap_them(monkeypatch):
    monkeypatch.setattr(datasets, "usable_cores", lambda: 2)
    data = datasets.load(
        "digits", image_size=8, batch_size=64, seed=0, val_fraction=0.2, num_workers="auto", device_type="cuda"
    )
    assert data.pipeline() == {"num_workers": 1, "pin_memory": True, "persistent_workers": True, "cache": "memory"}
    assert data.train.pin_memory and data.train.persistent_workers and data.val.persistent_workers
    data.start_workers()  # forked before any measured window...
    workers = data.val._iterator._workers
    assert all(w.is_alive() for w in workers)
    next(iter(data.val))
    assert data.val._iterator._workers == workers  # ...and the same processes serve every epoch
    data.close()
    assert not any(w.is_alive() for w in workers)


def test_a_large_set_is_resized_once_into_a_cache_file_that_later_runs_reuse(tmp_path, monkeypatch):
    from PIL import Image

    folder = tmp_path / "images"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 12), color=(i * 60, 30, 200)).save(folder / label / f"{i}.png")
    in_memory = datasets.load(f"imagefolder:{folder}", image_size=16, batch_size=8, seed=0, val_fraction=0.25)
    monkeypatch.setattr(datasets, "MEMORY_CACHE_BYTES", 100)
    first = datasets.load(f"imagefolder:{folder}", image_size=16, batch_size=8, seed=0, val_fraction=0.25)
    (cached,) = (tmp_path / "data" / "cache").glob("imagefolder-*-16px.npy")
    assert first.cache == str(cached) and in_memory.cache == "memory"
    written = cached.stat().st_mtime_ns
    second = datasets.load(f"imagefolder:{folder}", image_size=16, batch_size=8, seed=0, val_fraction=0.25)
    assert cached.stat().st_mtime_ns == written  # reused, not resized again
    for loader in (in_memory.val, first.val, second.val):
        images, labels = next(iter(loader))
        assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    reference = next(iter(in_memory.val))[0]
    assert torch.equal(next(iter(second.val))[0], reference)  # the same pixels, from memory or the file


# -- arithmetic labelled as it is ------------------------------------------------------------------------
@pytest.fixture
def restore_float32_precision():
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn)
    saved = [b.fp32_precision for b in backends]
    yield
    for backend, value in zip(backends, saved):
        backend.fp32_precision = value


def test_float32_precision_is_set_on_cuda_not_inherited(restore_float32_precision):
    cuda = torch.device("cuda")  # a device object needs no GPU; the switches are process-wide settings
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # torch 2.14's default for convolutions
    assert training.set_float32_precision(cuda, "ieee") == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == "ieee" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert training.set_float32_precision(cuda, "tf32") == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32" and torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert training.set_float32_precision(torch.device("cpu"), "tf32") == "ieee"  # CPU float32 stays IEEE


@pytest.mark.parametrize(("capability", "native"), [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_bfloat16_is_native_from_compute_capability_8(monkeypatch, capability, native):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    assert training.bfloat16_native(torch.device("cuda")) is native

"""The child process of one run: build data and model, compress, train, and stream events.

Before anything is measured it fixes the arithmetic (float32 in IEEE or TF32 as `fp32_precision` says,
and whether bfloat16 is native on the device), resizes the dataset once and starts the data loaders'
workers; what was in force is reported with the model (`ModelPrepared.columns`) and the run's start.

Started by the run supervisor (greenlab.core.run.supervisor) as `python -m greenlab.core.run.child_main --event-fd N` with the run as JSON on stdin.
It writes events to file descriptor N (not stdout, which libraries are free to print on) and never
touches the store: if it crashes, the supervisor still has everything it was sent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
import traceback
from typing import Any, TextIO

from greenlab.core.errors import GreenLabError
from greenlab.core.plan.config import GridRun
from greenlab.core.train import child_events, compression, datasets, training, zoo
from greenlab.core.train.compression.model_size import model_stats, weights_dtype


class EventWriter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: child_events.Event) -> None:
        self.stream.write(child_events.encode(event))
        self.stream.flush()


def _cuda_identity(device: Any) -> dict[str, Any]:
    """The CUDA board a run trains on, as NVML can find it: UUID and PCI bus id (empty off CUDA)."""
    if device.type != "cuda":
        return {}
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    bus = getattr(props, "pci_bus_id", None)
    pci = (
        f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        if isinstance(bus, int)
        else None
    )
    return {"cuda_index": index, "cuda_uuid": str(uuid) if uuid is not None else None, "pci_bus_id": pci}


def execute(run: GridRun, emit: EventWriter) -> None:
    """Run one grid entry end to end, emitting events; raises on failure (the caller reports it)."""
    s = run.settings
    training.seed_everything(run.seed)
    device = training.resolve_device(s.device)
    precision = training.set_float32_precision(device, s.fp32_precision)
    bf16_native = training.bfloat16_native(device)
    spec = zoo.spec_for(run.model)
    if spec.modality != datasets.modality(s.dataset):
        raise GreenLabError(
            f"model '{run.model}' takes {spec.modality} input but dataset '{s.dataset}' is "
            f'{datasets.modality(s.dataset)}; use dataset = "fake-text" for text models'
        )
    image_size = None
    if spec.modality == "image":
        image_size = s.image_size or datasets.default_image_size(s.dataset, spec.input_size, spec.min_input_size)
        if image_size < spec.min_input_size:
            raise GreenLabError(
                f"{run.model} needs inputs of at least {spec.min_input_size} px, "
                f"image_size is {image_size}; raise image_size"
            )
    # The split is fixed by the grid's seed, so every technique and repeat sees the same examples; the
    # shuffle order follows the run's own seed, so repeats are independent draws.
    data = datasets.load(
        s.dataset,
        image_size=image_size or 0,
        batch_size=s.batch_size,
        seed=s.seed,
        shuffle_seed=run.seed,
        val_fraction=s.val_fraction,
        train_limit=s.train_limit,
        num_workers=s.num_workers,
        tokenizer=zoo.tokenizer_for(run.model),
        device_type=device.type,
    )
    try:
        _train(run, emit, data, device, image_size, precision, bf16_native)
    finally:
        data.close()  # the workers end (and are reaped) inside the child: their CPU time is the run's


def _train(
    run: GridRun,
    emit: EventWriter,
    data: datasets.DataBundle,
    device: Any,
    image_size: int | None,
    precision: str | None,
    bf16_native: bool | None,
) -> None:
    s = run.settings
    batches = len(data.train) if s.max_train_batches is None else min(len(data.train), s.max_train_batches)
    emit(
        child_events.RunStarted(
            device=str(device),
            dataset=s.dataset,
            n_train=data.n_train,
            n_val=data.n_val,
            num_classes=data.num_classes,
            image_size=image_size,
            input_description=data.input_description,
            batches_per_epoch=batches,
            epochs=s.epochs,
            seed=run.seed,
            input_pipeline=data.pipeline(),
            **_cuda_identity(device),
        )
    )
    model = zoo.build_model(run.model, data.num_classes, s.pretrained).to(device)
    example_inputs, _ = next(iter(data.train))
    data.start_workers()  # forked now, outside every measured window, and kept for the run
    example = training.to_device(example_inputs, device)
    before = model_stats(model, example)

    def evaluate(candidate: Any) -> float:
        return training.evaluate(candidate, data.val, device, data.num_classes, max_batches=s.max_eval_batches)[0]

    context = compression.CompressionContext(
        evaluate=evaluate,
        device=device,
        seed=run.seed,
        example_input=example,
        num_classes=data.num_classes,
        log=lambda message: emit(child_events.LogWritten(message)),
        bf16_native=bf16_native,
    )
    applied = compression.apply(run.parts, model, run.technique_settings, context)
    model = applied.model.to(device)
    autocast = applied.hooks.autocast_dtype
    after = model_stats(model, example, autocast_dtype=autocast)
    applied.columns = arithmetic_columns(applied.columns, autocast, weights_dtype(model), precision, bf16_native)
    notes = arithmetic_notes(applied.columns, device, s.fp32_precision)
    applied.warnings.extend(note for note in notes if note not in applied.warnings)
    if (
        run.technique != compression.BASELINE
        and not applied.warnings
        and before == after
        and not applied.hooks.after_step
        and applied.hooks.autocast_dtype is None
    ):
        applied.warnings.append(f"{run.technique} changed nothing in {run.model}")
    emit(
        child_events.ModelPrepared(
            before=before,
            after=after,
            columns=applied.columns,
            report=applied.report,
            warnings=applied.warnings,
            capacity_curve=[list(p) for p in applied.capacity_curve] if applied.capacity_curve else None,
        )
    )

    results = training.train(
        model,
        data.train,
        data.val,
        device=device,
        num_classes=data.num_classes,
        epochs=s.epochs,
        optimizer=s.optimizer,
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        hooks=applied.hooks,
        max_train_batches=s.max_train_batches,
        max_eval_batches=s.max_eval_batches,
        on_phase=lambda epoch, phase, edge: emit(
            child_events.PhaseBegan(epoch, phase, time.monotonic())
            if edge == "begin"
            else child_events.PhaseEnded(epoch, phase, time.monotonic())
        ),
        on_batch=lambda epoch, batch, total, loss: emit(child_events.BatchFinished(epoch, batch, total, loss)),
        on_epoch=emit,
    )
    last = results[-1]
    emit(
        child_events.RunFinished(
            val_accuracy=last.val_accuracy, val_f1=last.val_f1, train_s=sum(r.train_s for r in results)
        )
    )


def arithmetic_columns(
    technique: dict[str, Any], autocast: Any, weights: str, precision: str | None, bf16_native: bool | None
) -> dict[str, Any]:
    """What the run really computes in and stores, whatever the technique (every run records them): the
    format of its matrix products and convolutions (`tf32` where float32 ran in TF32), its weights' format,
    the float32 precision in force, whether bfloat16 is native, and the mantissa bits its arithmetic keeps
    (a stego run's own count by mode, never more than its arithmetic keeps)."""
    compute = str(autocast).removeprefix("torch.") if autocast is not None else "float32"
    columns = {"compute_dtype": compute, "train_dtype": compute, "weights_dtype": weights, **technique}
    if columns["compute_dtype"] == "float32" and precision == "tf32":
        columns["compute_dtype"] = columns["train_dtype"] = "tf32"
    arithmetic_bits = training.MANTISSA_BITS.get(columns["compute_dtype"])
    kept = columns.get("mantissa_bits_kept")
    if kept is None or (arithmetic_bits is not None and columns.get("stego_mode") != "truncate"):
        # mode "truncate" counts the bits left in the weights; the arithmetic's are `fp32_precision`'s.
        kept = arithmetic_bits if kept is None else min(kept, arithmetic_bits or kept)
    columns.update(fp32_precision=precision, bf16_native=bf16_native, mantissa_bits_kept=kept)
    return columns


def arithmetic_notes(columns: dict[str, Any], device: Any, asked: str) -> list[str]:
    """What a reader of the run must know of its arithmetic: an emulated bfloat16 on a GPU, a TF32
    setting that has no effect off CUDA."""
    notes = []
    if columns.get("compute_dtype") == "bfloat16" and columns.get("bf16_native") is False and device.type == "cuda":
        notes.append(
            "bfloat16 on this GPU is emulated (compute capability below 8.0): the run measures the emulation, "
            "slower and costlier than float32, a property of this GPU, not of fewer bits"
        )
    if asked == "tf32" and device.type != "cuda":
        notes.append(f'fp32_precision = "tf32" applies to CUDA only: float32 on {device.type} stays IEEE')
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greenlab-child")
    parser.add_argument("--event-fd", type=int, required=True)
    args = parser.parse_args(argv)
    stream = os.fdopen(args.event_fd, "w", buffering=1, encoding="utf-8")
    emit = EventWriter(stream)
    try:
        return _run(emit)
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        with contextlib.suppress(OSError, ValueError):  # a supervisor that is gone hears nothing
            emit(
                child_events.ProcessEnding(
                    cpu_s=usage.ru_utime + usage.ru_stime, children_cpu_s=children.ru_utime + children.ru_stime
                )
            )


def _run(emit: EventWriter) -> int:
    try:
        run = GridRun.from_json(json.loads(sys.stdin.read()))
        execute(run, emit)
    except KeyboardInterrupt:
        return 130
    except GreenLabError as exc:
        emit(child_events.RunFailed(error=str(exc), kind=type(exc).__name__, user_error=True))
        return 1
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the store, whatever it is
        message = str(exc) or type(exc).__name__
        if "out of memory" in message.lower():
            message = f"out of memory: {message.splitlines()[0]}; lower batch_size or image_size"
        emit(child_events.RunFailed(error=message, kind=type(exc).__name__, traceback=traceback.format_exc()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

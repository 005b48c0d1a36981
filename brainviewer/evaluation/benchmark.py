"""Timings of what users wait for: ``python -m brainviewer benchmark``.

Measured on CPU always, and on CUDA too when it is available:

* model forward time per slice (batch 1 and batch 16);
* upload to panels: file bytes -> scan -> probabilities -> threshold -> overlays -> five-panel figure;
* re-threshold: a slider move (threshold, metrics, two overlays) from cached probabilities;
* the reading view at 512x512: a window/level move, a threshold move, the five panels' PNGs;
* training throughput (images/s) of a resnet18 U-Net on 128x128 crops, batch 16;
* inference throughput per slice and per 40-slice patient volume.

Each figure is the median of ``--repeats`` runs after one warm-up run; a slow measurement
stops early once it has used its time budget (the table says how many runs it took).

This module is the harness (timing, results, the table, the command); what it times is in
:mod:`brainviewer.evaluation.benchmark_workloads`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from brainviewer.evaluation.benchmark_workloads import (
    SLICE_SIDE,
    TRAIN_BATCH,
    TRAIN_CROP,
    VOLUME_SLICES,
    _cached_item,
    _figure_only,
    _forward_fn,
    _onnx_segmenter,
    _phantom_upload,
    _review_flow,
    _training_step_fn,
    load_benchmark_segmenter,
    reading_view_rows,
)
from brainviewer.files import write_new

logger = logging.getLogger(__name__)


@dataclass
class Measurement:
    """One timed quantity: median seconds per run and what a run is."""

    device: str
    name: str
    median_s: float
    runs: int
    items: int = 1
    unit: str = "slice"
    note: str = ""

    @property
    def per_item_ms(self) -> float:
        return 1000.0 * self.median_s / self.items

    @property
    def items_per_s(self) -> float:
        return self.items / self.median_s if self.median_s > 0 else float("inf")


@dataclass
class BenchmarkResult:
    """Everything :func:`run_benchmark` measured, with the context needed to read it."""

    torch_version: str
    threads: int
    interop_threads: int
    cpu: str
    weights: str
    untrained: bool
    input_size: int
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        data = asdict(self)
        for entry, m in zip(data["measurements"], self.measurements, strict=True):
            entry["per_item_ms"] = m.per_item_ms
            entry["items_per_s"] = m.items_per_s
        return data


def time_runs(
    fn: Callable[[], object], repeats: int, budget_s: float, sync: Callable[[], None] | None = None
) -> list[float]:
    """Seconds of each run of ``fn`` after one untimed warm-up run.

    Stops after ``repeats`` runs, or earlier once ``budget_s`` seconds have been spent
    (always at least one timed run).
    """
    sync = sync or (lambda: None)
    fn()
    sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < max(1, repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if spent > budget_s:
            break
    return times


def run_benchmark(
    weights: str | None = None,
    devices: list[str] | None = None,
    repeats: int = 10,
    skip_training: bool = False,
    budget_s: float = 10.0,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Measure everything listed in the module docstring.

    Args:
        weights: weights spec (see :func:`brainviewer.model.weights.resolve_segmenter`); ``None``: the app's model.
        devices: devices to time on (default: ``cpu``, plus ``cuda`` when available).
        repeats: timed runs per measurement (after one warm-up).
        skip_training: leave out the training throughput.
        budget_s: a measurement stops repeating once it has spent this many seconds.
        progress: called with the name of each measurement as it starts.
    """
    from dataclasses import replace

    from brainviewer.model.segmenter import Segmenter

    notes: list[str] = []
    base, label, untrained = load_benchmark_segmenter(weights, notes)
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    result = BenchmarkResult(
        torch_version=torch.__version__,
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        cpu=" ".join(filter(None, [platform.machine(), platform.processor()])) + f" ({os.cpu_count()} logical CPUs)",
        weights=label,
        untrained=untrained,
        input_size=base.prep.input_size,
        notes=notes,
    )
    if base.prep.input_size != SLICE_SIDE:
        notes.append(
            f"the model's input is {base.prep.input_size}x{base.prep.input_size}: forward timings are at "
            "that size; the 256x256 scans of the other rows are resized to it"
        )
    upload_to_panels, rethreshold = _review_flow(notes)
    scan_png, mask_png, image, truth = _phantom_upload()
    volume = [_phantom_upload(seed)[2] for seed in range(VOLUME_SLICES)]
    say = progress or (lambda _: None)

    for device_name in devices:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            notes.append(f"{device_name} requested but CUDA is not available; skipped")
            continue
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        tag = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        if device.type == "cuda":
            model = Segmenter.from_folder(base.source, device=device).model if base.source else None
            model = model if model is not None else copy.deepcopy(base.model).to(device)
            segmenter = replace(base, model=model.to(memory_format=torch.channels_last), device=device)
        else:
            segmenter = base

        def measure(
            name: str,
            fn: Callable[[], object],
            items: int = 1,
            unit: str = "slice",
            note: str = "",
            device_tag: str = tag,
            sync_fn: Callable[[], None] | None = sync,
        ) -> None:
            say(f"{device_tag}: {name}")
            times = time_runs(fn, repeats, budget_s, sync_fn)
            result.measurements.append(
                Measurement(device_tag, name, statistics.median(times), len(times), items, unit, note)
            )

        for batch in (1, 16):
            measure(f"model forward, batch {batch}", _forward_fn(segmenter, batch), items=batch)
        measure("upload -> panels (256x256)", lambda seg=segmenter: upload_to_panels(seg, scan_png, mask_png))
        probs = segmenter.predict_probs(image)
        cached = _cached_item(scan_png, mask_png, probs, image, truth)
        thresholds = iter(np.linspace(0.05, 0.95, 10_000))
        measure(
            "re-threshold (cached probs)",
            lambda c=cached, t=thresholds: rethreshold(c, float(next(t))),
            note="threshold + metrics + 2 overlays",
            sync_fn=None,
        )
        if _figure_only(cached) is not None:
            measure(
                "five-panel figure PNG (drawn on download)",
                lambda c=cached: _figure_only(c),
                sync_fn=None,
                note="matplotlib, from cached probs",
            )
        if device.type == "cpu":  # server work, the same on every device
            for name, fn, note in reading_view_rows(segmenter):
                measure(name, fn, note=note, sync_fn=None)
        if not skip_training:
            measure(
                f"training step ({TRAIN_BATCH} x {TRAIN_CROP}x{TRAIN_CROP})",
                _training_step_fn(device),
                items=TRAIN_BATCH,
                unit="image",
                note="resnet18 U-Net, AdamW" + (", bf16" if sync else ""),
            )
            if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
                measure(
                    f"training step ({TRAIN_BATCH} x {TRAIN_CROP}x{TRAIN_CROP}), --cpu-amp",
                    _training_step_fn(device, bf16=True),
                    items=TRAIN_BATCH,
                    unit="image",
                    note="bf16 autocast on this CPU's native bf16",
                )
        measure(
            f"inference, {VOLUME_SLICES}-slice volume",
            lambda seg=segmenter: seg.predict_probs_batch(volume, 16),
            items=VOLUME_SLICES,
            note="read-to-probs, batches of 16",
        )
        if device.type == "cpu":
            onnx_segmenter = _onnx_segmenter(base, notes)
            if onnx_segmenter is not None:
                measure(
                    "ONNX Runtime predict_probs, 1 slice",
                    lambda seg=onnx_segmenter: seg.predict_probs(image),
                    note="vs PyTorch predict_probs: next row",
                )
                measure("PyTorch predict_probs, 1 slice", lambda seg=segmenter: seg.predict_probs(image))
    return result


def format_table(result: BenchmarkResult) -> str:
    """The results as a plain-text table with a header of context and notes."""
    lines = [
        f"torch {result.torch_version}; {result.threads} intra-op / {result.interop_threads} inter-op torch threads; "
        f"CPU {result.cpu}",
        f"weights: {result.weights}"
        + (" (UNTRAINED)" if result.untrained else "")
        + f"; model input {result.input_size}x{result.input_size}",
        "",
    ]
    header = ("device", "measurement", "median", "runs", "per item", "throughput", "note")
    rows = [header]
    for m in result.measurements:
        rows.append(
            (
                m.device,
                m.name,
                _fmt_seconds(m.median_s),
                str(m.runs),
                f"{m.per_item_ms:.1f} ms/{m.unit}",
                f"{m.items_per_s:.1f} {m.unit}s/s",
                m.note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    by_name = {(m.device, m.name): m for m in result.measurements}
    for device in dict.fromkeys(m.device for m in result.measurements):
        forward = by_name.get((device, "model forward, batch 1"))
        rethreshold = by_name.get((device, "re-threshold (cached probs)"))
        if forward and rethreshold:
            lines.append(
                f"{device}: a threshold change costs {rethreshold.median_s / forward.median_s:.1%} of one forward pass"
            )
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def main(args: argparse.Namespace) -> int:
    """``python -m brainviewer benchmark``: print the table (and write ``--json``)."""
    json_path = Path(args.json) if getattr(args, "json", None) else None
    if json_path is not None and json_path.exists():
        raise FileExistsError(f"{json_path} already exists; choose another --json path")
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    devices = None
    if getattr(args, "device", None):
        devices = ["cpu"] if args.device == "cpu" else ["cpu", args.device]
    result = run_benchmark(
        weights=args.weights,
        devices=devices,
        repeats=args.repeats,
        skip_training=args.skip_training,
        progress=lambda name: logger.info("timing %s", name),
    )
    print(format_table(result))
    if json_path is not None:
        write_new(json_path, json.dumps(result.to_json(), indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0

"""Model cards written beside every weights folder."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from brainviewer.config import TrainConfig


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def render_card(config: TrainConfig, state: object, summary: dict, run_dir: Path) -> str:
    """Markdown model card: data, split, configuration, training, validation metrics."""
    split_path = run_dir / "split.json"
    import json

    split = json.loads(split_path.read_text()) if split_path.exists() else {"train": [], "val": []}
    hours = getattr(state, "train_seconds", 0.0) / 3600
    lines = [
        "---",
        "library_name: segmentation-models-pytorch",
        "tags: [medical-imaging, brain-mri, tumour-segmentation, brainviewer]",
        "license: mit",
        "---",
        f"# brainviewer model: {config.arch} / {config.encoder}",
        "",
        "Binary tumour segmentation of 2-D brain MRI slices, trained from scratch (no ImageNet weights) "
        "with [brainviewer](https://github.com/) `python -m brainviewer train`.",
        "Not a medical device: for research and review, never for diagnosis.",
        "",
        "## Data",
        f"- Dataset: `{config.data}`" + (f" (fine-tuned from `{config.init_weights}`)" if config.init_weights else ""),
        f"- Split by patient ({split.get('mode', config.split_mode)}, seed {config.seed}): "
        f"{len(split['train'])} training, {len(split['val'])} validation patients (listed in `split.json`).",
        "",
        "## Training",
        f"- Architecture {config.arch}, encoder {config.encoder}, {config.in_channels} input channels, "
        f"input {config.input_size}x{config.input_size}"
        + (f", trained on {config.crop_size}x{config.crop_size} crops" if config.crop_size else ""),
        f"- Loss {config.loss}, AdamW lr {config.lr}, weight decay {config.weight_decay}, batch {config.batch_size}, "
        f"augmentation {config.augment}",
        f"- Best epoch {getattr(state, 'best_epoch', -1) + 1} of {getattr(state, 'epoch', 0) + 1} run so far; "
        f"{getattr(state, 'global_step', 0)} steps; {hours:.2f} h of training on {_hardware()}",
        "- Full configuration: `train_config.json`",
        "",
        "## Validation (per patient volume, Buda et al. 2019 protocol)",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("patients", "slices", "mean_volume_dice", "median_volume_dice", "micro_dice",
                "mean_tumour_slice_dice", "fp_rate_empty_slices", "threshold", "min_component_px"):
        if key in summary:
            lines.append(f"| {key} | {_fmt(summary[key])} |")
    lines += ["", "Reproduce: `python -m brainviewer evaluate DATASET --weights THIS_FOLDER --split split.json`", ""]
    return "\n".join(lines)

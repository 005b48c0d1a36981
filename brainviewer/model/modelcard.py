"""Model cards written beside every weights folder."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from brainviewer.data.split import Split, base_trained_val, weights_split
from brainviewer.model.hub_card import CardRecords, card_data, dataset_short_name, folder_records, front_matter_lines
from brainviewer.model.preprocessing import trained_on_grayscale
from brainviewer.training.config import TrainConfig


def _hardware(config: TrainConfig) -> str:
    if config.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    threads = config.threads or torch.get_num_threads()
    return f"CPU ({platform.processor() or platform.machine()}, {threads} torch thread{'s' if threads > 1 else ''})"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _trained_on_lines(config: TrainConfig, split: dict) -> list[str]:
    """A warning line when validation patients were in the base model's training set (else none)."""
    if not config.init_weights:
        return []
    this = Split(train=list(split["train"]), val=list(split["val"]), mode="", seed=0)
    trained_on = base_trained_val(this, weights_split(config.init_weights))
    if not trained_on:
        return []
    return [
        f"- **Caution**: {len(trained_on)} of the {len(split['val'])} validation patients were in the base model's "
        f"training set ({', '.join(f'`{p}`' for p in trained_on)}), so the validation figures below flatter the model."
    ]


def front_matter(
    title: str,
    origin: str,
    in_channels: int,
    input_size: int,
    channel_names: Sequence[str] | None = None,
    records: CardRecords | None = None,
) -> list[str]:
    """Card lines up to the data section: Hub metadata (:mod:`brainviewer.model.hub_card`, with the results of
    ``records`` where given), title, origin sentence, caution, input."""
    return [
        *front_matter_lines(card_data(records or CardRecords(name=title))),
        f"# brainviewer model: {title}",
        "",
        origin,
        "",
        "**Not a medical device**: for research and for reviewing model behaviour, never for diagnosis. "
        "It was validated only on the held-out patients below, from the same public dataset.",
        "",
        "## Input",
        f"- {in_channels} channel(s) "
        + (
            "(grayscale)"
            if in_channels != 3
            else "(trained on grayscale scans, each repeated into all three)"
            if channel_names and trained_on_grayscale(channel_names)
            else "(pre-contrast, FLAIR, post-contrast, as in the LGG dataset; "
            "a grayscale scan is repeated into all three)"
        )
        + f"; any size, letterboxed to {input_size}x{input_size}; the mask comes back at the "
        "scan's size. Preprocessing and the chosen threshold are in `preprocessing.json`.",
        "",
    ]


def _records(config: TrainConfig, split: dict, summary: dict, run_dir: Path) -> CardRecords:
    """The Hub metadata's records of a run: its data, its base model's data, split and validation summary."""
    base: list[str] = []
    if config.init_weights and Path(config.init_weights).is_dir():
        found = folder_records(config.init_weights, Path(config.init_weights).parent)
        base = [d for d in [dataset_short_name(found.dataset_path), *found.base_datasets] if d]
    return CardRecords(name=run_dir.name, dataset_path=config.data, base_datasets=base, split=split, validation=summary)


def render_card(
    config: TrainConfig, state: object, summary: dict, run_dir: Path, channel_names: Sequence[str] | None = None
) -> str:
    """Markdown model card: data, split, configuration, training, validation metrics (``channel_names``:
    the weights' ``Preprocessing.channel_names``, which say whether they read grayscale scans)."""
    split_path = run_dir / "split.json"
    import json

    split = json.loads(split_path.read_text()) if split_path.exists() else {"train": [], "val": []}
    hours = getattr(state, "train_seconds", 0.0) / 3600
    origin = (
        "fine-tuned from another brainviewer model."
        if config.init_weights
        else "trained from scratch (no ImageNet weights)."
    )
    lines = [
        *front_matter(
            f"{config.arch} / {config.encoder}",
            "Binary tumour segmentation of 2-D brain MRI slices with brainviewer (`python -m brainviewer train`), "
            + origin,
            config.in_channels,
            config.input_size,
            channel_names,
            _records(config, split, summary, run_dir),
        ),
        "## Data",
        f"- Dataset: `{Path(config.data).name}` (path at training time: `{config.data}`)"
        + (f"; base model `{Path(config.init_weights).name}`" if config.init_weights else ""),
        (
            f"- Split by patient, reusing the saved split `{split['source']}` (the patients it lists keep their side): "
            if split.get("source")
            else f"- Split by patient ({split.get('mode', config.split_mode)}"
            + (
                f", fold {config.cv_fold + 1} of {config.cv_folds} of a cross-validation"
                if config.cv_folds
                else (f", the last ids of each of {config.split_blocks} id ranges" if config.split_blocks > 1 else "")
            )
            + f", seed {config.seed}): "
        )
        + f"{len(split['train'])} training, {len(split['val'])} validation patients (listed in `split.json`)."
        + (
            f" `split.json` also lists (`base_train`) the {len(split['base_train'])} patients the base model was "
            "trained on: these weights have seen them too."
            if split.get("base_train")
            else ""
        ),
        *_trained_on_lines(config, split),
        "",
        "## Training",
        f"- Architecture {config.arch}, encoder {config.encoder}, {config.in_channels} input channels, "
        f"input {config.input_size}x{config.input_size}"
        + (f", trained on {config.crop_size}x{config.crop_size} crops" if config.crop_size else ""),
        f"- Loss {config.loss}, AdamW lr {config.lr}, weight decay {config.weight_decay}, batch {config.batch_size}, "
        f"augmentation {config.augment}",
        f"- Best validation at epoch {getattr(state, 'best_epoch', -1) + 1}; {getattr(state, 'epoch', 0)} of "
        f"{config.epochs} planned epochs run ({getattr(state, 'global_step', 0)} steps); "
        f"{hours:.2f} h of training on {_hardware(config)}",
        "- Full configuration: `train_config.json`",
        "",
        "## Validation (per patient volume, Buda et al. 2019 protocol)",
    ]
    lines += validation_table(summary)
    lines += ["", "Reproduce: `python -m brainviewer evaluate DATASET --weights THIS_FOLDER --split split.json`", ""]
    return "\n".join(lines)


def validation_table(summary: dict) -> list[str]:
    """Markdown rows (header included) of an evaluation summary's figures and settings."""
    lines = ["| metric | value |", "|---|---|"]
    for key in (
        "patients",
        "slices",
        "mean_volume_dice",
        "median_volume_dice",
        "micro_dice",
        "mean_tumour_slice_dice",
        "fp_rate_empty_slices",
        "threshold",
        "min_component_px",
        "keep_largest",
        "volume_keep_largest",
        "tta_flip",
    ):
        if key in summary:
            lines.append(f"| {key} | {_fmt(summary[key])} |")
    return lines

"""Averaging the weights of models fine-tuned from one another ("model soup", Wortsman et al. 2022).

Models that share an ancestor and were fine-tuned with small learning rates lie in one basin of the
loss; the uniform average of their weights is usually at least as good as the best of them, at the
cost of one model at inference (unlike an ensemble). Models trained apart (from scratch, or on
different architectures) do not average: the result is noise, which validation then shows.

    python -m brainviewer average W1 W2 ... --out weights/NAME [--data DATASET]

With ``--data`` the average's threshold, post-processing and flip TTA are chosen on the validation
patients of the sources' common split, as at the end of a training run, and the folder gets the same
``validation.json`` and ``threshold_sweep.json`` a run's best weights have.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from brainviewer.data.io import natural_key
from brainviewer.data.split import SPLIT_FILE, Split, weights_split
from brainviewer.files import read_json_object
from brainviewer.model.hub_card import CardRecords
from brainviewer.model.modelcard import front_matter, validation_table
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import Segmenter, default_device, load_model, save_weights
from brainviewer.training.gate_fit import GATE_FILE, gate_for_validation

logger = logging.getLogger(__name__)

SOURCES_FILE = "average.json"
"""Written beside averaged weights: the source folders, their checksums and validation figures."""


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of state dicts with the same keys and shapes.

    Floating-point tensors (weights, BatchNorm running statistics) are averaged in float64 and cast
    back to their dtype; integer buffers (BatchNorm's ``num_batches_tracked``) are taken from the first.

    Raises:
        ValueError: fewer than two state dicts, or their keys, shapes or dtypes differ.
    """
    if len(states) < 2:
        raise ValueError(f"averaging needs at least two models, got {len(states)}")
    first = states[0]
    for i, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            missing = sorted(set(first) ^ set(state))[:3]
            raise ValueError(
                f"model {i} has other tensors than model 1 (e.g. {missing}); average only one architecture"
            )
        for key, tensor in state.items():
            if tensor.shape != first[key].shape or tensor.dtype != first[key].dtype:
                raise ValueError(
                    f"model {i}'s {key} is {tuple(tensor.shape)} {tensor.dtype}, model 1's "
                    f"{tuple(first[key].shape)} {first[key].dtype}; average only one architecture"
                )
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            total = sum(state[key].to(torch.float64) for state in states)
            averaged[key] = (total / len(states)).to(tensor.dtype)
        else:
            averaged[key] = tensor.clone()
    return averaged


def _same_input(a: Preprocessing, b: Preprocessing) -> bool:
    def key(p: Preprocessing) -> tuple:
        return p.input_size, p.in_channels, list(p.mean), list(p.std)

    return key(a) == key(b)


def average_models(folders: Sequence[str | Path]) -> tuple[nn.Module, Preprocessing]:
    """The uniform weight average of the models in ``folders``, with the first one's preprocessing.

    Raises:
        ValueError: fewer than two folders, other architectures, or another input size, channel
            count or normalisation (the models would not see the same numbers).
        brainviewer.model.segmenter.WeightsError: a folder is not a complete weights folder.
    """
    if len(folders) < 2:
        raise ValueError(f"averaging needs at least two weights folders, got {len(folders)}")
    loaded = [load_model(folder) for folder in folders]
    model, prep = loaded[0]
    for folder, (other, other_prep) in zip(folders[1:], loaded[1:], strict=True):
        if type(other) is not type(model):
            raise ValueError(f"{folder} is a {type(other).__name__}, {folders[0]} a {type(model).__name__}")
        if not _same_input(prep, other_prep):
            raise ValueError(
                f"{folder} expects other input than {folders[0]} (size, channels or normalisation in "
                "preprocessing.json); average only models fine-tuned from one another"
            )
    model.load_state_dict(average_state_dicts([m.state_dict() for m, _ in loaded]))
    return model, prep


def common_split(folders: Sequence[str | Path]) -> Split | None:
    """The patient split every folder was trained with, or ``None`` when one lacks or differs.

    Averaged weights have seen every patient any source trained on, so they are held out only on
    patients all sources held out: with one common split, that is its validation side.
    """
    splits = [weights_split(folder) for folder in folders]
    if any(split is None for split in splits):
        return None
    first = splits[0]
    if any((set(s.train), set(s.val)) != (set(first.train), set(first.val)) for s in splits[1:]):
        return None
    inherited = {p for s in splits for p in s.base_train} - set(first.train)
    return replace(first, base_train=sorted(inherited, key=natural_key))


@dataclass(frozen=True)
class Source:
    """One averaged model: its folder, checksum, validation mean per-volume Dice and training
    configuration (each ``None`` when its folder does not record it)."""

    folder: str
    sha256: str
    mean_volume_dice: float | None
    train_config: dict | None


def _source(folder: str | Path) -> Source:
    folder = Path(folder)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    return Source(
        str(folder.resolve()),
        digest,
        read_json_object(folder / "validation.json").get("mean_volume_dice"),
        read_json_object(folder / "train_config.json") or None,
    )


def render_average_card(
    sources: Sequence[Source],
    model: nn.Module,
    prep: Preprocessing,
    summary: dict | None,
    split: dict | None = None,
    name: str = "weight-average",
) -> str:
    """Model card of averaged weights: the sources, their figures and the average's validation (``split``: the
    sources' common split as saved in ``split.json``; ``name``: the new folder's name, for the Hub metadata)."""
    encoder = (getattr(model, "_hub_mixin_config", None) or {}).get("encoder_name", "?")
    lines = front_matter(
        f"{type(model).__name__} / {encoder} (weight average)",
        f"The uniform average of the weights of {len(sources)} brainviewer models fine-tuned from one another "
        "(a model soup, Wortsman et al. 2022), made with `python -m brainviewer average`.",
        prep.in_channels,
        prep.input_size,
        prep.channel_names,
        CardRecords(
            name=name,
            dataset_path=next((s.train_config.get("data") for s in sources if s.train_config), None),
            split=split or {},
            validation=summary,
        ),
    )
    lines += ["## Sources", "| folder | sha256 (first 12) | validation mean per-volume Dice |", "|---|---|---|"]
    for source in sources:
        dice = "n/a" if source.mean_volume_dice is None else f"{source.mean_volume_dice:.4f}"
        lines.append(f"| `{source.folder}` | {source.sha256[:12]} | {dice} |")
    lines += [
        "",
        "Each source's training configuration is in `average.json`; its model card lies in its folder.",
        "",
    ]
    if summary is None:
        lines += ["## Validation", "Not scored: no dataset was given, or the sources share no split.", ""]
    else:
        lines += [
            "## Validation (per patient volume, Buda et al. 2019 protocol)",
            "On the validation patients of the sources' common split (`split.json`), which none of them "
            "trained on. Threshold and post-processing were chosen on these same patients.",
            "",
            *validation_table(summary),
            "",
            "Reproduce: `python -m brainviewer evaluate DATASET --weights THIS_FOLDER --split split.json`",
            "",
        ]
    return "\n".join(lines)


def write_average(
    folders: Sequence[str | Path],
    out: str | Path,
    data: str | Path | None = None,
    overwrite: bool = False,
    device: str | None = None,
) -> tuple[Path, dict | None]:
    """Average the weights in ``folders`` into the new weights folder ``out``.

    Args:
        folders: two or more weights folders of one architecture and input.
        out: the folder to write (atomically; an existing one only with ``overwrite``).
        data: a dataset holding the validation patients of the sources' common split; its
            threshold, post-processing and flip TTA are then chosen for the average on them.
        overwrite: replace an existing ``out``.
        device: for the validation pass (default: CUDA if available).

    Returns:
        ``(out, validation summary or None)``.

    Raises:
        ValueError: see :func:`average_models`; ``data`` without a common split, or with none of
            its validation patients.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    from brainviewer.data.datasets import open_dataset
    from brainviewer.evaluation.evaluate import choose_postprocessing, with_setting

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another name or pass overwrite=True")
    model, prep = average_models(folders)
    prep.tumour_gate = None  # an averaged head needs its own threshold: chosen below with data, else no gate
    split = common_split(folders)
    summary = None
    sweep = None
    gate = None
    if data is not None:
        if split is None:
            raise ValueError(
                "the sources do not share one split.json, so no patient is held out from all of them; "
                "average models trained on one split, or leave out the dataset"
            )
        dataset = open_dataset(data).subset(split.val)
        if not len(dataset):
            raise ValueError(f"none of the {len(split.val)} validation patients of the sources' split are in {data}")
        run_on = torch.device(device) if device is not None else default_device()
        segmenter = Segmenter(model=model.to(run_on).eval(), prep=prep, device=run_on, name=out.name)
        chosen, candidates = choose_postprocessing(segmenter, dataset)
        prep = with_setting(prep, chosen)
        segmenter.prep = prep
        gate = gate_for_validation(segmenter, dataset)  # sets prep.tumour_gate where the models have a head
        summary = chosen.summary()
        sweep = [report.summary() for report in candidates]
        logger.info("average on %d validation patients: mean Dice %.4f", len(split.val), chosen.mean_dice)
    sources = [_source(folder) for folder in folders]
    record = {"sources": [asdict(s) for s in sources], "data": str(data) if data is not None else None}
    extra = {SOURCES_FILE: json.dumps(record, indent=2) + "\n"}
    if split is not None:
        extra[SPLIT_FILE] = json.dumps(asdict(split), indent=2) + "\n"
    if gate is not None:
        extra[GATE_FILE] = json.dumps(gate, indent=2) + "\n"
    if summary is not None:
        extra["validation.json"] = json.dumps(summary, indent=2) + "\n"
        extra["threshold_sweep.json"] = json.dumps(sweep, indent=2) + "\n"
    card = render_average_card(sources, model, prep, summary, asdict(split) if split else None, out.name)
    folder = save_weights(model.cpu(), out, prep, card=card, extra_files=extra, overwrite=overwrite)
    return folder, summary

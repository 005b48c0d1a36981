"""The one training configuration. Saved as ``config.json`` beside every run and checkpoint."""

from __future__ import annotations

import argparse
import itertools
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from brainviewer.model.preprocessing import INTENSITY_NORMS

LOSSES = ("dice", "bce", "bce_dice", "focal", "tversky", "focal_tversky")
AUGMENTATIONS = ("none", "light", "medium", "strong")
SPLIT_MODES = ("random", "contiguous")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Every field is a ``--flag`` of
    ``python -m brainviewer train``; ``--config FILE`` reads them from JSON."""

    # data
    data: str = "../shared/data/lgg"
    """Dataset to train on: any layout brainviewer reads (kaggle_3m, data_mask.csv, images/+masks/, COCO)."""
    val_fraction: float = 0.15
    """Share of patients held out for validation (ignored when val_patients > 0)."""
    val_patients: int = 0
    """Exact number of validation patients (0 = use val_fraction)."""
    split_mode: str = "random"
    """random: seeded shuffle of patients; contiguous: the last patients in natural id order."""
    split_blocks: int = 1
    """With split_mode contiguous: hold out the tail of each of this many equal runs of ids."""
    cv_folds: int = 0
    """Cross-validation: cut the patients into this many folds (by split_mode, seed and split_blocks) and
    hold out fold cv_fold, ignoring val_fraction / val_patients (0 = a single split)."""
    cv_fold: int = 0
    """With cv_folds: the held-out fold, 0 .. cv_folds - 1; one run per fold validates every patient once."""
    split_file: str = ""
    """Reuse a saved split: a split.json, or a weights or run folder holding one (e.g. the base model's, so
    the patients it was validated on stay unseen). Patients it lists keep their side; the dataset's other
    patients are split by the settings above. Empty: draw the split from the settings alone."""
    seed: int = 42
    """Seeds the split, the initialisation, the order of slices and every augmentation."""

    # model
    arch: str = "Unet"
    """smp architecture: Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Linknet, MAnet."""
    encoder: str = "resnet18"
    """smp encoder, trained from scratch (no ImageNet download)."""
    in_channels: int = 3
    """3 for LGG (pre-contrast, FLAIR, post-contrast), 1 for grayscale data."""
    input_size: int = 256
    """The network's square input side; scans are letterboxed to it."""
    init_weights: str = ""
    """Start from this weights folder (fine-tuning); its architecture and preprocessing are used."""
    intensity_norm: str = ""
    """Intensity normalisation the model is trained with and saves in preprocessing.json: none,
    percentile (each image's channels: their 99th head percentile to a common level) or volume_percentile
    (the same over each patient's slices). Empty: the base model's (with init_weights) or none."""
    tumour_head: bool = False
    """Train smp's tumour-present classification head (aux_params) with the segmentation, and choose its gate
    threshold on the validation patients at the end, so that a slice seen alone shows no false tumour (see
    brainviewer.model.gate). Always on when init_weights already has a head."""
    tumour_head_weight: float = 0.2
    """Weight of the head's loss (binary cross-entropy: does the crop hold tumour) beside the segmentation loss."""
    gate_max_fp: float = 0.025
    """The gate threshold is the smallest at which at most this share of the validation patients' tumour-free
    slices, each predicted alone, show a predicted pixel (below 0.03: a threshold chosen on some patients
    overshoots its rate on others)."""

    # sampling
    crop_size: int = 128
    """Train on random crops of this side at full resolution (0 = whole images); inference uses whole images."""
    tumour_crop_prob: float = 0.7
    """Chance that a crop of a tumour slice is centred on a tumour pixel."""
    empty_fraction: float = 0.5
    """Share of the tumour-free training slices drawn each epoch (all tumour slices are always used)."""
    augment: str = "medium"
    """Augmentation strength: none, light (flips), medium (+ affine, brightness/contrast), strong (+ elastic)."""
    missing_sequence_prob: float = 0.0
    """3-channel LGG-style scans: chance a training slice gets FLAIR (channel 1) copied into the pre- and/or
    post-contrast channel, as kaggle_3m stores patients without those sequences (0 = never)."""
    intensity_augment_prob: float = 0.0
    """Chance that a training slice looks as if from another scanner: per-channel gain and gamma and a smooth
    bias field (brainviewer.training.augment.vary_intensity), on top of --augment (0 = never)."""

    # optimisation
    loss: str = "bce_dice"
    """dice, bce, bce_dice, focal, tversky or focal_tversky."""
    epochs: int = 40
    """Maximum number of epochs."""
    batch_size: int = 16
    """Images per optimisation step (per process under torchrun)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_epochs: float = 1.0
    """Linear warm-up length, then cosine decay to lr * min_lr_ratio at the last epoch."""
    min_lr_ratio: float = 0.01
    """Final learning rate as a share of lr."""
    freeze_encoder_epochs: int = 0
    """Keep the encoder frozen for this many epochs (useful when fine-tuning)."""
    early_stop_patience: int = 12
    """Stop after this many validations without a better mean per-patient Dice (0 = never)."""
    val_every: int = 1
    """Validate (and keep the best weights) every this many epochs, and always after the last one."""
    amp: bool = True
    """Mixed precision (bf16) on CUDA; on CPU see cpu_amp."""
    cpu_amp: bool = False
    """bf16 autocast on CPU too, for training steps and per-epoch validation (the final threshold choice
    stays float32): about 1.9x faster steps on CPUs with native bf16 (AVX512-BF16 or AMX); float32, with a
    warning, on a CPU without it."""

    # run control
    device: str = "auto"
    """auto (CUDA if present), cpu, cuda or cuda:N."""
    threads: int = 0
    """CPU threads for torch (0 = torch's default)."""
    workers: int = 0
    """DataLoader processes preparing batches (0 = in the training process); use several on a GPU."""
    log_every: int = 10
    """Write a training line to metrics.jsonl every this many steps."""
    checkpoint_every_steps: int = 0
    """Also checkpoint mid-epoch every this many steps (0 = only at epoch ends)."""
    max_steps: int = 0
    """Stop after this many optimisation steps in total (0 = no limit); for smoke tests."""
    out_dir: str = "runs"
    """Folder holding runs; each run is out_dir/run_name."""
    run_name: str = ""
    """Name of the run folder (default: date-time, architecture and encoder)."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {self.augment!r}")
        if self.split_mode not in SPLIT_MODES:
            raise ValueError(f"split_mode must be one of {', '.join(SPLIT_MODES)}; got {self.split_mode!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(f"cv_folds must be 0 (a single split) or at least 2; got {self.cv_folds}")
        if self.cv_folds and not 0 <= self.cv_fold < self.cv_folds:
            raise ValueError(f"cv_fold must be between 0 and cv_folds - 1 ({self.cv_folds - 1}); got {self.cv_fold}")
        if self.split_file and self.cv_folds:
            raise ValueError("split_file and cv_folds exclude each other: reuse a saved split or cut folds, not both")
        if self.crop_size and (self.crop_size % 32 or self.crop_size > self.input_size):
            raise ValueError(f"crop_size must be a multiple of 32 and <= input_size; got {self.crop_size}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be at least 1")
        if self.val_every < 1:
            raise ValueError(f"val_every must be at least 1 (1 = validate after every epoch); got {self.val_every}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1]; got {self.empty_fraction}")
        if self.intensity_norm not in ("", *INTENSITY_NORMS):
            raise ValueError(
                f"intensity_norm must be one of {', '.join(INTENSITY_NORMS)} (or empty); got {self.intensity_norm!r}"
            )
        if self.tumour_head_weight < 0:
            raise ValueError(f"tumour_head_weight must be >= 0; got {self.tumour_head_weight}")
        if not 0.0 <= self.gate_max_fp < 1.0:
            raise ValueError(f"gate_max_fp must be in [0, 1), e.g. 0.03; got {self.gate_max_fp}")
        if not 0.0 <= self.intensity_augment_prob <= 1.0:
            raise ValueError(f"intensity_augment_prob must be in [0, 1]; got {self.intensity_augment_prob}")
        if not 0.0 <= self.missing_sequence_prob <= 1.0:
            raise ValueError(f"missing_sequence_prob must be in [0, 1]; got {self.missing_sequence_prob}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _field_type(annotation: object) -> type:
    hints = typing.get_type_hints(TrainConfig)
    return hints.get(annotation, str) if isinstance(annotation, str) else annotation  # type: ignore[return-value]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per :class:`TrainConfig` field (defaults None = not given)."""
    hints = typing.get_type_hints(TrainConfig)
    docs = _field_docs()
    for f in fields(TrainConfig):
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):
            kind = str
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build a config: defaults, then ``--config FILE``, then explicit flags."""
    data: dict = {}
    if getattr(args, "config", None):
        data.update(json.loads(Path(args.config).read_text()))
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    return TrainConfig.from_dict(data)


def _field_docs() -> dict[str, str]:
    """Field docstrings (the string literal under each field) from the source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(getattr(following, "value", None), ast.Constant)
        ):
            docs[node.target.id] = str(following.value.value)
    return docs

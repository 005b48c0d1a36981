"""The Fine-tuning page's Start form and the helpers its other parts share (demo mode, messages).

Runs live on disk (:mod:`brainviewer.runs`), never in the session, so every open tab shows the
same runs; each trains in its own process. Watching a run is in :mod:`brainviewer.ui.finetune_watch`;
comparing, evaluating, promoting, averaging and deleting runs in :mod:`brainviewer.ui.finetune_results`.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from brainviewer import runs as runs_lib
from brainviewer.data.datasets import DATA_ENV
from brainviewer.data.split import SPLIT_FILE
from brainviewer.model.segmenter import ARCHITECTURES
from brainviewer.training.config import AUGMENTATIONS, LOSSES, SPLIT_MODES, TrainConfig
from brainviewer.training.session import cpu_bf16_supported
from brainviewer.ui.server_files import DEMO_ENV, demo_mode
from brainviewer.ui.sidebar import dataset_path
from brainviewer.ui.state import FINETUNE_BASE_KEY, FINETUNE_FLASH_KEY, FINETUNE_RUN_KEY, state_index

__all__ = ["DEMO_ENV", "finetune_demo_mode", "finetune_flash", "finetune_form", "finetune_start"]

FROM_SCRATCH = "From scratch (untrained)"
INPUT_SIZES = (64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
CROP_SIZES = (0, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384)


def finetune_demo_mode() -> bool:
    """Whether ``$BRAINVIEWER_DEMO`` asks for a read-only page (public demo); see
    :func:`brainviewer.ui.server_files.demo_mode`."""
    return demo_mode()


def finetune_flash(kind: str | None = None, text: str = "") -> None:
    """Queue a message for the next run of the page (``kind``: success, info, warning, error), or
    (without arguments) show and forget the queued ones."""
    if kind is not None:
        st.session_state.setdefault(FINETUNE_FLASH_KEY, []).append((kind, text))
        return
    for kind_, text_ in st.session_state.pop(FINETUNE_FLASH_KEY, []):
        getattr(st, kind_)(text_)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def finetune_form(runs_dir: Path, disabled: bool = False) -> TrainConfig | None:
    """The Start form. Returns the run's :class:`TrainConfig` when Start is pressed and the
    settings are valid (else ``None``; invalid settings are explained with ``st.error``)."""
    choices = runs_lib.base_weight_choices(runs_dir)
    labels = [*choices, FROM_SCRATCH]
    with st.form("finetune_form", border=True):
        base = st.selectbox(
            "Start from",
            labels,
            index=state_index(FINETUNE_BASE_KEY, labels),
            key=FINETUNE_BASE_KEY,
            help="The app's current model, any weights folder under weights/, or the best weights of an earlier run. "
            "Fine-tuning keeps the base model's architecture and input size.",
        )
        data = st.text_input(
            "Dataset (with ground-truth masks)",
            value="" if disabled else dataset_path(),
            key="finetune_data",
            disabled=disabled,
            placeholder="/data/lgg/kaggle_3m",
            help=f"Any layout brainviewer reads. Defaults to the sidebar's dataset or ${DATA_ENV}.",
        )
        c1, c2, c3, c4, c5 = st.columns(5)
        val_fraction = c1.number_input(
            "Validation share of patients", 0.01, 0.9, 0.15, 0.01, key="finetune_val_fraction"
        )
        val_patients = c2.number_input(
            "…or this many validation patients", 0, 100_000, 0, key="finetune_val_patients", help="0 = use the share."
        )
        split_mode = c3.selectbox(
            "Split",
            SPLIT_MODES,
            key="finetune_split_mode",
            help="random: seeded shuffle of patients; contiguous: the last patients in natural id order "
            "(for datasets whose neighbouring ids are the same patient).",
        )
        split_blocks = c4.number_input(
            "Id ranges",
            1,
            100,
            1,
            key="finetune_split_blocks",
            help="Contiguous split only: cut the ordered ids into this many equal ranges and hold out the end of "
            "each (e.g. 3 for figshare, numbered in three tumour-type ranges).",
        )
        seed = c5.number_input("Seed", 0, 2**31 - 1, 42, key="finetune_seed")
        keep_base_split = st.checkbox(
            "Keep the base model's split",
            value=True,
            key="finetune_keep_base_split",
            help="When the base weights come with a split.json: the patients they were validated on stay held out "
            "and those they were trained on stay in training, so validation is never on a patient the base model "
            "has seen; the dataset's other patients are split by the settings above. Off: draw a new split. "
            "Ignored with cross-validation folds.",
        )
        c1, c2, c3, c4 = st.columns(4)
        epochs = c1.number_input("Epochs", 1, 1000, 10, key="finetune_epochs")
        lr = c2.number_input("Learning rate", 1e-6, 1.0, 3e-4, format="%.1e", key="finetune_lr", step=1e-5)
        batch_size = c3.number_input("Batch size", 1, 512, 16, key="finetune_batch")
        freeze = c4.number_input(
            "Frozen-encoder epochs", 0, 1000, 0, key="finetune_freeze", help="Train only the decoder at first."
        )
        c1, c2, c3, c4 = st.columns(4)
        input_size = c1.selectbox(
            "Image size",
            INPUT_SIZES,
            index=INPUT_SIZES.index(256),
            key="finetune_input_size",
            help="The network's input side. Used from scratch only: fine-tuning keeps the base model's.",
        )
        crop_size = c2.selectbox(
            "Crop size",
            CROP_SIZES,
            index=CROP_SIZES.index(128),
            key="finetune_crop",
            help="Train on random crops of this side (0 = whole images); at most the image size.",
        )
        augment = c3.selectbox(
            "Augmentation", AUGMENTATIONS, index=AUGMENTATIONS.index("medium"), key="finetune_augment"
        )
        loss = c4.selectbox("Loss", LOSSES, index=LOSSES.index("bce_dice"), key="finetune_loss")
        c1, c2, c3, c4 = st.columns(4)
        devices = ["auto", "cpu", *(["cuda"] if _cuda_available() else [])]
        device = c1.selectbox("Device", devices, key="finetune_device", help="auto: CUDA when present, else CPU.")
        threads = c2.number_input(
            "CPU threads",
            0,
            256,
            max(1, (os.cpu_count() or 1) - 1),
            key="finetune_threads",
            help="For training on the CPU. 0 = all cores (torch's default); the default leaves one core to the app, "
            "which also keeps its own inference to the cores training leaves free.",
        )
        patience = c3.number_input(
            "Early-stop patience", 0, 1000, 12, key="finetune_patience", help="Epochs without a better Dice; 0 = never."
        )
        run_name = c4.text_input("Run name", key="finetune_name", placeholder="dated default", disabled=disabled)
        with st.expander("Sampling and cross-validation"):
            c1, c2, c3, c4 = st.columns(4)
            missing_sequence = c1.number_input(
                "Missing-sequence share",
                0.0,
                1.0,
                0.0,
                0.05,
                key="finetune_missing_sequence",
                help="3-channel LGG-style scans: the share of training slices whose pre- and/or post-contrast channel "
                "is replaced by FLAIR, as kaggle_3m stores patients without those sequences. 0 = never.",
            )
            empty_fraction = c2.number_input(
                "Tumour-free share",
                0.0,
                1.0,
                0.5,
                0.05,
                key="finetune_empty_fraction",
                help="Share of the tumour-free training slices drawn each epoch (every tumour slice is always used).",
            )
            cv_folds = c3.number_input(
                "Cross-validation folds",
                0,
                100,
                0,
                key="finetune_cv_folds",
                help="0 = one split by the validation share. K >= 2: cut the patients into K folds (by the split "
                "mode and seed above) and hold out one; start one run per fold and pool them with "
                "`python -m brainviewer cv-evaluate`.",
            )
            cv_fold = c4.number_input(
                "Held-out fold",
                0,
                99,
                0,
                key="finetune_cv_fold",
                help="Which fold this run holds out for validation, from 0 to folds - 1; ignored without folds.",
            )
            c1, c2, c3 = st.columns(3)
            intensity_augment = c1.number_input(
                "Other-scanner share",
                0.0,
                1.0,
                0.0,
                0.05,
                key="finetune_intensity_augment",
                help="Intensity augmentation (--intensity-augment-prob): the share of training slices made to look "
                "as if from another scanner, by per-channel gain and gamma and a smooth bias field. 0 = never; the "
                "default model's recipe uses 0.5.",
            )
            tumour_head = c2.checkbox(
                "Train a tumour-present head",
                key="finetune_tumour_head",
                help="A classification head that hides the mask of a slice seen alone when it calls the slice "
                "tumour-free; its threshold is chosen on the validation patients at the end (--tumour-head). Tick "
                "it to add one to a model without: a base model that has one (the default model does) keeps "
                "training it, ticked or not.",
            )
            bf16 = cpu_bf16_supported()
            cpu_amp = c3.checkbox(
                "bf16 on the CPU",
                value=bf16,
                key="finetune_cpu_amp",
                disabled=not bf16,
                help="Train on the CPU under bf16 autocast: about twice as fast on a CPU with native bf16 "
                "(AVX512-BF16 or AMX); the weights stay float32."
                + ("" if bf16 else " This CPU has no native bf16, so it trains in float32."),
            )
        with st.expander("From scratch only: architecture"):
            c1, c2, c3 = st.columns(3)
            arch = c1.selectbox("Architecture", list(ARCHITECTURES), key="finetune_arch")
            encoder = c2.text_input("Encoder", value="resnet18", key="finetune_encoder", disabled=disabled)
            in_channels = c3.selectbox("Channels", (3, 1), key="finetune_channels", help="3 for LGG, 1 for grayscale.")
        submitted = st.form_submit_button("Start", type="primary", disabled=disabled, icon=":material/play_arrow:")
    if not submitted:
        return None
    init_weights = "" if base == FROM_SCRATCH else choices[base]
    base_split = Path(init_weights) / SPLIT_FILE if init_weights else None
    split_file = str(base_split) if keep_base_split and not cv_folds and base_split and base_split.is_file() else ""
    try:
        if init_weights:  # the trainer uses the base model's architecture and size
            described = runs_lib.weights_summary(init_weights)
            input_size, in_channels = described["input_size"], described["in_channels"]
            arch, encoder = described["arch"], described["encoder"]
        return TrainConfig(
            data=data.strip(),
            val_fraction=float(val_fraction),
            val_patients=int(val_patients),
            split_mode=split_mode,
            split_blocks=int(split_blocks),
            split_file=split_file,
            cv_folds=int(cv_folds),
            cv_fold=int(cv_fold),
            seed=int(seed),
            arch=arch,
            encoder=encoder.strip(),
            in_channels=int(in_channels),
            input_size=int(input_size),
            init_weights=init_weights,
            crop_size=int(crop_size),
            empty_fraction=float(empty_fraction),
            missing_sequence_prob=float(missing_sequence),
            intensity_augment_prob=float(intensity_augment),
            tumour_head=bool(tumour_head),
            cpu_amp=bool(cpu_amp) and bf16,
            augment=augment,
            loss=loss,
            epochs=int(epochs),
            batch_size=int(batch_size),
            lr=float(lr),
            freeze_encoder_epochs=int(freeze),
            early_stop_patience=int(patience),
            device=device,
            threads=int(threads),
            run_name=run_name.strip(),
        )
    except ValueError as err:
        st.error(f"Cannot start: {err}", icon=":material/error:")
        return None


def finetune_start(runs_dir: Path, run_list: list[runs_lib.RunInfo], demo: bool) -> None:
    """The "Start a run" expander (open while there are no runs): the form, and launching the run it sets up,
    which then becomes the watched run."""
    with st.expander("Start a run", expanded=not run_list, icon=":material/add_circle:"):
        if demo:
            st.info(
                "This is a public demo: starting, resuming, promoting and deleting runs are disabled. "
                "Run the app on your own machine to train (see the README).",
                icon=":material/lock:",
            )
        config = finetune_form(runs_dir, disabled=demo)
        if config is not None and not demo:
            try:
                with st.spinner("Checking the dataset and launching…"):
                    started = runs_lib.start_run(config, runs_dir)
            except (ValueError, OSError) as err:
                st.error(f"Cannot start: {err}", icon=":material/error:")
            else:
                st.session_state[FINETUNE_RUN_KEY] = started.name
                finetune_flash("success", f"{started.name} is {started.status}.")
                st.rerun()

"""The Evaluation page's helpers: which patients to score, the settings and the Run button, and the
sections that show the result (summary cards, charts, groups, worst patients and slices, downloads).

Each patient is evaluated and cached on its own (:func:`brainviewer.ui.common.evaluate_with_progress`),
so a stopped evaluation resumes where it was. The numbers behind the tables and charts come from
:mod:`brainviewer.views.dataset_evaluation` and the figures from :mod:`brainviewer.views.figures`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from brainviewer.data.datasets import Dataset
from brainviewer.data.split import SPLIT_FILE, load_split_file
from brainviewer.evaluation.evaluate import (
    GROUP_COLUMNS,
    GROUP_ID_COLUMNS,
    EvaluationReport,
    group_summaries,
    read_groups,
)
from brainviewer.runs.folders import runs_root
from brainviewer.ui.common import evaluate_with_progress, metric_cards, no_dataset_help, phantom_dataset
from brainviewer.ui.server_files import (
    NONE_CHOICE,
    ServerFileError,
    checked_file,
    demo_mode,
    named_groups,
    named_splits,
)
from brainviewer.ui.sidebar import ModelState, dataset_path
from brainviewer.ui.state import EVAL_DONE_KEY, EVAL_REQUESTED_KEY, OPEN_PATIENT_KEY
from brainviewer.views.dataset_evaluation import (
    EMPTY_MASKS_NOTE,
    DatasetEvaluation,
    dataset_key,
    detection_at,
    detection_thresholds,
    distance_note,
    evaluation_request,
    group_dice_values,
    open_targets,
    patient_score_rows,
    score_summary_rows,
    worst_patient_rows,
    worst_slice_rows,
)
from brainviewer.views.exports import evaluation_json, evaluation_patients_csv, evaluation_slices_csv
from brainviewer.views.figures import detection_figure, dice_histogram_figure, group_dice_figure, patient_dice_figure
from brainviewer.views.review import SYNTHETIC_LABEL

PATIENTS_PAGE = "pages/patients.py"


def open_patient(patient_id: str, slice_number: int | None, source: str, dataset_path: str = "") -> None:
    """Switch to the Patients page showing ``patient_id`` at ``slice_number`` (1-based)."""
    st.session_state[OPEN_PATIENT_KEY] = {
        "source": source,
        "dataset_path": dataset_path,
        "patient_id": patient_id,
        "slice": slice_number,
    }
    st.switch_page(PATIENTS_PAGE)


# === Which patients, with which settings =======================================================


def choose_dataset(dataset: Dataset | None, model: ModelState) -> tuple[Dataset, bool]:
    """The sidebar's dataset or, without one and on request, the synthetic phantom dataset; stops the page
    without a dataset or a model. Returns ``(dataset, synthetic)``."""
    synthetic = False
    if dataset is None:
        no_dataset_help()
        if not st.toggle("Evaluate on the synthetic phantom dataset", key="eval_phantom"):
            st.stop()
        dataset = phantom_dataset()
        synthetic = True
        st.warning(
            f"**{SYNTHETIC_LABEL}**: generated pictures with drawn-in tumours, not real scans. "
            "Scores on them say nothing about real patients.",
            icon=":material/science:",
        )
    if not model.available:
        st.info(f"No model to evaluate: {model.reason}. Choose weights in the sidebar.", icon=":material/info:")
        st.stop()
    return dataset, synthetic


def choose_scope(model: ModelState, dataset: Dataset) -> tuple[Dataset, str]:
    """Which patients: the model's held-out ones, all, or one side of a training run's split.

    Returns:
        ``(the patients to evaluate, a phrase naming them)``; an unreadable split stops the page.
    """
    held_out = [p for p in model.split.val if p in dataset.patients] if model.split is not None else []
    only_held_out = bool(held_out) and st.toggle(
        f"Only the {len(held_out)} patients {model.label} held out in training",
        value=True,
        key="eval_held_out",
        help="The model was trained on the other patients of this dataset: scores on them flatter it.",
    )
    with st.expander("Only the patients of a training run's split (optional)", expanded=False):
        left, right = st.columns([3, 1])
        split_text = _split_source(left, only_held_out)
        if only_held_out:
            st.caption("Turn off the held-out switch above to choose a run's split.")
        side = right.radio("Side", ("val", "train"), key="eval_side", horizontal=True)
    scope = "all patients"
    if only_held_out:
        dataset = dataset.subset(held_out)
        scope = f"the {len(held_out)} validation patients {model.label} never trained on"
    elif split_text:
        split_file, label = _split_file(split_text)
        try:
            split = load_split_file(checked_file(split_file, "a split.json"))
        except ServerFileError as err:
            message = f"The split of {label} could not be read." if demo_mode() else str(err)
            st.error(message, icon=":material/error:")
            st.stop()
        except (OSError, ValueError):
            st.error(
                f"{label} is not a brainviewer split.json (an object listing 'train' and 'val' patient ids).",
                icon=":material/error:",
            )
            st.stop()
        wanted = split.val if side == "val" else split.train
        dataset = dataset.subset(wanted)
        if not len(dataset):
            st.error(f"None of the {len(wanted)} {side} patients of {label} are in this dataset.")
            st.stop()
        scope = f"the {len(dataset.patients)} {side} patients of {split_file.parent.name}"
    return dataset, scope


def _split_source(container, disabled: bool) -> str:
    """The run folder or split.json to take patients from: typed, or (demo mode) chosen by name."""
    help_text = "Evaluate only the validation (or training) patients of a run, as recorded in its split.json."
    if demo_mode():
        named = named_splits(runs_root())
        choice = container.selectbox(
            "Run split", [NONE_CHOICE, *named], key="eval_split_choice", help=help_text, disabled=disabled
        )
        return named.get(choice, "")
    return container.text_input(
        "Run folder or split.json",
        key="eval_split",
        placeholder="runs/lgg-unet-resnet18",
        help=help_text,
        disabled=disabled,
    ).strip()


def _split_file(text: str) -> tuple[Path, str]:
    """The split.json a run folder or file names, and how messages name it (demo mode: not by its path)."""
    split_file = Path(text).expanduser()
    split_file = split_file / SPLIT_FILE if split_file.is_dir() else split_file
    if demo_mode():
        return split_file, f"the run {split_file.parent.name}"
    return split_file, str(split_file)


def run_settings(model: ModelState, dataset: Dataset, scope: str) -> tuple[float, int, str]:
    """Threshold, smallest component and the Run button; stops the page until Run is pressed for these
    settings. Returns ``(threshold, min_component_px, dataset key)``."""
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    threshold = left.number_input(
        "Probability threshold", 0.01, 0.99, value=round(model.threshold, 2), step=0.05, key="eval_threshold"
    )
    min_px = middle.number_input(
        "Drop components smaller than (px)", 0, 10_000, value=model.min_component_px, step=16, key="eval_min_px"
    )
    key = dataset_key(dataset)
    request = evaluation_request(model.model_id, key, threshold, min_px, model.keep_largest, model.volume_keep_largest)
    if right.button("Run evaluation", key="eval_run", type="primary", icon=":material/play_arrow:"):
        st.session_state[EVAL_REQUESTED_KEY] = request
    st.caption(
        f"{scope[:1].upper()}{scope[1:]}: {len(dataset.patient_ids)} patients, {len(dataset):,} slices · "
        f"model **{model.label}** on {model.device}. Each patient is cached once done, so a stopped evaluation "
        "resumes where it was."
    )
    if st.session_state.get(EVAL_REQUESTED_KEY) != request:
        st.info("Press **Run evaluation** to score the model with these settings.", icon=":material/play_arrow:")
        st.stop()
    return float(threshold), int(min_px), key


def _stop_evaluation() -> None:
    """Withdraw the running request, unless it finished as Stop was pressed (its result then stays shown)."""
    if st.session_state.get(EVAL_REQUESTED_KEY) not in st.session_state.get(EVAL_DONE_KEY, set()):
        st.session_state.pop(EVAL_REQUESTED_KEY, None)


def evaluate(model: ModelState, dataset: Dataset, key: str, threshold: float, min_px: int) -> DatasetEvaluation:
    """Every patient's evaluation (cached, with a progress bar), merged; stops the page on an error (shown).

    While it runs, a Stop button: pressing it interrupts the run (Streamlit stops a script at its next
    element when a widget changes) and withdraws the request, so the page goes back to its Run button, with
    the patients scored so far cached for the next run."""
    stop_slot = st.empty()
    request = evaluation_request(model.model_id, key, threshold, min_px, model.keep_largest, model.volume_keep_largest)
    if request not in st.session_state.get(EVAL_DONE_KEY, set()):  # a cached result needs no Stop
        stop_slot.button(
            "Stop evaluation",
            key="eval_stop",
            icon=":material/stop:",
            on_click=_stop_evaluation,
            help="Stops after the batch of slices in progress. The patients already scored stay cached: "
            "Run evaluation resumes from there.",
        )
    result = evaluate_with_progress(
        model, dataset, key, threshold, min_px, model.keep_largest, model.volume_keep_largest
    )
    stop_slot.empty()
    if result is None:
        st.stop()
    return result


# === The result ================================================================================


def show_summary(report: EvaluationReport) -> None:
    """Metric cards: mean, median and micro Dice, mean tumour-slice Dice, false-positive slices."""
    summary = report.summary()
    cards = [
        ("Mean volume Dice", f"{report.mean_dice:.3f}", "Mean over patients of the per-volume Dice."),
        ("Median volume Dice", f"{report.median_dice:.3f}", None),
        ("Micro Dice", f"{report.micro_dice:.3f}", "All pixels of all patients pooled."),
        (
            "Mean tumour-slice Dice",
            "n/a" if summary["mean_tumour_slice_dice"] is None else f"{summary['mean_tumour_slice_dice']:.3f}",
            "Mean over patients of the mean Dice on their tumour-bearing slices.",
        ),
        (
            "False-positive slices",
            "n/a" if report.fp_rate is None else f"{report.fp_rate:.1%}",
            f"{report.fp_slices} of {report.empty_slices} tumour-free slices have a predicted tumour in the final "
            "masks (after the model's post-processing). The detection chart below counts raw probabilities instead.",
        ),
    ]
    metric_cards(cards)


def show_scores(report: EvaluationReport) -> None:
    """Every per-patient score summarised over the patients (mean ± SD, median [IQR], bootstrap CI), how to
    read the distances and empty masks, and (folded) every patient's scores: the columns of the CSV download."""
    scores = report.scores()
    st.markdown("**Scores over the patients**")
    st.dataframe(pd.DataFrame(score_summary_rows(scores)), hide_index=True, key="eval_scores_table")
    st.caption(f"{distance_note(scores)} {EMPTY_MASKS_NOTE}")
    with st.expander(f"Every patient's scores ({len(report.patients)})", expanded=False):
        rows = patient_score_rows(report.patients, scores["distance_unit"], scores["surface_dice_tolerance"])
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            key="eval_patient_scores",
            column_config={
                name: st.column_config.NumberColumn(format="%.2f" if name.startswith("HD95") else "%.3f")
                for name in rows[0]
                if name not in ("patient", "tumour slices", "truth px", "predicted px")
            }
            if rows
            else None,
        )


def show_charts(result: DatasetEvaluation, threshold: float) -> list[dict]:
    """Per-patient Dice (sorted, with mean and median), its distribution, and slice-level detection
    (a slice is "tumour" when its highest probability reaches t). Returns the detection curve."""
    report = result.report
    st.plotly_chart(patient_dice_figure(report.patients, report.mean_dice, report.median_dice), key="eval_bars")
    left, right = st.columns(2)
    left.plotly_chart(dice_histogram_figure(report.dice_values), key="eval_hist")
    curve = result.detection(detection_thresholds(threshold))
    at_threshold = detection_at(curve, threshold)
    right.plotly_chart(detection_figure(curve, at_threshold, threshold), key="eval_pr")
    right.caption(
        f"At t = {float(threshold):.2f}: precision {at_threshold['precision']:.3f}, "
        f"recall {at_threshold['recall']:.3f} "
        f"({at_threshold['tp']} tumour slices found, {at_threshold['fp']} false alarms, {at_threshold['fn']} missed), "
        "counting a slice's highest raw probability, before post-processing; the false-positive card above counts "
        "the final masks."
    )
    return curve


def show_groups(report: EvaluationReport, root: Path) -> None:
    """Dice per group (e.g. tumour type), from a CSV beside the dataset (figshare's labels.csv) or one given here."""
    default_groups = root / "labels.csv"
    with st.expander("By group (tumour type, scanner, ...)", expanded=default_groups.is_file()):
        groups_file, label = _groups_source(root, default_groups)
        if not groups_file:
            st.caption("Give a CSV that maps patients to groups to see the Dice of each group.")
            return
        try:
            group_of = read_groups(checked_file(groups_file, "a groups CSV"))
        except ServerFileError as err:
            st.error(f"{label} could not be used." if demo_mode() else str(err), icon=":material/error:")
            group_of = {}
        except ValueError:  # its message quotes the file's header: say what is needed instead
            st.error(
                f"{label} could not be used: a groups CSV is a readable UTF-8 CSV that needs a patient column "
                f"({' or '.join(GROUP_ID_COLUMNS)}) and a group column ({' or '.join(GROUP_COLUMNS)}).",
                icon=":material/error:",
            )
            group_of = {}
        if not group_of:
            return
        by_group = group_summaries(report.patients, group_of)
        st.dataframe(
            pd.DataFrame([{"group": name, **figures} for name, figures in by_group.items()]),
            hide_index=True,
            key="eval_groups_table",
            column_config={
                "mean_volume_dice": st.column_config.NumberColumn("mean Dice", format="%.3f"),
                "median_volume_dice": st.column_config.NumberColumn("median Dice", format="%.3f"),
            },
        )
        values = group_dice_values(report.patients, group_of, list(by_group))
        st.plotly_chart(group_dice_figure(values), key="eval_groups_box")


def _groups_source(root: Path, default_groups: Path) -> tuple[str, str]:
    """The groups CSV to read and how messages name it: typed, or (demo mode) chosen by name."""
    help_text = (
        "A CSV with a patient column (patient_id, patient, or file: counted by its stem) and a group "
        "column (label_name, group or label), such as figshare's labels.csv."
    )
    if demo_mode():
        named = named_groups(root)
        names = [NONE_CHOICE, *named]
        choice = st.selectbox("Groups", names, index=min(1, len(named)), key="eval_groups_choice", help=help_text)
        return named.get(choice, ""), choice
    text = st.text_input(
        "Groups CSV",
        value=str(default_groups) if default_groups.is_file() else "",
        key="eval_groups",
        placeholder="/data/figshare/labels.csv",
        help=help_text + " Defaults to labels.csv in the dataset folder.",
    ).strip()
    return text, text


def show_worst(result: DatasetEvaluation, synthetic: bool) -> None:
    """The worst patients and slices, with a way to open them on the Patients page."""
    worst_patients = result.worst_patients(10)
    worst_slices = result.worst_slices(10)
    worst_patients_tab, worst_slices_tab = st.tabs(["Worst patients", "Worst slices"])  # full width: no column cut
    with worst_patients_tab:
        st.dataframe(
            pd.DataFrame(worst_patient_rows(worst_patients)),
            hide_index=True,
            width="stretch",
            key="eval_worst_patients",
            column_config={"volume Dice": st.column_config.NumberColumn(format="%.3f")},
        )
    with worst_slices_tab:
        st.caption("Slices with tumour in the ground truth or the prediction.")
        st.dataframe(
            pd.DataFrame(worst_slice_rows(worst_slices)),
            hide_index=True,
            width="stretch",
            key="eval_worst_slices",
            column_config={
                "Dice": st.column_config.NumberColumn(format="%.3f"),
                "max prob": st.column_config.NumberColumn(format="%.2f"),
            },
        )
    targets = open_targets(worst_patients, worst_slices)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    choice = left.selectbox("Open on the Patients page", list(targets), key="eval_open_choice")
    if right.button("Open", key="eval_open", icon=":material/open_in_new:", width="stretch"):
        patient_id, slice_number = targets[choice]
        open_patient(
            patient_id, slice_number, source="phantom" if synthetic else "dataset", dataset_path=dataset_path()
        )


def show_evaluation_downloads(
    result: DatasetEvaluation, curve: list[dict], model: ModelState, threshold: float, extra: dict
) -> None:
    """Per-patient and per-slice CSVs and a JSON of the summary, patients and detection curve (``extra`` is
    written into the JSON too)."""
    report = result.report
    stem = f"evaluation_{model.label}_t{float(threshold):.2f}"
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Per-patient results (CSV)",
            data=evaluation_patients_csv(report),
            file_name=f"{stem}_patients.csv",
            mime="text/csv",
            key="eval_csv_patients",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Per-slice results (CSV)",
            data=evaluation_slices_csv(result.slice_rows()),
            file_name=f"{stem}_slices.csv",
            mime="text/csv",
            key="eval_csv_slices",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Summary and patients (JSON)",
            data=evaluation_json(report, {**extra, "detection": curve}),
            file_name=f"{stem}.json",
            mime="application/json",
            key="eval_json",
            on_click="ignore",
            icon=":material/download:",
        )

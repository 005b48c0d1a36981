"""Evaluation: score the model on a dataset, patient by patient, and find its worst patients and slices."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from brainviewer import ui
from brainviewer.data.split import Split
from brainviewer.evaluation.evaluate import NO_GROUP, group_summaries, read_groups
from brainviewer.views.exports import evaluation_json, evaluation_patients_csv, evaluation_slices_csv
from brainviewer.views.figures import patient_dice_figure
from brainviewer.views.review import SYNTHETIC_LABEL

st.title("Evaluation", anchor=False)
st.caption(
    "Per-patient Dice of the model on a dataset (each patient's slices stacked into one volume, as in Buda et al. "
    "2019), how well it finds tumour-bearing slices, and its worst patients and slices."
)

model = ui.sidebar_model()
dataset = ui.sidebar_dataset()

synthetic = False
if dataset is None:
    ui.no_dataset_help()
    if not st.toggle("Evaluate on the synthetic phantom dataset", key="eval_phantom"):
        st.stop()
    dataset = ui.phantom_dataset()
    synthetic = True
    st.warning(
        f"**{SYNTHETIC_LABEL}**: generated pictures with drawn-in tumours, not real scans. "
        "Scores on them say nothing about real patients.",
        icon=":material/science:",
    )
if not model.available:
    st.info(f"No model to evaluate: {model.reason}. Choose weights in the sidebar.", icon=":material/info:")
    st.stop()

# --- which patients: the model's held-out ones, all, or one side of a training run's split
held_out = [p for p in model.split.val if p in dataset.patients] if model.split is not None else []
only_held_out = bool(held_out) and st.toggle(
    f"Only the {len(held_out)} patients {model.label} held out in training",
    value=True,
    key="eval_held_out",
    help="The model was trained on the other patients of this dataset: scores on them flatter it.",
)
with st.expander("Only the patients of a training run's split (optional)", expanded=False):
    left, right = st.columns([3, 1])
    split_text = left.text_input(
        "Run folder or split.json",
        key="eval_split",
        placeholder="runs/lgg-unet-resnet18",
        help="Evaluate only the validation (or training) patients of a run, as recorded in its split.json.",
        disabled=only_held_out,
    ).strip()
    if only_held_out:
        st.caption("Turn off the held-out switch above to choose a run's split.")
    side = right.radio("Side", ("val", "train"), key="eval_side", horizontal=True)
scope = "all patients"
if only_held_out:
    dataset = dataset.subset(held_out)
    scope = f"the {len(held_out)} validation patients {model.label} never trained on"
elif split_text:
    split_file = Path(split_text).expanduser()
    split_file = split_file / "split.json" if split_file.is_dir() else split_file
    try:
        split = Split.load(split_file)
    except (OSError, ValueError, TypeError) as err:
        st.error(f"Could not read {split_file}: {err}", icon=":material/error:")
        st.stop()
    wanted = split.val if side == "val" else split.train
    dataset = dataset.subset(wanted)
    if not len(dataset):
        st.error(f"None of the {len(wanted)} {side} patients of {split_file} are in this dataset.")
        st.stop()
    scope = f"the {len(dataset.patients)} {side} patients of {split_file.parent.name}"

# --- settings
left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
threshold = left.number_input(
    "Probability threshold", 0.01, 0.99, value=round(model.threshold, 2), step=0.05, key="eval_threshold"
)
min_px = middle.number_input(
    "Drop components smaller than (px)", 0, 10_000, value=model.min_component_px, step=16, key="eval_min_px"
)
patient_ids = dataset.patient_ids
root = str(Path(dataset.root).resolve())
dataset_key = f"{dataset.kind}:{root}:{hashlib.blake2b('|'.join(patient_ids).encode(), digest_size=8).hexdigest()}"
request = (
    model.model_id,
    dataset_key,
    float(threshold),
    int(min_px),
    bool(model.keep_largest),
    bool(model.volume_keep_largest),
)
if right.button("Run evaluation", key="eval_run", type="primary", icon=":material/play_arrow:"):
    st.session_state["eval_requested"] = request
st.caption(
    f"{scope[:1].upper()}{scope[1:]}: {len(patient_ids)} patients, {len(dataset):,} slices · "
    f"model **{model.label}** on {model.device}. Each patient is cached once done, so a stopped evaluation "
    "resumes where it was."
)
if st.session_state.get("eval_requested") != request:
    st.info("Press **Run evaluation** to score the model with these settings.", icon=":material/play_arrow:")
    st.stop()

result = ui.evaluate_with_progress(
    model, dataset, dataset_key, threshold, min_px, model.keep_largest, model.volume_keep_largest
)
if result is None:
    st.stop()
report = result.report
summary = report.summary()

# --- summary
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
for column, (label, value, help_text) in zip(st.columns(len(cards)), cards, strict=True):
    column.metric(label, value, help=help_text, border=True)

# --- per-patient Dice, sorted, with mean and median; and their distribution
bars = patient_dice_figure(report.patients, report.mean_dice, report.median_dice)
st.plotly_chart(bars, key="eval_bars")

left, right = st.columns(2)
histogram = go.Figure(go.Histogram(x=report.dice_values, xbins={"start": 0, "end": 1.0001, "size": 0.05}))
histogram.update_layout(
    title="Distribution of per-patient Dice",
    xaxis={"title": "volume Dice", "range": [0, 1]},
    yaxis={"title": "patients"},
    height=320,
    margin={"t": 40, "b": 10, "l": 10, "r": 10},
    bargap=0.05,
)
left.plotly_chart(histogram, key="eval_hist")

# --- slice-level detection: a slice is "tumour" when its highest probability reaches t
curve = result.detection(sorted({round(t, 2) for t in np.arange(0.05, 0.96, 0.05)} | {round(float(threshold), 2)}))
at_threshold = next(c for c in curve if c["threshold"] == round(float(threshold), 2))
pr = go.Figure(
    go.Scatter(
        x=[c["recall"] for c in curve],
        y=[c["precision"] for c in curve],
        mode="lines+markers",
        customdata=[[c["threshold"], c["tp"], c["fp"], c["fn"]] for c in curve],
        hovertemplate="t = %{customdata[0]:.2f}<br>recall %{x:.3f}, precision %{y:.3f}"
        "<br>TP %{customdata[1]}, FP %{customdata[2]}, FN %{customdata[3]}<extra></extra>",
        name="sweep",
    )
)
pr.add_scatter(
    x=[at_threshold["recall"]],
    y=[at_threshold["precision"]],
    mode="markers",
    marker={"size": 12, "color": "#d62728"},
    name=f"t = {float(threshold):.2f}",
)
pr.update_layout(
    title="Tumour-slice detection (slice positive when max prob ≥ t)",
    xaxis={"title": "recall", "range": [0, 1.02]},
    yaxis={"title": "precision", "range": [0, 1.02]},
    height=320,
    margin={"t": 40, "b": 10, "l": 10, "r": 10},
    showlegend=False,
)
right.plotly_chart(pr, key="eval_pr")
right.caption(
    f"At t = {float(threshold):.2f}: precision {at_threshold['precision']:.3f}, recall {at_threshold['recall']:.3f} "
    f"({at_threshold['tp']} tumour slices found, {at_threshold['fp']} false alarms, {at_threshold['fn']} missed), "
    "counting a slice's highest raw probability, before post-processing; the false-positive card above counts "
    "the final masks."
)

# --- per group (e.g. tumour type), from a CSV beside the dataset (figshare's labels.csv) or one given here
default_groups = Path(root) / "labels.csv"
with st.expander("By group (tumour type, scanner, ...)", expanded=default_groups.is_file()):
    groups_text = st.text_input(
        "Groups CSV",
        value=str(default_groups) if default_groups.is_file() else "",
        key="eval_groups",
        placeholder="/data/figshare/labels.csv",
        help="A CSV with a patient column (patient_id, patient, or file: counted by its stem) and a group column "
        "(label_name, group or label), such as figshare's labels.csv. Defaults to labels.csv in the dataset folder.",
    ).strip()
    if groups_text:
        try:
            group_of = read_groups(Path(groups_text).expanduser())
        except ValueError as err:
            st.error(str(err), icon=":material/error:")
            group_of = {}
        if group_of:
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
            boxes = go.Figure()
            for name in by_group:
                values = [p.volume_dice for p in report.patients if group_of.get(p.patient_id, NO_GROUP) == name]
                boxes.add_box(y=values, name=name, boxpoints="all", jitter=0.4, pointpos=0)
            boxes.update_layout(
                title="Per-patient Dice by group",
                yaxis={"title": "volume Dice", "range": [0, 1.02]},
                height=320,
                margin={"t": 40, "b": 10, "l": 10, "r": 10},
                showlegend=False,
            )
            st.plotly_chart(boxes, key="eval_groups_box")
    else:
        st.caption("Give a CSV that maps patients to groups to see the Dice of each group.")

# --- worst patients and slices, with a way to open them on the Patients page
source = "phantom" if synthetic else "dataset"
worst_patients = result.worst_patients(10)
worst_slices = result.worst_slices(10)
left, right = st.columns(2)
with left:
    st.markdown("**Worst patients**")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "patient": p.patient_id,
                    "volume Dice": p.volume_dice,
                    "tumour slices": p.n_tumour_slices,
                    "truth px": p.truth_voxels,
                    "predicted px": p.pred_voxels,
                }
                for p in worst_patients
            ]
        ),
        hide_index=True,
        key="eval_worst_patients",
        column_config={"volume Dice": st.column_config.NumberColumn(format="%.3f")},
    )
with right:
    st.markdown("**Worst slices** (with tumour in truth or prediction)")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "patient": s.patient_id,
                    "slice": s.slice,
                    "Dice": s.dice,
                    "truth px": s.truth_area_px,
                    "predicted px": s.pred_area_px,
                    "max prob": s.max_prob,
                }
                for s in worst_slices
            ]
        ),
        hide_index=True,
        key="eval_worst_slices",
        column_config={
            "Dice": st.column_config.NumberColumn(format="%.3f"),
            "max prob": st.column_config.NumberColumn(format="%.2f"),
        },
    )

targets = {f"Patient {p.patient_id}": (p.patient_id, None) for p in worst_patients}
targets.update({f"{s.patient_id}, slice {s.slice} (Dice {s.dice:.3f})": (s.patient_id, s.slice) for s in worst_slices})
left, right = st.columns([3, 1], vertical_alignment="bottom")
choice = left.selectbox("Open on the Patients page", list(targets), key="eval_open_choice")
if right.button("Open", key="eval_open", icon=":material/open_in_new:", width="stretch"):
    patient_id, slice_number = targets[choice]
    ui.open_patient(patient_id, slice_number, source=source, dataset_path=ui.dataset_path())

# --- downloads
stem = f"evaluation_{model.label}_t{float(threshold):.2f}"
extra = {"model": model.label, "dataset": root, "scope": scope, "synthetic": synthetic}
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

"""Evaluation: score the model on a dataset, patient by patient, and find its worst patients and slices."""

from pathlib import Path

import streamlit as st

from brainviewer.ui import evaluation, evaluation_compare
from brainviewer.ui.sidebar import sidebar_dataset, sidebar_model

st.title("Evaluation", anchor=False)
st.caption(
    "Per-patient Dice, sensitivity, precision, volume similarity, HD95 and surface Dice of the model on a dataset "
    "(each patient's slices stacked into one volume, as in Buda et al. 2019) with their summaries over the patients, "
    "how well it finds tumour-bearing slices, and its worst patients and slices."
)

missing = evaluation_compare.consume_compare_request()  # another page's request, before the sidebar is drawn
model = sidebar_model()
sidebar_data = sidebar_dataset()
if evaluation_compare.compare_mode():  # two or more models on the same patients, paired
    evaluation_compare.show_compare(missing, sidebar_data)
    st.stop()
dataset, synthetic = evaluation.choose_dataset(sidebar_data, model)

# --- which patients: the model's held-out ones, all, or one side of a training run's split; the settings
dataset, scope = evaluation.choose_scope(model, dataset)
threshold, min_px, dataset_key = evaluation.run_settings(model, dataset, scope)
result = evaluation.evaluate(model, dataset, dataset_key, threshold, min_px)

# --- summary, per-patient Dice and detection, groups, worst patients and slices, downloads
root = Path(dataset.root).resolve()
evaluation.show_summary(result.report)
evaluation.show_scores(result.report)
curve = evaluation.show_charts(result, threshold)
evaluation.show_groups(result.report, root)
evaluation.show_worst(result, synthetic)
extra = {"model": model.label, "dataset": str(root), "scope": scope, "synthetic": synthetic}
evaluation.show_evaluation_downloads(result, curve, model, threshold, extra)

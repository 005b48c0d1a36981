"""The Evaluation page's compare view: two or more models scored on the same patients, paired.

Each model is evaluated patient by patient with its own threshold and post-processing, through the
same cached evaluation as the one-model view (:func:`brainviewer.ui.common.evaluate_with_progress`),
so its figures are those of ``evaluate``; the comparison itself is
:func:`brainviewer.evaluation.compare_models.compare_models` (the first model chosen is the reference),
and ``python -m brainviewer compare-models`` gives the same figures.

The models offered are the weights the sidebar lists (``weights/*``, promoted runs) and, outside a public
demo, the ``best/`` weights of the runs (:func:`compare_choices`). Another page asks for a comparison by
setting :data:`~brainviewer.ui.state.COMPARE_REQUEST_KEY` to ``{"models": [labels], "dataset_path": str}``
(and optionally ``"unseen": bool``, whether to compare only on the patients none of the models trained on)
and switching here; a label is one the sidebar lists or one of :func:`brainviewer.runs.base_weight_choices`
(the Fine-tuning page's, e.g. ``weights/<name>`` or ``run <name> (best)``). :func:`consume_compare_request`
(called before the sidebar is drawn) opens the compare view with those models and that dataset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import streamlit as st

from brainviewer import runs as runs_lib
from brainviewer.data.datasets import Dataset
from brainviewer.evaluation.compare_models import (
    METRICS,
    ModelComparison,
    compare_models,
    difference_column,
    unseen_patients,
)
from brainviewer.evaluation.compare_run import comparison_json, report_scores
from brainviewer.evaluation.evaluate import EvaluationReport
from brainviewer.evaluation.stats import describe, format_summary
from brainviewer.runs.corrections import plural
from brainviewer.ui.common import evaluate_with_progress, no_dataset_help, phantom_dataset
from brainviewer.ui.evaluation import open_patient
from brainviewer.ui.server_files import NONE_CHOICE, demo_mode
from brainviewer.ui.sidebar import ModelState, dataset_path, load_model_state, named_dataset_name, weights_choices
from brainviewer.ui.state import (
    COMPARE_MODELS_KEY,
    COMPARE_REQUEST_KEY,
    COMPARE_RUN_KEY,
    COMPARE_SWITCHED_KEY,
    COMPARE_UNSEEN_KEY,
    DATASET_CHOICE_KEY,
    DATASET_PATH_INPUT_KEY,
    DATASET_PATH_KEY,
    EVAL_MODE_KEY,
    MODEL_CHOICE_KEY,
)
from brainviewer.views.dataset_evaluation import dataset_key, score_column
from brainviewer.views.figures import paired_difference_figure
from brainviewer.views.review import SYNTHETIC_LABEL

logger = logging.getLogger(__name__)

ONE_MODEL = "One model"
COMPARE = "Compare models"
MAX_MODELS = 5
#: Patients listed (each with a button to open it) where the models disagree most.
DISAGREEMENTS = 8


def _resolved(spec: str) -> str:
    """A weights spec as a resolved folder path (a Hub id as it is), to tell two labels of one folder."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def compare_choices() -> dict[str, str]:
    """``label -> spec`` of the models to compare: the weights the sidebar lists (default first) and, outside a
    public demo, the runs' ``best/`` weights not among them (labelled ``run <name> (best)``)."""
    choices = dict(weights_choices())
    if demo_mode():
        return choices
    listed = {_resolved(spec) for spec in choices.values()}
    for label, path in runs_lib.base_weight_choices().items():
        if _resolved(path) not in listed:
            choices[label] = path
            listed.add(_resolved(path))
    return choices


def _choice_label(label: str, choices: dict[str, str]) -> str | None:
    """The label in ``choices`` of a requested label: itself, or the one of the same folder when it is a label of
    :func:`brainviewer.runs.base_weight_choices` (``weights/<name>``, ``current model (<name>)``); else ``None``."""
    if label in choices:
        return label
    path = None if demo_mode() else runs_lib.base_weight_choices().get(label)
    if path is None:
        return None
    return next((name for name, spec in choices.items() if _resolved(spec) == _resolved(path)), None)


def consume_compare_request() -> list[str]:
    """Apply another page's request to compare models (before the sidebar and the mode switch are drawn):
    the compare view, the requested models (those the sidebar lists), the requested dataset folder (in
    demo mode only one the operator offers; a switch of the sidebar's dataset is said on the page) and, when
    the request says, whether only unseen patients are compared. Forgets the request; returns the requested
    labels the sidebar does not list (to say so), or ``[]``."""
    request = st.session_state.pop(COMPARE_REQUEST_KEY, None)
    if not isinstance(request, dict):
        return []
    choices = compare_choices()
    wanted = {str(m): _choice_label(str(m), choices) for m in request.get("models") or []}
    st.session_state[EVAL_MODE_KEY] = COMPARE
    st.session_state[COMPARE_MODELS_KEY] = list(dict.fromkeys(x for x in wanted.values() if x))[:MAX_MODELS]
    st.session_state.pop(COMPARE_RUN_KEY, None)
    if "unseen" in request:
        st.session_state[COMPARE_UNSEEN_KEY] = bool(request["unseen"])
    path = str(request.get("dataset_path") or "")
    st.session_state.pop(COMPARE_SWITCHED_KEY, None)
    if path:
        old = str(st.session_state.get(DATASET_PATH_KEY) or "")
        if old != path and not demo_mode():
            st.session_state[COMPARE_SWITCHED_KEY] = (path, old)
        st.session_state[DATASET_PATH_KEY] = path
        st.session_state[DATASET_PATH_INPUT_KEY] = path
        if demo_mode():  # only a dataset the operator offers is chosen
            st.session_state[DATASET_CHOICE_KEY] = named_dataset_name(path) or NONE_CHOICE
    return [m for m, label in wanted.items() if label is None]


def compare_mode() -> bool:
    """The page's "One model" / "Compare models" switch; ``True`` for the compare view."""
    choice = st.radio("View", (ONE_MODEL, COMPARE), key=EVAL_MODE_KEY, horizontal=True, label_visibility="collapsed")
    return choice == COMPARE


# === Which models, dataset and patients ========================================================


def choose_models(missing: list[str]) -> list[tuple[str, str]]:
    """The models to compare (``[(label, spec)]``, the reference first); stops the page with fewer than two."""
    choices = compare_choices()
    labels = list(choices)
    if missing:
        st.warning(
            f"Not among the weights that can be compared, so left out: {', '.join(missing)}.",
            icon=":material/warning:",
        )
    if COMPARE_MODELS_KEY not in st.session_state:  # first visit: the sidebar's model, then the next one
        current = st.session_state.get(MODEL_CHOICE_KEY)
        first = [current] if current in labels else []
        st.session_state[COMPARE_MODELS_KEY] = (first + [x for x in labels if x not in first])[:2]
    else:  # weights removed since they were chosen are no longer options
        st.session_state[COMPARE_MODELS_KEY] = [x for x in st.session_state[COMPARE_MODELS_KEY] if x in labels]
    chosen = st.multiselect(
        "Models (the first is the reference)",
        labels,
        key=COMPARE_MODELS_KEY,
        max_selections=MAX_MODELS,
        help="The weights the sidebar lists (weights/* and promoted runs) and the runs' best weights. Every other "
        "model is compared with the first one chosen, patient by patient.",
    )
    if len(chosen) < 2:
        st.info(
            "Choose at least two models to compare"
            + ("" if len(labels) > 1 else ": only one is available; train or promote another")
            + ".",
            icon=":material/info:",
        )
        st.stop()
    return [(label, choices[label]) for label in chosen]


def load_models(chosen: list[tuple[str, str]]) -> dict[str, ModelState]:
    """Each chosen model loaded (cached); stops the page when one cannot be loaded (said which)."""
    models = {label: load_model_state(spec) for label, spec in chosen}
    broken = [f"{label}: {m.message}" for label, m in models.items() if not m.available]
    if broken:
        st.error("Could not load " + "; ".join(broken), icon=":material/error:")
        st.stop()
    return models


def choose_dataset(dataset: Dataset | None) -> tuple[Dataset, bool]:
    """The sidebar's dataset or, on request, the synthetic phantom; stops without one. ``(dataset, synthetic)``.
    Says when another page's request switched the sidebar's dataset for this comparison."""
    switched = st.session_state.get(COMPARE_SWITCHED_KEY)
    if switched and dataset is not None and dataset_path() == switched[0]:
        st.info(
            f"Dataset switched to {switched[0]} for this comparison"
            + (f" (it was {switched[1]}; change it back on the sidebar)." if switched[1] else "."),
            icon=":material/swap_horiz:",
        )
    if dataset is not None:
        return dataset, False
    no_dataset_help()
    if not st.toggle("Compare on the synthetic phantom dataset", key="compare_phantom"):
        st.stop()
    st.warning(
        f"**{SYNTHETIC_LABEL}**: generated pictures with drawn-in tumours, not real scans. "
        "Differences on them say nothing about real patients.",
        icon=":material/science:",
    )
    return phantom_dataset(), True


def choose_patients(dataset: Dataset, models: dict[str, ModelState]) -> tuple[Dataset, str]:
    """All patients, or (default, unless a request said otherwise) only those none of the models trained on;
    stops when none is left."""
    unseen = unseen_patients(dataset.patient_ids, [m.split for m in models.values()])
    trained = len(dataset.patient_ids) - len(unseen)
    default = {} if COMPARE_UNSEEN_KEY in st.session_state else {"value": True}  # a request may have set it
    only_unseen = trained > 0 and st.toggle(
        f"Only the {len(unseen)} {'patient' if len(unseen) == 1 else 'patients'} none of these models trained on",
        key=COMPARE_UNSEEN_KEY,
        help=f"{plural(trained, 'patient')} of this dataset {'is' if trained == 1 else 'are'} in the training "
        "split of at least one of the models: scores on them flatter that model.",
        **default,
    )
    if not only_unseen:
        n = len(dataset.patient_ids)
        return dataset, "the 1 patient" if n == 1 else f"all {n} patients"
    if not unseen:
        st.warning(
            "Every patient of this dataset trained at least one of these models. Turn the switch off to compare on "
            "them anyway, or choose a dataset of new patients.",
            icon=":material/warning:",
        )
        st.stop()
    return dataset.subset(unseen), f"the {plural(len(unseen), 'patient')} none of the models trained on"


def run_comparison(models: dict[str, ModelState], dataset: Dataset, scope: str) -> dict[str, EvaluationReport]:
    """The Compare button, then every model's evaluation (each patient cached, with progress); stops the page
    until the button is pressed for these models and patients, or when an evaluation fails (shown)."""
    key = dataset_key(dataset)
    request = (tuple(m.model_id for m in models.values()), key)
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.caption(
        f"{scope[:1].upper()}{scope[1:]}: {plural(len(dataset.patient_ids), 'patient')}, "
        f"{plural(len(dataset), 'slice')}. Each model "
        "with its own threshold and post-processing, as `evaluate` scores it; each patient is cached once done."
    )
    if right.button("Compare", key="compare_run", type="primary", icon=":material/compare_arrows:", width="stretch"):
        st.session_state[COMPARE_RUN_KEY] = request
    if st.session_state.get(COMPARE_RUN_KEY) != request:
        st.info("Press **Compare** to score the models on these patients.", icon=":material/play_arrow:")
        st.stop()
    reports = {}
    for label, model in models.items():
        result = evaluate_with_progress(
            model, dataset, key, model.threshold, model.min_component_px, model.keep_largest, model.volume_keep_largest
        )
        if result is None:
            st.stop()
        reports[label] = result.report
    return reports


# === The comparison ============================================================================


def show_comparison(reports: dict[str, EvaluationReport]) -> ModelComparison:
    """The metric to compare, each model's summary, and per other model the mean paired difference with its
    bootstrap interval, the Wilcoxon p-value and on how many patients each is better; returns the comparison."""
    first = next(iter(reports.values())).scores()
    unit, tolerance = first["distance_unit"], first["surface_dice_tolerance"]
    metric = st.selectbox(
        "Score",
        list(METRICS),
        format_func=lambda name: score_column(name, unit, tolerance),
        key="compare_metric",
    )
    try:
        comparison = compare_models({label: report_scores(r, metric) for label, r in reports.items()}, metric)
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
        st.stop()
    title = score_column(metric, unit, tolerance)
    st.dataframe(
        pd.DataFrame(
            {"model": label, title: format_summary(describe(comparison.scores[label]), 2 if metric == "hd95" else 3)}
            for label in comparison.models
        ),
        hide_index=True,
        key="compare_summary",
    )
    for pair in comparison.pairs:
        f = "{:+.2f}" if metric == "hd95" else "{:+.3f}"
        lower = " (lower is better)" if not METRICS[metric] else ""
        st.markdown(
            f"**{difference_column(pair.other, pair.reference)}**{lower}: {pair.other} is better on "
            f"{pair.other_better}, worse on {pair.reference_better} and equal on {pair.ties} of the {pair.n} patients."
        )
        cards = [
            ("Mean difference", f.format(pair.mean_difference)),
            ("95% CI of the mean difference", f"[{f.format(pair.ci_low)}, {f.format(pair.ci_high)}]"),
            ("Wilcoxon p", "n/a" if pair.wilcoxon_p is None else f"{pair.wilcoxon_p:.3g}"),
        ]
        for column, (label, value) in zip(st.columns([1, 2, 1]), cards, strict=True):
            column.metric(label, value, border=True)
        st.caption(
            f"The interval is a paired percentile bootstrap of the mean difference ({comparison.resamples:,} "
            f"resamples of patients, seed {comparison.seed}); the p-value is a two-sided Wilcoxon signed-rank test"
            + (f" ({pair.wilcoxon_note})." if pair.wilcoxon_note else ".")
        )
    if comparison.left_out:
        st.caption(
            "Left out (not scored by every model): "
            + "; ".join(f"{m}: {', '.join(p)}" for m, p in comparison.left_out.items())
        )
    return comparison


def show_differences(comparison: ModelComparison, title: str) -> None:
    """The chart of per-patient paired differences and the per-patient table."""
    diffs = {difference_column(o, comparison.reference): comparison.differences(o) for o in comparison.models[1:]}
    intervals = {difference_column(p.other, p.reference): (p.ci_low, p.ci_high) for p in comparison.pairs}
    figure = paired_difference_figure(comparison.patients, {k: v.tolist() for k, v in diffs.items()}, intervals, title)
    st.plotly_chart(figure, key="compare_chart")
    with st.expander(f"Every patient ({len(comparison.patients)})", expanded=False):
        digits = "%.2f" if comparison.metric == "hd95" else "%.3f"
        rows = comparison.rows()
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            key="compare_table",
            column_config={c: st.column_config.NumberColumn(format=digits) for c in rows[0] if c != "patient"},
        )


def show_disagreements(comparison: ModelComparison, synthetic: bool) -> None:
    """The patients where the models' scores spread most, each with a button that opens it on the Patients page."""
    st.markdown("**Where the models disagree most**")
    st.caption("Open shows the patient on the Patients page with the sidebar's model; switch it there to see another.")
    f = "{:.2f}" if comparison.metric == "hd95" else "{:.3f}"
    for row in comparison.disagreements(DISAGREEMENTS):
        left, right = st.columns([4, 1], vertical_alignment="center")
        scores = ", ".join(f"{m} {f.format(row[m])}" for m in comparison.models)
        left.markdown(f"`{row['patient']}` · spread {f.format(row['spread'])} · {scores} · best: {row['best']}")
        if right.button("Open", key=f"compare_open_{row['patient']}", icon=":material/open_in_new:", width="stretch"):
            open_patient(row["patient"], None, "phantom" if synthetic else "dataset", dataset_path())


def show_downloads(comparison: ModelComparison, reports: dict[str, EvaluationReport], extra: dict) -> None:
    """The per-patient table (CSV) and the whole comparison (JSON, as ``compare-models --out`` writes it)."""
    stem = f"comparison_{'_vs_'.join(comparison.models)}_{comparison.metric}"
    with st.container(horizontal=True, gap="small"):
        st.download_button(
            "Per-patient comparison (CSV)",
            data=comparison.to_csv(),
            file_name=f"{stem}.csv",
            mime="text/csv",
            key="compare_csv",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Comparison (JSON)",
            data=json.dumps(comparison_json(comparison, reports, extra), indent=2) + "\n",
            file_name=f"{stem}.json",
            mime="application/json",
            key="compare_json",
            on_click="ignore",
            icon=":material/download:",
        )


def show_compare(missing: list[str], sidebar_dataset: Dataset | None) -> None:
    """The whole compare view (stops the page where something is missing)."""
    chosen = choose_models(missing)
    models = load_models(chosen)
    dataset, synthetic = choose_dataset(sidebar_dataset)
    dataset, scope = choose_patients(dataset, models)
    reports = run_comparison(models, dataset, scope)
    comparison = show_comparison(reports)
    first = next(iter(reports.values())).scores()
    show_differences(comparison, score_column(comparison.metric, first["distance_unit"], None))
    show_disagreements(comparison, synthetic)
    extra = {
        "dataset": Path(dataset.root).name if demo_mode() else str(Path(dataset.root).resolve()),
        "patients_from": scope,
        "synthetic": synthetic,
    }
    show_downloads(comparison, reports, extra)

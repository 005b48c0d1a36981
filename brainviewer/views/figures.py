"""Every plotly figure of the app (no Streamlit): training curves, run comparisons, per-patient Dice,
a dataset evaluation's distribution, detection and groups, models' paired differences, and one patient's
tumour per slice.

Each function returns a ``plotly.graph_objects.Figure``; the pages only place them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brainviewer.views.patient import PatientSummary


def loss_figure(train_rows: Sequence[dict]):
    """Training loss against the global step (a plotly Figure; empty axes without rows). The loss axis
    starts at 0, also for a single logged step."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[r.get("step") for r in train_rows],
            y=[r.get("loss") for r in train_rows],
            mode="lines" if len(train_rows) > 1 else "markers",  # one logged step is a point, not a line
            name="training loss",
            line={"width": 1.5, "color": "#1f6feb"},
        )
    )
    # a loss is never negative: start the axis at 0 (plotly pads a single point to about -0.5 otherwise)
    losses = [float(r["loss"]) for r in train_rows if isinstance(r.get("loss"), int | float)]
    losses = [loss for loss in losses if math.isfinite(loss)]
    yaxis: dict = {"title": "loss", "rangemode": "nonnegative"}
    if len(losses) == 1:
        yaxis["range"] = [0, max(losses[0], 0.0) * 1.5 or 1.0]
    fig.update_layout(
        title="Training loss",
        xaxis_title="step",
        yaxis=yaxis,
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        showlegend=False,
    )
    return fig


def dice_figure(val_rows: Sequence[dict], per_patient: bool = False):
    """Validation mean per-patient Dice against the epoch (1-based), best epochs marked; optionally
    a thin line per validation patient."""
    import plotly.graph_objects as go

    epochs = [int(r.get("epoch", 0)) + 1 for r in val_rows]
    fig = go.Figure()
    if per_patient:
        patients = sorted({p for r in val_rows for p in (r.get("val_dice_per_patient") or {})})
        for patient in patients:
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=[(r.get("val_dice_per_patient") or {}).get(patient) for r in val_rows],
                    mode="lines",
                    name=patient,
                    line={"width": 0.8},
                    opacity=0.45,
                    showlegend=False,
                    hovertemplate=f"{patient}<br>epoch %{{x}}: Dice %{{y:.3f}}<extra></extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=epochs,
            y=[r.get("val_dice_mean") for r in val_rows],
            mode="lines+markers",
            name="mean per-patient Dice",
            line={"width": 2.5, "color": "#d62728"},
        )
    )
    best = [(e, r.get("val_dice_mean")) for e, r in zip(epochs, val_rows, strict=True) if r.get("best")]
    if best:
        fig.add_trace(
            go.Scatter(
                x=[b[0] for b in best],
                y=[b[1] for b in best],
                mode="markers",
                name="new best",
                marker={"symbol": "star", "size": 11, "color": "#2ca02c"},
            )
        )
    fig.update_layout(
        title="Validation Dice (mean per patient)",
        xaxis_title="epoch",
        yaxis_title="Dice",
        yaxis_range=[0, 1],
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def compare_figure(curves: dict[str, Sequence[dict]]):
    """Validation mean per-patient Dice against the epoch, one line per run (``name -> val rows``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, rows in curves.items():
        fig.add_trace(
            go.Scatter(
                x=[int(r.get("epoch", 0)) + 1 for r in rows],
                y=[r.get("val_dice_mean") for r in rows],
                mode="lines+markers",
                name=name,
            )
        )
    fig.update_layout(
        title="Validation Dice by run",
        xaxis_title="epoch",
        yaxis_title="mean per-patient Dice",
        yaxis_range=[0, 1],
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def patient_dice_figure(patients: Sequence[object], mean: float | None = None, median: float | None = None):
    """Per-patient volume Dice as bars, lowest first, with optional mean and median lines
    (``patients``: objects with ``patient_id`` and ``volume_dice``).

    The x axis is categorical with the ids as strings: numeric ids (figshare's ``1``, ``2``, ``10``) would
    otherwise be placed on a numeric axis, as slivers at their values instead of one bar each."""
    import plotly.graph_objects as go

    ordered = sorted(patients, key=lambda p: (p.volume_dice, p.patient_id))
    fig = go.Figure(
        go.Bar(
            x=[str(p.patient_id) for p in ordered],
            y=[p.volume_dice for p in ordered],
            marker_color="#3b7dd8",
            hovertemplate="%{x}<br>Dice %{y:.3f}<extra></extra>",
        )
    )
    if mean is not None and math.isfinite(mean):
        # mean at the left, median at the right: apart even when the two are equal
        fig.add_hline(y=mean, line_color="#d62728", annotation_text=f"mean {mean:.3f}", annotation_position="top left")
    if median is not None and math.isfinite(median):
        fig.add_hline(
            y=median,
            line_color="#2ca02c",
            line_dash="dash",
            annotation_text=f"median {median:.3f}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        title="Per-patient volume Dice",
        yaxis={"range": [0, 1.02], "title": "Dice"},
        xaxis={"title": None, "tickangle": -60, "type": "category"},
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def dice_histogram_figure(dice_values: Sequence[float]):
    """The distribution of per-patient volume Dice, in bins of 0.05 over ``[0, 1]``."""
    import plotly.graph_objects as go

    histogram = go.Figure(go.Histogram(x=list(dice_values), xbins={"start": 0, "end": 1.0001, "size": 0.05}))
    histogram.update_layout(
        title="Distribution of per-patient Dice",
        xaxis={"title": "volume Dice", "range": [0, 1]},
        yaxis={"title": "patients"},
        height=320,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        bargap=0.05,
    )
    return histogram


def detection_figure(curve: Sequence[dict], at_threshold: dict, threshold: float):
    """Precision against recall of tumour-slice detection over a threshold sweep (``curve``, see
    :func:`brainviewer.views.dataset_evaluation.detection_curve`), the point at ``threshold`` marked."""
    import plotly.graph_objects as go

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
    return pr


def group_dice_figure(values_by_group: dict[str, Sequence[float]]):
    """Per-patient volume Dice as one box (with its points) per group (``group -> Dice values``)."""
    import plotly.graph_objects as go

    boxes = go.Figure()
    for name, values in values_by_group.items():
        boxes.add_box(y=list(values), name=name, boxpoints="all", jitter=0.4, pointpos=0)
    boxes.update_layout(
        title="Per-patient Dice by group",
        yaxis={"title": "volume Dice", "range": [0, 1.02]},
        height=320,
        margin={"t": 40, "b": 10, "l": 10, "r": 10},
        showlegend=False,
    )
    return boxes


def paired_difference_figure(
    patients: Sequence[str],
    differences: dict[str, Sequence[float]],
    intervals: dict[str, tuple[float, float]],
    metric: str = "Dice",
):
    """Per-patient paired differences of one or more models against a reference: a bar per patient and model
    (``differences``: title such as ``"B − A"`` -> values in ``patients`` order), patients sorted by the first
    difference, a zero line, and each difference's mean with its interval (``intervals``: title ->
    ``(low, high)``) as a dotted line in a shaded band. The x axis is categorical (see :func:`patient_dice_figure`)."""
    import plotly.graph_objects as go

    titles = list(differences)
    first = list(differences[titles[0]]) if titles else []
    order = sorted(range(len(patients)), key=lambda i: (first[i], str(patients[i])))
    colours = ("#3b7dd8", "#e07b00", "#2ca02c", "#9467bd", "#8c564b")
    fig = go.Figure()
    for k, title in enumerate(titles):
        values = list(differences[title])
        colour = colours[k % len(colours)]
        fig.add_bar(
            x=[str(patients[i]) for i in order],
            y=[values[i] for i in order],
            name=title,
            marker_color=colour,
            hovertemplate=f"%{{x}}<br>{title}: %{{y:+.3f}}<extra></extra>",
        )
        if title in intervals and values:
            low, high = intervals[title]
            mean = sum(values) / len(values)
            fig.add_hrect(y0=low, y1=high, fillcolor=colour, opacity=0.12, line_width=0)
            fig.add_hline(y=mean, line_color=colour, line_dash="dot", annotation_text=f"mean {mean:+.3f}")
    fig.add_hline(y=0, line_color="#555555", line_width=1)
    fig.update_layout(
        title=f"Per-patient difference in {metric} (mean and 95% CI shaded)",
        yaxis={"title": f"difference in {metric}"},
        xaxis={"title": None, "tickangle": -60, "type": "category"},
        barmode="group",
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
    )
    return fig


def patient_strip_figure(summary: PatientSummary, current: int, predicted: bool):
    """One patient's tumour area per slice (ground truth and, when ``predicted``, prediction) above its
    per-slice Dice (with truth and prediction), the current slice (0-based) marked."""
    import numpy as np
    from plotly.subplots import make_subplots

    from brainviewer.views.overlay import GT_COLOR, PRED_COLOR

    slices = np.arange(1, summary.n_slices + 1)
    has_truth = summary.has_ground_truth
    rows = 2 if has_truth and predicted else 1
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.6, 0.4][:rows])
    if has_truth:
        figure.add_bar(
            x=slices,
            y=[a or 0 for a in summary.truth_area_px],
            name="Ground truth (px)",
            marker_color="rgb({},{},{})".format(*GT_COLOR),
            row=1,
            col=1,
        )
    if predicted:
        figure.add_bar(
            x=slices,
            y=summary.pred_area_px,
            name="Predicted (px)",
            marker_color="rgb({},{},{})".format(*PRED_COLOR),
            row=1,
            col=1,
        )
        if has_truth:
            dice = [np.nan if d is None else d for d in summary.slice_dice]
            figure.add_scatter(
                x=slices, y=dice, mode="lines+markers", name="Slice Dice", line_color="#3b7dd8", row=2, col=1
            )
            figure.update_yaxes(range=[0, 1.05], title_text="Dice", row=2, col=1)
    figure.add_vline(x=current + 1, line_dash="dot", line_color="#555")
    figure.update_yaxes(title_text="tumour px", row=1, col=1)
    figure.update_xaxes(title_text="slice", row=rows, col=1)
    figure.update_layout(
        barmode="group",
        height=220 + 140 * (rows - 1),
        margin={"t": 10, "b": 10, "l": 10, "r": 10},
        legend={"orientation": "h", "y": 1.12},
    )
    return figure

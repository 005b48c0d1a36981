"""Every plotly figure of the app (no Streamlit): training curves, run comparisons, per-patient Dice.

Each function returns a ``plotly.graph_objects.Figure``; the pages only place them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def loss_figure(train_rows: Sequence[dict]):
    """Training loss against the global step (a plotly Figure; empty axes without rows)."""
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
    fig.update_layout(
        title="Training loss",
        xaxis_title="step",
        yaxis_title="loss",
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
    (``patients``: objects with ``patient_id`` and ``volume_dice``)."""
    import plotly.graph_objects as go

    ordered = sorted(patients, key=lambda p: (p.volume_dice, p.patient_id))
    fig = go.Figure(
        go.Bar(
            x=[p.patient_id for p in ordered],
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
        xaxis={"title": None, "tickangle": -60},
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig

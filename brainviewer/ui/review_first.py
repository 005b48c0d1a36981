"""The Patients page's "Review these first": the patient's slices ranked by the model's uncertainty (the
summed binary entropy of each slice's probabilities, :mod:`brainviewer.model.uncertainty`), with a
button per slice that jumps the slice scrubber to it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from brainviewer.model.uncertainty import UNCERTAIN_BITS, SliceUncertainty, rank_slices
from brainviewer.ui.reading_view import UNCERTAINTY_HELP
from brainviewer.ui.state import PATIENT_SLICE_KEY, REVIEW_FIRST_GO

#: Slices listed.
REVIEW_FIRST_COUNT = 8


@st.cache_data(max_entries=40, show_spinner=False)
def _ranked(model_id: str, volume_key: str, _probs: list) -> list[SliceUncertainty]:
    """Every slice's uncertainty, most first, computed once per (model, patient)."""
    return rank_slices(_probs, top=None)


def _go(slice_number: int) -> None:
    """Button callback: show slice ``slice_number`` (1-based) on the slice scrubber."""
    st.session_state[PATIENT_SLICE_KEY] = slice_number


def review_first(
    probs: list[np.ndarray] | None,
    pred_masks: list[np.ndarray] | None,
    current: int,
    model_id: str | None,
    volume_key: str,
    count: int = REVIEW_FIRST_COUNT,
) -> list[SliceUncertainty]:
    """The ranked table and its jump buttons (keys ``patient_review_first_go_<rank>``); the rows shown.

    Args:
        probs: the patient's per-slice probabilities, or ``None`` without a model (a note is shown).
        pred_masks: the predicted masks (for the predicted-area column), or ``None``.
        current: the slice shown now (0-based), marked in the table.
        model_id, volume_key: the cache key of the ranking.
        count: how many slices to list.
    """
    with st.expander("Review these first: where the model is least sure", expanded=True):
        if probs is None or model_id is None:
            st.caption("No prediction, so no ranking by uncertainty.")
            return []
        rows = _ranked(model_id, volume_key, probs)[:count]
        if not rows:
            st.caption("The model is certain on every slice (all probabilities exactly 0 or 1).")
            return []
        st.caption(
            f"Slices with the most uncertainty first: the sum over the slice of each pixel's entropy (a 50/50 "
            f"pixel adds 1 bit, a sure one 0), and its pixels at ≥ {UNCERTAIN_BITS:g} bit. A reading order, not "
            "an error estimate: a confidently wrong slice ranks low."
        )
        table = pd.DataFrame(
            {
                "Slice": [row.index + 1 for row in rows],
                "Uncertainty (bits)": [round(row.total_bits, 1) for row in rows],
                "Uncertain px": [row.uncertain_px for row in rows],
                "Predicted px": [
                    int(np.count_nonzero(pred_masks[row.index])) if pred_masks is not None else None for row in rows
                ],
                "Shown": ["◀ now" if row.index == current else "" for row in rows],
            }
        )
        st.dataframe(table, hide_index=True, width="stretch")
        with st.container(horizontal=True, gap="small"):
            for rank, row in enumerate(rows, start=1):
                st.button(
                    f"Slice {row.index + 1}",
                    key=f"{REVIEW_FIRST_GO}_{rank}",
                    on_click=_go,
                    args=(row.index + 1,),
                    type="primary" if row.index == current else "secondary",
                    help=f"Rank {rank}: show slice {row.index + 1}. {UNCERTAINTY_HELP}",
                )
        return rows

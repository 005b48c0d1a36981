"""The real examples on the Review and Patients pages (read from the examples source, cached), and their
credit line. What is shown and why: :mod:`brainviewer.views.examples`."""

from __future__ import annotations

import streamlit as st

from brainviewer.data.datasets import Dataset
from brainviewer.ui.server_files import demo_mode
from brainviewer.views.examples import (
    FIGSHARE_CREDIT,
    LGG_CREDIT,
    example_items,
    example_patient_dataset,
    examples_root,
)
from brainviewer.views.review import ReviewItem


@st.cache_resource(max_entries=2, show_spinner="Reading the example scans…")
def _items(root: str) -> list[ReviewItem]:
    from pathlib import Path

    return example_items(Path(root))


@st.cache_resource(max_entries=2, show_spinner=False)
def _patient(root: str) -> Dataset | None:
    from pathlib import Path

    return example_patient_dataset(Path(root))


def review_examples() -> list[ReviewItem]:
    """The Review page's real example slices, or ``[]`` when there is no examples source."""
    root = examples_root(demo=demo_mode())
    return _items(str(root)) if root is not None else []


def example_patient() -> Dataset | None:
    """The Patients page's real example patient (a one-patient dataset), or ``None``."""
    root = examples_root(demo=demo_mode())
    return _patient(str(root)) if root is not None else None


def examples_credit(patients: bool = False) -> None:
    """A caption crediting the datasets the examples come from (their licences ask for it)."""
    credits = [LGG_CREDIT] if patients else [LGG_CREDIT, FIGSHARE_CREDIT]
    st.caption(
        ":material/photo_library: Real, public scans with their expert ground truth, read from the examples "
        "folder (never copied into the app). Credit: " + " · ".join(credits) + "."
    )


def example_source_items() -> tuple[list[ReviewItem], list[str]]:
    """The Review page's "Real examples" source: the credit line, then ``(items, errors)`` (never an error)."""
    examples_credit()
    return review_examples(), []

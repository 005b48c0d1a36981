"""The Review page's page (frame) picker for multi-page TIFFs and animated GIF / PNG / WebP uploads.

The readers show the first page that is not blank (:func:`brainviewer.data.pages.choose_page`) and say so;
this picker lets the user choose another. The choice is kept per scan name in session state
(:data:`~brainviewer.ui.state.REVIEW_PAGES_KEY`) for the current upload, and :func:`chosen_pages` hands it to
:func:`brainviewer.views.review_sources.items_from_uploads`, which reads that page of the scan (and of its
multi-page mask).
"""

from __future__ import annotations

import streamlit as st

from brainviewer.ui.state import REVIEW_PAGE_KEY, REVIEW_PAGES_KEY
from brainviewer.views.review import ReviewItem


def chosen_pages(names: list[str]) -> dict[str, int]:
    """``{scan name: 0-based page}`` picked for the files of this upload (``names``); other names are forgotten."""
    pages = st.session_state.get(REVIEW_PAGES_KEY) or {}
    kept = {name: page for name, page in pages.items() if name in names}
    st.session_state[REVIEW_PAGES_KEY] = kept
    return kept


def page_widget_key(name: str) -> str:
    """The picker's widget key for the scan named ``name`` (stable across reruns and uploads)."""
    return f"{REVIEW_PAGE_KEY}_{name}"


def _remember(name: str) -> None:
    """Widget callback: keep the picked page (1-based in the widget, 0-based in :data:`REVIEW_PAGES_KEY`)."""
    value = st.session_state.get(page_widget_key(name))
    if value is not None:
        st.session_state[REVIEW_PAGES_KEY] = {**(st.session_state.get(REVIEW_PAGES_KEY) or {}), name: int(value) - 1}


def page_picker(item: ReviewItem) -> None:
    """For a scan with several pages (or frames), a number input (key ``review_page_<name>``) choosing the one shown.

    Nothing for a single-page scan. Changing it reruns the page, which reads the chosen page.
    """
    if item.pages <= 1:
        return
    kind = "Page" if item.name.lower().endswith((".tif", ".tiff")) else "Frame"  # animated GIF / PNG / WebP
    key = page_widget_key(item.name)
    if st.session_state.get(key) != item.page + 1:
        st.session_state[key] = item.page + 1  # the page the reader chose, or the one picked before
    st.number_input(
        f"{kind} of {item.name} (1-{item.pages})",
        min_value=1,
        max_value=item.pages,
        step=1,
        key=key,
        on_change=_remember,
        args=(item.name,),
        help=f"{item.name} holds {item.pages} {kind.lower()}s; one is reviewed at a time. By default the first "
        f"{kind.lower()} that is not blank is shown. A multi-page mask follows its scan's {kind.lower()}.",
    )

"""Where the Patients page's patient comes from: a dataset patient, a NIfTI / DICOM upload or the
synthetic phantom, and a request from another page (Evaluation's "Open") to show a given patient.

A patient is a :class:`~brainviewer.data.volumes.Volume` with a cache key naming it
(dataset folder + patient id, or the upload's content hash).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from brainviewer.data.datasets import Dataset
from brainviewer.data.volumes.base import MAX_DICOM_FILES, MAX_DICOM_FILES_ENV, PLANE_INFO
from brainviewer.limits import raise_hint
from brainviewer.ui.common import first_held_out, no_dataset_help, patient_label, patient_split_note, phantom_dataset
from brainviewer.ui.examples import example_patient, examples_credit
from brainviewer.ui.server_files import NONE_CHOICE, demo_mode
from brainviewer.ui.sidebar import ModelState, named_dataset_name, other_models_preprocessing, use_model_button
from brainviewer.ui.state import (
    DATASET_CHOICE_KEY,
    DATASET_PATH_INPUT_KEY,
    DATASET_PATH_KEY,
    MODEL_CHOICE_KEY,
    OPEN_PATIENT_KEY,
    PATIENT_CURRENT_KEY,
    PATIENT_HAD_DATASET_KEY,
    PATIENT_OPEN_SLICE_KEY,
    PATIENT_PICK_KEY,
    PATIENT_SOURCE_KEY,
    PATIENT_UPLOAD_KEY,
    PATIENT_UPLOAD_MEMO_KEY,
    USE_PLANE_MODEL_KEY,
    state_index,
)
from brainviewer.views.scan_kind import plane_fitting_model, plane_note

if TYPE_CHECKING:
    from brainviewer.data.volumes import Volume

logger = logging.getLogger(__name__)

PATIENT_SOURCE_DATASET = "Dataset patient"
PATIENT_SOURCE_UPLOAD = "NIfTI / DICOM upload"
PATIENT_SOURCE_PHANTOM = "Synthetic phantom"
PATIENT_SOURCE_EXAMPLE = "Real example"
PATIENT_SOURCES = (PATIENT_SOURCE_DATASET, PATIENT_SOURCE_UPLOAD, PATIENT_SOURCE_EXAMPLE, PATIENT_SOURCE_PHANTOM)


def consume_open_patient_request() -> dict | None:
    """Apply a request from another page to open a patient (before the Patients widgets exist).

    Sets the source, patient and slice widgets' state, and the dataset folder, then forgets
    the request. Returns it (or ``None``).
    """
    request = st.session_state.pop(OPEN_PATIENT_KEY, None)
    if not request:
        return None
    if request.get("source") == "phantom":
        st.session_state[PATIENT_SOURCE_KEY] = PATIENT_SOURCE_PHANTOM
    else:
        st.session_state[PATIENT_SOURCE_KEY] = PATIENT_SOURCE_DATASET
        if request.get("dataset_path"):
            st.session_state[DATASET_PATH_KEY] = request["dataset_path"]
            st.session_state[DATASET_PATH_INPUT_KEY] = request["dataset_path"]
            if demo_mode():  # only a dataset the operator offers is chosen
                st.session_state[DATASET_CHOICE_KEY] = named_dataset_name(request["dataset_path"]) or NONE_CHOICE
    st.session_state[PATIENT_PICK_KEY] = request["patient_id"]
    st.session_state[PATIENT_CURRENT_KEY] = None  # treat as a new patient ...
    st.session_state[PATIENT_OPEN_SLICE_KEY] = int(request.get("slice") or 0)  # ... opened on this slice
    return request


def patient_source_picker(has_dataset: bool, has_example: bool = False) -> str:
    """Radio "Patient from" (key ``patient_source``): dataset / NIfTI-DICOM upload / real example (when there
    is one) / synthetic phantom.

    Opens on the dataset when one is configured, else on the real example, else on the phantom; configuring a
    dataset while the example or the phantom is shown switches to the dataset (as the Review page does).
    """
    sources = PATIENT_SOURCES if has_example else tuple(s for s in PATIENT_SOURCES if s != PATIENT_SOURCE_EXAMPLE)
    default = PATIENT_SOURCE_EXAMPLE if has_example else PATIENT_SOURCE_PHANTOM
    default = PATIENT_SOURCE_DATASET if has_dataset else default
    had_dataset = st.session_state.get(PATIENT_HAD_DATASET_KEY)
    st.session_state[PATIENT_HAD_DATASET_KEY] = has_dataset
    shown = st.session_state.get(PATIENT_SOURCE_KEY)
    if has_dataset and had_dataset is False and shown in (PATIENT_SOURCE_PHANTOM, PATIENT_SOURCE_EXAMPLE):
        st.session_state[PATIENT_SOURCE_KEY] = PATIENT_SOURCE_DATASET  # a dataset was just configured: show it
    if shown is not None and shown not in sources:
        st.session_state.pop(PATIENT_SOURCE_KEY)  # e.g. the examples folder went away
    # the index only for a first render: state set by another page must not meet a default too
    first = {} if PATIENT_SOURCE_KEY in st.session_state else {"index": sources.index(default)}
    return st.radio(
        "Patient from",
        sources,
        **first,
        key=PATIENT_SOURCE_KEY,
        horizontal=True,
        help="A real example is a public patient with its ground truth; synthetic phantom patients are generated "
        "pictures, not real scans.",
    )


@st.cache_data(max_entries=6, show_spinner="Reading the patient's slices…")
def _dataset_volume(root: str, patient_id: str, n_records: int, _dataset: Dataset) -> Volume:
    from brainviewer.data.volumes import volume_from_dataset

    return volume_from_dataset(_dataset, patient_id)


def dataset_patient(dataset: Dataset, label: str = "Patient", model: ModelState | None = None) -> tuple[Volume, str]:
    """Patient selectbox (key ``patient_pick``) and the chosen patient's :class:`~brainviewer.data.volumes.Volume`.

    With ``model``, its held-out patients are tagged and a note says whether it was trained on the patient.

    Returns:
        ``(volume, volume_key)``; the key (dataset folder + patient id) names the volume in caches.
    """
    patients = dataset.patient_ids
    if st.session_state.get(PATIENT_PICK_KEY) not in patients:
        st.session_state.pop(PATIENT_PICK_KEY, None)
    patient_id = st.selectbox(
        label,
        patients,
        index=state_index(PATIENT_PICK_KEY, patients, first_held_out(model, patients)),  # opens on a held-out one
        key=PATIENT_PICK_KEY,
        help=f"{len(patients)} patients in {Path(dataset.root).name}.",
        format_func=functools.partial(patient_label, model),
    )
    patient_split_note(model, patient_id)
    root = str(Path(dataset.root).resolve())
    volume = _dataset_volume(root, patient_id, len(dataset.patients[patient_id]), dataset)
    return volume, f"{dataset.kind}:{root}::{patient_id}"


def volume_upload() -> tuple[Volume | None, str | None, str | None]:
    """Uploaders for a NIfTI file or a DICOM series (.zip or .dcm files) and an optional NIfTI mask.

    Returns:
        ``(volume, volume_key, error)``: the volume (or ``None``), its cache key (a content
        hash), and an error message when the upload could not be read.
    """
    import hashlib

    from brainviewer.data.volumes import VolumeError, is_nifti_name, read_dicom_files, read_dicom_zip, read_nifti

    files = st.file_uploader(
        "A NIfTI volume (.nii, .nii.gz), a DICOM series as .zip, or the .dcm files of one series",
        type=["nii", "gz", "zip", "dcm"],
        accept_multiple_files=True,
        key=PATIENT_UPLOAD_KEY,
        help="Identifying DICOM fields (names, ids, dates, institutions) are never shown or exported.",
    )
    if not files:
        return None, None, None
    if len(files) > MAX_DICOM_FILES:
        st.session_state.pop(PATIENT_UPLOAD_MEMO_KEY, None)
        return (
            None,
            None,
            (
                f"{len(files)} files were uploaded; one series may have at most {MAX_DICOM_FILES}. "
                + raise_hint(MAX_DICOM_FILES_ENV)
            ),
        )
    mask_file = None
    if any(is_nifti_name(f.name) for f in files):
        mask_file = st.file_uploader(
            "Optional: its ground-truth mask volume (.nii, .nii.gz; voxels > 0 are tumour)",
            type=["nii", "gz"],
            key="patient_mask_upload",
        )
    signature = (tuple((f.file_id, f.name) for f in files), mask_file.file_id if mask_file else None)
    memo = st.session_state.get(PATIENT_UPLOAD_MEMO_KEY)
    if memo is not None and memo[0] == signature:
        return memo[1], memo[2], memo[3]
    digest = hashlib.blake2b(digest_size=12)
    for f in files:
        digest.update(f.getvalue())
    if mask_file:
        digest.update(mask_file.getvalue())
    key = f"upload:{digest.hexdigest()}"
    volume, error = None, None
    try:
        with st.spinner("Reading the volume…"):
            if len(files) == 1 and is_nifti_name(files[0].name):
                volume = read_nifti(
                    files[0].getvalue(),
                    name=files[0].name,
                    mask=mask_file.getvalue() if mask_file else None,
                    mask_name=mask_file.name if mask_file else None,
                )
            elif len(files) == 1 and files[0].name.lower().endswith(".zip"):
                volume = read_dicom_zip(files[0].getvalue(), name=files[0].name)
            elif any(is_nifti_name(f.name) for f in files):
                error = "Upload one NIfTI file at a time (its mask goes in the second box)."
            else:
                volume = read_dicom_files([(f.name, f.getvalue()) for f in files], label="the uploaded files")
    except VolumeError as err:
        error = str(err)
    except Exception as err:  # a reader bug must not take the page down
        logger.exception("could not read the uploaded volume")
        error = f"The upload could not be read ({type(err).__name__}: {err})."
    st.session_state[PATIENT_UPLOAD_MEMO_KEY] = (signature, volume, key, error)
    return volume, key, error


def choose_patient(dataset: Dataset | None, model: ModelState) -> tuple[Volume, str, str]:
    """The source radio and the patient it gives, with the volume's notes; stops the page while there is none.

    Returns:
        ``(volume, volume_key, source)``; ``source`` is one of :data:`PATIENT_SOURCES`.
    """
    example = example_patient()
    source = patient_source_picker(has_dataset=dataset is not None, has_example=example is not None)
    if source == PATIENT_SOURCE_DATASET:
        if dataset is None:
            no_dataset_help()
            st.stop()
        volume, volume_key = dataset_patient(dataset, model=model)
    elif source == PATIENT_SOURCE_UPLOAD:
        volume, volume_key, error = volume_upload()
        if error:
            st.error(error, icon=":material/error:")
        if volume is None:
            st.stop()
    elif source == PATIENT_SOURCE_EXAMPLE and example is not None:
        examples_credit(patients=True)
        volume, volume_key = dataset_patient(example, label="Example patient", model=model)
    else:
        volume, volume_key = dataset_patient(phantom_dataset(), label="Phantom patient")
    for note in volume.notes:
        st.caption(f"ℹ️ {note}")
    plane_notes(volume, model)
    return volume, volume_key, source


def plane_notes(volume: Volume, model: ModelState) -> None:
    """When the series was acquired in a plane the model records it was not trained on: a note, and a button
    to a local model that records that plane (and reads this kind of scan), if there is one."""
    series_plane = volume.info.get(PLANE_INFO)
    note = plane_note(series_plane, model.segmenter.prep, model.label) if model.segmenter else None
    if not note:
        return
    st.info(note, icon=":material/info:")
    better = plane_fitting_model(
        series_plane, volume.slices[0], other_models_preprocessing(st.session_state.get(MODEL_CHOICE_KEY))
    )
    if better is not None:
        use_model_button(better, "series", USE_PLANE_MODEL_KEY, f"{series_plane} slices")

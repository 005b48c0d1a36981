"""Every ``st.session_state`` key of the app, named once, and the helper that reads a keyed widget's state.

The pages and :mod:`brainviewer.ui` reach session state only through these names. A widget
whose ``key=`` is also read or written through session state is named here too; a widget only
read through its return value keeps its key where it is made. Keys starting with ``_`` are
bookkeeping no widget shows. The string values are part of the app's interface (the tests and
the browser test address widgets by them): change a name here, never a value.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

# --- Sidebar (every page)
MODEL_CHOICE_KEY = "model_choice"  # the sidebar's weights selectbox (a label of the weights choices)
USE_FITTING_MODEL_KEY = "use_fitting_model"  # the button that switches to a model trained on this kind of scan
USE_PLANE_MODEL_KEY = "use_plane_model"  # the Patients page's button to a model trained on the series' plane
MODEL_SPEC_KEY = "_model_spec"  # the chosen weights' spec, kept across pages (Streamlit drops a widget's value)
DATASET_PATH_KEY = "dataset_path"  # the dataset folder, remembered across pages
DATASET_PATH_INPUT_KEY = "dataset_path_input"  # the sidebar's "Dataset folder" text input
DATASET_CHOICE_KEY = "dataset_choice"  # demo mode: the sidebar's selectbox of the datasets the operator offers

# --- Review
REVIEW_SOURCE_KEY = "review_source"  # the "Scans from" radio: upload, dataset sample or phantom
REVIEW_HAD_DATASET_KEY = "_review_had_dataset"  # whether a dataset was configured at the last run
REVIEW_UPLOAD_MEMO_KEY = "_review_upload_memo"  # (upload signature, items, errors) of the last upload
REVIEW_UPLOAD_NAMES_KEY = "_review_upload_names"  # scan names of the last upload (to show a new one)
REVIEW_PATIENT_KEY = "review_patient"  # the dataset patient selectbox
REVIEW_ITEM_KEY = "review_item"  # the scan selectbox when several are loaded
THRESHOLD_KEY = "threshold"  # the probability-threshold slider (Review and Patients)
THRESHOLD_MODEL_KEY = "_threshold_model"  # the model id the threshold slider was last reset for
OPACITY_KEY = "opacity"  # the mask-opacity slider (Review and Patients)
DISPLAY_CHANNEL_KEY = "display_channel"  # the channel shown under the overlays of a 3-channel scan
REVIEW_PAGE_KEY = "review_page"  # prefix of the page (frame) picker of a multi-page upload: review_page_<scan name>
REVIEW_PAGES_KEY = "_review_pages"  # {scan name: 0-based page} chosen with the page picker for the current upload
REVIEW_SHOW_GATED_KEY = "review_show_gated"  # prefix of each slice's "Show the mask anyway" toggle (+ "_<scan key>")
REVIEW_SHOWN_GATED_KEY = "_review_shown_gated"  # {scan key} whose toggle is on, kept while the toggle is not drawn

# --- Correcting the mask (Review and Patients)
MASK_EDIT_KEY = "_mask_edit"  # {edit key: MaskEdit} of this session's mask corrections (a few, newest last)
MASK_EDIT_REV_KEY = "_mask_edit_rev"  # revision in the canvas key: bumped to remount the canvas empty
MASK_EDIT_CANVAS_KEY = "_mask_edit_canvas"  # the mounted canvas: {"key", "edit", "applied" objects, "shown" mask}
MASK_EDIT_FLASH_KEY = "_mask_edit_flash"  # (kind, text) shown once in the editor after a save or a click

# --- Patients
PATIENT_SOURCE_KEY = "patient_source"  # the "Patient from" radio: dataset, upload, real example or phantom
PATIENT_HAD_DATASET_KEY = "_patient_had_dataset"  # whether a dataset was configured at the last Patients run
PATIENT_PICK_KEY = "patient_pick"  # the patient selectbox
PATIENT_SLICE_KEY = "patient_slice"  # the slice slider (1-based)
PATIENT_CURRENT_KEY = "_patient_current"  # the cache key of the patient shown at the last run
PATIENT_OPEN_SLICE_KEY = "_patient_open_slice"  # the slice (1-based) a patient opened from elsewhere shows
PATIENT_UPLOAD_KEY = "patient_upload"  # the NIfTI / DICOM file uploader (its files make a DICOM SEG export)
PATIENT_UPLOAD_MEMO_KEY = "_patient_upload_memo"  # (upload signature, volume, key, error) of the last upload
PATIENT_PROBS_DONE_KEY = "_patient_probs_done"  # {(model id, volume key)} already segmented (no progress bar)
OPEN_PATIENT_KEY = "open_patient"  # a request to show a patient: {"source", "dataset_path", "patient_id", "slice"}

# --- Reading view (Review and Patients): one set of keys per page, made by reading_key(prefix, part)
READING_REVIEW = "review_reading"  # the key prefix of the Review page's reading view
READING_PATIENT = "patient_reading"  # the key prefix of the Patients page's reading view
READING_PRESET = "preset"  # the window-preset radio (Full range, Brain, Tumour contrast, Custom)
READING_LEVEL = "level"  # the window-level slider (0-255 display units)
READING_WIDTH = "width"  # the window-width slider (1-255 display units)
READING_RESET = "reset"  # the "Reset window" button (shortcut W)
READING_TRUTH = "truth"  # the button that shows / hides the ground truth (shortcut G)
READING_TRUTH_ON = "_truth_on"  # bool: the ground truth is shown
READING_PRED = "pred"  # the button that shows / hides the prediction (shortcut P)
READING_PRED_ON = "_pred_on"  # bool: the prediction is shown
READING_OUTLINE = "outline"  # the button that switches overlays between filled and outline (shortcut O)
READING_OUTLINE_ON = "_outline_on"  # bool: overlays are drawn as outlines (else filled)
READING_CHART = "chart"  # the plotly chart of the large image
READING_ZOOM = "zoom"  # the "Zoom to tumour" button (shortcut Z)
READING_WHOLE = "whole"  # the "Whole slice" button (shortcut A)
READING_ZOOMED = "_zoomed"  # bool: the view is zoomed to the tumour
READING_REVISION = "_revision"  # int: bumped to make the plotly view drop the user's own zoom
REVIEW_FIRST_GO = "patient_review_first_go"  # the prefix of the "review these first" jump buttons (+ rank)


# --- Evaluation
EVAL_REQUESTED_KEY = "eval_requested"  # the evaluation request of the last "Run evaluation" press
EVAL_DONE_KEY = "_eval_done"  # evaluation requests already finished (no progress bar on reruns)
# a request to compare models: {"models": [weights labels], "dataset_path": str, "unseen": bool (optional)}; "unseen"
# sets the "Only the patients none of these models trained on" switch (absent: the switch keeps its own state)
COMPARE_REQUEST_KEY = "compare_request"
COMPARE_UNSEEN_KEY = "compare_unseen"  # the compare view's "Only the patients none of these models trained on" switch
COMPARE_SWITCHED_KEY = "_compare_switched"  # (new, old) dataset path a compare request switched the sidebar to
EVAL_MODE_KEY = "eval_mode"  # the Evaluation page's "One model" / "Compare models" switch
COMPARE_MODELS_KEY = "compare_models"  # the compare view's multiselect of weights labels (reference first)
COMPARE_RUN_KEY = "_compare_requested"  # the comparison of the last "Compare" press

# --- Fine-tuning
FINETUNE_FLASH_KEY = "finetune_flash"  # [(kind, text)] messages shown once at the next run
FINETUNE_BASE_KEY = "finetune_base"  # the Start form's "Start from" selectbox
FINETUNE_RUN_KEY = "finetune_run"  # the watched run's selectbox
FINETUNE_CHOOSE_KEY = "finetune_choose"  # the run to evaluate, promote or average
FINETUNE_EVAL_KEY = "finetune_eval"  # the last requested run evaluation: {"run", "data", "scope"}
FINETUNE_DELETE_CONFIRM_KEY = "finetune_delete_confirm"  # the run name typed to confirm a delete
FINETUNE_BASE_SCORE_KEY = "_finetune_base_score"  # runs whose base model was asked to be scored on their patients


def reading_key(prefix: str, part: str) -> str:
    """The session-state key of one reading-view control: ``reading_key(READING_REVIEW, READING_LEVEL)``."""
    return f"{prefix}_{part}"


def state_index(key: str, options: Sequence[str], default: int = 0) -> int:
    """Index of the option a keyed widget currently holds (so a re-created widget shows the same value)."""
    value = st.session_state.get(key)
    return options.index(value) if value in options else default

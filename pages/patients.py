"""Patients: a whole patient volume beside the model, slice by slice, with volumes, Dice and exports."""

import streamlit as st

from brainviewer.ui import patients
from brainviewer.ui.common import review_controls
from brainviewer.ui.patient_sources import PATIENT_SOURCE_PHANTOM, choose_patient, consume_open_patient_request
from brainviewer.ui.review_first import review_first
from brainviewer.ui.sidebar import sidebar_dataset, sidebar_model

st.title("Patients", anchor=False)
st.caption(
    "A whole patient, slice by slice: ground truth in red, prediction in green. The model runs once per patient; "
    "scrubbing slices or moving the threshold only re-reads its cached output."
)

request = consume_open_patient_request()
model = sidebar_model()
dataset = sidebar_dataset()
volume, volume_key, source = choose_patient(dataset, model)
synthetic = source == PATIENT_SOURCE_PHANTOM

# --- inference (cached per model and patient) and the prediction at the current threshold
probs = patients.volume_probs(model, volume, volume_key)
threshold, opacity = review_controls(model)
pred_masks, summary = patients.prediction(model, volume, probs, threshold)

# --- the current slice, the whole volume slice by slice, volumes and Dice, tumour slices, downloads
index = patients.current_slice(volume, volume_key, summary)
patients.show_slice(volume, index, probs, pred_masks, threshold, opacity, model, source, synthetic)
review_first(probs, pred_masks, index, model.model_id, volume_key)
patients.show_strip(summary, index, predicted=probs is not None)
patients.show_volumes(summary, volume.spacing_mm, predicted=probs is not None)
patients.show_montage(volume, summary, pred_masks, synthetic)
patients.show_patient_downloads(volume, summary, pred_masks, threshold, model, synthetic)
if request is not None:
    st.toast(f"Opened {request['patient_id']} from the Evaluation page.")

"""Review: one scan beside the model, with ground truth, overlays, metrics and downloads."""

import streamlit as st

from brainviewer.ui import review
from brainviewer.ui.sidebar import sidebar_dataset, sidebar_model

st.title("Review", anchor=False)
st.caption(
    "A brain MRI slice beside the model's tumour prediction: ground truth in red, prediction in green. "
    "Moving the threshold re-cuts the cached probabilities; the model does not run again."
)

model = sidebar_model()
dataset = sidebar_dataset()

item = review.choose_item(model, dataset)
st.divider()
review.show_item(item, model, dataset)

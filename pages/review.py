"""Review: one scan beside the model, with ground truth, overlays, metrics and downloads."""

import streamlit as st

from brainviewer import ui
from brainviewer.views.review import render_review

st.title("Review", anchor=False)
st.caption(
    "A brain MRI slice beside the model's tumour prediction: ground truth in red, prediction in green. "
    "Moving the threshold re-cuts the cached probabilities; the model does not run again."
)

model = ui.sidebar_model()
dataset = ui.sidebar_dataset()

source = ui.source_picker(has_dataset=dataset is not None)
items, errors = ui.source_items(source, dataset, model)
for error in errors:
    st.error(error, icon=":material/error:")
item = ui.pick_item(items)
if item is None:
    if source == ui.SOURCE_UPLOAD:
        st.info("Upload one or more scans, with their _mask files if you have them.", icon=":material/upload:")
    st.stop()

st.divider()
ui.item_banner(item, model)
threshold, opacity = ui.review_controls(model)
channel = ui.display_channel_control(item)
probs = ui.item_probs(model, item)
view = render_review(
    item,
    probs,
    threshold=threshold,
    alpha=opacity,
    min_component_px=model.min_component_px,
    keep_largest=model.keep_largest,
    no_prediction_reason=model.reason,
    display_channel=channel,
)
ui.show_panels(view)
ui.show_metrics(view, model)
ui.show_downloads(view, model)
ui.show_probability_map(view)

"""brainviewer: review brain MRI slices beside a tumour-segmentation model. Run: streamlit run app.py"""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="brainviewer", page_icon=":material/neurology:", layout="wide")

pages = [st.Page(PAGES / "review.py", title="Review", icon=":material/visibility:", default=True)]
for filename, title, icon in (
    ("patients.py", "Patients", ":material/groups:"),
    ("evaluation.py", "Evaluation", ":material/analytics:"),
    ("finetune.py", "Fine-tuning", ":material/model_training:"),
):
    if (PAGES / filename).exists():
        pages.append(st.Page(PAGES / filename, title=title, icon=icon))

st.navigation(pages).run()

"""The Streamlit side of brainviewer: the ONE package of the library that imports Streamlit.

Pages stay thin: they call these helpers, which read widgets and return values, and one
library function per result. Everything heavy is cached:

* the model, with ``st.cache_resource``, keyed by weights folder, the mtime of its
  ``model.safetensors`` and the device (a promoted or retrained model is picked up on the
  next rerun without restarting the app);
* probabilities, with ``st.cache_data``, keyed by model id and scan content hash, so
  moving the threshold or opacity slider never runs the model again;
* datasets (``st.cache_resource``), dataset slices and phantom slices (``st.cache_data``).

Modules:

* :mod:`~brainviewer.ui.state`: every session-state key, named once;
* :mod:`~brainviewer.ui.sidebar`: the model and dataset sidebars every page shows;
* :mod:`~brainviewer.ui.common`: helpers more than one page uses;
* one module per page: :mod:`~brainviewer.ui.review`, :mod:`~brainviewer.ui.patients` (with
  :mod:`~brainviewer.ui.patient_sources`), :mod:`~brainviewer.ui.evaluation` and
  :mod:`~brainviewer.ui.finetune` (with :mod:`~brainviewer.ui.finetune_watch` and
  :mod:`~brainviewer.ui.finetune_results`).
"""

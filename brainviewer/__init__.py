"""brainviewer: review brain MRI slices beside a tumour-segmentation model, and fine-tune it.

The library has no Streamlit dependency except :mod:`brainviewer.ui`.
"""

__version__ = "0.1.0"

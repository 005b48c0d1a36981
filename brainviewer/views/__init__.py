"""Streamlit-free presentation: the review and patient views, overlays, exports and figures."""

# brainviewer as a Hugging Face Space (Docker SDK): see docs/space.md.
#
# The Space builds this file from the repository root and sends traffic to app_port 8501 (README.md front
# matter). Everything comes from this repository. This project's CI has no Docker daemon and cannot build
# the image: tests/test_space.py checks this file instead (base image, COPY sources, the pip installs run in
# a fresh virtual environment, the CMD started and its /_stcore/health answering "ok").
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Spaces run the container as uid 1000: create that user, with a home for the caches and the app folder.
RUN useradd --create-home --uid 1000 user && install -d -o user -g user /home/user/app

# CPU-only torch/torchvision from the PyTorch CPU index, pinned as in requirements.txt (the default PyPI
# torch is a multi-GB CUDA build; the free Space hardware has no GPU). Then the rest of requirements.txt,
# which finds torch==2.13.0 already satisfied by 2.13.0+cpu.
COPY requirements.txt /tmp/requirements.txt
RUN pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu
RUN pip install -r /tmp/requirements.txt

USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    BRAINVIEWER_DEMO=1 \
    BRAINVIEWER_DATASETS="" \
    BRAINVIEWER_GROUPS="" \
    BRAINVIEWER_SPLITS="" \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
WORKDIR /home/user/app
COPY --chown=user . /home/user/app

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"

# Demo settings: uploads up to 20 MB, no file watcher, and XSRF protection off. The Space shows the app in an
# iframe of another site (huggingface.co framing *.hf.space), and with XSRF on every upload must carry
# Streamlit's _streamlit_xsrf cookie from inside that frame. With the default SameSite=Lax the browser does not
# send it (403 on every upload). Streamlit 1.67's server.xsrfCookieSameSite=none (cookie SameSite=None; Secure)
# makes uploads work only in browsers that allow third-party cookies: headless Chromium 156's defaults block
# them and store no cookie in the frame (403 again), as do Safari, Firefox's strict mode, Brave and private
# windows, and Streamlit does not mark the cookie Partitioned (CHIPS), which those browsers would keep.
# tests/ui/test_demo_xsrf.py checks all three cases in Chromium. So XSRF stays off: the demo keeps no user data,
# BRAINVIEWER_DEMO=1 turns fine-tuning off and reads no server path a visitor types.
# The demo allow-lists (README, Settings) are empty here: visitors get uploads and the synthetic phantom. An
# operator offers datasets, groups CSVs and run splits by name with Space variables, e.g.
# BRAINVIEWER_DATASETS="lgg=/data/lgg/kaggle_3m;figshare=/data/figshare" (Space variables override these ENV).
CMD ["streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0", "--server.headless", "true", "--server.maxUploadSize", "20", "--server.fileWatcherType", "none", "--server.enableXsrfProtection", "false", "--browser.gatherUsageStats", "false"]

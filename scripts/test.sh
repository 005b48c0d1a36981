#!/usr/bin/env bash
# Run the whole test suite, installing what is missing first.
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh -m "not slow"  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

"$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt

# Headless Chromium for the browser test (Debian packages). Without it that test is skipped.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped"
  else
    echo "note: /usr/bin/chromium missing and cannot apt-get install it; the browser test will be skipped"
  fi
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export HF_HUB_OFFLINE=1
"$PY" -m ruff check .
"$PY" -m pytest "$@"

#!/usr/bin/env bash
# Set up (a virtual environment with torch's CPU wheel, packer and its test
# extras), build the docs and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU wheel this machine has; anything else pulls CUDA
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q -e '.[torch,test,hf]'
"$VENV/bin/python" -m ruff check packer tests examples benchmarks
# the reference pages (docs/, mkdocs.yml) build without a warning; site/ is git-ignored
"$VENV/bin/python" -m mkdocs build --strict -q -d site
exec "$VENV/bin/python" -m pytest -q "$@"

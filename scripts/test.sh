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
# the tests on every core, at most 4 (PYTEST_WORKERS overrides; 0 runs them in this process, one by one).
# --dist worksteal: an idle worker takes queued tests from a busy one, so the long tests (training runs, Ray, kills)
# do not leave one worker finishing alone (on 2 cores: full suite 4:44 against 5:42 with loadgroup, one machine,
# one hour). Every test is safe on any worker; the xdist_group marks only save a second start of a module fixture
# where --dist loadgroup honours them (pytest-xdist 3.8 with pytest 9.2 does not: pytest-xdist issue 1386)
WORKERS=${PYTEST_WORKERS:-$(( $(nproc) < 4 ? $(nproc) : 4 ))}
[ "$WORKERS" -gt 1 ] || WORKERS=0
exec "$VENV/bin/python" -m pytest -q -n "$WORKERS" --dist worksteal "$@"

#!/usr/bin/env bash
# Set up packer and build the bundled example data into demo-shards/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
exec "$VENV/bin/packer" build examples/alpaca_demo.json examples/sharegpt_demo.json -o demo-shards --seq-len 1024 --overwrite "$@"

#!/usr/bin/env bash
# Set up packer and build the bundled example data into demo-shards/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
"$VENV/bin/packer" build examples/alpaca_demo.json examples/sharegpt_demo.json -o demo-shards --seq-len 1024 --overwrite "$@"
# packer is installed into the virtual environment, not onto PATH: say how to run it
cat <<NEXT

packer is installed in $VENV (not on your PATH). Look at what was built:
  $VENV/bin/packer inspect demo-shards
  $VENV/bin/packer show demo-shards --row 0
  $VENV/bin/packer verify demo-shards
or activate the environment first (source $VENV/bin/activate), then run packer as plain \`packer ...\`.
NEXT

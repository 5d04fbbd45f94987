#!/usr/bin/env bash
# One command from a fresh machine to the main job: list ops and backends,
# run the contract check for every op and print the result table.
#   bash scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
cd "$(mktemp -d)"
python -m golden_kernels "$@"

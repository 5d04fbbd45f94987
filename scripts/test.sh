#!/usr/bin/env bash
# One command from a fresh machine to a passing test suite:
#   bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
# Run from a temporary directory so the installed package (not ./python) is tested.
tests_dir=$(pwd)/tests
cd "$(mktemp -d)"
python -m pytest -c "$tests_dir/../setup.cfg" --rootdir "$tests_dir/.." "$tests_dir" "$@"

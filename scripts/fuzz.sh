#!/usr/bin/env bash
# A longer, randomized run of the property-based fuzz tests (tests/fuzz):
# GOLDEN_FUZZ_EXAMPLES examples per test (default 2000), a fresh seed each
# run; a failure prints the example and a @reproduce_failure blob.
#   GOLDEN_FUZZ_EXAMPLES=20000 bash scripts/fuzz.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
export GOLDEN_FUZZ_PROFILE=long
export GOLDEN_FUZZ_EXAMPLES=${GOLDEN_FUZZ_EXAMPLES:-2000}
export PYTHONPATH=python${PYTHONPATH:+:$PYTHONPATH}
python -m pytest -q -p no:cacheprovider -c setup.cfg tests/fuzz "$@"

"""Hypothesis profiles for the fuzz tests: "ci" (the default) is derandomized
with a small example budget so the directory runs in well under a minute;
scripts/fuzz.sh selects "long" with GOLDEN_FUZZ_EXAMPLES examples per test."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
               print_blob=True)
settings.register_profile("ci", derandomize=True, max_examples=40, database=None, **_COMMON)
settings.register_profile("long", max_examples=int(os.environ.get("GOLDEN_FUZZ_EXAMPLES", "2000")), **_COMMON)
settings.load_profile(os.environ.get("GOLDEN_FUZZ_PROFILE", "ci"))

"""The float64 references live in the package (golden_kernels.testing.reference)
so the tests, the benchmarks and `python -m golden_kernels` share one copy."""

from golden_kernels.testing.reference import *  # noqa: F401,F403

"""`python -m golden_kernels`: list ops and backends, run the contract check
for every op on every available backend, and print a result table.
`python -m golden_kernels demo` runs the RL consistency check (golden_kernels/demo.py).

Each check is a small, fast version of the test suite's properties: Axis-A
(a row alone == the row inside a permuted batch of different neighbours, and
1 thread == many threads, on raw bits), Axis-B (error against a float64
reference within the peer floor; the ulp error is reported), Axis-C (every
backend == the scalar reference, on raw bits)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass

from . import _C, available_backends
from .registry import OPS


@dataclass
class CheckResult:
    op: str
    check: str
    passed: bool
    detail: str


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def run_contract() -> list[CheckResult]:
    from .contract import planned_checks

    planned = planned_checks()
    results = []
    for index, (op, label, fn) in enumerate(planned):
        _progress(index, len(planned), f"{op}: {label}")
        try:
            passed, detail = fn()
        except Exception as error:  # a crash in one check is a failure, not the end of the report
            passed, detail = False, f"{type(error).__name__}: {error}"
        results.append(CheckResult(op, label, passed, detail))
    _progress(len(planned), len(planned), "done")
    return results


def print_table(results: list[CheckResult]) -> None:
    rows = [("op", "check", "result", "detail")] + [
        (r.op, r.check, "PASS" if r.passed else "FAIL", r.detail) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from .demo import main as demo_main

        return demo_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m golden_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="only list ops and backends")
    parser.epilog = "subcommand: demo (the RL consistency check; python -m golden_kernels demo --help)"
    args = parser.parse_args(argv)

    print(f"golden_kernels: backends available {', '.join(available_backends())} "
          f"(compiled: {', '.join(_C.compiled_backends())}); cpu isa {_C.cpu_isa()}, {_C.num_threads()} threads")
    for spec in OPS:
        print(f"  {spec.name:<12} {spec.op_class:<12} {spec.summary}")
    if args.list:
        return 0
    if importlib.util.find_spec("torch") is None:
        print("the contract check needs PyTorch: pip install 'golden-kernels[test]'", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = run_contract()
    print_table(results)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed}/{len(results)} checks passed in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

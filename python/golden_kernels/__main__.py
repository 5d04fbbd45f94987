"""`python -m golden_kernels`: list ops and backends, run the contract check
for every op on every available backend, and print a result table.

Each check is a small, fast version of the test suite's properties: Axis-A
(a row alone == the row inside a permuted batch of different neighbours, and
1 thread == many threads, on raw bits), Axis-B (error against a float64
reference within the peer floor; the ulp error is reported), Axis-C (every
backend == the scalar reference, on raw bits)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable

from . import _C, available_backends, list_ops
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


def _rms_norm_checks(torch) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    from . import get_op, set_num_threads
    from .testing import bits_equal, peer_tolerance, ulp

    gen = torch.Generator().manual_seed(0)
    checks = []
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        x = torch.randn(64, 4096, generator=gen).to(dtype)
        w = torch.randn(4096, generator=gen).to(dtype)
        g = torch.randn(64, 4096, generator=gen).to(dtype)

        def axis_a(x=x, w=w, g=g):
            op = get_op("rms_norm", "cpu")
            y, (dx, _) = op.forward(x, w), op.backward(g, x, w)
            perm = torch.randperm(64, generator=gen)
            neighbours = torch.randn(64, 4096, generator=gen).to(x.dtype) * 7
            neighbours[17] = x[3]
            set_num_threads(1)
            single = op.forward(x[3:4], w)
            set_num_threads(0)
            ok = (bits_equal(single[0], y[3]) and bits_equal(op.forward(x[perm], w), y[perm])
                  and bits_equal(op.forward(neighbours, w)[17], y[3])
                  and bits_equal(op.backward(g[3:4], x[3:4], w)[0][0], dx[3]))
            return ok, "T1 T2 T3 T7 fwd+bwd"

        def axis_b(x=x, w=w, dtype=dtype):
            x64, w64 = x.double(), w.double()
            ref = x64 / torch.sqrt((x64 * x64).mean(-1, keepdim=True) + 1e-6) * w64
            out = get_op("rms_norm", "cpu").forward(x, w).double()
            err = (out - ref).abs()
            atol, rtol = peer_tolerance("reduction", dtype)
            max_ulps = float((err / ulp(ref, dtype)).max())
            return bool((err <= atol + rtol * ref.abs()).all()), f"max {max_ulps:.2f} ulp"

        def axis_c(x=x, w=w, g=g):
            reference = get_op("rms_norm", "reference")
            others = [b for b in available_backends() if b != "reference"]
            for backend in others:
                op = get_op("rms_norm", backend)
                xb, wb, gb = (t.to("cuda") if backend in ("cuda", "hip") else t for t in (x, w, g))
                if not (bits_equal(op.forward(xb, wb), reference.forward(x, w))
                        and all(bits_equal(a, b) for a, b in zip(op.backward(gb, xb, wb), reference.backward(g, x, w)))):
                    return False, f"{backend} differs"
            return True, " == ".join(["reference", *others])

        checks += [(f"Axis-A {name}", axis_a), (f"Axis-B {name}", axis_b), (f"Axis-C {name}", axis_c)]
    return checks


CHECKS = {"rms_norm": _rms_norm_checks}


def run_contract(torch) -> list[CheckResult]:
    planned = [(op, label, fn) for op in list_ops() if op in CHECKS for label, fn in CHECKS[op](torch)]
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
    parser = argparse.ArgumentParser(prog="python -m golden_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="only list ops and backends")
    args = parser.parse_args(argv)

    print(f"golden_kernels: backends available {', '.join(available_backends())} "
          f"(compiled: {', '.join(_C.compiled_backends())}); cpu isa {_C.cpu_isa()}, {_C.num_threads()} threads")
    for spec in OPS:
        print(f"  {spec.name:<12} {spec.op_class:<12} {spec.summary}")
    if args.list:
        return 0
    try:
        import torch
    except ImportError:
        print("the contract check needs PyTorch: pip install 'golden-kernels[test]'", file=sys.stderr)
        return 2
    start = time.perf_counter()
    results = run_contract(torch)
    print_table(results)
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed}/{len(results)} checks passed in {time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

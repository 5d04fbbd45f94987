"""The core's deterministic exp/log/sigmoid/rsqrt/sin/cos: max ulp error
against a float64 libm reference over >= 10 million inputs per function plus
edge cases (tests/core/math_ulp.cpp, bounds in docs/math.md), and identical
output bits whether the compiler vectorises (AVX2 + FMA) or not."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).with_name("math_ulp.cpp")
CONTRACT_FLAGS = ["-std=c++17", "-ffp-contract=off", "-fno-fast-math"]
BUILDS = {"scalar": ["-O2"], "avx2": ["-O3", "-march=x86-64-v3", "-fno-math-errno"]}


@pytest.fixture(scope="module")
def measurements(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to build the ulp measurement")
    outputs = {}
    for name, flags in BUILDS.items():
        binary = tmp_path_factory.mktemp(name) / "math_ulp"
        subprocess.run(["g++", *flags, *CONTRACT_FLAGS, str(SOURCE), "-o", str(binary)], check=True)
        outputs[name] = subprocess.run([str(binary)], check=False, capture_output=True, text=True)
    return outputs


def test_every_function_within_its_documented_ulp_bound(measurements):
    run = measurements["scalar"]
    assert run.returncode == 0 and run.stdout.rstrip().endswith("PASS"), run.stdout
    rows = re.findall(r"^(exp|log|sigmoid|rsqrt|sin|cos)\s+(\d+)\s+([\d.]+)", run.stdout, re.M)
    assert {name for name, _, _ in rows} == {"exp", "log", "sigmoid", "rsqrt", "sin", "cos"}
    for name, inputs, _ in rows:
        assert int(inputs) >= 10_000_000, f"{name}: only {inputs} inputs measured"


def test_vectorised_build_gives_identical_bits(measurements):
    hashes = {name: re.search(r"all-outputs hash (\w+)", run.stdout).group(1) for name, run in measurements.items()}
    assert len(set(hashes.values())) == 1, hashes

"""The core's deterministic exp/log/sigmoid/rsqrt/sin/cos: max ulp error
against a float64 libm reference over >= 10 million inputs per function plus
edge cases (tests/core/math_ulp.cpp, bounds in docs/math.md), and identical
output bits whether the compiler vectorises (AVX2 + FMA) or not; and the CPU
kernels' vector exp (the core's steps on VecLanes, tests/core/exp_lanes.cpp)
gives the scalar exp's bits on every instruction set."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from golden_kernels import _C

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


LANES_SOURCE = Path(__file__).with_name("exp_lanes.cpp")
# name: (ISA the machine must run, flags)
LANE_BUILDS = {
    "avx512": ("avx512", ["-march=x86-64-v4", "-mprefer-vector-width=512", "-DGOLDEN_TARGET=avx512"]),
    "avx512-emulated": ("avx2", ["-march=x86-64-v3", "-DGOLDEN_TARGET=avx512", "-DGOLDEN_EMULATE_AVX512"]),
    "avx2": ("avx2", ["-march=x86-64-v3", "-DGOLDEN_TARGET=avx2"]),
}


def build_exp_lanes(name, tmp_path):
    isa, flags = LANE_BUILDS[name]
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to build the lane check")
    if not _C.cpu_isa_supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    binary = tmp_path / "exp_lanes"
    include = Path(__file__).parents[2] / "csrc"
    subprocess.run(["g++", "-O3", "-fno-math-errno", *CONTRACT_FLAGS, *flags, f"-I{include}", str(LANES_SOURCE),
                    "-o", str(binary)], check=True)
    return binary


@pytest.mark.parametrize("name", list(LANE_BUILDS))
def test_vector_exp_gives_scalar_bits(name, tmp_path):
    """Every 61st fp32 pattern (70 million, all exponents and signs, NaNs
    and infinities among them)."""
    run = subprocess.run([str(build_exp_lanes(name, tmp_path)), "--stride", "61"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.rstrip().endswith("PASS"), run.stdout


@pytest.mark.slow
def test_vector_exp_gives_scalar_bits_for_every_input(tmp_path):
    """All 2^32 patterns through the widest build this CPU runs (~20 s)."""
    name = "avx512" if _C.cpu_isa_supported("avx512") else "avx512-emulated"
    run = subprocess.run([str(build_exp_lanes(name, tmp_path))], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.rstrip().endswith("PASS"), run.stdout

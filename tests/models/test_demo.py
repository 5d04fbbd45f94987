"""`python -m golden_kernels demo`: the table, JSON and plot of the RL
consistency check; the default command is unchanged."""

from __future__ import annotations

import importlib.util
import json

from golden_kernels.__main__ import main

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def test_demo_writes_json_with_zero_golden_mismatch(tmp_path, capsys):
    path, png = tmp_path / "demo.json", tmp_path / "demo.png"
    plot = ["--plot", str(png)] if HAS_MATPLOTLIB else []
    assert main(["demo", "--prompts", "3", "--new-tokens", "3", "--json", str(path), *plot]) == 0
    results = json.loads(path.read_text())["results"]
    golden = [r for r in results if r["implementation"] == "golden-kernels"]
    assert {r["dtype"] for r in golden} == {"float32", "bfloat16"}
    for r in golden:
        assert r["bitwise_equal"] and r["max_abs_diff"] == 0.0 and r["diffs"] == [0.0] * 9
    assert {r["implementation"] for r in results} == {"golden-kernels", "PyTorch / HF eager"}
    assert "max |logp_train - logp_sample|" in capsys.readouterr().out
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    path = tmp_path / "demo.png"
    assert main(["demo", "--plot", str(path)]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not path.exists()


def test_default_command_still_lists_ops(capsys):
    assert main(["--list"]) == 0
    assert "rms_norm" in capsys.readouterr().out

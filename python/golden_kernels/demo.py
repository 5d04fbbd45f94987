"""`python -m golden_kernels demo`: the RL consistency check on a small random
Qwen3 (built locally, no download), golden-kernels against PyTorch / Hugging
Face eager on the same weights, as a table, optionally as JSON and as a PNG
plot of each token's log-probability difference (trainer - sampler)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

PRESETS = {
    "tiny": dict(vocab_size=2048, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32),
    "small": dict(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=2, head_dim=64),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m golden_kernels demo", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model size (default: tiny)")
    parser.add_argument("--prompts", type=int, default=8, help="ragged prompts in the sampler's batch")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens sampled per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the per-token differences (needs matplotlib)")
    return parser


def _ratio_range(r: Any) -> str:
    return f"[{r.ratio_min:.9f}, {r.ratio_max:.9f}]"


def print_table(results: list[Any]) -> None:
    header = ("implementation", "dtype", "tokens", "max |logp_train - logp_sample|", "ratio range", "bitwise",
              "sample tok/s", "train tok/s")
    rows = [header] + [(r.implementation, r.dtype, str(r.tokens), f"{r.max_abs_diff:.3e}", _ratio_range(r),
                        "yes" if r.bitwise_equal else "no", f"{r.sample_tokens_per_s:.0f}",
                        f"{r.train_tokens_per_s:.0f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * width for width in widths))


def write_plot(results: list[Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({r.dtype for r in results}, reverse=True)
    figure, axes = plt.subplots(len(dtypes), 1, figsize=(9, 3.2 * len(dtypes)), squeeze=False)
    for axis, dtype in zip(axes[:, 0], dtypes):
        for r in (r for r in results if r.dtype == dtype):
            axis.plot(r.diffs, marker="." if r.bitwise_equal else "o", linestyle="-" if r.bitwise_equal else "",
                      label=f"{r.implementation} (max {r.max_abs_diff:.1e})")
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_title(f"{dtype}: trainer - sampler log-probability per sampled token")
        axis.set_xlabel("sampled token")
        axis.set_ylabel("logp_train - logp_sample")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            print(f"the demo needs {module}: pip install 'golden-kernels[test]'", file=sys.stderr)
            return 2
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print("--plot needs matplotlib (pip install matplotlib); the table and JSON do not", file=sys.stderr)
        return 2
    from .models import consistency

    print(f"RL consistency check: random Qwen3 '{args.preset}' {PRESETS[args.preset]}, {args.prompts} ragged "
          f"prompts, {args.new_tokens} sampled tokens each; sampler = left-padded prefill + KV-cache decode, "
          f"trainer = other batch compositions (golden: packed, right-padded in two batches, one at a time; "
          f"HF: right-padded), all permuted")
    results = consistency.run(prompts=args.prompts, max_new_tokens=args.new_tokens, seed=args.seed,
                              **PRESETS[args.preset])
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "config": PRESETS[args.preset],
                       "results": [{**r.summary(), "diffs": r.diffs} for r in results]}, f, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(results, args.plot)
        print(f"wrote {args.plot}")
    golden_ok = all(r.bitwise_equal for r in results if r.implementation == "golden-kernels")
    return 0 if golden_ok else 1

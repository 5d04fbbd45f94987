"""Tokens/s of the golden Qwen3 against Hugging Face's eager Qwen3 on the same
weights, same run: the trainer's forward (fp32 next-token logprobs), forward +
backward of a policy-gradient loss, and sampling (prefill + KV-cache decode).

    PYTHONPATH=python python benchmarks/bench_qwen3.py [--preset small] [--repeats 5]
"""

from __future__ import annotations

import argparse
import copy

import torch

from common import median_seconds_pair

from golden_kernels.demo import PRESETS
from golden_kernels.models import Qwen3ForCausalLM, left_pad, next_token_targets
from golden_kernels.models.consistency import random_hf_qwen3, random_prompts


def hf_logprobs(hf, ids, mask, targets):
    logits = hf(input_ids=ids, attention_mask=mask).logits.float()
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0] * (targets >= 0)


def training_batch(vocab, batch, seq, gen):
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=gen)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return ids, mask, next_token_targets(ids, mask)


def bench_dtype(hf32, dtype, args, gen):
    hf = copy.deepcopy(hf32).to(dtype)
    golden = Qwen3ForCausalLM.from_hf(hf)
    golden.keep_fp32_attention_output = args.keep_fp32_attention_output
    ids, mask, targets = training_batch(hf.config.vocab_size, args.batch, args.seq, gen)
    real = int(mask.sum())
    rows = []

    def forward_pair():
        with torch.no_grad():
            return (lambda: golden(ids, mask, targets=targets)), (lambda: hf_logprobs(hf, ids, mask, targets))

    def backward_pair():
        def golden_step():
            golden.zero_grad()
            golden(ids, mask, targets=targets).sum().backward()

        def hf_step():
            hf.zero_grad()
            hf_logprobs(hf, ids, mask, targets).sum().backward()

        return golden_step, hf_step

    prompts = random_prompts(args.batch, hf.config.vocab_size, gen, args.prompt_len // 2, args.prompt_len)
    input_ids, prompt_mask = left_pad(prompts)

    def sample_pair():
        def golden_sample():
            golden.generate(prompts, args.new_tokens)

        def hf_sample():
            with torch.no_grad():
                hf.generate(input_ids=input_ids, attention_mask=prompt_mask, max_new_tokens=args.new_tokens,
                            min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

        return golden_sample, hf_sample

    for case, make, tokens in (("trainer forward (logprobs)", forward_pair, real),
                               ("trainer forward + backward", backward_pair, real),
                               ("sampling (greedy, KV cache)", sample_pair, args.batch * args.new_tokens)):
        golden_fn, hf_fn = make()
        golden_s, hf_s = median_seconds_pair(golden_fn, hf_fn, args.repeats, warmup=1)
        rows.append((case, str(dtype).removeprefix("torch."), tokens / golden_s, tokens / hf_s))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="threads for both (0: each library's default)")
    parser.add_argument("--dtypes", nargs="*", choices=("float32", "bfloat16"), default=["float32", "bfloat16"])
    parser.add_argument("--keep-fp32-attention-output", action="store_true",
                        help="bf16: attention keeps its fp32 output for the backward (model attribute)")
    parser.add_argument("--thread-pool", choices=("auto", "golden", "openmp"), default="auto",
                        help="golden's CPU threads (default auto: torch's OpenMP team)")
    args = parser.parse_args()
    import golden_kernels as gk

    if args.threads:
        torch.set_num_threads(args.threads)
        gk.set_num_threads(args.threads)
    gk.set_thread_pool(args.thread_pool)

    print(f"## Qwen3 '{args.preset}' {PRESETS[args.preset]}")
    print(f"golden_kernels cpu isa {gk.cpu_isa()}, {gk.num_threads()} threads ({gk.thread_pool()} pool); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; trainer batch {args.batch} x {args.seq} (right-padded), sampling "
          f"{args.batch} prompts of <= {args.prompt_len} + {args.new_tokens} new tokens; median of {args.repeats}, "
          "the two sides timed alternately")
    print()
    print("| case | dtype | golden tok/s | HF eager tok/s | golden / HF |")
    print("|---|---|---:|---:|---:|")
    hf32 = random_hf_qwen3(seed=0, **PRESETS[args.preset])
    gen = torch.Generator().manual_seed(0)
    for dtype in (getattr(torch, name) for name in args.dtypes):
        for case, dtype_name, golden_tps, hf_tps in bench_dtype(hf32, dtype, args, gen):
            print(f"| {case} | {dtype_name} | {golden_tps:.0f} | {hf_tps:.0f} | {golden_tps / hf_tps:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()

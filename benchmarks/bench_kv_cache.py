"""Generation with and without the KV cache: tokens per second, the speed-up, and identical greedy tokens.

Without a cache, decoding token k re-runs the model over the whole prefix (P + k - 1 positions), so n new
tokens cost about n·P + n²/2 position-passes. With the KV cache (`model.generate(use_cache=True)`, what
grpo_lib.rollout uses), each step runs one new position and attends to the stored keys and values:
about n passes. The speed-up therefore grows with the completion length. The tutorial generated without
the cache; grpo_lib generates with it.

Two models:
1. the shipped tiny policy (grpo_lib/assets/tiny-qwen2-addition) on its own addition prompts, greedy,
   stopping at EOS as in training (about 22 new tokens);
2. a random Qwen2 (the tiny policy's shape with a longer context, or `--model qwen2.5-1.5b` for the real
   Qwen2.5-1.5B shape, random weights, meant for a GPU), with no EOS so every row runs to the full length,
   at several completion lengths.

Check: greedy decoding must give the same tokens with and without the cache. In float32 the script stops
with an error if they differ. In bf16 the two paths round differently, so a greedy choice between two
almost equal logits can flip; the script then reports where the first difference is and the logit gap
between the two tokens there (a near tie, not a bug, when the gap is at bf16 rounding level).

Time: median of --repeats generate() calls after a short warm-up call (8 new tokens); tokens/s counts generated tokens
(up to and including EOS for the tiny policy).

Run:
    python benchmarks/bench_kv_cache.py                   # CPU, ~30 s
    python benchmarks/bench_kv_cache.py --quick           # seconds; what tests/test_benchmarks.py runs
    python benchmarks/bench_kv_cache.py --device cuda --model qwen2.5-1.5b --lengths 128,512 --batch 8 --tiny-batch 128

Taught in: notebooks/05_full_run.ipynb (rollouts use the KV cache).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_lines, markdown_table, median, resolve_device, timed  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_kv_cache.py",
        description="model.generate with use_cache=True vs use_cache=False: tokens/s, speed-up, and a check "
                    "that greedy decoding gives identical tokens.")
    p.add_argument("--quick", action="store_true", help="short completions, one repeat (seconds; for the tests)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K or auto")
    p.add_argument("--model", default="tiny-random", choices=("tiny-random", "qwen2.5-1.5b"),
                   help="the random model for the long completions: tiny-random = the tiny policy's shape "
                        "(default); qwen2.5-1.5b = the real Qwen2.5-1.5B shape (GPU)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="dtype of the random model (default float32 on CPU, bfloat16 on CUDA); "
                        "the tiny policy is float32")
    p.add_argument("--lengths", default=None, help="comma list of completion lengths for the random model "
                                                   "(default 32,64,128; quick: 8,32)")
    p.add_argument("--batch", type=int, default=None,
                   help="rows per generate() call for the random model (default 8; quick: 4)")
    p.add_argument("--tiny-batch", type=int, default=None,
                   help="rows per generate() call for the tiny policy (default 64; the tiny preset samples "
                        "B = 16 × 8 = 128 "
                        "per step; quick: 8)")
    p.add_argument("--prompt-len", type=int, default=16, help="prompt tokens for the random model (default 16)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls after a warm-up (default 3; quick: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default on CPU: 1, the tiny preset's setting, which other programs on a "
                        "shared machine disturb least; on CUDA: torch's choice)")
    p.add_argument("--skip-tiny", action="store_true", help="skip the shipped tiny policy row")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    return p


def settings(args: argparse.Namespace) -> dict:
    q = args.quick
    s = dict(device=args.device, model=args.model,
             batch=args.batch if args.batch is not None else (4 if q else 8),
             tiny_batch=args.tiny_batch if args.tiny_batch is not None else (8 if q else 64),
             prompt_len=args.prompt_len,
             repeats=args.repeats if args.repeats is not None else (1 if q else 3))
    s["dtype"] = args.dtype                          # filled in below, once the device is known
    try:
        s["lengths"] = [int(x) for x in (args.lengths or ("8,32" if q else "32,64,128")).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--lengths must be a comma list of integers, got {args.lengths!r}") from None
    for name, value in (("batch", s["batch"]), ("tiny-batch", s["tiny_batch"]), ("prompt-len", s["prompt_len"]),
                        ("repeats", s["repeats"])):
        if value < 1:
            raise SystemExit(f"--{name} must be >= 1, got {value}")
    if not s["lengths"] or min(s["lengths"]) < 1:
        raise SystemExit(f"--lengths must be positive integers, got {args.lengths!r}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    s["device"] = resolve_device(args.device)        # imports torch: after the checks, so a bad value fails at once
    s["dtype"] = args.dtype or ("bfloat16" if s["device"].startswith("cuda") else "float32")
    return s


def random_model(s: dict):
    import torch
    from transformers import Qwen2ForCausalLM

    if s["model"] == "qwen2.5-1.5b":
        from grpo_lib.course.memory import qwen2_5_1_5b_instruct_config

        config = qwen2_5_1_5b_instruct_config()
    else:
        from grpo_lib.models import tiny_qwen2_config

        config = tiny_qwen2_config(263, max_position_embeddings=s["prompt_len"] + max(s["lengths"]) + 8)
    config._attn_implementation = "sdpa"
    config.eos_token_id = None                        # no EOS: every row generates the full length
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, s["dtype"]))
    try:
        with torch.device(s["device"]):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = None
    return model.eval()


def first_difference(model, a, b, attention_mask, P: int) -> dict:
    """Where greedy sequences a and b (B, P+n) first differ, and the logit gap between the two tokens there.

    The gap is logit[a's token] - logit[b's token] at the position that chose them, from a fresh no-cache
    forward of the whole batch over the common prefix (a near tie when |gap| is at the dtype's rounding
    level; its sign can flip between two computations of the same logits).
    """
    import torch

    diff = (a != b).nonzero()
    pos = int(diff[:, 1].min())
    row = int(diff[diff[:, 1] == pos][0, 0])
    mask = torch.cat([attention_mask, attention_mask.new_ones(a.shape[0], a.shape[1] - P)], dim=1)  # (B, P+n)
    with torch.no_grad():
        logits = model(input_ids=a[:, :pos], attention_mask=mask[:, :pos], use_cache=False).logits[row, -1].float()
    gap = (logits[a[row, pos]] - logits[b[row, pos]]).item()
    return {"row": row, "token": pos - P + 1, "gap": gap, "logit_scale": logits.abs().max().item()}


def bench_generate(model, input_ids, attention_mask, max_new_tokens: int, s: dict, eos_token_id, pad_token_id,
                   fixed_length: bool) -> dict:
    """Greedy generate with and without the cache: median seconds, generated tokens, equality of tokens."""
    import torch

    cuda = s["device"].startswith("cuda")
    P = input_ids.shape[1]
    out = {}

    def gen(use_cache: bool, n: int = max_new_tokens):
        def call():
            with torch.no_grad():
                out[use_cache] = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=n,
                    min_new_tokens=n if fixed_length else None, do_sample=False, temperature=None,
                    top_k=None, top_p=None, use_cache=use_cache, eos_token_id=eos_token_id,
                    pad_token_id=pad_token_id, repetition_penalty=1.0)                      # (B, P + n)
        return call

    sync = torch.cuda.synchronize if cuda else None
    result = {}
    for use_cache in (True, False):
        gen(use_cache, min(max_new_tokens, 8))()                                            # warm-up, short
        call = gen(use_cache)
        times = timed(call, s["repeats"], sync)
        key = "cache" if use_cache else "no_cache"
        result[key], result[key + "_spread"] = median(times), max(times) / min(times)
    with_cache, without = out[True], out[False]
    completion = with_cache[:, P:]                                                          # (B, n)
    if eos_token_id is None:
        tokens = completion.numel()
    else:
        from grpo_lib.logprobs import completion_mask

        tokens = int(completion_mask(completion, eos_token_id).sum())                      # up to and incl. EOS
    result["tokens"] = tokens
    result["identical"] = with_cache.shape == without.shape and bool(torch.equal(with_cache, without))
    if not result["identical"] and with_cache.shape == without.shape:
        result["difference"] = first_difference(model, without, with_cache, attention_mask, P)
    return result


def tiny_policy_row(s: dict) -> dict:
    import torch

    from grpo_lib.data import build_prompt
    from grpo_lib.models import load_tiny_model
    from grpo_lib.tasks import addition_problems

    model, tok = load_tiny_model()
    model.to(s["device"])
    prompts = [build_prompt(tok, p["question"]) for p in addition_problems("test", n=s["tiny_batch"], seed=0)]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    r = bench_generate(model, enc["input_ids"].to(s["device"]), enc["attention_mask"].to(s["device"]), 40, s,
                       tok.eos_token_id, tok.pad_token_id, fixed_length=False)
    r.update(model="tiny policy (shipped, float32)", B=s["tiny_batch"], P=enc["input_ids"].shape[1],
             n="≤ 40 (stops at EOS)")
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return r


def random_rows(s: dict) -> list[dict]:
    import torch

    model = random_model(s)
    g = torch.Generator().manual_seed(1)
    V = model.config.vocab_size
    input_ids = torch.randint(3, V, (s["batch"], s["prompt_len"]), generator=g).to(s["device"])   # (B, P)
    attention_mask = torch.ones_like(input_ids)
    name = f"random {'Qwen2.5-1.5B shape' if s['model'] == 'qwen2.5-1.5b' else 'tiny-shape Qwen2'} ({s['dtype']})"
    rows = []
    for n in s["lengths"]:
        r = bench_generate(model, input_ids, attention_mask, n, s, None, 0, fixed_length=True)
        r.update(model=name, B=s["batch"], P=s["prompt_len"], n=n)
        rows.append(r)
    return rows


def rate(x: float) -> str:
    """tokens/s with 3 significant digits below 100 (slow machines), else rounded to an integer"""
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def report(rows: list[dict], s: dict) -> str:
    table = []
    for r in rows:
        same = "yes" if r["identical"] else "NO"
        if not r["identical"] and "difference" in r:
            d = r["difference"]
            same += (f" (first at new token {d['token']}, row {d['row']}: logit gap {abs(d['gap']):.2g}, "
                     f"largest logit magnitude {d['logit_scale']:.2g}: a near tie)")     # no pipes: a table cell
        table.append([r["model"], r["B"], r["P"], r["n"], r["tokens"], rate(r["tokens"] / r["no_cache"]),
                      rate(r["tokens"] / r["cache"]), f"{r['no_cache'] / r['cache']:.2f}×",
                      f"{r['no_cache_spread']:.2f} / {r['cache_spread']:.2f}", same])
    lines = [
        "## Generation with and without the KV cache (greedy)",
        "",
        f"On {s['device']}; B = rows per generate() call; median of {s['repeats']} call(s) after a warm-up; "
        "tokens = generated tokens over all rows (the tiny policy's up to and including EOS).",
        "",
        markdown_table(["model", "rows B", "prompt P", "new tokens n", "tokens", "no cache tok/s", "KV cache tok/s",
                        "speed-up", "spread max/min (no cache / cache)", "identical greedy tokens"], table),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = settings(args)
    import torch

    threads = args.threads or (None if s["device"].startswith("cuda") else 1)
    if threads:
        torch.set_num_threads(threads)
    print("\n".join(machine_lines(s["device"])))
    rows = ([] if args.skip_tiny else [tiny_policy_row(s)]) + random_rows(s)
    print(report(rows, s))
    print(f"# load average at end (1/5/15 min): {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": s, "results": rows}, indent=1))
    fp32_mismatch = [r for r in rows if not r["identical"] and "float32" in r["model"]]
    if fp32_mismatch:
        print(f"ERROR: greedy tokens differ with and without the KV cache in float32 for {len(fp32_mismatch)} "
              "row(s) of the table", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

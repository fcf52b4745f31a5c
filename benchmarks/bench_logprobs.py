"""Per-token log-prob memory and time: grpo_lib's way against the tutorial's, at Qwen's vocabulary.

    log π(o_t | q, o_<t) = logit_t[o_t] - logsumexp(logit_t)          for the T completion tokens

The tutorial (`compute_log_probs` + `selective_log_softmax`) runs the LM head on every position of
prompt + completion, takes a full-vocabulary log_softmax of the (B, L-1, V) logits, then gathers one
value per position: `grpo_lib.logprobs.naive_token_logprobs(use_position_ids=False)` reproduces it.
grpo_lib (`token_logprobs`) asks the model for the last T + 1 positions only (`logits_to_keep`) and
computes gather - logsumexp one row at a time; `chunk_size` runs the forward on a few rows at a time.

The logits dominate: one (B, L, V) fp32 tensor is B·L·V·4 bytes. At the tutorial's run (N = 7 prompts ×
G = 12 completions = B = 84 rows, T = 400 new tokens, P ≈ 100 prompt tokens, V = 151,936) that is
84 · 500 · 151,936 · 4 B = 23.8 GiB, and a log_softmax of it is another as large. This script measures
a scaled shape that fits a laptop (the vocabulary stays 151,936; B and L shrink), and prints the
full-shape arithmetic next to it.

The model is a random Qwen2 whose LM head has Qwen's vocabulary and whose body is tiny (1 layer, hidden
64), so the LM head and the log-softmax are what is measured; `--model qwen2.5-1.5b` builds the real
Qwen2.5-1.5B shape instead (random weights, no download; meant for a GPU).

Memory: CUDA: torch.cuda.max_memory_allocated above the allocation before the call. CPU: the resident
high-water mark above the resident size before the call, in a fresh subprocess per variant (see
benchmarks/_common.py for why this sees torch's allocations). Time: median of --repeats calls after one
warm-up call.

Run:
    python benchmarks/bench_logprobs.py                    # CPU, scaled shape, ~1 minute
    python benchmarks/bench_logprobs.py --quick            # seconds; what tests/test_benchmarks.py runs
    python benchmarks/bench_logprobs.py --device cuda --model qwen2.5-1.5b --batch 84 --prompt-len 100 \\
        --completion-len 400 --chunk 12 --modes no_grad    # the tutorial's shapes on one GPU

Taught in: notebooks/04_the_loss.ipynb (the logits_to_keep and selective log-softmax choices).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (GIB, WORKER_ENV, cpu_peak_bytes, fmt_bytes, load_average, machine_lines,  # noqa: E402
                     markdown_table, median, resolve_device, timed)

QWEN_VOCAB = 151_936
TUTORIAL = dict(N=7, G=12, T=400, P=100)
"""the tutorial's run: 7 prompts x 12 completions, 400 new tokens; P = 100 is our estimate (see --help)"""

VARIANTS = ("tutorial", "grpo_lib", "grpo_lib_chunked")
MODES = ("no_grad", "grad")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_logprobs.py",
        description="Peak memory and time of per-token log-probs: the tutorial's full-sequence, "
                    "full-vocabulary log_softmax vs grpo_lib.logprobs.token_logprobs (logits_to_keep + "
                    "gather - logsumexp, optionally chunked), at Qwen's vocabulary.",
        epilog="Modes: no_grad = the old/reference log-probs (torch.no_grad); grad = forward + backward "
               "of sum(log-probs), as in the policy update.")
    p.add_argument("--quick", action="store_true", help="tiny shapes and one repeat (seconds; for the tests)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:K or auto")
    p.add_argument("--model", default="tiny-head", choices=("tiny-head", "qwen2.5-1.5b"),
                   help="tiny-head: random 1-layer Qwen2, hidden 64, with the full vocabulary (default); "
                        "qwen2.5-1.5b: the real Qwen2.5-1.5B shape, random weights (GPU)")
    p.add_argument("--dtype", default=None, choices=tuple(DTYPE_BYTES),
                   help="model and logits dtype (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--vocab", type=int, default=QWEN_VOCAB, help="vocabulary size V (default: Qwen's 151,936)")
    p.add_argument("--batch", type=int, default=None, help="rows B = N·G (default 8; quick: 4)")
    p.add_argument("--prompt-len", type=int, default=None, help="prompt tokens P (default 16; quick: 8)")
    p.add_argument("--completion-len", type=int, default=None, help="completion tokens T (default 64; quick: 24)")
    p.add_argument("--chunk", type=int, default=None, help="rows per forward for grpo_lib_chunked (default 2)")
    p.add_argument("--modes", default="no_grad,grad", help="comma list of no_grad, grad (default both)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per variant after one warm-up (default 3; quick: 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default on CPU: 1, the tiny preset's setting, which other programs on a "
                        "shared machine disturb least; on CUDA: torch's choice)")
    p.add_argument("--isolate", default="auto", choices=("auto", "variant", "one", "no"),
                   help="variant: a fresh subprocess per variant; one: a single fresh subprocess for all; "
                        "no: in this process. auto: variant on CPU (one with --quick), no on CUDA. A subprocess "
                        "is started with MALLOC_MMAP_THRESHOLD_ so its peak RSS sees every tensor")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    return p


def settings(args: argparse.Namespace) -> dict:
    """The shapes and options of this run, with --quick / full defaults filled in and checked."""
    q = args.quick
    s = dict(
        device=args.device, model=args.model, vocab=args.vocab,
        B=args.batch if args.batch is not None else (4 if q else 8),
        P=args.prompt_len if args.prompt_len is not None else (8 if q else 16),
        T=args.completion_len if args.completion_len is not None else (24 if q else 64),
        chunk=args.chunk if args.chunk is not None else 2,
        repeats=args.repeats if args.repeats is not None else (1 if q else 3),
        threads=args.threads,
    )
    s["dtype"] = args.dtype                          # filled in below, once the device is known
    s["modes"] = [m.strip() for m in args.modes.split(",") if m.strip()]
    for name in ("vocab", "B", "P", "T", "chunk", "repeats"):
        if s[name] < 1:
            raise SystemExit(f"--{ {'B': 'batch', 'P': 'prompt-len', 'T': 'completion-len'}.get(name, name)} "
                             f"must be >= 1, got {s[name]}")
    bad = [m for m in s["modes"] if m not in MODES]
    if bad or not s["modes"]:
        raise SystemExit(f"--modes must be a comma list of {MODES}, got {args.modes!r}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    s["device"] = resolve_device(args.device)        # imports torch: after the checks, so a bad value fails at once
    if s["threads"] is None and not s["device"].startswith("cuda"):
        s["threads"] = 1
    s["dtype"] = args.dtype or ("bfloat16" if s["device"].startswith("cuda") else "float32")
    return s


# --- the measured code ------------------------------------------------------------------------------
def build_model(s: dict):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dtype = getattr(torch, s["dtype"])
    if s["model"] == "qwen2.5-1.5b":
        from grpo_lib.course.memory import qwen2_5_1_5b_instruct_config

        config = qwen2_5_1_5b_instruct_config()
        config.vocab_size = s["vocab"]
    else:
        config = Qwen2Config(vocab_size=s["vocab"], hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                             num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                             max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)                       # build in the target dtype: no fp32 copy first
    try:
        with torch.device(s["device"]):
            model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.train()                                 # dropout is 0 in Qwen2; train() as in the update


def make_inputs(s: dict):
    import torch

    g = torch.Generator().manual_seed(1)
    L = s["P"] + s["T"]
    input_ids = torch.randint(3, s["vocab"], (s["B"], L), generator=g).to(s["device"])    # (B, P+T)
    attention_mask = torch.ones_like(input_ids)                                            # (B, P+T), no padding
    return input_ids, attention_mask


def variant_fn(variant: str, model, input_ids, attention_mask, s: dict):
    from grpo_lib.logprobs import naive_token_logprobs, token_logprobs

    T = s["T"]
    if variant == "tutorial":
        return lambda: naive_token_logprobs(model, input_ids, attention_mask, T, use_position_ids=False)
    if variant == "grpo_lib":
        return lambda: token_logprobs(model, input_ids, attention_mask, T)
    if variant == "grpo_lib_chunked":
        return lambda: token_logprobs(model, input_ids, attention_mask, T, chunk_size=s["chunk"])
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def measure(variant: str, mode: str, model, input_ids, attention_mask, s: dict) -> dict:
    """Peak memory and times of one variant in one mode; the log-probs come back for the agreement check."""
    import torch

    fn = variant_fn(variant, model, input_ids, attention_mask, s)
    cuda = s["device"].startswith("cuda")
    result = {}

    def call():
        if mode == "no_grad":
            with torch.no_grad():
                logp = fn()                                        # (B, T)
        else:
            logp = fn()                                            # (B, T) with grad
            logp.float().sum().backward()
            model.zero_grad(set_to_none=True)
        result["logp"] = logp.detach().float().cpu()

    call()                                                         # warm-up (allocator, kernels, threads)
    if cuda:                                                       # the measured call is also the first timed one
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        call()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak, how = torch.cuda.max_memory_allocated() - base, "cuda.max_memory_allocated"
    else:
        peak, how, seconds = cpu_peak_bytes(call)
    times = [seconds]
    if s["repeats"] > 1:
        times += timed(call, s["repeats"] - 1, torch.cuda.synchronize if cuda else None)
    return {"variant": variant, "mode": mode, "peak_bytes": peak, "peak_source": how, "seconds": times,
            "logp": result["logp"].tolist()}


def run_in_process(jobs: list[tuple[str, str]], s: dict) -> list[dict]:
    import torch

    if s["threads"]:
        torch.set_num_threads(s["threads"])
    model = build_model(s)
    input_ids, attention_mask = make_inputs(s)
    return [measure(v, m, model, input_ids, attention_mask, s) for v, m in jobs]


def run_isolated(groups: list[list[tuple[str, str]]], s: dict) -> list[dict]:
    """Each group of (variant, mode) jobs in its own fresh python process started with WORKER_ENV."""
    out = []
    env = {**os.environ, **WORKER_ENV}
    for jobs in groups:
        spec = json.dumps({"settings": s, "jobs": [list(j) for j in jobs]})
        proc = subprocess.run([sys.executable, __file__, "--_worker", spec], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"worker for {jobs} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        out += json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# --- the report -----------------------------------------------------------------------------------------
def logits_bytes(variant: str, s: dict) -> int:
    """Bytes of one logits tensor the variant creates: tutorial (B, P+T, V); grpo_lib (rows, T+1, V)."""
    rows = s["chunk"] if variant == "grpo_lib_chunked" else s["B"]
    positions = s["P"] + s["T"] if variant == "tutorial" else s["T"] + 1
    return rows * positions * s["vocab"] * DTYPE_BYTES[s["dtype"]]


def full_shape_rows(s: dict) -> list[list[str]]:
    """The tutorial's full shape, by arithmetic: one logits tensor in fp32 and bf16."""
    B, T, P, V = TUTORIAL["N"] * TUTORIAL["G"], TUTORIAL["T"], TUTORIAL["P"], QWEN_VOCAB
    rows = []
    for what, r, pos in (("tutorial: B·(P+T)·V", B, P + T), ("grpo_lib: B·(T+1)·V", B, T + 1),
                         (f"grpo_lib chunked: G·(T+1)·V (chunk = G = {TUTORIAL['G']})", TUTORIAL["G"], T + 1)):
        n = r * pos * V
        rows.append([what, f"{r} × {pos} × {V:,}", f"{n * 4 / GIB:.2f} GiB", f"{n * 2 / GIB:.2f} GiB"])
    return rows


def report(results: list[dict], s: dict) -> str:
    ref = {r["mode"]: r for r in results if r["variant"] == "tutorial"}
    rows = []
    for r in sorted(results, key=lambda r: (MODES.index(r["mode"]), VARIANTS.index(r["variant"]))):
        one = logits_bytes(r["variant"], s)
        base = ref.get(r["mode"])
        if base is not None:
            import torch

            diff = (torch.tensor(r["logp"]) - torch.tensor(base["logp"])).abs().max().item()
            diff_s = f"{diff:.1e}"
            ratio = f"{base['peak_bytes'] / r['peak_bytes']:.2f}" if r["peak_bytes"] else "n/a"
        else:
            diff_s, ratio = "n/a", "n/a"
        rows.append([
            r["variant"] + (f" (chunk {s['chunk']})" if r["variant"] == "grpo_lib_chunked" else ""),
            r["mode"], fmt_bytes(one), fmt_bytes(r["peak_bytes"]) if r["peak_bytes"] is not None else "n/a",
            f"{r['peak_bytes'] / one:.2f}" if r["peak_bytes"] is not None else "n/a", ratio,
            f"{median(r['seconds']) * 1000:.0f}", f"{max(r['seconds']) / min(r['seconds']):.2f}", diff_s,
        ])
    B, P, T, V = s["B"], s["P"], s["T"], s["vocab"]
    lines = [
        "## Per-token log-probs: memory and time",
        "",
        f"Measured shape: B = {B} rows, P = {P} prompt + T = {T} completion tokens, V = {V:,}, {s['dtype']}, "
        f"model {s['model']} on {s['device']}; median of {s['repeats']} call(s) after a warm-up.",
        (f"Scaled from the tutorial's B = {TUTORIAL['N']}×{TUTORIAL['G']} = {TUTORIAL['N'] * TUTORIAL['G']}, "
         f"P ≈ {TUTORIAL['P']}, T = {TUTORIAL['T']} to fit this machine (same vocabulary)."
         if (B, P, T) != (TUTORIAL["N"] * TUTORIAL["G"], TUTORIAL["P"], TUTORIAL["T"]) else
         "This is the tutorial's shape (B = 7×12 = 84, P ≈ 100, T = 400)."),
        f"Peak: {results[0]['peak_source']}, above the memory in use before the call.",
        "",
        markdown_table(["variant", "mode", "one logits tensor", "peak memory", "peak / logits", "tutorial peak / this",
                        "median ms", "spread max/min", "max abs diff vs tutorial"], rows),
        "",
        "## The tutorial's full shape, by arithmetic (one logits tensor; the peak holds about two)",
        "",
        markdown_table(["what", "elements", "fp32", "bf16"], full_shape_rows(s)),
        "",
        f"# P = {TUTORIAL['P']} is an estimate: GSM8K's training questions plus the tutorial's system prompt "
        "average 320 characters, about 80-110 Qwen tokens.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args._worker is not None:                     # a measuring subprocess: JSON on its last line
        spec = json.loads(args._worker)
        print(json.dumps(run_in_process([tuple(j) for j in spec["jobs"]], spec["settings"])))
        return 0
    s = settings(args)
    if s["threads"]:
        import torch

        torch.set_num_threads(s["threads"])
    print("\n".join(machine_lines(s["device"])))
    isolate = args.isolate
    if isolate == "auto":
        isolate = "no" if s["device"].startswith("cuda") else ("one" if args.quick else "variant")
    if isolate == "no":
        results = run_in_process([(v, m) for v in VARIANTS for m in s["modes"]], s)
    else:
        groups = [[(v, m) for m in s["modes"]] for v in VARIANTS]
        results = run_isolated(groups if isolate == "variant" else [sum(groups, [])], s)
    print(report(results, s))
    print(f"# load average at end (1/5/15 min): {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": s, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkers for the fill-in exercises of notebook 06 (the multi-GPU Qwen run).

Each `check_*` function runs a learner's function on a few fixed cases, compares it with the reference
written here (and tested against the library in tests/test_course_exercises_ex06.py), prints ✓ or ✗ with the first
failing case and a hint, and returns a `CheckResult` that is truthy when every case passed. A checker never
raises: a student copy whose exercise cells still hold `raise NotImplementedError("Exercise 6.2")` runs
green under nbmake and reports "✗ Not yet: Exercise 6.2 is not filled in yet" with a hint.

The exercises:
- 6.1 `dapo_normaliser(masks, rank)`: the number a rank divides its summed token losses by, so that after
  DDP averages the gradients the loss is the token mean over the *global* batch (TRL's "dapo"; the
  `global_num_tokens / world_size` in `grpo_lib.loss.grpo_loss`).
- 6.2 `decode_seconds_floor(n_params, bytes_per_param, T, B, bandwidth, P, kv_bytes_per_token)`: the
  memory-bandwidth floor under generation time (every decode step reads all the weights once, whatever B, and
  each row's growing KV cache).
- `adamw_moment_bytes(P, world_size)` (labelled 6.4, a checked part of the open exercise "Plan your own GPUs"
  for a class that wants it): the bytes of AdamW's two moments on each GPU under plain DDP, the line
  `grpo_lib.course.memory.plan_gpu_memory` calls "AdamW m and v" in mixed precision.

Taught in: notebooks/06_multi_gpu_qwen.ipynb
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from grpo_lib.course.exercises.checking import Case, CheckResult, Rejected, as_tensor, never_raises, run_cases
from grpo_lib.course.exercises.checking import ERROR_HINT, read_number as _one_number
from grpo_lib.loss import dapo_divisor

__all__ = ["CheckResult", "DECODE_KEY", "DECODE_NUDGE", "check_decode_floor", "decode_seconds_floor",
           "adamw_moment_bytes", "dapo_normaliser", "DAPO_CASES", "check_adamw_moment_bytes",
           "check_dapo_normaliser", "ddp_loss_with"]


def _number(value: Any) -> float | None:
    """A learner's return value as one float (int, float, 0-dim or 1-element tensor), else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, torch.Tensor):
            return float(value.detach().reshape(-1).item()) if value.numel() == 1 else None
        out = float(value)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None
    return out if math.isfinite(out) else None


# --- 6.4 (optional checked part) AdamW state per GPU ----------------------------------------------------------------------


def adamw_moment_bytes(P: int, world_size: int = 1) -> int:
    """Bytes of AdamW's moments m and v on each GPU, fp32, plain DDP: 2 moments × 4 bytes × P = 8·P.

    DDP replicates the whole optimizer on every rank, so world_size does not divide it (ZeRO stage 1
    would: 8·P / K).

    Used by: `check_adamw_moment_bytes` (exercise 6.4, optional)
    """
    return 8 * P


ADAMW_CASES = ((1_000, 1), (1_543_714_304, 1), (1_000, 8), (7, 2))
"""(P, world_size) pairs: the 1.54B case is Qwen2.5-1.5B-Instruct."""


def _read_number(hint: str) -> Callable[[Any, Case], Any]:
    def read(got: Any, case: Case) -> Any:
        value = _number(got)
        return Rejected(repr(got)[:80], hint) if value is None else value
    return read


def _adamw_hint(case: Case, value: float) -> str:
    P, K = case.args
    ratio = value / P if P else float("nan")
    per_rank = value * K / P if P else float("nan")
    if math.isclose(ratio, 4):
        return ("4 bytes per parameter is one fp32 moment (or two bf16 ones): AdamW keeps two, m (the mean "
                "of the gradients) and v (the mean of their squares), both in fp32 in mixed precision.")
    if math.isclose(ratio, 2):
        return "that is one moment in bf16: AdamW keeps two moments, each 4 bytes (fp32)."
    if math.isclose(ratio, 12) or math.isclose(ratio, 16):
        return ("only the two moments were asked for: 12 bytes adds the fp32 master weights, 16 also the "
                "bf16 weights and gradients (the ZeRO paper's total).")
    if K > 1 and math.isclose(per_rank, 8):
        return ("plain DDP replicates the optimizer on every GPU: each rank holds all of m and v. Dividing "
                "by world_size is ZeRO stage 1 (DeepSpeed, FSDP), which grpo_lib does not use.")
    if math.isclose(ratio, 8 / 1024**3) or math.isclose(ratio, 8 / 1e9):
        return "return bytes, not GiB or GB."
    return "2 moments × 4 bytes (fp32) × P parameters, on each GPU."


@never_raises("6.4")
def check_adamw_moment_bytes(fn: Callable[[int, int], Any]) -> CheckResult:
    """Check fn(P, world_size) == 8·P: two fp32 moments per parameter, replicated on every DDP rank.

    Used by: tests/test_course_exercises_ex06.py. Not called in the notebook (its memory exercise, 6.4, is open);
    a class that wants a checked part of it calls this.
    """
    cases = [Case(f"P = {P:,} parameters on world_size = {K} GPU(s)", (P, K), adamw_moment_bytes(P, K))
             for P, K in ADAMW_CASES]
    return run_cases(
        fn, cases, exercise="6.4",
        blank_hint="AdamW keeps two numbers per parameter (m and v), each in fp32; count the bytes on one GPU.",
        error_hint="take P (an int) and world_size (an int), return a number of bytes.",
        read=_read_number("return one number of bytes (an int)."),
        matches=lambda got, expected: math.isclose(got, expected, rel_tol=1e-9),
        hint=_adamw_hint, show=lambda x: f"{x:,} bytes", show_got=lambda x: f"{x:,.0f} bytes",
        success="✓ Correct: 8 bytes per parameter (m and v in fp32) on every GPU; for Qwen2.5-1.5B that is "
                f"{adamw_moment_bytes(1_543_714_304) / 2**30:.1f} GiB per GPU, however many GPUs.")


# --- 6.1 the dapo normaliser under DDP --------------------------------------------------------------


def dapo_normaliser(masks: Sequence[torch.Tensor], rank: int) -> float:
    """What rank `rank` divides Σ_{i,t} m·ℓ by for TRL's "dapo" loss: (Σ_k Σ m_k) / K.

    DDP averages gradients over the K ranks, so dividing each rank's token sum by N_global / K makes the
    averaged gradient that of Σ_all m·ℓ / N_global: the token mean over the global batch. The same number
    on every rank (`grpo_lib.loss.grpo_loss` with global_num_tokens and world_size).

    Args:
        masks: K completion masks, masks[k] of shape (B_k, T_k), 1 on completion tokens (T_k may differ:
            each rank pads to its own longest completion).
        rank: this process's rank in [0, K).

    Used by: `check_dapo_normaliser` (exercise 6.1)
    """
    n_global = sum(float(m.sum()) for m in masks)
    return float(dapo_divisor(torch.tensor(n_global, dtype=torch.float64), len(masks)))   # the loss's own formula


def _masks(*rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


DAPO_CASES = (
    ("2 ranks, rank 0 holds 5 tokens, rank 1 holds 8",
     _masks([[1, 1, 1, 0], [1, 1, 0, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]), 0),
    ("the same batch seen from rank 1", _masks([[1, 1, 1, 0], [1, 1, 0, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]]), 1),
    ("3 ranks padded to different lengths (T = 3, 5, 4), rank 2",
     _masks([[1, 1, 1], [1, 0, 0]], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], [[1, 0, 0, 0], [1, 1, 1, 1]]), 2),
    ("1 rank (no DDP)", _masks([[1, 1, 0], [1, 1, 1]]), 0),
)
"""(name, per-rank masks, rank): unequal token counts, so a per-rank count differs from the global one."""


def ddp_loss_with(masks: Sequence[torch.Tensor], normalisers: Sequence[float]) -> tuple[float, float]:
    """(what DDP's average gives, the global token mean) for a per-token loss ℓ = 1, 2, 3, ... on every rank.

    Rank k's loss is Σ m_k·ℓ_k / normalisers[k]; DDP averages over the K ranks (of the gradients, and so
    of these linear losses). The target is Σ_all m·ℓ / Σ_all m.

    Used by: `check_dapo_normaliser`'s hint (exercise 6.1)
    """
    losses = [torch.arange(1, m.numel() + 1, dtype=torch.float32).reshape(m.shape) for m in masks]
    sums = [float((m * ell).sum()) for m, ell in zip(masks, losses)]
    averaged = sum(s / d for s, d in zip(sums, normalisers)) / len(masks)
    target = sum(sums) / max(sum(float(m.sum()) for m in masks), 1.0)
    return averaged, target


def _dapo_hint(case: Case, value: float) -> str:
    masks, rank = case.args
    K = len(masks)
    local = float(masks[rank].sum())
    n_global = sum(float(m.sum()) for m in masks)
    numel = sum(m.numel() for m in masks)
    if math.isclose(value, local) and not math.isclose(local, case.expected):
        averaged, target = ddp_loss_with(masks, [float(m.sum()) for m in masks])
        return (f"that is this rank's own token count (per-rank normalisation). With it every rank's tokens "
                f"weigh differently: DDP's average gives a loss of {averaged:.4f} for ℓ_t = 1, 2, 3, ..., "
                f"not the global token mean {target:.4f}. Count the tokens of all ranks.")
    if math.isclose(value, n_global):
        return (f"that is the global token count N = {n_global:g}. DDP then *averages* the K = {K} ranks' "
                f"gradients, dividing once more by K: the loss comes out {K} times too small. Divide N by K.")
    if math.isclose(value, numel / K) or math.isclose(value, numel) or math.isclose(value, masks[rank].numel()):
        return "count only active tokens (mask == 1): padding positions are not part of the loss."
    if math.isclose(value, sum(m.shape[0] for m in masks) / K) or math.isclose(value, masks[rank].shape[0]):
        return "that counts completions (rows); dapo normalises by tokens."
    return ("take ℓ = 1, 2, 3, ... on every token and compute both: the loss DDP's average gives with your number, "
            "and the mean over all ranks' tokens. They must agree.")


DAPO_NUDGE = ("write down two losses for a per-token loss ℓ: the one you want (the mean over every token of the global "
              "batch) and the one DDP produces (what it does with the K ranks' gradients, each rank's summed loss "
              "divided by your number). What must the number be for the two to be equal, on every rank?")
DAPO_KEY = "N_global = sum(float(m.sum()) for m in masks); return N_global / len(masks)."


@never_raises("6.1")
def check_dapo_normaliser(fn: Callable[[list[torch.Tensor], int], Any]) -> CheckResult:
    """Check fn(masks, rank) == (Σ_k masks[k].sum()) / K: the dapo divisor that survives DDP's average.

    Taught in: notebooks/06_multi_gpu_qwen.ipynb
    """
    cases = [Case(name, (list(masks), rank), dapo_normaliser(masks, rank)) for name, masks, rank in DAPO_CASES]
    return run_cases(
        fn, cases, exercise="6.1", blank_hint=DAPO_NUDGE, key_step=DAPO_KEY, references=(dapo_normaliser, dapo_divisor),
        error_hint="take a list of K masks (B_k, T_k) and a rank, return one number (the same on every rank).",
        read=_read_number("return one number (a float or a 0-dim tensor), not one per rank or per row."),
        matches=lambda got, expected: math.isclose(got, expected, rel_tol=1e-6),
        hint=_dapo_hint, show=lambda x: f"{x:g}",
        success="✓ Correct: every rank divides by N_global / K, so after DDP's average the loss is the token mean "
                "over the global batch, as in TRL's 'dapo'.")

# --- exercises that need the idea, with progressive hints (key_step) ---------------------------

DECODE_NUDGE = ("each new token of every row needs a forward pass, and the T new tokens come one after another. What "
                "must the GPU read from memory for one decode step: which part is the same for every row, which part "
                "belongs to each row, and how does that part change from one step to the next?")
DECODE_KEY = ("step t reads every weight once (n_params · bytes_per_param, shared by all B rows) plus each row's KV "
              "cache of P + t - 1 tokens (B · (P + t - 1) · kv_bytes_per_token); sum over t = 1..T and divide by "
              "bandwidth: (T · n_params · bytes_per_param + B · kv_bytes_per_token · (T · P + T · (T - 1) / 2)) / bandwidth.")


def decode_seconds_floor(n_params: int, bytes_per_param: int, T: int, B: int, bandwidth: float, P: int,
                         kv_bytes_per_token: int) -> float:
    """The memory-bandwidth floor of T decode steps with a KV cache, in seconds.

    Step t (t = 1..T) reads every weight once, for all B rows together, and each row's cache of the P prompt
    tokens and the t - 1 tokens generated before it:

        Σ_t [n_params · bytes_per_param + B · (P + t - 1) · kv_bytes_per_token] / bandwidth

    Used by: `check_decode_floor` (exercise 6.2)
    """
    weights = T * n_params * bytes_per_param
    cache = B * kv_bytes_per_token * (T * P + T * (T - 1) // 2)
    return (weights + cache) / bandwidth


def _decode_hint(case: Case, value: float) -> str:
    n_params, bpp, T, B, bw, P, kv = case.args
    weights_only = T * n_params * bpp / bw
    close = lambda x: math.isclose(value, x, rel_tol=1e-6)          # noqa: E731
    if close(weights_only) or close(weights_only * B):
        return "that leaves out the KV cache: each row attends to every token before it, so every step reads them."
    if close(weights_only * B + (case.expected - weights_only)):
        return "you read the weights once per row. Does one read of a weight serve one row, or all of them?"
    if close(case.expected + B * kv * T / bw) or close(case.expected - B * kv * T / bw):
        return "count the cache at step t carefully: the prompt's P tokens and the t - 1 generated before this one."
    if close(weights_only + T * P * B * kv / bw) or close(weights_only + T * (P + T) * B * kv / bw):
        return "the cache is not the same size at every step: it grows by one token per row per step."
    if close(case.expected / bpp) or close((case.expected * bw - (T * n_params * bpp) + T * n_params) / bw):
        return "count bytes, not parameters: how many bytes does one bf16 weight take?"
    return "what does one decode step read, what changes from one step to the next, and how many steps are there?"


@never_raises("6.2")
def check_decode_floor(fn: Callable[..., Any]) -> CheckResult:
    """Exercise 6.2: the floor on generation time set by memory bandwidth, weights and KV cache."""
    raw = (("two steps (T = 2) of a 10-parameter model, 1 byte each, B = 3 rows, a 1-token prompt (P = 1), 1 byte of "
            "cache per token, 1 byte/s", (10, 1, 2, 3, 1.0, 1, 1)),
           ("Qwen2.5-1.5B in bf16, T = 400 new tokens, B = 84 rows, P = 256, 28,672 cache bytes per token, "
            "4.8e12 bytes/s (an H200)", (1_543_714_304, 2, 400, 84, 4.8e12, 256, 28_672)),
           ("the same with B = 1 row", (1_543_714_304, 2, 400, 1, 4.8e12, 256, 28_672)),
           ("a 7e9-parameter model in bf16, T = 1024, B = 512, P = 512, 131,072 cache bytes per token, 3.35e12 bytes/s",
            (7_000_000_000, 2, 1024, 512, 3.35e12, 512, 131_072)))
    cases = [Case(name, args, decode_seconds_floor(*args)) for name, args in raw]
    qwen, one_row = cases[1].expected, cases[2].expected
    return run_cases(fn, cases, exercise="6.2", blank_hint=DECODE_NUDGE, key_step=DECODE_KEY, error_hint=ERROR_HINT,
                     read=_one_number, matches=lambda got, exp: math.isclose(got, exp, rel_tol=1e-6),
                     hint=_decode_hint, show=lambda v: f"{v:.6g} s", references=(decode_seconds_floor,),
                     success=f"✓ Correct: {qwen:.3f} s is the floor for 400 tokens of Qwen2.5-1.5B × 84 rows on an "
                             f"H200 ({one_row:.3f} s for one row: the weights are read once for every row, the cache "
                             f"is per row). The 20.4 s measured in docs/performance.md is about {20.4 / qwen:.0f} times "
                             f"that: per-step overhead, repeated T times in sequence.")

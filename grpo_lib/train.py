"""GRPO training, top to bottom: DeepSeekMath's Algorithm 1 with μ inner updates, one process or many.

Commands (all options: `python -m grpo_lib.train --help`; any config field is an option):

    # CPU, one process: the tiny preset (1M-param Qwen2 on two-digit addition), about 2 minutes on 2 cores
    python -m grpo_lib.train --preset tiny --output-dir runs/tiny

    # a checkpoint every 20 steps; after a crash or a kill, continue from the latest complete one
    python -m grpo_lib.train --preset tiny --save-every 20 --output-dir runs/tiny
    python -m grpo_lib.train --resume runs/tiny            # the saved configuration; same metrics as no stop

    # one GPU: the tutorial's run, Qwen2.5-1.5B-Instruct on GSM8K (hub, or a local copy with --data-dir)
    python -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k --data-dir ../shared/data/gsm8k --output-dir runs/qwen

    # k GPUs on one machine: DistributedDataParallel over nccl; N (prompts per step) must divide by k
    torchrun --standalone --nproc_per_node=8 -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k --N 8

    # 2 CPU processes (DDP over gloo): the same code path as the GPU run, on a laptop
    torchrun --standalone --nproc_per_node=2 -m grpo_lib.train --preset tiny --output-dir runs/tiny-ddp

From Python (a notebook): `result = train(GRPOConfig.tiny(steps=20))`, then `result["reward"]`,
`result.summary`, `result.eval_after`. The pieces of one step are importable on their own:
`generate_completions` and `score_rollout` (grpo_lib.rollout) and `policy_update` (here).

The algorithm (Shao et al. 2024, DeepSeekMath, Algorithm 1; rule-based rewards, so no reward-model update):

    for iteration = 1..I:                                    I = cfg.num_iterations
        π_ref ← π_θ                                           the reference moves once per iteration
        for step = 1..M:                                     M = cfg.steps
            sample N prompts; π_θold ← π_θ
            sample G completions o_1..o_G ~ π_θold(·|q) per prompt
            r_i = Σ_k r_k(q, o_i);  A_i = (r_i - mean_group r) / std_group r
            for μ updates:  minimise grpo_loss  (clipped ratio ρ = π_θ/π_θold, β·KL(π_θ‖π_ref))

Choices made here (1-6 shown in notebooks/05_full_run.ipynb; 7-8 tested in tests/test_checkpoint.py and
tests/test_ddp.py):
1. One code path for 1 process and `torchrun`: each rank samples whole groups for its N/K prompts, so
   advantages need no communication; DistributedDataParallel averages the gradients; metrics are
   all-reduced; only rank 0 logs and writes files. Generation uses the unwrapped module (DDP's forward
   hooks are for training passes only), updates go through the DDP wrapper.
2. The model init is the same on every rank (seed = cfg.seed); sampling uses a different stream per rank
   and step (seed = cfg.seed·1,000,003 + step·K + rank), so a run is reproducible step by step.
3. The reference model is a frozen copy of the policy, refreshed at the start of every outer iteration
   (Algorithm 1); with β = 0 there is no reference model at all. The optimizer (AdamW) lives for the
   whole run; the tutorial re-created it every outer iteration, which restarts Adam's moment estimates.
4. With μ = 1, log π_θold is the current log π_θ detached (ρ = 1 exactly), which saves a forward pass.
5. Evaluation (greedy, held-out) runs before and after training; `eval_every` adds evaluations in between.
6. W&B is offline unless you are logged in: `WANDB_MODE=offline` is set in the environment (before wandb
   is imported) when WANDB_MODE is unset and no API key is configured. `--report-to none` turns it off.
7. Checkpoints (`--save-every K`) hold everything the next step depends on: weights, AdamW, the schedule,
   π_ref inside an outer iteration, every rank's RNG states, the metrics so far (grpo_lib.checkpoint).
   `--resume DIR` continues from one and gives the same metrics, step for step, as a run never stopped;
   metrics.jsonl is rewritten up to the checkpoint and then continued, never duplicated.
8. Failures stop the run loudly: a NaN or inf loss, grad norm, KL or reward stops it at that step with
   a message naming the step and the metric (`NonFiniteMetricError`); the AdamW step with a non-finite
   gradient is skipped, no checkpoint is written after it, summary.json gets "status": "failed", and
   the command exits non-zero. Under torchrun a rank that raises makes torchrun stop the others and
   exit non-zero; a collective never waits longer than `dist_timeout_minutes`.
   Test hook: the environment variable GRPO_LIB_FAULT="raise@S" or "nan@S", optionally ":rankR"
   (comma-separated for several), raises on (or poisons the advantages of) step S, so the tests can
   go through these paths. Real runs leave it unset.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record
from tqdm.auto import tqdm

from grpo_lib import checkpoint, dist
from grpo_lib.advantages import zero_std_fraction
from grpo_lib.config import PRESETS, SYMBOLS, GRPOConfig, base_type, batch_override, field_docs, field_types
from grpo_lib.data import build_prompt, check_prompts_fit, load_problems, max_context, prompts_for_step
from grpo_lib.evaluation import EvalResult, evaluate
from grpo_lib.logprobs import token_logprobs
from grpo_lib.loss import grpo_loss
from grpo_lib.precision import Precision, dtype_name, resolve_precision
from grpo_lib.rollout import RewardFunc, ScoredRollout, generate_completions, score_rollout, set_gradient_checkpointing

FAULT_ENV = "GRPO_LIB_FAULT"
"""test hook (choice 8): "raise@S", "nan@S", optionally ":rankR"; unset in real runs"""
CHECKED_METRICS = ("loss", "grad_norm", "kl", "reward")
"""metrics that must stay finite; the run stops at the first step where one is NaN or inf"""
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
SUMMARY_FILE = "summary.json"
MODEL_SUBDIR = "model"

METRICS = {
    "step": "1-based step; the record describes the batch sampled at this step and the updates on it",
    "iteration": "outer iteration of Algorithm 1 (π_ref was reset at its start)",
    "reward": "mean total reward r over the B completions of all ranks (the sum of the reward functions)",
    "reward_std": "sample std of r over all B completions of all ranks (not within groups; TRL's reward_std)",
    "reward/<name>": "mean reward of one reward function, e.g. reward/correctness, reward/format",
    "accuracy": "share of the batch's sampled completions that are strictly correct (answer in tags)",
    "loss": "grpo_loss, averaged over the μ updates and the ranks (with loss_type 'grpo' and μ = 1 it is ≈ β·KL: the surrogate term is -mean(A) = 0)",
    "kl": "per-token k3 KL estimate between π_θ and π_ref, mean over all ranks' tokens (0 when β = 0)",
    "entropy": "mean per-token entropy of π_θ's (temperature-scaled) distribution over all ranks' completion tokens (TRL: entropy)",
    "clip_ratio/low_mean": "share of tokens clipped from below (ρ < 1-ε with A < 0), over all ranks (TRL's name; 0 when μ = 1)",
    "clip_ratio/high_mean": "share of tokens clipped from above (ρ > 1+ε_high with A > 0), over all ranks (TRL's name)",
    "clip_ratio/region_mean": "share of tokens where clipping changed the objective: low + high (TRL's name)",
    "ratio_mean": "mean ratio ρ = π_θ / π_θold over all ranks' tokens (exactly 1 when μ = 1)",
    "grad_norm": "global gradient norm before clipping, averaged over the μ updates",
    "completions/mean_length": "mean |o_i| in tokens over all ranks, EOS included (TRL's name)",
    "completions/clipped_ratio": "share of completions cut at max_completion_length without an EOS (TRL's name)",
    "frac_reward_zero_std": "share of all groups whose G rewards are all equal: their advantages are 0, they teach nothing (TRL's name)",
    "generation_seconds": "wall time of generate() for this step's rollouts (mean over ranks)",
    "scoring_seconds": "wall time of rewards, advantages and the old / reference log-probs (mean over ranks)",
    "update_seconds": "wall time of the μ updates (forward, backward, AdamW) (mean over ranks)",
    "learning_rate": "learning rate after this step (TRL's name)",
    "step_seconds": "wall time of the whole step",
    "tokens_per_second": "completion tokens generated over all ranks / step_seconds",
    "wall_seconds": "time since train() started (model loading and the first evaluation included)",
}
"""the per-step metrics of metrics.jsonl (and W&B, same names), defined once"""


def reward_functions(names: Sequence[str]) -> dict[str, RewardFunc]:
    """name -> reward function from grpo_lib.rewards, for cfg.reward_funcs.

    Taught in: notebooks/05_full_run.ipynb
    """
    from grpo_lib import rewards

    table = {"correctness": rewards.correctness_reward, "format": rewards.format_reward,
             "strict_format": rewards.strict_format_reward}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"reward_funcs: unknown reward function(s) {unknown}; choose from {sorted(table)}")
    return {n: table[n] for n in names}


def load_model(cfg: GRPOConfig, device: str, precision: Precision | None = None) -> tuple[nn.Module, Any]:
    """π_θ and its tokenizer for cfg.model ('tiny' = the shipped tiny Qwen2), on `device`.

    The parameters are in `precision.param_dtype` (fp32 master weights in mixed precision); the
    attention implementation is chosen for the compute dtype (flash-attn needs bf16/fp16 inputs, which
    autocast gives it).
    """
    from grpo_lib.models import load_policy

    precision = precision or resolve_precision(cfg.dtype, cfg.precision, device)
    return load_policy(cfg.model, device=device, dtype=precision.param_dtype,
                       compute_dtype=precision.compute_dtype)


def make_optimizer(model: nn.Module, cfg: GRPOConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW(η, (β1, β2), weight_decay) and its schedule: linear warm-up, then constant or cosine to 10%.

    The schedule is stepped once per optimizer step (I·M·μ in all).

    Taught in: notebooks/05_full_run.ipynb
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    total, warmup = cfg.total_updates, cfg.warmup_steps

    def factor(t: int) -> float:  # t = optimizer steps taken so far
        if warmup and t < warmup:
            return (t + 1) / (warmup + 1)
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, (t - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def policy_update(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: ScoredRollout, cfg: GRPOConfig,
                  precision: Precision | None = None) -> dict[str, float]:
    """One of the μ updates: log π_θ with gradients, grpo_loss, backward, gradient clipping, AdamW step.

    With cfg.micro_batch_size = b the B completions go through forward and backward b rows at a time
    and the gradients add up (gradient accumulation). Each micro-batch's loss is weighted so that the sum
    is the loss of the whole batch: b/B for the per-sequence losses ("grpo", "dr_grpo"), its share of the
    tokens for "bnpo", and 1 for "dapo" (already divided by the global token count). Same update, only
    one micro-batch of B×T×V logits in memory at a time. Under DDP, `no_sync` skips the gradient
    all-reduce on all but the last micro-batch.

    Under DDP (K ranks, each with B/K rows, gradients averaged): "grpo" and "dr_grpo" give the update of
    one process on all B rows; so does "dapo", whose token count is all-reduced over the ranks (as TRL
    does). "bnpo" is normalised per process (as in TRL): the update is the average of the K ranks'
    token means, which equals the 1-process update only when every rank has as many active tokens.

    Args:
        policy: π_θ, DDP-wrapped under torchrun (so backward averages the gradients over ranks).
        optimizer: from `make_optimizer`.
        batch: from `score_rollout`: advantages A (B,), mask (B, T), log π_θold (or None when μ = 1),
            log π_ref (or None when β = 0).
        cfg: epsilon, epsilon_high, beta, loss_type, temperature, max_grad_norm, micro_batch_size.
        precision: the forward passes run under `precision.context()` (bf16 autocast in mixed
            precision); None = no autocast. The backward pass runs outside it, as torch recommends.

    Returns:
        floats: loss, kl, clip_fraction (= clip_fraction_low + clip_fraction_high), ratio_mean and
        entropy (token means over this rank's batch), grad_norm (before clipping), and tokens (this
        rank's active tokens: `train` turns the token means into means over all ranks' tokens).
        When grad_norm is NaN or inf the AdamW step is skipped (the weights stay as they were).

    Taught in: notebooks/05_full_run.ipynb
    """
    policy.train()
    autocast = precision.context if precision is not None else contextlib.nullcontext
    rollout = batch.rollout
    input_ids, attention_mask = rollout.input_ids, rollout.attention_mask                # (B, P+T)
    mask, A = batch.mask, batch.advantages                                               # (B, T), (B,)
    B, T = mask.shape
    b = cfg.micro_batch_size or B
    n_local = mask.sum().item()                                                          # active tokens here
    # "dapo" normalises by the active tokens of the whole global batch: count them over all ranks
    n_global = dist.all_reduce_sum(mask.sum().float()).item()
    starts = list(range(0, B, b))
    optimizer.zero_grad(set_to_none=True)
    means = ("kl", "clip_fraction", "clip_fraction_low", "clip_fraction_high", "ratio_mean", "entropy")
    totals = {"loss": 0.0, **{k: 0.0 for k in means}}
    for start in starts:
        rows = slice(start, start + b)
        last = start == starts[-1]
        sync = contextlib.nullcontext() if last or not hasattr(policy, "no_sync") else policy.no_sync()
        with sync:
            with autocast():
                logp, entropy = token_logprobs(policy, input_ids[rows], attention_mask[rows], logits_to_keep=T,
                                               temperature=cfg.temperature, return_entropy=True)  # (b, T) with grad
            loss, stats = grpo_loss(
                logp, None if batch.logp_old is None else batch.logp_old[rows],
                None if batch.logp_ref is None else batch.logp_ref[rows], A[rows], mask[rows],
                epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, loss_type=cfg.loss_type,
                max_completion_length=cfg.max_completion_length, global_num_tokens=n_global,
                world_size=dist.get_world_size(),
            )
            m = mask[rows].float()
            stats["entropy"] = (entropy * m).sum() / m.sum().clamp(min=1)
            n_rows, n_tok = logp.shape[0], mask[rows].sum().item()
            weight = {"grpo": n_rows / B, "dr_grpo": n_rows / B, "bnpo": n_tok / max(n_local, 1),
                      "dapo": 1.0}[cfg.loss_type]
            (loss * weight).backward()
        totals["loss"] += loss.item() * weight
        for k in means:                                                                  # token means: weight by tokens
            totals[k] += stats[k].item() * n_tok / max(n_local, 1)
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    if torch.isfinite(grad_norm):        # a NaN/inf gradient would poison every weight: skip; train() stops
        optimizer.step()
    return {**totals, "grad_norm": float(grad_norm), "tokens": float(n_local)}


def step_metrics(batch: ScoredRollout, updates: Sequence[Mapping[str, float]], G: int,
                 device: str | torch.device = "cpu") -> dict[str, float]:
    """The metrics of one step, computed over the completions of ALL ranks (TRL's definitions and names).

    Per-completion values (rewards, lengths, truncation) are all-gathered, so `reward_std` is the sample
    std of every reward in the global batch and `frac_reward_zero_std` the share of all groups whose G
    rewards are equal (TRL: std of the group ≈ 0), whatever the number of GPUs. Token means (kl, entropy,
    clip_ratio/*) are Σ over all ranks' tokens / all ranks' token count (TRL's `global_masked_mean`),
    averaged over the μ updates. So 2 ranks × n prompts give the numbers of 1 rank × 2n prompts on the
    same completions (tests/test_ddp.py). Differences from TRL: TRL takes the token means per
    micro-batch and averages them over its logging window; here they are over the whole step's batch.

    Args:
        batch: this rank's scored rollout.
        updates: `policy_update`'s return values for the μ updates of this step.
        G: group size.
        device: where collectives run (the rank's GPU under nccl, cpu under gloo).

    Returns:
        reward, reward_std, reward/<name>, accuracy, frac_reward_zero_std, completions/mean_length,
        completions/clipped_ratio, loss, grad_norm (means over ranks), kl, entropy, clip_ratio/low_mean,
        clip_ratio/high_mean, clip_ratio/region_mean, ratio_mean (token means over all ranks).

    Taught in: notebooks/05_full_run.ipynb
    """
    rollout = batch.rollout
    local = torch.stack([batch.rewards.detach().double().cpu(), rollout.completion_lengths.double().cpu(),
                         rollout.truncated.double().cpu(), batch.correct.double().cpu(),
                         *[v.detach().double().cpu() for _, v in sorted(batch.rewards_per_func.items())]])
    every = torch.cat(dist.all_gather_objects(local), dim=1)                  # (4 + funcs, B_global) rank order
    r = every[0].to(batch.rewards.dtype)                                      # statistics in the rewards' dtype (as TRL)
    lengths, truncated, correct = every[1], every[2], every[3]
    record = {
        "reward": r.mean().item(),
        "reward_std": r.std().item() if r.numel() > 1 else 0.0,                # TRL: nanstd, unbiased
        **{f"reward/{name}": every[4 + i].mean().item() for i, name in enumerate(sorted(batch.rewards_per_func))},
        "accuracy": correct.mean().item(),
        "frac_reward_zero_std": zero_std_fraction(r.view(-1, G)),
        "completions/mean_length": lengths.mean().item(),
        "completions/clipped_ratio": truncated.mean().item(),
    }
    n = len(updates)
    token_means = {"kl": "kl", "entropy": "entropy", "clip_ratio/low_mean": "clip_fraction_low",
                   "clip_ratio/high_mean": "clip_fraction_high", "clip_ratio/region_mean": "clip_fraction",
                   "ratio_mean": "ratio_mean"}
    sums = {name: sum(u[key] * u["tokens"] for u in updates) / n for name, key in token_means.items()}
    sums["_tokens"] = sum(u["tokens"] for u in updates) / n
    sums = dist.all_reduce_metrics(sums, op="sum", device=device)
    tokens = max(sums.pop("_tokens"), 1.0)
    record.update({name: v / tokens for name, v in sums.items()})
    record.update(dist.all_reduce_metrics({k: sum(u[k] for u in updates) / n for k in ("loss", "grad_norm")},
                                          op="mean", device=device))
    return record


@dataclass
class TrainResult:
    """What `train` returns: per-step history, evaluations, the summary, and the trained model.

    `result["reward"]` is the list of a metric over steps (None where a step lacks it).

    Attributes:
        history: one dict per step (the records of metrics.jsonl).
        evals: one dict per evaluation: step and the EvalResult fields.
        summary: the content of summary.json.
        eval_before, eval_after: EvalResult before and after training.
        model, tokenizer: the trained policy (unwrapped) and its tokenizer.
        output_dir: where the files were written.
    """

    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    summary: dict[str, Any]
    eval_before: EvalResult
    eval_after: EvalResult
    model: nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    output_dir: Path | None = None

    def __getitem__(self, key: str) -> list:
        if not any(key in rec for rec in self.history):
            raise KeyError(f"no metric {key!r}; metrics: {sorted(self.history[0]) if self.history else []}")
        return [rec.get(key) for rec in self.history]


def _sampling_seed(seed: int, step: int, rank: int, world_size: int) -> int:
    return seed * 1_000_003 + step * world_size + rank


def _cpu_threads(cfg: GRPOConfig) -> int | None:
    """Threads per process on CPU: cfg.num_threads, else the usable cores divided by local processes."""
    if cfg.num_threads is not None:
        return cfg.num_threads
    if "LOCAL_WORLD_SIZE" not in os.environ:
        return None                                 # one plain process: leave torch's default (all cores)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // int(os.environ["LOCAL_WORLD_SIZE"]))


def _wandb_logged_in() -> bool:
    """True when W&B credentials exist (API key variable or a netrc entry); never reads the key out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        return netrc.netrc().authenticators(host) is not None
    except Exception:  # no ~/.netrc, or an unreadable one
        return False


def init_wandb(cfg: GRPOConfig, out: Path) -> Any:
    """Start a W&B run on rank 0 (offline unless logged in, see choice 6); None when report_to='none'."""
    if cfg.report_to != "wandb":
        return None
    if "WANDB_MODE" not in os.environ and not _wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"        # in the environment, before import (tooling-notes §3)
    try:
        import wandb
    except ImportError as e:
        raise ImportError("report_to='wandb' needs the wandb package (pip install wandb), or pass --report-to none") from e
    return wandb.init(project=cfg.wandb_project, name=out.name, dir=str(out), config=cfg.to_dict())


def train(cfg: GRPOConfig, *, model: nn.Module | None = None, tokenizer: Any = None,
          reward_funcs: Mapping[str, RewardFunc] | None = None,
          callback: Callable[[dict[str, Any], ScoredRollout], None] | None = None) -> TrainResult:
    """Run GRPO with `cfg`: evaluate, I·M steps of sample → score → μ updates, evaluate, save.

    Args:
        cfg: the run's settings (`GRPOConfig.tiny()`, `GRPOConfig.full()`, ...).
        model, tokenizer: an already loaded policy and tokenizer (e.g. a random tiny Qwen2 in a test);
            None loads cfg.model. The model is trained in place.
        reward_funcs: name -> reward function; None uses cfg.reward_funcs from grpo_lib.rewards.
        callback: called on every rank after every step with (metrics record, scored rollout).

    Returns:
        TrainResult. On rank 0, cfg.output_dir holds metrics.jsonl (one record per step, keys in
        `METRICS`), evals.jsonl, summary.json, model/ (save_pretrained of the model and tokenizer) and,
        with cfg.save_every, checkpoints/step-XXXXXX/ (grpo_lib.checkpoint). With cfg.resume the run
        continues from a checkpoint and the history holds the steps before it too.

    Raises:
        ValueError: a setting that cannot work here (N not divisible by the processes, a prompt too long
            for the model's context, ...), before any training.
        CheckpointError: cfg.resume names no complete checkpoint, or one written with another
            configuration or number of processes (the message lists the differences).
        NonFiniteMetricError: a NaN or inf loss, grad norm, KL or reward (names the step and the metric);
            summary.json then has "status": "failed" and the last good checkpoint is kept.
        FileNotFoundError: a GSM8K --data-dir without its jsonl files, or a model folder that does not exist.
        RewardFunctionError: a reward function failed; the message shows the completion.

    Taught in: notebooks/05_full_run.ipynb
    """
    t_start = time.perf_counter()

    # --- bookkeeping: processes, device, precision, seeds (bad settings fail here, before any model) ---
    N_local = cfg.N_per_rank(dist.env_rank()[2])     # fails before the process group starts, naming --N
    N_global = cfg.global_N(dist.env_rank()[2])
    precision = resolve_precision(cfg.dtype, cfg.precision,
                                  dist.resolve_device(cfg.device, dist.env_rank()[1]))   # names --dtype / --precision
    info = dist.init_distributed(cfg.device, timeout_minutes=cfg.dist_timeout_minutes)
    rank, world = info.rank, info.world_size
    torch.manual_seed(cfg.seed)                      # same model init on every rank (and DDP broadcasts rank 0's)
    faults = _parse_faults(os.environ.get(FAULT_ENV, ""))
    # every rank must see the checkpoint: if one cannot, all fail now, naming the rank and the path
    ckpt = checkpoint.open_checkpoint_on_every_rank(cfg.resume, cfg.to_dict(), world) if cfg.resume else None

    # --- bookkeeping: problems first (a missing data file fails before a model download) ---
    train_problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
    eval_problems = load_problems(cfg.task, "test", data_dir=cfg.data_dir, n=cfg.eval_n)

    # --- bookkeeping: model, tokenizer, reward functions ---
    if model is None:
        model, tokenizer = load_model(cfg, info.device, precision)
        model_name = cfg.model
    elif tokenizer is None:
        raise ValueError("train(cfg, model=...) needs the model's tokenizer too: train(cfg, model=m, tokenizer=tok)")
    else:
        model.to(device=info.device, dtype=precision.param_dtype)
        model_name = f"{type(model).__name__} passed to train()"
    start_reference = None
    # rank 0's starting weights are the run's (DDP broadcasts them); recorded in checkpoints whose π_ref is them
    start_fingerprint = dist.all_gather_objects(weights_fingerprint(model))[0]
    if ckpt is not None:
        if ckpt.reference_is_initial and cfg.beta > 0 and ckpt.step % cfg.steps:
            saved = ckpt.state.get("start_fingerprint")
            if saved is not None and not math.isclose(saved, start_fingerprint, rel_tol=1e-6):
                raise checkpoint.CheckpointError(
                    f"--resume {cfg.resume}: {ckpt.path.name} was taken in the first outer iteration, where π_ref is "
                    f"the starting model, so π_ref was not saved; but the model this run starts from is not that "
                    f"model (weights fingerprint {start_fingerprint:.6g}, saved {saved:.6g}). Resume with the same "
                    f"--model (or the same model passed to train()).")
            start_reference = _frozen_copy(model, precision)   # π_ref = the starting model, not saved (choice 7)
        ckpt.load_model(model)                       # π_θ as it was after step ckpt.step
    reward_funcs = dict(reward_funcs) if reward_funcs is not None else reward_functions(cfg.reward_funcs)
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True)      # for the updates; generation switches it off

    # --- bookkeeping: every prompt plus max_completion_length must fit the model's context ---
    for what, problems in (("training prompt", train_problems), ("evaluation prompt", eval_problems)):
        prompts = [build_prompt(tokenizer, p["question"], cfg.system_prompt) for p in problems]
        check_prompts_fit(tokenizer, prompts, cfg.max_completion_length, max_context(model.config), what=what)
    n_params = sum(p.numel() for p in model.parameters())
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    run_info = {"world_size": world, "device": info.device, "attn_implementation": attn, **precision.to_dict(),
                "prompts_per_device": N_local, "completions_per_device": N_local * cfg.G,
                "global_prompts": N_global, "global_batch": N_global * cfg.G, "micro_batch_size": cfg.micro_batch_size}
    dist.print0(f"GRPO | preset {cfg.preset} | model {model_name} ({n_params:,} parameters) on {info.device} "
                f"x {world} process(es) | attention {attn}")
    dist.print0(f"precision: {precision.describe()}")
    dist.print0(f"batch: {N_local} prompts x G = {cfg.G} = {N_local * cfg.G} completions per GPU (process); "
                f"global batch over {world} process(es): {N_global} prompts = {N_global * cfg.G} completions per step; "
                f"{cfg.total_steps} steps x mu = {cfg.mu} updates; "
                f"{len(train_problems)} training / {len(eval_problems)} held-out problems")
    if ckpt is not None:
        dist.print0(f"resuming from {ckpt.path} after step {ckpt.step}")

    # --- bookkeeping: output files and W&B (rank 0 only) ---
    out = Path(cfg.output_dir)
    run = metrics_file = evals_file = None
    history: list[dict[str, Any]] = ckpt.history if ckpt is not None else []   # a resumed run continues them
    evals: list[dict[str, Any]] = ckpt.evals if ckpt is not None else []
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run = init_wandb(cfg, out)
        metrics_file = open(out / METRICS_FILE, "w")  # rewritten up to the checkpoint, then continued
        evals_file = open(out / EVALS_FILE, "w")
        metrics_file.writelines(json.dumps(rec) + "\n" for rec in history)
        evals_file.writelines(json.dumps(rec) + "\n" for rec in evals)

    def run_eval(step: int, desc: str) -> EvalResult:
        t0 = time.perf_counter()
        with precision.context():                   # bf16 matmuls on the current fp32 weights (mixed precision)
            result = evaluate(model, tokenizer, eval_problems, system_prompt=cfg.system_prompt,
                              max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size,
                              progress=cfg.progress, desc=desc)
        record = {"step": step, "eval_seconds": time.perf_counter() - t0, **result.to_dict()}
        evals.append(record)
        if info.is_main:
            evals_file.write(json.dumps(record) + "\n")
            evals_file.flush()
            if run is not None:
                run.log({"eval/strict_accuracy": result.strict_accuracy, "eval/lenient_accuracy": result.lenient_accuracy,
                         "eval/format_rate": result.format_rate}, step=step)
        dist.print0(f"[eval @ step {step}] {result}")
        return result

    threads_before = torch.get_num_threads()
    threads = _cpu_threads(cfg)
    if threads is not None and info.device == "cpu":
        torch.set_num_threads(threads)              # restored when train() returns (a notebook keeps its own)
    try:
        # --- GRPO: the policy π_θ, its optimizer, and the DDP wrapper used for the updates ---
        optimizer, scheduler = make_optimizer(model, cfg)
        policy = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # the constructor broadcasts rank 0's weights, so every rank starts from the same π_θ
            policy = DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.startswith("cuda") else None)
            if start_reference is not None:
                dist.broadcast_module(start_reference)   # π_ref = rank 0's starting model on every rank
        ref_model = None
        start_step, last_checkpoint = 0, None
        if ckpt is not None:
            # --- bookkeeping: resume: AdamW, schedule, π_ref (mid-iteration), this rank's RNG ---
            ckpt.load_optimizer(optimizer, scheduler)
            start_step, last_checkpoint = ckpt.step, ckpt.path
            if cfg.beta > 0 and start_step % cfg.steps:
                if start_reference is not None:
                    ref_model, start_reference = start_reference, None
                else:
                    ref_model = _frozen_copy(model, precision)
                    if not ckpt.load_reference(ref_model):
                        raise checkpoint.CheckpointError(f"--resume {cfg.resume}: {ckpt.path.name} is inside an outer "
                                                         "iteration with beta > 0 but holds no reference model")
            ckpt.restore_rng(rank)
        # --- bookkeeping: evaluate before training (after DDP's broadcast; a resumed run kept the first run's) ---
        eval_before = run_eval(0, "eval before") if ckpt is None else _eval_result(ckpt.state["eval_before"])
        bar = tqdm(total=cfg.total_steps, initial=start_step, desc="GRPO steps",
                   disable=not cfg.progress or not info.is_main)
        t_train = time.perf_counter()

        for step in range(start_step, cfg.total_steps):    # I outer iterations of M steps, as one loop
            t_step = time.perf_counter()
            iteration = step // cfg.steps
            if step % cfg.steps == 0 and cfg.beta > 0:
                # --- GRPO: π_ref ← π_θ at the start of every outer iteration (Algorithm 1) ---
                ref_model = None                     # free the old copy first
                ref_model = _frozen_copy(model, precision)   # frozen, in the compute dtype (bf16 when mixed)

            # --- GRPO: sample N prompts (N/K on this rank), G completions each; π_θold = π_θ ---
            problems = prompts_for_step(train_problems, step, N_global, cfg.seed, rank, world)
            prompts = [build_prompt(tokenizer, p["question"], cfg.system_prompt) for p in problems]
            with precision.context():                # sampling uses the current weights, cast to bf16 on use
                rollout = generate_completions(model, tokenizer, prompts, cfg.G,   # unwrapped module: no DDP hooks
                                               max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                                               seed=_sampling_seed(cfg.seed, step, rank, world))

            # --- GRPO: rewards r, group advantages A, log π_θold (only if μ > 1), log π_ref ---
            with precision.context():
                batch = score_rollout(rollout, [p["answer"] for p in problems], reward_funcs, policy=model,
                                      ref_model=ref_model, scale_rewards=cfg.scale_rewards,
                                      temperature=cfg.temperature, need_old=cfg.mu > 1,
                                      chunk_size=cfg.micro_batch_size)
            if faults:
                _inject_fault(faults, step + 1, rank, batch)        # test hook (GRPO_LIB_FAULT); never in real runs

            # --- GRPO: μ policy updates on the same batch ---
            t_update = time.perf_counter()
            updates = []
            for _ in range(cfg.mu):
                updates.append(policy_update(policy, optimizer, batch, cfg, precision))
                scheduler.step()
            update_seconds = time.perf_counter() - t_update

            # --- bookkeeping: metrics of this step, over the completions and tokens of all ranks ---
            record = step_metrics(batch, updates, cfg.G, device=info.device)
            record.update(dist.all_reduce_metrics({"generation_seconds": rollout.generation_seconds,
                                                   "scoring_seconds": batch.scoring_seconds,
                                                   "update_seconds": update_seconds}, op="mean", device=info.device))
            tokens = record["completions/mean_length"] * N_global * cfg.G
            step_seconds = time.perf_counter() - t_step
            record = {"step": step + 1, "iteration": iteration + 1, **record,
                      "learning_rate": scheduler.get_last_lr()[0],
                      "step_seconds": step_seconds, "tokens_per_second": tokens / step_seconds,
                      "wall_seconds": time.perf_counter() - t_start}
            history.append(record)
            bad = {k: record[k] for k in CHECKED_METRICS if not math.isfinite(record[k])}

            # --- bookkeeping: logging (rank 0), callback, evaluation every eval_every steps ---
            if info.is_main:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if run is not None:
                    run.log({k: v for k, v in record.items() if k != "step"}, step=step + 1)
                bar.update(1)
                bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}")
                if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.total_steps:
                    bar.write(_format_record(record, cfg.total_steps))
            if bad:                                  # same on every rank: the record is all-reduced
                error = NonFiniteMetricError(step + 1, bad, last_checkpoint)
                if info.is_main:
                    _write_summary(out, {"status": "failed", "error": str(error), "failed_step": step + 1,
                                         "last_checkpoint": None if last_checkpoint is None else str(last_checkpoint),
                                         "preset": cfg.preset, "model": model_name, "world_size": world,
                                         "accuracy_before": eval_before.strict_accuracy, "config": cfg.to_dict()})
                raise error
            if callback is not None:
                callback(record, batch)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.total_steps:
                run_eval(step + 1, f"eval @ {step + 1}")

            # --- bookkeeping: checkpoint every save_every steps (rank 0 writes, all ranks send their RNG) ---
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                # π_ref is needed inside an outer iteration (the next step does not reset it); in the first
                # iteration it is the starting model, so it is not saved: resume rebuilds it from cfg.model
                inside = cfg.beta > 0 and (step + 1) % cfg.steps != 0
                initial = inside and iteration == 0
                keep_ref = ref_model if inside and not initial else None
                state = {"step": step + 1, "iteration": iteration + 1, "world_size": world, "config": cfg.to_dict(),
                         "history": history, "evals": evals, "eval_before": eval_before.to_dict(),
                         "reference": "initial" if initial else ("saved" if keep_ref is not None else "none"),
                         "start_fingerprint": start_fingerprint,
                         "run": run_info, "versions": _versions()}
                last_checkpoint = checkpoint.save_checkpoint(out, step + 1, model=model, optimizer=optimizer,
                                                             scheduler=scheduler, reference=keep_ref, state=state,
                                                             tokenizer=tokenizer, keep=cfg.save_total_limit)
                dist.print0(f"checkpoint: {last_checkpoint}")
        bar.close()
        train_seconds = time.perf_counter() - t_train
        del ref_model

        # --- bookkeeping: evaluate after training, save the model, write the summary ---
        eval_after = run_eval(cfg.total_steps, "eval after")
        summary = {
            "status": "completed", "preset": cfg.preset, "model": model_name,
            "accuracy_before": eval_before.strict_accuracy, "accuracy_after": eval_after.strict_accuracy,
            "accuracy_before_ci": list(eval_before.strict_ci), "accuracy_after_ci": list(eval_after.strict_ci),
            "lenient_accuracy_before": eval_before.lenient_accuracy, "lenient_accuracy_after": eval_after.lenient_accuracy,
            "format_rate_before": eval_before.format_rate, "format_rate_after": eval_after.format_rate,
            "eval_n": eval_after.n, "steps": cfg.total_steps, "world_size": world, "device": info.device,
            "parameters": n_params, "train_seconds": train_seconds, **run_info,
            "saved_dtype": cfg.save_dtype or dtype_name(precision.param_dtype),
            "wall_seconds": time.perf_counter() - t_start,
            "samples_before": eval_before.samples, "samples_after": eval_after.samples,
            "versions": _versions(), "config": cfg.to_dict(),
        }
        if info.is_main:
            checkpoint.save_pretrained_model(model, tokenizer, out / MODEL_SUBDIR, dtype=cfg.save_dtype)
            summary["wall_seconds"] = time.perf_counter() - t_start
            _write_summary(out, summary)
            if run is not None:
                run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            dist.print0(f"accuracy {eval_before.strict_accuracy:.1%} -> {eval_after.strict_accuracy:.1%} "
                        f"in {summary['wall_seconds']:.0f} s; outputs in {out}")
        dist.barrier()
    finally:
        for f in (metrics_file, evals_file):
            if f is not None:
                f.close()
        if run is not None:
            run.finish()
        torch.set_num_threads(threads_before)
    model.eval()
    return TrainResult(history=history, evals=evals, summary=summary, eval_before=eval_before,
                       eval_after=eval_after, model=model, tokenizer=tokenizer, output_dir=out)


class NonFiniteMetricError(FloatingPointError):
    """A NaN or inf loss, grad norm, KL or reward: the run stops at that step (the message names both)."""

    def __init__(self, step: int, bad: Mapping[str, float], last_checkpoint: Path | None):
        self.step, self.bad, self.last_checkpoint = step, dict(bad), last_checkpoint
        what = ", ".join(f"{k} = {v}" for k, v in bad.items())
        keep = (f"the last good checkpoint is {last_checkpoint} (resume with --resume {last_checkpoint})"
                if last_checkpoint is not None else "no checkpoint was written before it (see --save-every)")
        super().__init__(f"training stopped at step {step}: non-finite {what}; {keep}. Try a lower --lr or "
                         "--max-grad-norm, or check the reward functions.")


def weights_fingerprint(model: nn.Module) -> float:
    """A cheap number that identifies a model's weights: Σ over parameters of Σ w·(1 + position/numel), in fp64.

    Recorded in checkpoints whose π_ref is the starting model (not saved), and compared on resume, so a
    run never silently rebuilds π_ref from a different starting model.
    """
    total = 0.0
    with torch.no_grad():
        for p in model.parameters():
            w = p.detach().reshape(-1).double()
            ramp = torch.linspace(1.0, 2.0, w.numel(), dtype=torch.float64, device=w.device)
            total += float((w * ramp).sum())
    return total


def _frozen_copy(model: nn.Module, precision: Precision) -> nn.Module:
    """π_ref: a frozen copy of π_θ in the reference dtype (bf16 in mixed precision: half an fp32 copy)."""
    return copy.deepcopy(model).to(precision.reference_dtype).eval().requires_grad_(False)


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / SUMMARY_FILE)


def _eval_result(d: Mapping[str, Any]) -> EvalResult:
    return EvalResult(n=d["n"], n_strict=d["n_strict"], n_lenient=d["n_lenient"], n_format=d["n_format"],
                      samples=list(d.get("samples", [])))


def _parse_faults(spec: str) -> list[tuple[str, int, int | None]]:
    """GRPO_LIB_FAULT="raise@2:rank1,nan@3" -> [("raise", 2, 1), ("nan", 3, None)] (test hook, choice 8)."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            what, _, where = item.partition("@")
            step_text, _, rank_text = where.partition(":")
            rank = int(rank_text.removeprefix("rank")) if rank_text else None
            if what not in ("raise", "nan"):
                raise ValueError(what)
            faults.append((what, int(step_text), rank))
        except ValueError:
            raise ValueError(f"{FAULT_ENV}={spec!r}: each item must be 'raise@STEP' or 'nan@STEP', optionally "
                             f"followed by ':rankR' (a test hook; unset it for real runs)") from None
    return faults


def _inject_fault(faults: list[tuple[str, int, int | None]], step: int, rank: int, batch: ScoredRollout) -> None:
    for what, at, on_rank in faults:
        if at == step and on_rank in (None, rank):
            if what == "raise":
                raise RuntimeError(f"{FAULT_ENV}: injected failure on rank {rank} at step {step}")
            batch.advantages = torch.full_like(batch.advantages, float("nan"))   # -> NaN loss and gradient


def _format_record(rec: dict[str, Any], total: int) -> str:
    return (f"step {rec['step']:>4}/{total} | reward {rec['reward']:.3f} | acc {rec['accuracy']:.2f} | "
            f"loss {rec['loss']:+.4f} | kl {rec['kl']:.4f} | H {rec['entropy']:.3f} | "
            f"len {rec['completions/mean_length']:.1f} | zero-std {rec['frac_reward_zero_std']:.2f} | "
            f"gen {rec['generation_seconds']:.2f}s score {rec['scoring_seconds']:.2f}s "
            f"upd {rec['update_seconds']:.2f}s | {rec['tokens_per_second']:.0f} tok/s")


def _versions() -> dict[str, str]:
    import transformers

    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}


# --- the command line: one option per GRPOConfig field, generated from the dataclass ---------------
def _parse_value(kind: Any, optional: bool, name: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"--{name} expects true or false, got {text!r}")
        if kind is tuple:
            return tuple(s.strip() for s in text.split(",") if s.strip())
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} expects {kind.__name__}, got {text!r}") from None

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def build_arg_parser() -> argparse.ArgumentParser:
    """argparse parser with --preset and one --option per GRPOConfig field (help = the field's docstring).

    Taught in: notebooks/05_full_run.ipynb
    """
    parser = argparse.ArgumentParser(
        prog="python -m grpo_lib.train",
        description="GRPO (DeepSeekMath, arXiv 2402.03300) on the tiny CPU preset or Qwen2.5 on GSM8K. "
                    "Start from --preset, then override any option. Paper symbols in [brackets].",
        epilog="Example: python -m grpo_lib.train --preset tiny --steps 50 --output-dir runs/tiny50",
    )
    parser.add_argument("--preset", default=argparse.SUPPRESS, choices=list(PRESETS),
                        help="starting values: 'tiny' (CPU, minutes; the default) or 'qwen2.5-1.5b-gsm8k' "
                             "(the tutorial's GPU run). With --resume the starting values are the checkpoint's")
    parser.add_argument("--config", dest="config_file", metavar="FILE.yaml", default=argparse.SUPPRESS,
                        help="a recipe: a YAML mapping of option names to values (and optionally 'preset'), "
                             "applied on top of the preset; options on the command line win over it")
    docs, types_ = field_docs(), field_types()
    tiny, qwen = GRPOConfig.tiny(), GRPOConfig.full()
    for f in fields(GRPOConfig):
        if f.name == "preset":
            continue
        kind, optional = base_type(types_[f.name])
        symbol = f"[{SYMBOLS[f.name]}] " if f.name in SYMBOLS else ""
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        text = (f"{symbol}{docs.get(f.name, '')}" + (" ('none' for None)" if optional else "")
                + f" (tiny: {_show(getattr(tiny, f.name))}; {qwen.preset}: {_show(getattr(qwen, f.name))})")
        if kind is bool:                   # a bare flag turns it on, --no-X off; "--X false" still works
            parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, nargs="?", const=True,
                                type=_parse_value(kind, optional, f.name), metavar="BOOL",
                                help=text.replace("%", "%%"))
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=f"same as --{f.name.replace('_', '-')} false")
            continue
        parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, type=_parse_value(kind, optional, f.name),
                            metavar=kind.__name__.upper() if kind is not tuple else "A,B",
                            help=text.replace("%", "%%"))
    return parser


def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """The option values of a YAML recipe (`--config FILE.yaml`): a mapping of GRPOConfig fields (and 'preset').

    Keys may use dashes or underscores (`max-completion-length` or `max_completion_length`).

    Raises:
        ValueError: the file is missing, is not a YAML mapping, or names an unknown option (the message
            names the file and the key, and suggests the closest option).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: must be a mapping of option: value, got {type(data).__name__}")
    names = {f.name for f in fields(GRPOConfig)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            import difflib

            close = difflib.get_close_matches(name, sorted(names), n=1)
            raise ValueError(f"--config {path}: unknown option {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return "none" if value is None else str(value)


def parse_config(argv: Sequence[str] | None = None) -> GRPOConfig:
    """The GRPOConfig described by command-line arguments (preset values, then the overrides).

    With `--resume DIR` the starting values are the configuration saved in the checkpoint, so
    `--resume DIR` alone continues the same run; options given with it override the saved values, and
    `train` refuses those that would change the training (grpo_lib.checkpoint.RESUME_MAY_DIFFER lists
    the ones that may change). A bad value, or a --resume folder without a complete checkpoint, exits
    with argparse's usage message naming the option.

    Taught in: notebooks/05_full_run.ipynb
    """
    parser = build_arg_parser()
    ns = vars(parser.parse_args(argv))
    preset = ns.pop("preset", None)
    try:
        recipe = load_recipe(ns.pop("config_file")) if "config_file" in ns else {}
        preset = preset or recipe.pop("preset", None)
        recipe.pop("preset", None)
        ns = batch_override(recipe, ns)             # command line over the recipe (N / prompts_per_device replace each other)
        if ns.get("resume"):
            names = {f.name for f in fields(GRPOConfig)}
            saved = {k: v for k, v in checkpoint.saved_config(ns["resume"]).items() if k in names}
            return GRPOConfig(**{**batch_override(saved, ns), **({"preset": preset} if preset else {})})
        return GRPOConfig.from_preset(preset or "tiny", **ns)
    except (ValueError, TypeError) as e:
        parser.error(str(e))
        raise  # pragma: no cover  (parser.error exits)


@record        # under torchrun: the failing rank's traceback goes into torchrun's error report
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m grpo_lib.train` and of `torchrun ... -m grpo_lib.train`.

    Returns 0 when training completed, 1 when it stopped on a NaN/inf metric (`NonFiniteMetricError`),
    2 for a --resume checkpoint that cannot be continued; any other error propagates (exit status 1).
    """
    cfg = parse_config(argv)
    completed = False
    try:
        train(cfg)
        completed = True
    except (NonFiniteMetricError, checkpoint.CheckpointError) as e:
        if dist.env_rank()[0] == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1 if isinstance(e, NonFiniteMetricError) else 2
    finally:
        dist.cleanup(barrier=completed)     # all ranks leave together after a good run; never wait on a dead one
    return 0


if __name__ == "__main__":
    sys.exit(main())

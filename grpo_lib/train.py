"""GRPO training, top to bottom: DeepSeekMath's Algorithm 1 with μ inner updates, one process or many.

Commands (all options: `python -m grpo_lib --help`; any config field is an option; `python -m grpo_lib.train`
is the same command):

    # CPU, one process: the tiny preset (1M-param Qwen2 on two-digit addition), about 2 minutes on 2 cores
    python -m grpo_lib --preset tiny --output-dir runs/tiny

    # a checkpoint every 20 steps; after a crash or a kill, continue from the latest complete one
    python -m grpo_lib --preset tiny --save-every 20 --output-dir runs/tiny
    python -m grpo_lib --resume runs/tiny            # the saved configuration; same metrics as no stop

    # one GPU: the tutorial's run, Qwen2.5-1.5B-Instruct on GSM8K (hub, or a local copy with --data-dir)
    python -m grpo_lib --preset qwen2.5-1.5b-gsm8k --data-dir ../shared/data/gsm8k --output-dir runs/qwen

    # k GPUs on one machine: DistributedDataParallel over nccl; N (prompts per step) must divide by k
    torchrun --standalone --nproc_per_node=8 -m grpo_lib --preset qwen2.5-1.5b-gsm8k --N 8

    # 2 CPU processes (DDP over gloo): the same code path as the GPU run, on a laptop
    torchrun --standalone --nproc_per_node=2 -m grpo_lib --preset tiny --output-dir runs/tiny-ddp

From Python (a notebook): `result = train(GRPOConfig.tiny(steps=20))`, then `result["reward"]`,
`result.summary`, `result.eval_after`. The pieces of one step are importable on their own:
`generate_completions` and `score_rollout` (grpo_lib.rollout) and `policy_update` (here).

This file is the algorithm. What happens around a step (the output folder, resuming, metrics and files,
evaluations, checkpoints, failures) is `grpo_lib.run.Run` (grpo_lib/run/); the command line is grpo_lib.cli.

The algorithm (Shao et al. 2024, DeepSeekMath, Algorithm 1; rule-based rewards, so no reward-model update):

    for iteration = 1..I:                                    I = cfg.num_iterations
        π_ref ← π_θ                                           the reference moves once per iteration
        for step = 1..M:                                     M = cfg.steps
            sample N prompts; π_θold ← π_θ
            sample G completions o_1..o_G ~ π_θold(·|q) per prompt
            r_i = Σ_k r_k(q, o_i);  A_i = (r_i - mean_group r) / std_group r
            for μ updates:  minimise grpo_loss  (clipped ratio ρ = π_θ/π_θold, β·KL(π_θ‖π_ref))

Choices made here (1-6 shown in notebooks/05_full_run.ipynb; 7-8 tested in tests/test_checkpoint.py and
tests/test_ddp.py; notebooks/06_multi_gpu_qwen.ipynb shows 1 under torchrun, and 7):
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
6. W&B is offline unless you are logged in (grpo_lib.run.runlog); `--report-to none` turns it off.
7. Checkpoints (`--save-every K`) hold everything the next step depends on: weights, AdamW, the schedule,
   π_ref inside an outer iteration, every rank's RNG states, the metrics so far (grpo_lib.run.checkpoint).
   `--resume DIR` continues from one and gives the same metrics, step for step, as a run never stopped;
   metrics.jsonl is rewritten up to the checkpoint and then continued, never duplicated.
8. Failures stop the run loudly: a NaN or inf loss, grad norm, KL or reward stops it at that step with
   a message naming the step and the metric (`NonFiniteMetricError`); the AdamW step with a non-finite
   gradient is skipped (`policy_update`), no checkpoint is written after it, summary.json gets "status":
   "failed", and the command exits non-zero (grpo_lib.cli). Under torchrun a rank that raises makes
   torchrun stop the others and exit non-zero; a collective never waits longer than `dist_timeout_minutes`.
"""

from __future__ import annotations

if __name__ == "__main__":   # `python -m grpo_lib.train` is `python -m grpo_lib` (grpo_lib/__main__.py takes the
    import runpy             # output folder's lock before the heavy imports, then runs grpo_lib.cli)

    runpy.run_module("grpo_lib", run_name="__main__", alter_sys=True)

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from grpo_lib import dist
from grpo_lib.config import GRPOConfig
from grpo_lib.loss import grpo_loss, micro_batch_weight
from grpo_lib.precision import Precision
from grpo_lib.dynamic_sampling import Draw, draw_seed, sample_groups, score_draw
from grpo_lib.rollout import RewardFunc, ScoredRollout, completion_logprobs, generate_completions, score_rollout
from grpo_lib.run.lifecycle import UPDATE_PHASE, Run, TrainResult
from grpo_lib.sampler import sampler_correction, sync_sampler


def make_optimizer(model: nn.Module, cfg: GRPOConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW(η, (β1, β2), weight_decay) and its schedule: linear warm-up, then constant or cosine to 10%.

    The schedule is stepped once per optimizer step (I·M·μ in all).

    Taught in: notebooks/05_full_run.ipynb
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optimizer_lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))


def lr_factor(cfg: GRPOConfig) -> Callable[[int], float]:
    """The learning-rate multiplier after t optimizer steps: linear warm-up, then 1 or a cosine down to 0.1."""
    total, warmup = cfg.total_updates, cfg.warmup_steps

    def factor(t: int) -> float:  # t = optimizer steps taken so far
        if warmup and t < warmup:
            return (t + 1) / (warmup + 1)
        if cfg.lr_schedule == "cosine":
            return cosine_decay(min(1.0, (t - warmup) / max(1, total - warmup)))
        return 1.0

    return factor


def cosine_decay(progress: float, floor: float = 0.1) -> float:
    """Cosine from 1 at progress 0 down to `floor` at progress 1 (the schedule's decay after the warm-up)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def policy_update(policy: nn.Module, optimizer: torch.optim.Optimizer, batch: ScoredRollout, cfg: GRPOConfig,
                  precision: Precision | None = None) -> dict[str, float]:
    """One of the μ updates: log π_θ with gradients, grpo_loss, backward, gradient clipping, AdamW step.

    With cfg.micro_batch_size = b the B completions go through forward and backward b rows at a time
    and the gradients add up (gradient accumulation); each micro-batch's loss is weighted by
    `grpo_lib.loss.micro_batch_weight`, so that the sum is the loss of the whole batch. Same update, only
    one micro-batch of B×T×V logits in memory at a time. Under DDP, `no_sync` skips the gradient
    all-reduce on all but the last micro-batch.

    Under DDP (K ranks, each with B/K rows, gradients averaged): "grpo" and "dr_grpo" give the update of
    one process on all B rows; so does "dapo", whose token count is all-reduced over the ranks (as TRL
    does). "bnpo" is normalised per process (as in TRL): the update is the average of the K ranks'
    token means, which equals the 1-process update only when every rank has as many active tokens.
    Under gradient accumulation "bnpo" is the token mean of this process's whole batch, whatever
    micro_batch_size is; TRL instead averages its micro-batches' token means, so TRL's bnpo update changes
    with the micro-batch size (tests/test_golden_trl.py computes both).

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
                logp, entropy = completion_logprobs(policy, rollout, cfg.temperature, rows=rows,
                                                    return_entropy=True)                 # (b, T) with grad, (b, T)
            loss, stats = grpo_loss(
                logp, None if batch.logp_old is None else batch.logp_old[rows],
                None if batch.logp_ref is None else batch.logp_ref[rows], A[rows], mask[rows],
                epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, loss_type=cfg.loss_type,
                max_completion_length=cfg.max_completion_length, global_num_tokens=n_global,
                world_size=dist.get_world_size(), importance_sampling_level=cfg.importance_sampling_level,
                kl_estimator=cfg.kl_estimator, use_bias_correction_kl=cfg.use_bias_correction_kl,
                is_weights=None if batch.is_weights is None else batch.is_weights[rows],
            )
            m = mask[rows].float()
            stats["entropy"] = (entropy * m).sum() / m.sum().clamp(min=1)
            n_rows, n_tok = logp.shape[0], mask[rows].sum().item()
            weight = micro_batch_weight(cfg.loss_type, rows=n_rows, tokens=n_tok, batch_rows=B, batch_tokens=n_local)
            (loss * weight).backward()
        totals["loss"] += loss.item() * weight
        for k in means:                                                                  # token means: weight by tokens
            totals[k] += stats[k].item() * n_tok / max(n_local, 1)
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
    if torch.isfinite(grad_norm):        # a NaN/inf gradient would poison every weight: skip; train() stops
        optimizer.step()
    return {**totals, "grad_norm": float(grad_norm), "tokens": float(n_local)}


def sampling_seed(seed: int, step: int, rank: int, world_size: int) -> int:
    """The seed of one rank's rollouts at one step (choice 2): a different stream per rank and step."""
    return seed * 1_000_003 + step * world_size + rank


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
        `grpo_lib.run.runlog.METRICS`), evals.jsonl, summary.json, model/ (save_pretrained of the model and
        tokenizer) and, with cfg.save_every, checkpoints/step-XXXXXX/ (grpo_lib.run.checkpoint). With
        cfg.resume the run continues from a checkpoint and the history holds the steps before it too.

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
    with Run(cfg, make_optimizer, model=model, tokenizer=tokenizer, reward_funcs=reward_funcs,
             callback=callback) as run:   # processes, output folder, resume, data and model, evaluation before
        if run.cached is not None:     # this exact run already finished in this test session (grpo_lib.runcache)
            return run.cached
        model, policy, precision = run.model, run.policy, run.precision
        sampler = None                                 # the perturbed copy that samples (sampler_perturbation)
        for step, ref_model in run.steps():            # I outer iterations of M steps; π_ref ← π_θ per iteration
            # the sampler: None = π_θ itself, else a perturbed copy re-synced from π_θ (grpo_lib.sampler)
            sampler = sync_sampler(sampler, model, cfg.sampler_perturbation, seed=cfg.seed * 1_000_003 + step)

            def draw(d: int) -> Draw:   # N prompts (N/K on this rank), G completions o_i ~ π_θold = π_θ, rewards r_i
                problems, prompts = run.prompts(step, d)
                with run.phase("sampling"):
                    rollout = generate_completions(sampler or model, run.tokenizer, prompts, cfg.G,  # no DDP hooks
                                                   max_new_tokens=cfg.max_completion_length,
                                                   temperature=cfg.temperature,
                                                   seed=draw_seed(sampling_seed(cfg.seed, step, run.rank,
                                                                                run.world_size), d))
                with run.phase("scoring (reward functions, advantages, log-probs)"):
                    return score_draw(rollout, [p["answer"] for p in problems], run.reward_funcs)

            # under autocast the matmuls run in bf16 on the current fp32 weights (grpo_lib.precision choice 2)
            with precision.context():
                # one draw, or (DAPO's dynamic sampling) draws until N/K groups whose rewards differ
                drawn, metrics = sample_groups(draw, cfg.N_per_rank(run.world_size), device=run.info.device,
                                               max_draws=cfg.dynamic_sampling_max_draws if cfg.dynamic_sampling else 1,
                                               aggregation=cfg.multi_objective_aggregation)
                # group advantages A_i, log π_θold (only if μ > 1), log π_ref (only if β > 0)
                with run.phase("scoring (reward functions, advantages, log-probs)"):
                    batch = score_rollout(drawn.rollout, drawn.answers, run.reward_funcs, policy=model,
                                          ref_model=ref_model, scale_rewards=cfg.scale_rewards,
                                          temperature=cfg.temperature, need_old=cfg.mu > 1,
                                          chunk_size=cfg.micro_batch_size, scores=drawn.scores,
                                          multi_objective_aggregation=cfg.multi_objective_aggregation)
                    batch.mask_truncated = cfg.mask_truncated_completions   # DAPO: cut completions leave the loss
                    # a perturbed sampler: its log-probs against the trainer's, the correction weights
                    metrics.update(sampler_correction(
                        batch, model, sampler, temperature=cfg.temperature,
                        correction=cfg.vllm_importance_sampling_correction, mode=cfg.vllm_importance_sampling_mode,
                        clip_min=cfg.vllm_importance_sampling_clip_min, clip_max=cfg.vllm_importance_sampling_clip_max,
                        chunk_size=cfg.micro_batch_size))
                batch.metrics = metrics                # dynamic_sampling/*, sampling/* (empty when off)
                batch.scoring_seconds += drawn.scoring_seconds   # the reward functions ran in the draws
            # μ GRPO updates on the same batch: maximise the clipped objective minus β·KL
            with run.phase(UPDATE_PHASE, batch):
                updates = []
                for k in range(cfg.mu):
                    updates.append(policy_update(policy, run.optimizer, batch, cfg, precision))
                    run.scheduler.step()
                    run.check_weights(f"after update {k + 1} of mu = {cfg.mu}")
            run.record(step, batch, updates)           # metrics, non-finite stop, callback, evaluation, checkpoint
        sampler = None
        return run.finish()                            # evaluation after, the final model, summary.json

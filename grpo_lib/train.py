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

This file is the algorithm; the command line is grpo_lib.cli, the metrics, files and W&B are
grpo_lib.runlog, checkpoints and resuming are grpo_lib.checkpoint.

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
6. W&B is offline unless you are logged in (grpo_lib.runlog); `--report-to none` turns it off.
7. Checkpoints (`--save-every K`) hold everything the next step depends on: weights, AdamW, the schedule,
   π_ref inside an outer iteration, every rank's RNG states, the metrics so far (grpo_lib.checkpoint).
   `--resume DIR` continues from one and gives the same metrics, step for step, as a run never stopped;
   metrics.jsonl is rewritten up to the checkpoint and then continued, never duplicated.
8. Failures stop the run loudly: a NaN or inf loss, grad norm, KL or reward stops it at that step with
   a message naming the step and the metric (`NonFiniteMetricError`); the AdamW step with a non-finite
   gradient is skipped, no checkpoint is written after it, summary.json gets "status": "failed", and
   the command exits non-zero (grpo_lib.cli). Under torchrun a rank that raises makes torchrun stop the others and
   exit non-zero; a collective never waits longer than `dist_timeout_minutes`.
   Test hook: the environment variable GRPO_LIB_FAULT="raise@S" or "nan@S", optionally ":rankR"
   (comma-separated for several), raises on (or poisons the advantages of) step S, so the tests can
   go through these paths; "pause@S" waits inside step S for a stop signal (grpo_lib.failures choice 5),
   so a test can send one mid-run from outside. Real runs leave it unset.
"""

from __future__ import annotations

if __name__ == "__main__":     # the command line: lock --output-dir now, before the imports below take seconds,
    from grpo_lib.rundir import lock_output_dir_at_start   # so the run started first wins (grpo_lib.rundir choice 4)

    lock_output_dir_at_start()

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from grpo_lib import checkpoint, dist, runcache, rundir
from grpo_lib.config import GRPOConfig
from grpo_lib.data import build_prompt, check_prompts_fit, load_problems, max_context
from grpo_lib.evaluation import EvalResult, evaluate
from grpo_lib.failures import (FailureRecorder, NonFiniteWeightsError, RunFailed, RunStopped, StopNow, StopSignals,
                               logits_finite, max_abs_weight, parameters_finite)
from grpo_lib.loss import grpo_loss, micro_batch_weight
from grpo_lib.models import count_parameters, frozen_copy, load_policy
from grpo_lib.precision import Precision, dtype_name, resolve_precision
from grpo_lib.rewards import reward_functions
from grpo_lib.rollout import (RewardFunc, ScoredRollout, completion_logprobs, generate_completions, score_rollout,
                              set_gradient_checkpointing)
# [post-R1 engine options] LoRA, the perturbed sampler, dynamic sampling
from grpo_lib.dynamic_sampling import draw_problems, draw_seed, sample_groups, score_draw
from grpo_lib.lora import apply_lora, merge_adapters, reference_model, require_peft
from grpo_lib.sampler import sampler_correction, sync_sampler
from grpo_lib.runlog import (MODEL_SUBDIR, NonFiniteMetricError, RunLog, completed_summary, non_finite,
                             step_metrics, versions)

FAULT_ENV = "GRPO_LIB_FAULT"
"""test hook (choice 8): "raise@S", "nan@S", "pause@S", optionally ":rankR"; unset in real runs"""


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
        `grpo_lib.runlog.METRICS`), evals.jsonl, summary.json, model/ (save_pretrained of the model and
        tokenizer) and, with cfg.save_every, checkpoints/step-XXXXXX/ (grpo_lib.checkpoint). With
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
    t_start = time.perf_counter()
    # bad settings fail here, before the process group and any model: the batch (naming --N) and the precision
    N_local = cfg.N_per_rank(dist.env_rank()[2])
    N_global = cfg.global_N(dist.env_rank()[2])
    precision = resolve_precision(cfg.dtype, cfg.precision,
                                  dist.resolve_device(cfg.device, dist.env_rank()[1]))   # names --dtype / --precision
    info = dist.init_distributed(cfg.device, timeout_minutes=cfg.dist_timeout_minutes)
    rank, world = info.rank, info.world_size
    torch.manual_seed(cfg.seed)                      # same model init on every rank (and DDP broadcasts rank 0's)
    faults = _parse_faults(os.environ.get(FAULT_ENV, ""))
    # every rank must see the checkpoint: if one cannot, all fail now, naming the rank and the path
    ckpt = checkpoint.open_checkpoint_on_every_rank(cfg.resume, cfg.to_dict(), world) if cfg.resume else None

    # the output folder, checked (and cleared with --overwrite) before any heavy work (grpo_lib.rundir)
    out = Path(cfg.output_dir)
    lock = _take_output_dir(cfg, out, ckpt) if info.is_main else None    # one run per folder, held to the end
    failure = FailureRecorder(out, cfg.to_dict(), world, None if ckpt is None else ckpt.path,
                              None if ckpt is None else ckpt.skipped, write=info.is_main)
    # within one test session (GRPO_RUN_CACHE, set only by the test command) a run with exactly these settings
    # that already finished is copied instead of trained again (grpo_lib.runcache)
    plain = all(arg is None for arg in (model, tokenizer, reward_funcs, callback))
    cache = runcache.reusable(cfg, world_size=world, plain=plain)
    try:
        if cache and (cached := runcache.load(cfg)) is not None:
            return cached
        with StopSignals() as failure.signals:       # SIGTERM/SIGINT/SIGHUP: stop at the next step (failures choice 5)
            result = _train(cfg, info, ckpt, faults, failure, t_start, model=model, tokenizer=tokenizer,
                            reward_funcs=reward_funcs, callback=callback, precision=precision, N_global=N_global)
        if cache:
            runcache.store(cfg, result)
        return result
    except (RunStopped, StopNow) as e:               # a signal: summary.json "stopped", how to resume
        failure.stopped(e)
        raise
    except Exception as e:                           # every failure: summary.json "failed", one clear error
        wrapped = failure.fail(e)
        if wrapped is None:
            raise
        raise wrapped from e
    finally:
        if lock is not None:
            lock.release()


def _take_output_dir(cfg: GRPOConfig, out: Path, ckpt: checkpoint.Checkpoint | None) -> rundir.RunLock:
    """Lock the output folder (grpo_lib.rundir choice 4), then check it (and clear it with --overwrite)."""
    lock = rundir.lock_output_dir(out)
    try:
        if lock.taken_over:
            dist.print0(f"note: took over the lock of {out} from a run that ended without releasing it "
                        f"(killed?): {rundir.describe_holder(lock.taken_over)}")
        continuing = ckpt is not None and _same_folder(rundir.run_dir_of(ckpt.path), out)
        cleared = rundir.prepare_output_dir(out, overwrite=cfg.overwrite, continuing=continuing)
        if cleared:
            dist.print0(f"--overwrite: deleted the earlier run's {', '.join(cleared)} in {out}")
    except BaseException:
        lock.release()
        raise
    return lock


def _same_folder(a: Path | None, b: Path) -> bool:
    return a is not None and os.path.realpath(a) == os.path.realpath(b)


def _train(cfg: GRPOConfig, info: dist.DistInfo, ckpt: checkpoint.Checkpoint | None, faults: list,
           failure: FailureRecorder, t_start: float, *, model: nn.Module | None, tokenizer: Any,
           reward_funcs: Mapping[str, RewardFunc] | None,
           callback: Callable[[dict[str, Any], ScoredRollout], None] | None, precision: Precision,
           N_global: int) -> TrainResult:
    """The body of `train` once the output folder is known good; `failure` tracks the step and phase."""
    rank, world = info.rank, info.world_size
    N_local = cfg.N_per_rank(world)
    failure.phase = "loading the data and the model"
    train_problems, eval_problems, model, tokenizer, model_name, start = _prepare(cfg, info, model, tokenizer, ckpt,
                                                                                  precision)
    start_reference, start_fingerprint = start
    failure.stop_point(0 if ckpt is None else ckpt.step, info.device)   # a signal while loading: stop before evaluating
    reward_funcs = dict(reward_funcs) if reward_funcs is not None else reward_functions(cfg.reward_funcs)
    n_params = count_parameters(model)
    attn = getattr(model.config, "_attn_implementation", None) or "eager"
    run_info = {"world_size": world, "device": info.device, "attn_implementation": attn, **precision.to_dict(),
                "prompts_per_device": N_local, "completions_per_device": N_local * cfg.G,
                "global_prompts": N_global, "global_batch": N_global * cfg.G, "micro_batch_size": cfg.micro_batch_size}
    dist.print0(f"GRPO | preset {cfg.preset} | model {model_name} ({n_params:,} parameters) on {info.device} "
                f"x {world} process(es) | attention {attn}")
    dist.print0(f"precision: {precision.describe()}")
    dist.print0(f"batch: {N_local} prompts x G = {cfg.G} = {N_local * cfg.G} completions per GPU (process); "
                f"global batch over {world} process(es): {N_global} prompts = {N_global * cfg.G} completions per "
                f"step; {cfg.total_steps} steps x mu = {cfg.mu} updates; "
                f"{len(train_problems)} training / {len(eval_problems)} held-out problems")
    if ckpt is not None:
        for note in ckpt.skipped:                    # a damaged newer checkpoint is never passed over silently
            dist.print0(f"warning: skipped damaged checkpoint {note}")
        dist.print0(f"resuming from {ckpt.path} after step {ckpt.step}")
    failure.phase = "opening the output files"

    log = RunLog(cfg, info.is_main, history=ckpt.history if ckpt is not None else [],   # a resumed run continues
                 evals=ckpt.evals if ckpt is not None else [])

    def run_eval(step: int, desc: str) -> EvalResult:
        t0 = time.perf_counter()
        with precision.context():                   # bf16 matmuls on the current fp32 weights (mixed precision)
            result = evaluate(model, tokenizer, eval_problems, system_prompt=cfg.system_prompt,
                              max_new_tokens=cfg.max_completion_length, batch_size=cfg.eval_batch_size,
                              progress=cfg.progress, desc=desc)
        log.eval(step, result, time.perf_counter() - t0)
        return result

    threads_before = torch.get_num_threads()
    threads = dist.cpu_threads(cfg.num_threads)
    if threads is not None and info.device == "cpu":
        torch.set_num_threads(threads)              # restored when train() returns (a notebook keeps its own)
    try:
        optimizer, scheduler = make_optimizer(model, cfg)
        # the DDP constructor broadcasts rank 0's weights, so every rank starts from the same π_θ
        policy = model if world == 1 else DistributedDataParallel(
            model, device_ids=[info.local_rank] if info.device.startswith("cuda") else None)
        if start_reference is not None:
            dist.broadcast_module(start_reference)   # π_ref = rank 0's starting model on every rank
        ref_model, start_step, last_checkpoint = None, 0, None
        sampler = None                               # [post-R1] the perturbed copy that samples (sampler_perturbation)
        if ckpt is not None:                         # AdamW, the schedule, π_ref, this rank's RNG
            ref_model = ckpt.resume(model, optimizer, scheduler, rank=rank, beta=cfg.beta, steps_per_iteration=cfg.steps,
                                    start_reference=start_reference, reference_dtype=precision.reference_dtype)
            start_reference = None
            start_step, last_checkpoint = ckpt.step, ckpt.path
        # evaluate before training (after DDP's broadcast; a resumed run kept the first run's evaluation)
        failure.phase = "evaluation before training"
        eval_before = run_eval(0, "eval before") if ckpt is None else EvalResult.from_dict(ckpt.state["eval_before"])
        failure.accuracy_before = eval_before.strict_accuracy
        failure.stop_point(start_step, info.device)
        log.start_steps(start_step)
        failure.in_loop = True
        t_train = time.perf_counter()

        # ------------------------------ DeepSeekMath Algorithm 1 ------------------------------
        for step in range(start_step, cfg.total_steps):    # I outer iterations of M steps, as one loop
            saved_here = step == start_step or (cfg.save_every and step % cfg.save_every == 0)
            # a signal: stop here, between steps (failures choice 5); --save-on-stop checkpoints this point first
            failure.stop_point(step, info.device, save=None if not cfg.save_on_stop or saved_here else (
                lambda: _save(cfg, step - 1, world, log, eval_before, model, optimizer, scheduler, ref_model,
                              tokenizer=tokenizer, run_info=run_info, start_fingerprint=start_fingerprint)))
            t_step = time.perf_counter()
            failure.step, failure.phase = step + 1, "sampling"
            if step % cfg.steps == 0 and cfg.beta > 0:      # π_ref ← π_θ at the start of every outer iteration
                ref_model = None                            # free the old copy first
                # bf16 in mixed precision; [post-R1] with LoRA, the base model (adapters off) in the first iteration
                ref_model = reference_model(model, precision.reference_dtype, first_iteration=step < cfg.steps)
            # [post-R1] the sampler: None = π_θ itself; else a perturbed copy re-synced from π_θ (grpo_lib.sampler)
            sampler = sync_sampler(sampler, model, cfg.sampler_perturbation, seed=cfg.seed * 1_000_003 + step)

            def draw(d: int):   # draw d of this step: N/K prompts and G completions o_i ~ π_θold (= π_θ) for each
                problems = draw_problems(train_problems, step, d, N_global, cfg.seed, rank, world,
                                         cfg.dynamic_sampling_max_draws)        # d = 0: prompts_for_step, as before
                prompts = [build_prompt(tokenizer, p["question"], cfg.system_prompt) for p in problems]
                failure.phase = "sampling"
                rollout = generate_completions(sampler or model, tokenizer, prompts, cfg.G,   # unwrapped: no DDP hooks
                                               max_new_tokens=cfg.max_completion_length, temperature=cfg.temperature,
                                               seed=draw_seed(sampling_seed(cfg.seed, step, rank, world), d))
                failure.phase = "scoring (reward functions, advantages, log-probs)"
                return score_draw(rollout, [p["answer"] for p in problems], reward_funcs)   # rewards r_i, once

            # under autocast the matmuls run in bf16 on the current fp32 weights (grpo_lib.precision choice 2)
            with precision.context():
                # [post-R1] DAPO's dynamic sampling draws until N/K informative groups (one draw when it is off)
                drawn, extra_metrics = sample_groups(draw, N_local, max_draws=cfg.dynamic_sampling_max_draws
                                                     if cfg.dynamic_sampling else 1,
                                                     aggregation=cfg.multi_objective_aggregation, device=info.device)
                # group advantages A_i, log π_θold (only if μ > 1), log π_ref (only if β > 0)
                batch = score_rollout(drawn.rollout, drawn.answers, reward_funcs, policy=model,
                                      ref_model=ref_model, scale_rewards=cfg.scale_rewards,
                                      temperature=cfg.temperature, need_old=cfg.mu > 1,
                                      chunk_size=cfg.micro_batch_size,
                                      multi_objective_aggregation=cfg.multi_objective_aggregation, scores=drawn.scores)
                # [post-R1] the sampler's log-probs against the trainer's; correction weights (batch.is_weights)
                extra_metrics.update(sampler_correction(
                    batch, model, sampler, temperature=cfg.temperature,
                    correction=cfg.vllm_importance_sampling_correction, mode=cfg.vllm_importance_sampling_mode,
                    clip_min=cfg.vllm_importance_sampling_clip_min, clip_max=cfg.vllm_importance_sampling_clip_max,
                    chunk_size=cfg.micro_batch_size))
                batch.metrics = extra_metrics
                batch.scoring_seconds += drawn.scoring_seconds   # [post-R1] the reward functions ran in the draws
            if faults:
                _inject_fault(faults, step + 1, rank, batch, failure.signals)   # test hook (GRPO_LIB_FAULT); never in real runs
            # μ GRPO updates on the same batch: maximise the clipped objective minus β·KL
            failure.phase = "the policy update"
            t_update = time.perf_counter()
            updates = []
            for k in range(cfg.mu):
                updates.append(policy_update(policy, optimizer, batch, cfg, precision))
                scheduler.step()
                if not parameters_finite(model.parameters()):      # one fused check, before anything uses them
                    raise NonFiniteWeightsError(step + 1, f"the weights hold NaN or inf after update {k + 1} of "
                                                f"mu = {cfg.mu}", last_checkpoint)
            update_seconds = time.perf_counter() - t_update
            _check_logits(model, batch.rollout, step, info, last_checkpoint, precision)   # before the next sampling or a save
            # ---------------------------------------------------------------------------------------

            record = _step_record(batch, updates, cfg, step, info.device, update_seconds, scheduler, t_step, t_start,
                                  N_global)
            record.update(batch.metrics)             # [post-R1] dynamic_sampling/*, sampling/* (empty when off)
            log.step(record)
            bad = non_finite(record)                 # same on every rank: the record is all-reduced
            if bad:                                  # train() writes the failed summary.json
                raise NonFiniteMetricError(step + 1, bad, last_checkpoint)
            if callback is not None:
                failure.phase = "the step's callback"
                callback(record, batch)
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.total_steps:
                failure.phase = "evaluation"
                run_eval(step + 1, f"eval @ {step + 1}")
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                failure.phase = f"writing checkpoint step-{step + 1:06d}"
                last_checkpoint = _save(cfg, step, world, log, eval_before, model, optimizer, scheduler, ref_model,
                                        tokenizer=tokenizer, run_info=run_info, start_fingerprint=start_fingerprint)
                failure.last_checkpoint = last_checkpoint
        log.end_steps()
        train_seconds = time.perf_counter() - t_train
        del ref_model, sampler

        failure.phase = "evaluation after training"
        eval_after = run_eval(cfg.total_steps, "eval after")
        summary = completed_summary(cfg, model_name=model_name, world_size=world, device=info.device,
                                    n_params=n_params, eval_before=eval_before, eval_after=eval_after,
                                    train_seconds=train_seconds, wall_seconds=time.perf_counter() - t_start)
        summary.update(failure.resume_record())
        summary.update(run_info, saved_dtype=cfg.save_dtype or dtype_name(precision.param_dtype))
        failure.phase = "saving the final model"
        model = merge_adapters(model)                # [post-R1] LoRA: W + (α/r)·B A, a plain model (else unchanged)
        if info.is_main:   # in the master weights' dtype (fp32 in mixed precision) unless --save-dtype
            checkpoint.save_pretrained_model(model, tokenizer, log.out / MODEL_SUBDIR, dtype=cfg.save_dtype)
            summary["wall_seconds"] = time.perf_counter() - t_start
            log.summary(summary)
            dist.print0(f"accuracy {eval_before.strict_accuracy:.1%} -> {eval_after.strict_accuracy:.1%} "
                        f"in {summary['wall_seconds']:.0f} s; outputs in {log.out}")
        dist.barrier()
    finally:
        log.close()
        torch.set_num_threads(threads_before)
    model.eval()
    return TrainResult(history=log.history, evals=log.evals, summary=summary, eval_before=eval_before,
                       eval_after=eval_after, model=model, tokenizer=tokenizer, output_dir=log.out)


def _prepare(cfg: GRPOConfig, info: dist.DistInfo, model: nn.Module | None, tokenizer: Any,
             ckpt: checkpoint.Checkpoint | None, precision: Precision,
             ) -> tuple[list[dict], list[dict], nn.Module, Any, str, tuple[nn.Module | None, float]]:
    """Problems, then π_θ (in the master dtype) and its tokenizer, checked against each other before training.

    Also returns (start_reference, start_fingerprint): π_ref rebuilt from the starting model when a resumed
    checkpoint needs it (it lies in the first outer iteration, where π_ref was not saved), else None; and
    `weights_fingerprint` of rank 0's starting model (recorded in checkpoints, compared on resume).
    """
    # problems first: a missing data file fails before a model download
    train_problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
    eval_problems = load_problems(cfg.task, "test", data_dir=cfg.data_dir, n=cfg.eval_n)
    if cfg.lora_r:
        require_peft()                               # [post-R1] before the model loads
    if model is None:
        model, tokenizer = load_policy(cfg.model, device=info.device, dtype=precision.param_dtype,
                                       compute_dtype=precision.compute_dtype)
        model_name = cfg.model
    elif tokenizer is None:
        raise ValueError("train(cfg, model=...) needs the model's tokenizer too: train(cfg, model=m, tokenizer=tok)")
    else:
        model.to(device=info.device, dtype=precision.param_dtype)
        model_name = f"{type(model).__name__} passed to train()"
    if cfg.lora_r:
        model = apply_lora(model, cfg)               # [post-R1] LoRA adapters (peft); the rest frozen
    # rank 0's starting weights are the run's (DDP broadcasts them); recorded in checkpoints whose π_ref is them
    start_fingerprint = dist.all_gather_objects(weights_fingerprint(model))[0]
    start_reference = None
    if ckpt is not None:
        if ckpt.reference_is_initial and cfg.beta > 0 and ckpt.step % cfg.steps:
            saved = ckpt.state.get("start_fingerprint")
            if saved is not None and not math.isclose(saved, start_fingerprint, rel_tol=1e-6):
                raise checkpoint.CheckpointError(
                    f"--resume {cfg.resume}: {ckpt.path.name} was taken in the first outer iteration, where π_ref is "
                    f"the starting model, so π_ref was not saved; but the model this run starts from is not that "
                    f"model (weights fingerprint {start_fingerprint:.6g}, saved {saved:.6g}). Resume with the same "
                    f"--model (or the same model passed to train()).")
            start_reference = frozen_copy(model, precision.reference_dtype)   # before the checkpoint's weights
        ckpt.load_model(model)                       # π_θ as it was after step ckpt.step
    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True)      # for the updates; generation switches it off
    # every prompt plus max_completion_length must fit the model's context
    for what, problems in (("training prompt", train_problems), ("evaluation prompt", eval_problems)):
        prompts = [build_prompt(tokenizer, p["question"], cfg.system_prompt) for p in problems]
        check_prompts_fit(tokenizer, prompts, cfg.max_completion_length, max_context(model.config), what=what)
    return train_problems, eval_problems, model, tokenizer, model_name, (start_reference, start_fingerprint)


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


def _check_logits(model: nn.Module, rollout: Any, step: int, info: dist.DistInfo, last_checkpoint: Path | None,
                  precision: Precision) -> None:
    """Stop at `step` when the updated weights, though finite, are so large (--lr 1e10) that the logits of
    one row of this step's batch overflow: one forward pass of one sequence, one all-reduce.

    The forward pass runs under the run's precision context, like every other one: outside autocast, fp32
    master weights would reach the attention in fp32, which FlashAttention-2 refuses (a crash at step 1)."""
    with precision.context():
        bad_here = not logits_finite(model, rollout.input_ids, rollout.attention_mask)
    if dist.all_reduce_sum(torch.tensor(float(bad_here), device=info.device)).item():   # every rank stops
        raise NonFiniteWeightsError(step + 1, "the updated weights give NaN or inf logits (largest |w| = "
                                    f"{max_abs_weight(model.parameters()):.3g})", last_checkpoint)


def _step_record(batch: ScoredRollout, updates: list[dict[str, float]], cfg: GRPOConfig, step: int, device: str,
                 update_seconds: float, scheduler: Any, t_step: float, t_start: float, N_global: int) -> dict[str, Any]:
    """The metrics record of one step (grpo_lib.runlog.METRICS), over the completions and tokens of all ranks."""
    record = step_metrics(batch, updates, cfg.G, device=device)
    record.update(dist.all_reduce_metrics({"generation_seconds": batch.rollout.generation_seconds,
                                           "scoring_seconds": batch.scoring_seconds,
                                           "update_seconds": update_seconds}, op="mean", device=device))
    tokens = record["completions/mean_length"] * N_global * cfg.G
    step_seconds = time.perf_counter() - t_step
    return {"step": step + 1, "iteration": step // cfg.steps + 1, **record, "learning_rate": scheduler.get_last_lr()[0],
            "step_seconds": step_seconds, "tokens_per_second": tokens / step_seconds,
            "wall_seconds": time.perf_counter() - t_start}


def _save(cfg: GRPOConfig, step: int, world: int, log: RunLog, eval_before: EvalResult, model: nn.Module,
          optimizer: torch.optim.Optimizer, scheduler: Any, ref_model: nn.Module | None, *, tokenizer: Any,
          run_info: dict[str, Any], start_fingerprint: float) -> Path | None:
    """Checkpoint after `step` (rank 0 writes, all ranks send their RNG), then keep the newest save_total_limit.

    π_ref is saved only inside an outer iteration after the first: inside the first it is the starting
    model, recorded as "reference": "initial" (with the starting weights' fingerprint) and rebuilt on resume.
    """
    inside = cfg.beta > 0 and (step + 1) % cfg.steps != 0      # iteration end: the next step resets π_ref
    initial = inside and step // cfg.steps == 0
    keep_ref = ref_model if inside and not initial else None
    state = {"step": step + 1, "iteration": step // cfg.steps + 1, "world_size": world, "config": cfg.to_dict(),
             "history": log.history, "evals": log.evals, "eval_before": eval_before.to_dict(),
             "reference": "initial" if initial else ("saved" if keep_ref is not None else "none"),
             "start_fingerprint": start_fingerprint, "run": run_info, "versions": versions()}
    saved = checkpoint.save_checkpoint(log.out, step + 1, model=model, optimizer=optimizer, scheduler=scheduler,
                                       reference=keep_ref, state=state, tokenizer=tokenizer,
                                       keep=cfg.save_total_limit)
    dist.print0(f"checkpoint: {saved}")
    return saved


# --- test hook (choice 8): GRPO_LIB_FAULT makes a step raise or go NaN, so the tests reach the failure paths ---
def _parse_faults(spec: str) -> list[tuple[str, int, int | None]]:
    """GRPO_LIB_FAULT="raise@2:rank1,nan@3" -> [("raise", 2, 1), ("nan", 3, None)] (test hook, choice 8)."""
    faults = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            what, _, where = item.partition("@")
            step_text, _, rank_text = where.partition(":")
            rank = int(rank_text.removeprefix("rank")) if rank_text else None
            if what not in ("raise", "nan", "pause"):
                raise ValueError(what)
            faults.append((what, int(step_text), rank))
        except ValueError:
            raise ValueError(f"{FAULT_ENV}={spec!r}: each item must be 'raise@STEP', 'nan@STEP' or 'pause@STEP', optionally "
                             f"followed by ':rankR' (a test hook; unset it for real runs)") from None
    return faults


def _inject_fault(faults: list[tuple[str, int, int | None]], step: int, rank: int, batch: ScoredRollout,
                  signals: StopSignals | None = None) -> None:
    for what, at, on_rank in faults:
        if at == step and on_rank in (None, rank):
            if what == "pause":              # wait (mid-step) for a stop signal, so a test can send one from outside
                import sys

                print(f"{FAULT_ENV}: paused in step {step}, waiting for a signal", file=sys.stderr, flush=True)
                deadline = time.monotonic() + 600
                while signals is not None and signals.received is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            elif what == "raise":
                raise RuntimeError(f"{FAULT_ENV}: injected failure on rank {rank} at step {step}")
            else:
                batch.advantages = torch.full_like(batch.advantages, float("nan"))   # -> NaN loss and gradient


if __name__ == "__main__":
    import sys

    from grpo_lib.cli import main   # here, not at the top: grpo_lib.cli imports this module

    sys.exit(main())

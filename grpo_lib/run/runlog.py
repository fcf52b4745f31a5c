"""A run's bookkeeping: the per-step metrics, metrics.jsonl / evals.jsonl / summary.json, W&B, the console.

`grpo_lib.train` computes, `grpo_lib.run.lifecycle.Run` calls this module, which records. Only rank 0 writes
files and talks to W&B; every rank builds the same (all-reduced) records, so every rank takes the same decision
when a metric is not finite (grpo_lib.run.failures.non_finite).

Choices made here (1-4 tested in tests/test_train.py and tests/test_runlog.py; 5-5 tested in
tests/test_lock_and_signals.py):
1. The per-step metrics are defined once, in `METRICS` (name -> meaning): metrics.jsonl, W&B and the
   docs use the same names.
2. W&B is offline unless you are logged in: `WANDB_MODE=offline` is set in the environment (before wandb
   is imported) when WANDB_MODE is unset and no API key is configured. `--report-to none` turns it off.
   No key is ever read out or written.
3. metrics.jsonl is rewritten up to a resumed checkpoint and then continued, never duplicated.
4. summary.json is written to a temporary file and renamed (`write_summary`), so it is never half-written;
   a run that stops on a NaN/inf metric still writes one, with "status": "failed" (grpo_lib.run.failures).
5. The run's files are opened without following symlinks (`open_output`, O_NOFOLLOW): a link planted
   as metrics.jsonl or evals.jsonl is refused naming the file, and one planted as summary.json.tmp is
   removed rather than written through.
"""

from __future__ import annotations

import json
import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import transformers
from tqdm.auto import tqdm

from grpo_lib import dist
from grpo_lib.advantages import zero_std_fraction
from grpo_lib.config import GRPOConfig
from grpo_lib.dynamic_sampling import METRICS as dynamic_sampling_metrics
from grpo_lib.evaluation import EvalResult
from grpo_lib.rollout import ScoredRollout
from grpo_lib.run.layout import EVALS_FILE, METRICS_FILE, SUMMARY_FILE
from grpo_lib.sampler import METRICS as sampler_metrics

METRICS = {
    "step": "1-based step; the record describes the batch sampled at this step and the updates on it",
    "iteration": "outer iteration of Algorithm 1 (π_ref was reset at its start)",
    "reward": "mean total reward r over the B completions of all ranks (the sum of the reward functions)",
    "reward_std": "sample std of r over all B completions of all ranks (not within groups; TRL's reward_std)",
    "rewards/<name>/mean": "mean reward of one reward function over all ranks' completions, e.g. rewards/correctness/mean (TRL's name)",
    "rewards/<name>/std": "sample std of one reward function over all ranks' completions (TRL's name)",
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
OPTION_METRICS = {**dynamic_sampling_metrics, **sampler_metrics}
"""metrics in the records only when an option is on: dynamic_sampling (grpo_lib.dynamic_sampling) and
sampler_perturbation (grpo_lib.sampler), each defined once, in its module"""


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
        reward, reward_std, rewards/<name>/mean and /std, accuracy, frac_reward_zero_std, completions/mean_length,
        completions/clipped_ratio, loss, grad_norm (means over ranks), kl, entropy, clip_ratio/low_mean,
        clip_ratio/high_mean, clip_ratio/region_mean, ratio_mean (token means over all ranks).

    Used by: grpo_lib.run.lifecycle.Run (every step's record)
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
        **{key: value for i, name in enumerate(sorted(batch.rewards_per_func))       # TRL's names and statistics
           for key, value in ((f"rewards/{name}/mean", every[4 + i].mean().item()),
                              (f"rewards/{name}/std", every[4 + i].std().item() if r.numel() > 1 else 0.0))},
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


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (API key variable or a netrc entry); never reads the key out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        return netrc.netrc().authenticators(host) is not None
    except Exception:  # no ~/.netrc, or an unreadable one
        return False


def init_wandb(cfg: GRPOConfig, out: Path) -> Any:
    """Start a W&B run on rank 0 (offline unless logged in, see choice 2); None when report_to='none'."""
    if cfg.report_to != "wandb":
        return None
    if "WANDB_MODE" not in os.environ and not wandb_logged_in():
        os.environ["WANDB_MODE"] = "offline"        # in the environment, before import: mode="offline" alone still lets wandb look up its server at exit
    try:
        import wandb  # here, not at the top: WANDB_MODE must be set first, and wandb is optional
    except ImportError as e:
        raise ImportError("report_to='wandb' needs the wandb package (pip install wandb), or pass --report-to none") from e
    return wandb.init(project=cfg.wandb_project, name=out.name, dir=str(out), config=cfg.to_dict())


def versions() -> dict[str, str]:
    """Python, torch and transformers versions, recorded in summary.json and in checkpoints."""
    return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}


def format_record(rec: dict[str, Any], total: int) -> str:
    """The console line of one step (every `log_every` steps)."""
    return (f"step {rec['step']:>4}/{total} | reward {rec['reward']:.3f} | acc {rec['accuracy']:.2f} | "
            f"loss {rec['loss']:+.4f} | kl {rec['kl']:.4f} | H {rec['entropy']:.3f} | "
            f"len {rec['completions/mean_length']:.1f} | zero-std {rec['frac_reward_zero_std']:.2f} | "
            f"gen {rec['generation_seconds']:.2f}s score {rec['scoring_seconds']:.2f}s "
            f"upd {rec['update_seconds']:.2f}s | {rec['tokens_per_second']:.0f} tok/s")


def open_output(path: Path, mode: str = "w") -> Any:
    """Open a run output for writing ("w" truncates, "a" appends) without following a symlink: a link
    planted among a run's outputs is refused (OSError naming the file), never written through."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        if os.path.islink(path):
            raise OSError(e.errno, f"{path} is a symlink: a run never writes its outputs through a link; remove "
                          "it (or choose another --output-dir)") from None
        raise
    return os.fdopen(fd, mode)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json, written to a temporary file and renamed (never half-written, never through a symlink)."""
    tmp = out / (SUMMARY_FILE + ".tmp")
    try:
        if os.path.islink(tmp):                  # ours to replace: a planted link is removed, not followed
            tmp.unlink()
        with open_output(tmp) as f:
            f.write(json.dumps(summary, indent=2))
        os.replace(tmp, out / SUMMARY_FILE)
    except BaseException:                        # a full disk: no temporary file stays behind
        tmp.unlink(missing_ok=True)
        raise


class RunLog:
    """The files, W&B run and progress bar of one training run; writes only on the main rank.

    Args:
        cfg: the run's configuration (output_dir, report_to, log_every, progress, total steps).
        is_main: True on rank 0 (the only rank that writes).
        history, evals: the records so far (a resumed run continues them); the lists are appended to.
    """

    def __init__(self, cfg: GRPOConfig, is_main: bool, history: list[dict[str, Any]], evals: list[dict[str, Any]]):
        self.cfg, self.is_main, self.history, self.evals = cfg, is_main, history, evals
        self.out = Path(cfg.output_dir)
        self.run = self.metrics_file = self.evals_file = self.bar = None
        if is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.run = init_wandb(cfg, self.out)
            self.metrics_file = open_output(self.out / METRICS_FILE)  # rewritten up to the checkpoint, then continued
            self.evals_file = open_output(self.out / EVALS_FILE)
            self.metrics_file.writelines(json.dumps(rec) + "\n" for rec in history)
            self.evals_file.writelines(json.dumps(rec) + "\n" for rec in evals)

    def eval(self, step: int, result: EvalResult, seconds: float) -> None:
        """Record one evaluation (evals.jsonl, W&B, the console)."""
        record = {"step": step, "eval_seconds": seconds, **result.to_dict()}
        self.evals.append(record)
        if self.is_main:
            self.evals_file.write(json.dumps(record) + "\n")
            self.evals_file.flush()
            if self.run is not None:
                self.run.log({"eval/strict_accuracy": result.strict_accuracy,
                              "eval/lenient_accuracy": result.lenient_accuracy,
                              "eval/format_rate": result.format_rate}, step=step)
        dist.print0(f"[eval @ step {step}] {result}")

    def start_steps(self, start_step: int) -> None:
        """The progress bar of the training steps (rank 0, unless progress is off)."""
        self.bar = tqdm(total=self.cfg.total_steps, initial=start_step, desc="GRPO steps",
                        disable=not self.cfg.progress or not self.is_main)

    def step(self, record: dict[str, Any]) -> None:
        """Record one step (history, metrics.jsonl, W&B, the bar, a console line every log_every steps)."""
        self.history.append(record)
        if self.is_main:
            self.metrics_file.write(json.dumps(record) + "\n")
            self.metrics_file.flush()
            if self.run is not None:
                self.run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
            self.bar.update(1)
            self.bar.set_postfix(reward=f"{record['reward']:.2f}", acc=f"{record['accuracy']:.2f}")
            if record["step"] % self.cfg.log_every == 0 or record["step"] == self.cfg.total_steps:
                self.bar.write(format_record(record, self.cfg.total_steps))

    def end_steps(self) -> None:
        self.bar.close()

    def summary(self, summary: dict[str, Any], to_wandb: bool = True) -> None:
        """Write summary.json (rank 0) and, with to_wandb, copy its scalars to the W&B run summary."""
        if self.is_main:
            write_summary(self.out, summary)
            if to_wandb and self.run is not None:
                self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})

    def close(self) -> None:
        for f in (self.metrics_file, self.evals_file):
            if f is not None:
                f.close()
        if self.run is not None:
            self.run.finish()


def completed_summary(cfg: GRPOConfig, *, model_name: str, world_size: int, device: str, n_params: int,
                      eval_before: EvalResult, eval_after: EvalResult, train_seconds: float,
                      wall_seconds: float) -> dict[str, Any]:
    """summary.json of a completed run: accuracies before / after with their 95% CIs, sizes, timings, config."""
    return {
        "status": "completed", "preset": cfg.preset, "model": model_name,
        "accuracy_before": eval_before.strict_accuracy, "accuracy_after": eval_after.strict_accuracy,
        "accuracy_before_ci": list(eval_before.strict_ci), "accuracy_after_ci": list(eval_after.strict_ci),
        "lenient_accuracy_before": eval_before.lenient_accuracy, "lenient_accuracy_after": eval_after.lenient_accuracy,
        "format_rate_before": eval_before.format_rate, "format_rate_after": eval_after.format_rate,
        "eval_n": eval_after.n, "steps": cfg.total_steps, "world_size": world_size, "device": device,
        "parameters": n_params, "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
        "samples_before": eval_before.samples, "samples_after": eval_after.samples,
        "versions": versions(), "config": cfg.to_dict(),
    }


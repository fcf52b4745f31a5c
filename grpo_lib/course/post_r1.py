"""Measured runs of the GRPO variants that came after DeepSeek-R1, on the tiny model (notebook 07, "GRPO after R1").

Each experiment compares two or three arms (GRPOConfig overrides, e.g. GSPO against token-level GRPO) over a few
seeds, every run a short real GRPO run of the shipped tiny Qwen2. As for notebook 05's gallery
(`grpo_lib.course.gallery`), the outputs are committed (metrics.jsonl and summary.json per run, no model weights,
under `POST_R1_DIR/<experiment>/<arm>/seed<k>/`), the notebook loads them, and this command regenerates them:

    python -m grpo_lib.course.post_r1                          # every experiment into grpo_lib/assets/post_r1
    python -m grpo_lib.course.post_r1 --only gspo,kl           # some of them
    python -m grpo_lib.course.post_r1 --out /tmp/p --steps 2 --seeds 1   # a short version (what the cache test runs)

    compare("gspo")            # per arm: mean and 95% interval over seeds of the claim; per other arm: B - A
    plot_experiment("gspo")    # the experiment's metrics per step: mean over seeds, min-max band

tests/test_course_post_r1.py checks that the committed runs were made by these specs (the configuration in each
summary.json equals the spec's), that a short regeneration agrees with their first two steps, and compare()'s
arithmetic on hand-made records.

Choices made here (1-9 tested in tests/test_course_post_r1.py):
1. Every run is `GRPOConfig.tiny(**gallery.COMMON, steps=experiment.steps, **experiment.common, **arm, seed=seed)`:
   the gallery's settings (100 held-out problems, no W&B) with the experiment's step count, so two arms of an
   experiment differ only by the arm's overrides, and two seeds only by the seed (the prompt order and the
   sampling; the start is the same shipped model). Where two arms of different experiments have the same
   configuration and reward (the plain tiny preset is the reference of three experiments), the command trains it
   once per seed and copies the files (summary.json's "post_r1" entry says "same_run_as"); the LoRA experiment's
   full fine-tuning arm is trained again, in its own process, for its memory (choice 3).
2. The per-step metrics are the engine's, the gallery's (`gallery.EXTRA_METRICS`: kl_to_start, the lengths of
   right and wrong completions, measured by the gallery's callback) and `EXTRA_METRICS` here: the cumulative
   generated completions (with dynamic sampling a step generates more than N·G), the number of distinct
   advantage values per group (GDPO's argument: summing the rewards before normalising can give two different
   reward vectors the same advantage) and the number of distinct reward vectors per group, its upper bound
   (with the course's correctness and format rewards no two reward vectors have the same sum, so both
   aggregations reach that bound: the test checks the arithmetic and the runs).
3. The LoRA experiment's runs (`Experiment.fresh_process`) each train in a fresh Python process
   (multiprocessing "spawn"), so the peak resident memory (VmHWM of that process image, `_maxrss_bytes`, read
   at its start, after the model loads and at the end) is the run's own, not a previous run's; the other runs train one
   after another in the command's process (a fresh process added about 13 s per run, spawn and imports, in a
   4-run check at load 5-7) and record no memory (None): a shared process's peak would be any earlier run's.
   The trainable parameters are counted on the policy at the first step (after peft added its adapters), and
   "train_state_mb" is by count: trainable parameters × 16 bytes (fp32 weight, gradient and AdamW's two
   moments). The frozen weights are in memory too and are not in that number.
4. The intervals are 95% Student-t intervals over seeds: mean ± t(0.975, n-1)·s/√n (`t_interval`), and for a
   comparison the same interval of the per-seed differences B - A (paired by seed: the two arms share the
   prompts and the sampling seed, so the difference removes what the seed does to both). With 3 seeds
   t(0.975, 2) = 4.30: an interval is wide, and one that contains 0 means "no difference measured here".
5. Dynamic sampling is compared per generated completion, not per step: a step of the dynamic arm generates up
   to dynamic_sampling_max_draws × N·G completions. The claim "eval_accuracy_at_budget" is the held-out
   accuracy of the last evaluation (every 2 steps) made before the run had generated steps·N·G completions,
   what the plain arm generates in the whole run. The start has many flat groups by construction: the
   correctness reward alone (the format reward varies within almost every group) at τ = 0.5; at τ = 1 a
   quarter of the groups are flat at the first steps, at τ = 0.5 about half (measured with 3-step runs;
   the plain arm's frac_reward_zero_std shows it).
6. The random-reward control (`CoinFlipReward`) gives each completion 2.0 or 0.0 with probability 1/2 from its
   own generator seeded with the run's seed, whatever the completion: the advantages are then independent of
   what was written, so any change of held-out accuracy is what the updates do without a signal (drift, the
   clipping and KL terms, the seed), not learning from the reward.
7. The KL experiment measures the drift with the gallery's kl_to_start (k3 of the sampling policy to the
   starting model), the same measure in every arm; the engine's `kl` is the term β multiplies, which is the
   chosen estimator (k2, k3 or ρ·k3) and so not comparable across arms. At μ = 1 (this experiment) ρ = 1 in
   value and ∇(ρ·k3) = k3·∇log π_θ + ∇k3 = (log π_θ - log π_ref)·∇log π_θ = ∇k2: the ρ·k3 and k2 arms take
   the same gradient and differ by float rounding only (the test checks it on the runs); k3's gradient differs.
   ρ·k3 differs from k2 only once ρ ≠ 1, with μ > 1.
8. The mismatch experiment samples from a copy of the policy with Gaussian noise on every weight
   (sampler_perturbation "noise:σ"), with σ chosen so that TRL's sampling/sampling_logp_difference/mean is far
   above the bf16 copy's: in 2-step runs bf16 and σ = 1e-3 gave about 0.002, σ = 1e-2 about 0.09 (the noisy
   copy's own batch accuracy fell from about 0.68 to 0.45), σ = 3e-2 about 1-2 (it answered almost nothing
   right). σ = 1e-2: a real mismatch that still samples answers. The correction is TRL's default mode
   (sequence_mask, C_max 3).
9. Each summary.json is the engine's with "output_dir" None and a "post_r1" entry: experiment, arm, seed,
   overrides, reward, the evaluations (step, held-out strict accuracy), the trainable parameters, the peak
   memory, the wall time of the run and the machine's load average at its start and end (os.getloadavg), so a
   timing is never read as a quiet machine's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_lib.course import gallery
from grpo_lib.course.gallery import ExtraMetrics, jsonable_overrides

POST_R1_DIR = Path(__file__).resolve().parents[1] / "assets" / "post_r1"
"""where the committed runs live: <experiment>/<arm>/seed<k>/metrics.jsonl and summary.json"""

COMMON = {k: v for k, v in gallery.COMMON.items() if k != "steps"}
"""settings shared by every run (on top of the tiny preset): the gallery's, the step count is the experiment's"""

EVAL_METRIC = "eval/strict_accuracy"
"""the name plot_experiment gives the held-out evaluations (`RunRecord.eval_points`; the engine's W&B name)"""

EXTRA_METRICS = {
    "post_r1/generations": "completions generated up to and including this step (with dynamic sampling, every "
                           "draw's; else N·G per step)",
    "post_r1/distinct_advantages": "distinct advantage values within a group (rounded to 1e-6), mean over the "
                                   "groups whose advantages are not all equal (NaN when every group is flat)",
    "post_r1/distinct_reward_vectors": "distinct vectors (r_1, ..., r_K) of the reward functions within a group, "
                                       "mean over the same groups: the most distinct advantages a group can have",
}
"""the per-step metrics added here to the engine's and the gallery's (choice 2)"""


class CoinFlipReward:
    """The random-reward control: 2.0 or 0.0 with probability 1/2 per completion, whatever it says (choice 6).

    Its own `random.Random(seed)`, so a run is reproducible and the flips are independent of the completions.

    Used by: the experiment "random_reward"
    """

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = random.Random(seed)
        self.__name__ = "coin_flip"

    def __call__(self, prompts: Any, completions: Any, answer: Any = None, **kwargs: Any) -> list[float]:
        return [2.0 if self.rng.random() < 0.5 else 0.0 for _ in completions]


REWARDS: dict[str, Callable[[int], Mapping[str, Any]]] = {"coin_flip": lambda seed: {"coin_flip": CoinFlipReward(seed)}}
"""reward name -> (seed -> the reward_funcs given to train()); an arm without one uses the config's"""


@dataclass(frozen=True)
class Experiment:
    """One measured comparison of notebook 07.

    Attributes:
        name, title: key and one line for the notebook.
        question: the predict-then-look question asked before the result is shown.
        arms: arm name -> GRPOConfig overrides on top of `common`; the first arm is the baseline of compare().
        seeds: one run per arm and seed.
        steps: steps per run.
        metrics: the per-step metrics the notebook plots.
        claim: the summary quantity (a key of `QUANTITIES`) the comparison is about.
        common: GRPOConfig overrides shared by every arm (on top of the tiny preset and COMMON).
        rewards: arm -> a key of `REWARDS` for an arm trained on another reward than the config's.
        x: the x axis of plot_experiment: "step", or a per-step metric (e.g. "post_r1/generations").
        also: other quantities worth comparing (compare(name, quantity=...)).
        fresh_process: train each run in a fresh process and record its peak memory (choice 3).
    """

    name: str
    title: str
    question: str
    arms: Mapping[str, Mapping[str, Any]]
    seeds: tuple[int, ...]
    steps: int
    metrics: tuple[str, ...]
    claim: str
    common: Mapping[str, Any] = field(default_factory=dict)
    rewards: Mapping[str, str] = field(default_factory=dict)
    x: str = "step"
    also: tuple[str, ...] = ()
    fresh_process: bool = False

    def config(self, arm: str, seed: int, output_dir: str | Path = "x", **extra: Any):
        """The GRPOConfig of one run (choice 1), with `extra` (a shorter run) last."""
        from grpo_lib.config import GRPOConfig  # here, not at the top: reading the runs imports no torch

        if arm not in self.arms:
            raise KeyError(f"experiment {self.name!r} has no arm {arm!r}; arms: {', '.join(self.arms)}")
        return GRPOConfig.tiny(**{**COMMON, "steps": self.steps, **self.common, **self.arms[arm], "seed": seed,
                                  **extra, "output_dir": str(output_dir)})


SEEDS = (0, 1, 2)
MISMATCH_NOISE = "noise:1e-2"

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "gspo", "GSPO (one length-normalised ratio per completion, ε = 3e-4 / 4e-4) vs token-level GRPO, μ = 4",
        "With μ = 4 updates per batch, which clips more tokens, and which ends more accurate on held-out problems: "
        "GRPO's per-token ratio with ε = 0.2, or GSPO's per-sequence ratio with ε = 3e-4?",
        {"token": {}, "gspo": {"importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4}},
        SEEDS, 12, ("reward", "clip_ratio/region_mean", "grad_norm", "gallery/kl_to_start"), "eval_accuracy_end",
        common={"mu": 4}, also=("clip_fraction_mean", "grad_norm_mean")),
    Experiment(
        "cispo", "CISPO (cap the weight at ε_max = 5, stop its gradient, keep every token) vs clipping, μ = 4",
        "Clipping drops the gradient of a token whose ratio left [1-ε, 1+ε]; CISPO keeps it with a capped weight. "
        "With μ = 4, which has the larger gradient norm, and does either end more accurate?",
        {"clip": {"loss_type": "dapo"}, "cispo": {"loss_type": "cispo", "epsilon_high": 5.0}},
        SEEDS, 12, ("reward", "clip_ratio/region_mean", "grad_norm", "entropy"), "eval_accuracy_end",
        common={"mu": 4}, also=("clip_fraction_mean", "grad_norm_mean")),
    Experiment(
        "dynamic", "dynamic sampling vs plain, from a start where about half the groups are flat",
        "Dynamic sampling spends extra generations to fill the batch with groups that teach something. Per "
        "generated completion (not per step), does it reach a higher held-out accuracy?",
        {"plain": {}, "dynamic": {"dynamic_sampling": True, "dynamic_sampling_max_draws": 4}},
        SEEDS, 12, ("eval/strict_accuracy", "accuracy", "frac_reward_zero_std", "dynamic_sampling/draws"),
        "eval_accuracy_at_budget", common={"reward_funcs": ("correctness",), "temperature": 0.5, "eval_every": 2},
        x="post_r1/generations", also=("eval_accuracy_end", "generations_total")),
    Experiment(
        "kl", "the KL estimator as a loss at β = 0.2: k3 vs ρ·k3 (DeepSeek-V3.2) vs k2",
        "The three estimators have the same value near π_ref but different gradients. At β = 0.2 and a learning "
        "rate that lets the policy move (2e-4), which one ends farthest from the start?",
        {"k3": {}, "rho_k3": {"use_bias_correction_kl": True}, "k2": {"kl_estimator": "k2"}},
        SEEDS, 12, ("gallery/kl_to_start", "kl", "reward", "accuracy"), "kl_to_start_end",
        common={"beta": 0.2, "lr": 2e-4}, also=("eval_accuracy_end",)),
    Experiment(
        "mismatch", f"a perturbed sampler ({MISMATCH_NOISE}) with and without the importance-sampling correction",
        "The rollouts come from a noisy copy of the policy, the update trains the policy itself. Without a "
        "correction, does training drift or stall; with TRL's correction, does it recover the exact run?",
        {"exact": {}, "perturbed": {"sampler_perturbation": MISMATCH_NOISE},
         "corrected": {"sampler_perturbation": MISMATCH_NOISE, "vllm_importance_sampling_correction": True}},
        SEEDS, 12, ("sampling/sampling_logp_difference/mean", "sampling/importance_sampling_ratio/mean", "reward",
                    "gallery/kl_to_start"), "eval_accuracy_end", also=("logp_diff_mean", "kl_to_start_end")),
    Experiment(
        "random_reward", "a random reward (a coin flip per completion) vs the real reward",
        "A reward that ignores the answer: does held-out accuracy change, and if it does, is that learning?",
        {"real": {}, "random": {}}, SEEDS, 12, ("reward", "accuracy", "gallery/kl_to_start", "entropy"),
        "eval_accuracy_change", rewards={"random": "coin_flip"}, also=("eval_accuracy_end", "kl_to_start_end")),
    Experiment(
        "gdpo", "GDPO (normalise each reward, then sum) vs summing the rewards first",
        "The course sums correctness (0 / 1.5 / 2) and format (0.2 per tag). How many distinct advantage values "
        "does a group get under each aggregation?",
        {"sum_then_normalize": {}, "normalize_then_sum": {"multi_objective_aggregation": "normalize_then_sum"}},
        SEEDS, 12, ("post_r1/distinct_advantages", "post_r1/distinct_reward_vectors", "reward", "accuracy"),
        "distinct_advantages", also=("eval_accuracy_end",)),
    Experiment(
        "lora", "LoRA (r = 8, α = 32, lr × 10) vs full fine-tuning",
        "LoRA trains a small fraction of the parameters. How much less memory does the run take, and does it end "
        "as accurate?",
        {"full": {}, "lora": {"lora_r": 8}}, SEEDS, 12, ("reward", "accuracy", "grad_norm", "gallery/kl_to_start"),
        "eval_accuracy_end", also=("trainable_params", "train_state_mb", "peak_rss_mb", "rss_growth_mb"), fresh_process=True),
    Experiment(
        "clip_higher", "DAPO's clip-higher (ε_high = 0.28 above ε = 0.2) vs the symmetric clip, μ = 4",
        "With μ = 4 updates per batch the upper clip silences tokens with A > 0 once ρ > 1 + ε. Raising only the "
        "upper bound to 1.28: does the policy's entropy fall less, and does it end more accurate?",
        {"clip": {"loss_type": "dapo"}, "clip_higher": {"loss_type": "dapo", "epsilon_high": 0.28}},
        SEEDS, 12, ("entropy", "clip_ratio/high_mean", "clip_ratio/low_mean", "reward"), "entropy_end",
        common={"mu": 4}, also=("clip_high_mean", "eval_accuracy_end")),
)}
"""every experiment by name, in the notebook's order"""


# --- one run --------------------------------------------------------------------------------------------------
class _PostR1Extras(ExtraMetrics):
    """The gallery's callback (choice 2 there) plus EXTRA_METRICS and the trainable-parameter count (choices 2, 3)."""

    def __init__(self, model: Any, temperature: float, G: int):
        super().__init__(model, temperature)
        self.G, self.generations, self.trainable = G, 0, None

    def __call__(self, record: dict[str, Any], batch: Any) -> None:
        super().__call__(record, batch)
        if self.trainable is None:
            self.trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.generations += int(record.get("dynamic_sampling/generations", batch.rewards.numel()))
        adv, vec = distinct_per_group(batch.advantages, batch.rewards_per_func, self.G)
        self.rows[-1].update({"post_r1/generations": float(self.generations),
                              "post_r1/distinct_advantages": adv, "post_r1/distinct_reward_vectors": vec})


def distinct_per_group(advantages: Any, rewards_per_func: Mapping[str, Any], G: int) -> tuple[float, float]:
    """(distinct advantage values, distinct reward vectors) per group, means over the non-flat groups (choice 2).

    A group is non-flat when its advantages (rounded to 1e-6) are not all equal; both means are NaN when every
    group is flat. Advantages and rewards are (B,) in groups of G consecutive completions.
    """
    import torch

    adv = torch.as_tensor(advantages).detach().double().reshape(-1, G)
    per_func = torch.stack([torch.as_tensor(v).detach().double().reshape(-1, G)
                            for _, v in sorted(rewards_per_func.items())], dim=-1)          # (groups, G, K)
    counts, vectors = [], []
    for g in range(adv.shape[0]):
        values = torch.unique(torch.round(adv[g] * 1e6))
        if values.numel() > 1:
            counts.append(values.numel())
            vectors.append(torch.unique(torch.round(per_func[g] * 1e6), dim=0).shape[0])
    mean = lambda xs: sum(xs) / len(xs) if xs else math.nan
    return mean(counts), mean(vectors)


def _maxrss_bytes() -> int:
    """The peak resident memory of this process image: VmHWM of /proc/self/status on Linux (choice 3).

    Not getrusage's ru_maxrss: Linux carries it over from the parent through fork and exec, so a process that
    multiprocessing spawns from a large parent starts with the parent's peak (measured: 758 MiB at the start
    of every run spawned by a command that had trained 40 runs). VmHWM belongs to the memory map, which exec
    replaces. Elsewhere (macOS), ru_maxrss in bytes.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024                     # "VmHWM:   123456 kB"
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def run_arm(name: str, arm: str, seed: int, out: str | Path, *, steps: int | None = None, eval_n: int | None = None,
            quiet: bool = True, fresh: bool = False) -> dict[str, Any]:
    """Train one run of an experiment in THIS process and write its metrics.jsonl and summary.json (choices 2, 9).

    fresh: this process was started for this run (`run_arm_fresh`): record its peak memory (choice 3).

    Returns:
        {"metrics": the records, "summary": the summary}.

    Used by: `run_arm_fresh`
    """
    import contextlib
    import io

    rss_start = _maxrss_bytes()             # a fresh process: before torch is imported
    from grpo_lib.models import load_tiny_model  # here, not at the top: reading the runs imports no torch
    from grpo_lib.train import train

    exp = EXPERIMENTS[name]
    out = Path(out)
    extra = {k: v for k, v in (("steps", steps), ("eval_n", eval_n)) if v is not None}
    reward = exp.rewards.get(arm)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix=f"post_r1-{name}-{arm}-") as tmp:
        cfg = exp.config(arm, seed, tmp, **extra)
        t0 = time.perf_counter()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink if quiet else sys.stdout), \
                contextlib.redirect_stderr(sink if quiet else sys.stderr):
            model, tok = load_tiny_model()
            rss_loaded = _maxrss_bytes()
            extras = _PostR1Extras(model, cfg.temperature, cfg.G)
            result = train(cfg, model=model, tokenizer=tok, callback=extras,
                           reward_funcs=None if reward is None else REWARDS[reward](seed))
        seconds = time.perf_counter() - t0
        by_step = {row["step"]: row for row in extras.rows}
        metrics = [{**rec, **{k: v for k, v in by_step[rec["step"]].items() if k != "step"}} for rec in result.history]
        summary = dict(result.summary)
        summary["config"] = {**summary["config"], "output_dir": None}   # the temporary folder means nothing
        summary["post_r1"] = {
            "experiment": name, "arm": arm, "seed": seed, "overrides": jsonable_overrides({**exp.common, **exp.arms[arm]}),
            "reward": reward, "evals": [{"step": e["step"], "strict_accuracy": e["strict_accuracy"]} for e in result.evals],
            "trainable_params": extras.trainable, "fresh_process": fresh,
            "maxrss_start_bytes": rss_start if fresh else None,
            "maxrss_after_load_bytes": rss_loaded if fresh else None, "maxrss_end_bytes": _maxrss_bytes() if fresh else None,
            "train_call_seconds": seconds, "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
            "same_run_as": None}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in metrics))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return {"metrics": metrics, "summary": summary}


def _child(name: str, arm: str, seed: int, out: str, steps: int | None, eval_n: int | None) -> None:
    run_arm(name, arm, seed, out, steps=steps, eval_n=eval_n, fresh=True)


def run_arm_fresh(name: str, arm: str, seed: int, out: str | Path, *, steps: int | None = None,
                  eval_n: int | None = None) -> dict[str, Any]:
    """`run_arm` in a fresh process (multiprocessing "spawn"; choice 3); returns what it wrote.

    Raises:
        RuntimeError: the run's process failed (its exit code; its error was printed by the process).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_child, args=(name, arm, seed, str(out), steps, eval_n), name=f"post_r1-{name}-{arm}")
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"post_r1 run {name}/{arm}/seed{seed} failed in its process (exit code {proc.exitcode})")
    return _read_run(Path(out))


def _read_run(folder: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"metrics": rows, "summary": json.loads((folder / "summary.json").read_text())}


def run_folder(root: str | Path, name: str, arm: str, seed: int) -> Path:
    """root/<experiment>/<arm>/seed<k>: where one run's files are."""
    return Path(root) / name / arm / f"seed{seed}"


def _run_key(name: str, arm: str, seed: int, steps: int | None, eval_n: int | None) -> str:
    cfg = EXPERIMENTS[name].config(arm, seed, **{k: v for k, v in (("steps", steps), ("eval_n", eval_n)) if v is not None})
    exp = EXPERIMENTS[name]
    return json.dumps([cfg.to_dict(), exp.rewards.get(arm), exp.fresh_process], sort_keys=True, default=str)


def check_options(only: Sequence[str] | None = None, steps: int | None = None, seeds: int | None = None) -> list[str]:
    """The experiments a regeneration would run; raises ValueError naming the bad option before anything trains."""
    names = list(EXPERIMENTS) if only is None else list(only)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown or not names:
        raise ValueError(f"--only: unknown experiment(s) {', '.join(unknown) or '(none given)'}; experiments: "
                         f"{', '.join(EXPERIMENTS)}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1 (steps per run), got {steps}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1 (the first K seeds of each experiment), got {seeds}")
    return names


def regenerate(only: Sequence[str] | None = None, out: str | Path = POST_R1_DIR, *, steps: int | None = None,
               seeds: int | None = None, eval_n: int | None = None,
               log: Callable[[str], None] = lambda line: print(line, flush=True)) -> list[Path]:
    """Train the runs of the chosen experiments, each in a fresh process, into out/<experiment>/<arm>/seed<k>.

    A run whose configuration and reward equal one already trained by this call is copied (choice 1).

    Args:
        only: experiment names (None = all); steps: steps per run (None = the experiment's);
        seeds: the first K seeds of each experiment (None = all); eval_n: held-out problems (None = COMMON's).

    Returns:
        the run folders written.

    Raises:
        ValueError: a bad option (named), before anything trains.
    """
    names = check_options(only, steps, seeds)
    done: dict[str, Path] = {}
    written = []
    for name in names:
        exp = EXPERIMENTS[name]
        for seed in exp.seeds[:seeds]:
            for arm in exp.arms:
                folder = run_folder(out, name, arm, seed)
                key = _run_key(name, arm, seed, steps, eval_n)
                if key in done:
                    folder.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(done[key] / "metrics.jsonl", folder / "metrics.jsonl")
                    summary = json.loads((done[key] / "summary.json").read_text())
                    first = summary["post_r1"]
                    summary["post_r1"] = {**first, "experiment": name, "arm": arm,
                                          "overrides": jsonable_overrides({**exp.common, **exp.arms[arm]}),
                                          "same_run_as": f"{first['experiment']}/{first['arm']}/seed{seed}"}
                    (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
                    log(f"{name}/{arm}/seed{seed}: the same run as {summary['post_r1']['same_run_as']} (copied)")
                else:
                    run = (run_arm_fresh if exp.fresh_process else run_arm)(name, arm, seed, folder, steps=steps,
                                                                             eval_n=eval_n)
                    done[key] = folder
                    s, p, m = run["summary"], run["summary"]["post_r1"], run["metrics"]
                    log(f"{name}/{arm}/seed{seed}: {p['train_call_seconds']:.1f} s (load {p['loadavg_start'][0]:.1f}) | "
                        f"acc {s['accuracy_before']:.2f} -> {s['accuracy_after']:.2f} | reward {m[0]['reward']:.2f} -> "
                        f"{m[-1]['reward']:.2f} | kl_to_start {m[-1]['gallery/kl_to_start']:.4f}"
                        + ("" if p["maxrss_end_bytes"] is None else f" | peak {p['maxrss_end_bytes'] / 2**20:.0f} MiB"))
                written.append(folder)
    return written


# --- reading the committed runs -------------------------------------------------------------------------------
@dataclass
class RunRecord:
    """One committed run: its arm, seed, per-step rows (metrics.jsonl) and summary (summary.json)."""

    arm: str
    seed: int
    rows: list[dict[str, Any]]
    summary: dict[str, Any]

    def series(self, metric: str) -> list[float]:
        """The metric over steps (NaN where a step lacks it)."""
        return [float(r[metric]) if r.get(metric) is not None else math.nan for r in self.rows]

    def eval_points(self, x: str = "step") -> tuple[list[float], list[float]]:
        """The held-out evaluations (before training, every eval_every steps, after): (x, strict accuracy).

        x "step" gives the step (0 = before training); a per-step metric gives its value at that step (0 before
        training), e.g. the cumulative generations.
        """
        at = {0: 0.0, **{r["step"]: float(r.get(x, math.nan)) for r in self.rows}} if x != "step" else None
        evals = self.summary["post_r1"]["evals"]
        xs = [float(e["step"]) if at is None else at.get(e["step"], math.nan) for e in evals]
        return xs, [e["strict_accuracy"] for e in evals]


def load_experiment(name: str, root: str | Path = POST_R1_DIR) -> dict[str, list[RunRecord]]:
    """arm -> one RunRecord per seed found (in the experiment's seed order).

    Raises:
        KeyError: no such experiment. FileNotFoundError: an arm has no run (the message gives the command).

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"no post-R1 experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    runs: dict[str, list[RunRecord]] = {}
    for arm in exp.arms:
        runs[arm] = []
        for seed in exp.seeds:
            folder = run_folder(root, name, arm, seed)
            if (folder / "metrics.jsonl").is_file() and (folder / "summary.json").is_file():
                run = _read_run(folder)
                runs[arm].append(RunRecord(arm, seed, run["metrics"], run["summary"]))
        if not runs[arm]:
            where = "" if Path(root) == POST_R1_DIR else f" --out {root}"
            raise FileNotFoundError(f"{run_folder(root, name, arm, exp.seeds[0])} is missing: run "
                                    f"`python -m grpo_lib.course.post_r1 --only {name}{where}` to make it")
    return runs


# --- the summary quantities and their comparison --------------------------------------------------------------
def _mean_last(values: Sequence[float], k: int = 5) -> float:
    tail = [v for v in values[-k:] if not math.isnan(v)]
    return sum(tail) / len(tail) if tail else math.nan


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def accuracy_at_budget(run: RunRecord) -> float:
    """Held-out accuracy of the last evaluation made before the run had generated steps·N·G completions (choice 5).

    The budget is what a run without dynamic sampling generates in `steps` steps; the generations at an
    evaluation of step s are those of steps 1..s (0 before training).
    """
    cfg = run.summary["config"]
    budget = len(run.rows) * cfg["N"] * cfg["G"]
    cumulative = {0: 0.0, **{r["step"]: r["post_r1/generations"] for r in run.rows}}
    best = math.nan
    for e in run.summary["post_r1"]["evals"]:
        if cumulative.get(e["step"], math.inf) <= budget:
            best = e["strict_accuracy"]          # evals are in step order: the last one within the budget wins
    return best


QUANTITIES: dict[str, tuple[str, Callable[[RunRecord], float]]] = {
    "eval_accuracy_end": ("held-out strict accuracy after training (greedy, 100 problems)",
                          lambda r: r.summary["accuracy_after"]),
    "eval_accuracy_change": ("held-out strict accuracy after minus before training",
                             lambda r: r.summary["accuracy_after"] - r.summary["accuracy_before"]),
    "eval_accuracy_at_budget": ("held-out accuracy at a budget of steps·N·G generated completions", accuracy_at_budget),
    "generations_total": ("completions generated in the whole run", lambda r: r.rows[-1]["post_r1/generations"]),
    "kl_to_start_end": ("kl_to_start, mean of the last 5 steps", lambda r: _mean_last(r.series("gallery/kl_to_start"))),
    "clip_fraction_mean": ("clip_ratio/region_mean, mean over steps",
                           lambda r: _nanmean(r.series("clip_ratio/region_mean"))),
    "grad_norm_mean": ("grad_norm (before clipping), mean over steps", lambda r: _nanmean(r.series("grad_norm"))),
    "entropy_end": ("entropy of the policy (nats per token), mean of the last 5 steps",
                    lambda r: _mean_last(r.series("entropy"))),
    "clip_high_mean": ("clip_ratio/high_mean (tokens clipped from above), mean over steps",
                       lambda r: _nanmean(r.series("clip_ratio/high_mean"))),
    "distinct_advantages": ("distinct advantage values per non-flat group, mean over steps",
                            lambda r: _nanmean(r.series("post_r1/distinct_advantages"))),
    "logp_diff_mean": ("sampling/sampling_logp_difference/mean, mean over steps",
                       lambda r: _nanmean(r.series("sampling/sampling_logp_difference/mean"))),
    "trainable_params": ("trainable parameters", lambda r: float(r.summary["post_r1"]["trainable_params"])),
    "train_state_mb": ("trainable parameters × 16 bytes (weight, gradient, AdamW's 2 moments), MiB",
                       lambda r: r.summary["post_r1"]["trainable_params"] * 16 / 2**20),
    "peak_rss_mb": ("peak resident memory of the run's process (VmHWM), MiB",
                    lambda r: r.summary["post_r1"]["maxrss_end_bytes"] / 2**20),
    "rss_growth_mb": ("peak resident memory minus the peak after loading the model, MiB",
                      lambda r: (r.summary["post_r1"]["maxrss_end_bytes"]
                                 - r.summary["post_r1"]["maxrss_after_load_bytes"]) / 2**20),
}
"""quantity name -> (what it is, how it is read from one run)"""

T_975 = (12.706204736174698, 4.302652729911275, 3.182446305284263, 2.7764451051977934, 2.5705818356363146,
         2.446911851144969, 2.364624251592785, 2.3060041352041662, 2.2621571628540993, 2.2281388519649385,
         2.200985160082949, 2.1788128296634177, 2.1603686564610127, 2.1447866879169273, 2.131449545559323,
         2.1199052992210112, 2.1098155778331806, 2.100922040241039, 2.093024054408263, 2.0859634472658364)
"""the 0.975 quantile of Student's t with 1..20 degrees of freedom (no scipy in the course's environment)"""


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% Student-t interval mean ± t(0.975, n-1)·s/√n (choice 4); lo = hi = NaN for n < 2.

    Raises:
        ValueError: no values, or more than 21 (the table's end).
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0 or n > len(T_975) + 1:
        raise ValueError(f"t_interval needs 1 to {len(T_975) + 1} values, got {n}")
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, math.nan
    s = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = T_975[n - 2] * s / math.sqrt(n)
    return mean, mean - half, mean + half


def compare_runs(runs: Mapping[str, Sequence[RunRecord]], quantity: str) -> list[dict[str, Any]]:
    """compare() on given runs: one row per arm, then one per other arm minus the first (paired by seed)."""
    if quantity not in QUANTITIES:
        raise KeyError(f"no quantity {quantity!r}; quantities: {', '.join(QUANTITIES)}")
    read = QUANTITIES[quantity][1]
    values = {arm: {r.seed: read(r) for r in recs} for arm, recs in runs.items()}
    rows = []
    for arm, by_seed in values.items():
        mean, lo, hi = t_interval(list(by_seed.values()))
        rows.append({"arm": arm, "quantity": quantity, "n_seeds": len(by_seed), "mean": mean, "lo": lo, "hi": hi})
    arms = list(values)
    base = values[arms[0]]
    for arm in arms[1:]:
        seeds = [s for s in values[arm] if s in base]
        if seeds:
            mean, lo, hi = t_interval([values[arm][s] - base[s] for s in seeds])
            rows.append({"arm": f"{arm} - {arms[0]}", "quantity": quantity, "n_seeds": len(seeds),
                         "mean": mean, "lo": lo, "hi": hi})
    return rows


def compare(name: str, root: str | Path = POST_R1_DIR, quantity: str | None = None) -> list[dict[str, Any]]:
    """The experiment's comparison: per arm {"arm", "quantity", "n_seeds", "mean", "lo", "hi"} (95% t-interval over
    seeds), then per other arm the same for B - A, A the first arm, paired by seed (choice 4).

    Args:
        quantity: a key of QUANTITIES; None = the experiment's claim.

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    return compare_runs(load_experiment(name, root), quantity or EXPERIMENTS[name].claim)


def format_compare(rows: Sequence[Mapping[str, Any]]) -> str:
    """compare()'s rows as aligned text: arm, mean [lo, hi] (n seeds)."""
    return "\n".join(f"{r['arm']:>40}  {r['quantity']}: {r['mean']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}] "
                     f"(n = {r['n_seeds']})" for r in rows)


def plot_experiment(name: str, metrics: Sequence[str] | None = None, root: str | Path = POST_R1_DIR,
                    runs: Mapping[str, Sequence[RunRecord]] | None = None):
    """One panel per metric: per arm the mean over seeds and the min-max band, against the experiment's x.

    With x a metric (dynamic sampling: cumulative generations) the curve is at each step's mean x over seeds.
    EVAL_METRIC draws the held-out evaluations (`RunRecord.eval_points`, before training included). Steps where
    a metric is NaN are left out, and so is an arm that does not log it (sampling/* without a perturbed sampler).

    Taught in: notebooks/07_grpo_after_r1.ipynb
    """
    import numpy as np
    from matplotlib.figure import Figure

    exp = EXPERIMENTS[name]
    runs = load_experiment(name, root) if runs is None else runs
    metrics = list(metrics or exp.metrics)
    fig = Figure(figsize=(4.2 * len(metrics), 3.3), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        for i, (arm, recs) in enumerate(runs.items()):
            if metric == EVAL_METRIC:
                points = [r.eval_points(exp.x) for r in recs]
                n = min(len(p[0]) for p in points)
                x = np.nanmean(np.array([p[0][:n] for p in points], dtype=float), axis=0)
                y = np.array([p[1][:n] for p in points], dtype=float)
            else:
                n = min(len(r.rows) for r in recs)
                y = np.array([r.series(metric)[:n] for r in recs], dtype=float)
                x = (np.arange(1, n + 1, dtype=float) if exp.x == "step"
                     else np.nanmean(np.array([r.series(exp.x)[:n] for r in recs], dtype=float), axis=0))
            keep = ~np.all(np.isnan(y), axis=0)
            if not keep.any():
                continue
            color = f"C{i}"
            with np.errstate(all="ignore"):
                ax.plot(x[keep], np.nanmean(y[:, keep], axis=0), color=color, label=f"{arm} ({len(recs)} seeds)",
                        marker="o" if metric == EVAL_METRIC else None, markersize=3)
                ax.fill_between(x[keep], np.nanmin(y[:, keep], axis=0), np.nanmax(y[:, keep], axis=0), color=color,
                                alpha=0.2, linewidth=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("generated completions" if exp.x == "post_r1/generations" else exp.x)
        ax.grid(alpha=0.3)
    max(axes, key=lambda ax: len(ax.lines)).legend(fontsize=8)      # the panel where every arm has a curve
    fig.suptitle(exp.title, fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_lib.course.post_r1", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(POST_R1_DIR), help="folder of the runs (default: %(default)s)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated experiments (default: all of {', '.join(EXPERIMENTS)})")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: each experiment's)")
    parser.add_argument("--seeds", type=int, default=None, help="the first K seeds of each experiment (default: all)")
    parser.add_argument("--eval-n", type=int, default=None, help=f"held-out problems (default {COMMON['eval_n']})")
    args = parser.parse_args(argv)
    only = None if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    try:
        names = check_options(only, args.steps, args.seeds)
        if args.eval_n is not None and args.eval_n < 1:
            raise ValueError(f"--eval-n must be >= 1, got {args.eval_n}")
    except ValueError as e:
        parser.error(str(e))
    t0 = time.perf_counter()
    regenerate(names, args.out, steps=args.steps, seeds=args.seeds, eval_n=args.eval_n)
    print(f"all runs: {time.perf_counter() - t0:.0f} s, load average now {os.getloadavg()[0]:.1f}", flush=True)
    for name in names:
        print(f"\n{name}: {EXPERIMENTS[name].claim}\n{format_compare(compare(name, args.out))}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A gallery of measured failing runs on the tiny model (notebook 05, "A gallery of failing runs").

Each entry is a short real GRPO run of the shipped tiny Qwen2 (`GRPOConfig.tiny`), with one change from the
healthy reference run, that shows one failure mode on the dashboard (`grpo_lib.course.plots.run_dashboard`).
The runs take tens of minutes each on the loaded 2-core course machine (each summary.json records
its own time), so their outputs are committed (metrics.jsonl and summary.json per
run, no model weights, under `GALLERY_DIR`) and the notebook loads them; this command regenerates them:

    python -m grpo_lib.course.gallery                      # all runs into grpo_lib/assets/gallery
    python -m grpo_lib.course.gallery --only healthy,mu    # some of them
    python -m grpo_lib.course.gallery --out /tmp/g --steps 2   # a short version (what the cache test runs)

tests/test_course_gallery.py checks that the committed cache was made by these specs (the configuration in
each summary.json equals the spec's) and that the first two steps of every run, regenerated, agree with the
cached rows.

Choices made here (1-5 shown in notebooks/05_full_run.ipynb; 1-5 tested in tests/test_course_gallery.py):
1. Every run is `GRPOConfig.tiny(**COMMON, **spec.overrides)`: the same seed, prompts and step count, so a run
   differs from the healthy one only by the overrides shown in the notebook (its "config diff").
2. The gallery adds three per-step metrics to the engine's (`EXTRA_METRICS`), measured by a `train(callback=)`
   on the same batch, because the dashboard of two failures needs them:
   - `gallery/kl_to_start`: the k3 KL between the policy that sampled the step's batch (π_θ before the step's
     update; the callback keeps a frozen copy of it) and the starting model, token mean over the batch: what
     the engine logs as `kl` when π_ref is the starting model and μ = 1 (tests/test_course_gallery.py checks
     they agree; with μ > 1 the engine averages its kl over the μ updates).
     With β = 0 the engine keeps no π_ref, so its `kl` logs 0 and cannot show a drift (run "beta0"); giving
     that run a tiny β to make `kl` appear would change the run being shown. The callback measures the drift
     without touching the update, and the same way in every run.
   - `gallery/length_wrong` and `gallery/length_right`: the mean |o_i| of the batch's wrong and right
     completions (strict correctness), for the length-bias run. NaN when the batch has none of that kind.
3. The flat-groups run ("r1_tags") rewards only DeepSeek-R1's `<think>…</think><answer>…</answer>` format with
   the right answer (`r1_strict_reward`). The tiny model was warmed up on `<reasoning>` tags and never writes
   `<think>` (the tag is not even one token of its vocabulary: it would have to spell it character by
   character), so every reward is 0: a format the start never produces, as when a recipe's reward is copied
   from a paper that used other tags.
4. The length-bias run needs wrong answers that are longer than right ones. At τ = 1 the tiny model's right
   answers have one length per problem and its wrong ones are about as long. Sampling at τ = 1.8 with room for 80
   tokens makes it garble most answers and write more (measured at the first steps: wrong completions about 25
   tokens, right ones about 20). Two runs differ only in loss_type: "grpo" (each completion's token losses
   divided by its own |o_i|, so a long wrong completion is pushed down less per token) and "dr_grpo" (divided
   by the constant |o|_max), the reference of the first.
5. Each run's summary.json is the engine's, with "output_dir" set to None (the run trained in a temporary
   folder, dropped with its model weights) and a "gallery" entry: the spec's name, reward and overrides, and
   the wall time of train() on the machine that made it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GALLERY_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery"
"""where the committed gallery runs live: <name>/metrics.jsonl and <name>/summary.json"""

COMMON = dict(steps=40, eval_n=100, report_to="none", progress=False, log_every=10)
"""settings shared by every gallery run (on top of the tiny preset): 40 steps, 100 held-out problems"""

EXTRA_METRICS = {
    "gallery/kl_to_start": "k3 KL of the policy that sampled this step's batch to the starting model, token mean "
                           "over the batch: the engine's `kl` when π_ref is the starting model and μ = 1, measured "
                           "also when β = 0 (where the engine logs 0)",
    "gallery/length_wrong": "mean |o_i| of this step's wrong completions (NaN when none is wrong)",
    "gallery/length_right": "mean |o_i| of this step's strictly right completions (NaN when none is right)",
}
"""the per-step metrics the gallery adds to the engine's METRICS (choice 2)"""

_R1 = re.compile(r"\A<think>(.+?)</think>\s*<answer>(.+?)</answer>\s*\Z", re.DOTALL)


def r1_strict_reward(prompts: Any, completions: Any, answer: Any, **kwargs: Any) -> list[float]:
    """2.0 for `<think>…</think>` then `<answer>X</answer>` and nothing else, with X equal to the gold; else 0.

    DeepSeek-R1's tags: the tiny model writes `<reasoning>` tags and never these (choice 3).

    Used by: the gallery run "r1_tags"
    """
    out = []
    for completion, gold in zip(completions, answer):
        text = completion[0]["content"] if isinstance(completion, list) else completion
        m = _R1.match(text) if isinstance(text, str) else None
        out.append(2.0 if m is not None and m.group(2).strip() == str(gold).strip() else 0.0)
    return out


@dataclass(frozen=True)
class GallerySpec:
    """One gallery run: what differs from the healthy run, and what the dashboard shows.

    Attributes:
        name: folder name and key (e.g. "lr_high").
        title: one line for the notebook.
        overrides: GRPOConfig fields on top of `GRPOConfig.tiny(**COMMON)` (the config diff).
        reward: None = the config's reward functions; "r1_strict" = `r1_strict_reward` only.
        reference: the run it is compared with on the dashboard.
    """

    name: str
    title: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    reward: str | None = None
    reference: str = "healthy"

    def config(self, output_dir: str | Path, **extra: Any):
        """The GRPOConfig of this run (the tiny preset, COMMON, the overrides, then `extra`)."""
        from grpo_lib.config import GRPOConfig  # here, not at the top: reading the gallery imports no torch

        return GRPOConfig.tiny(**{**COMMON, **self.overrides, **extra, "output_dir": str(output_dir)})


SPECS = {s.name: s for s in (
    GallerySpec("healthy", "the healthy reference: the tiny preset, 40 steps"),
    GallerySpec("lr_high", "learning rate too high (η = 2e-3, 40× the preset)", {"lr": 2e-3}),
    GallerySpec("beta0", "β = 0 with a large learning rate (η = 2e-4): nothing holds π_θ near the start",
                {"beta": 0.0, "lr": 2e-4}),
    GallerySpec("r1_tags", "a strict reward on tags the start never writes (DeepSeek-R1's <think>)",
                {"reward_funcs": ("correctness",)}, reward="r1_strict"),
    GallerySpec("mu4", "μ = 4 updates per batch", {"mu": 4}),
    GallerySpec("long_grpo", "loss_type 'grpo' when wrong answers are long (τ = 1.8, 80 tokens)",
                {"temperature": 1.8, "max_completion_length": 80, "loss_type": "grpo"}, reference="long_dr_grpo"),
    GallerySpec("long_dr_grpo", "the same with loss_type 'dr_grpo' (the reference of long_grpo)",
                {"temperature": 1.8, "max_completion_length": 80, "loss_type": "dr_grpo"}),
)}
"""every gallery run by name, the healthy reference first"""


def _reward_funcs(spec: GallerySpec) -> dict[str, Any] | None:
    if spec.reward is None:
        return None
    if spec.reward == "r1_strict":
        return {"r1_strict": r1_strict_reward}
    raise ValueError(f"gallery spec {spec.name!r}: unknown reward {spec.reward!r} (known: 'r1_strict')")


class ExtraMetrics:
    """The callback of choice 2: adds EXTRA_METRICS to every step, measured on the step's batch.

    Used by: `run_spec`; grpo_lib.course.post_r1 subclasses it.

    The KL is measured for the policy that sampled the batch (π_θ before this step's update): the callback keeps
    a frozen copy of π_θ from the previous step (the starting model at step 1). So it is the engine's `kl`
    when π_ref is the starting model (β > 0, one outer iteration) and μ = 1, and it exists when β = 0 too.
    """

    def __init__(self, model: Any, temperature: float):
        from grpo_lib.models import frozen_copy  # here, not at the top: reading the gallery imports no torch

        self.model, self.temperature = model, temperature
        self.start = frozen_copy(model)
        self.sampler = self.start                 # π_θ before the update of the coming step
        self.rows: list[dict[str, float]] = []

    def __call__(self, record: dict[str, Any], batch: Any) -> None:
        import torch  # here, not at the top: reading the gallery (SPECS, load_run) imports no torch

        from grpo_lib.loss import kl_k3
        from grpo_lib.models import frozen_copy
        from grpo_lib.rollout import completion_logprobs

        rollout, mask = batch.rollout, batch.mask.bool()
        with torch.no_grad():
            logp = completion_logprobs(self.sampler, rollout, self.temperature)
            logp_start = completion_logprobs(self.start, rollout, self.temperature)
        kl = (kl_k3(logp, logp_start) * mask).sum() / mask.sum().clamp(min=1)
        self.sampler = frozen_copy(self.model)    # the policy that samples the next step's batch
        lengths = rollout.completion_lengths.double()
        right = batch.correct.bool()
        mean = lambda t: t.mean().item() if t.numel() else math.nan
        self.rows.append({"step": record["step"], "gallery/kl_to_start": kl.item(),
                          "gallery/length_wrong": mean(lengths[~right]),
                          "gallery/length_right": mean(lengths[right])})


def run_spec(spec: GallerySpec, out: str | Path, *, steps: int | None = None, eval_n: int | None = None,
             quiet: bool = True) -> dict[str, Any]:
    """Train one gallery run and write its metrics.jsonl (engine metrics + EXTRA_METRICS) and summary.json.

    Args:
        spec: the run.
        out: its folder (created; the run's model weights are written to a temporary folder and dropped).
        steps, eval_n: override COMMON's (a short version for the cache test); None keeps them.
        quiet: hide the run's console log.

    Returns:
        {"metrics": the records, "summary": the summary, "seconds": wall time of train()}.

    Used by: `main` (the command) and tests/test_course_gallery.py
    """
    import contextlib
    import io

    from grpo_lib.models import load_tiny_model  # here, not at the top: reading the gallery imports no torch
    from grpo_lib.train import train

    out = Path(out)
    extra = {k: v for k, v in (("steps", steps), ("eval_n", eval_n)) if v is not None}
    with tempfile.TemporaryDirectory(prefix=f"gallery-{spec.name}-") as tmp:
        cfg = spec.config(tmp, **extra)
        t0 = time.perf_counter()
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink if quiet else sys.stdout), contextlib.redirect_stderr(sink if quiet else sys.stderr):
            model, tok = load_tiny_model()
            extras = ExtraMetrics(model, cfg.temperature)
            result = train(cfg, model=model, tokenizer=tok, reward_funcs=_reward_funcs(spec), callback=extras)
        seconds = time.perf_counter() - t0
        by_step = {row["step"]: row for row in extras.rows}
        metrics = [{**rec, **{k: v for k, v in by_step[rec["step"]].items() if k != "step"}}
                   for rec in result.history]
        summary = dict(result.summary)
        summary["config"] = {**summary["config"], "output_dir": None}   # the temporary folder means nothing
        summary["gallery"] = {"spec": spec.name, "reward": spec.reward, "overrides": jsonable_overrides(spec.overrides),
                              "train_call_seconds": seconds}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in metrics))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return {"metrics": metrics, "summary": summary, "seconds": seconds}


def jsonable_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Config overrides as JSON writes them back (tuples as lists), for a run's summary.

    Used by: `run_spec`, grpo_lib.course.post_r1
    """
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def load_run(name: str, directory: str | Path | None = None) -> dict[str, Any]:
    """One committed gallery run: {"metrics": [records], "summary": {...}, "spec": GallerySpec}.

    Raises:
        FileNotFoundError: the run's files are missing (the message gives the command that makes them).

    Taught in: notebooks/05_full_run.ipynb
    """
    if name not in SPECS:
        raise KeyError(f"no gallery run {name!r}; runs: {', '.join(SPECS)}")
    folder = Path(directory) if directory is not None else GALLERY_DIR
    files = folder / name / "metrics.jsonl", folder / name / "summary.json"
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: run `python -m grpo_lib.course.gallery --only {name}"
                                    f"{'' if directory is None else f' --out {folder}'}` to make it")
    metrics = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
    return {"metrics": metrics, "summary": json.loads(files[1].read_text()), "spec": SPECS[name]}


def config_diff(name: str) -> dict[str, tuple[Any, Any]]:
    """option -> (its value in the reference run, in this run), for every option where the two differ.

    The reference is the spec's (`healthy` for most runs), so the diff is what the notebook's comparison changes.

    Taught in: notebooks/05_full_run.ipynb
    """
    spec = SPECS[name]
    ref = SPECS[spec.reference]
    base, run = ref.config("x").to_dict(), spec.config("x").to_dict()
    diff = {k: (base[k], run[k]) for k in run if run[k] != base[k]}
    if spec.reward != ref.reward:       # train(reward_funcs=...) replaces the config's reward_funcs: show what ran
        diff.pop("reward_funcs", None)
        ran = lambda s, cfg: s.reward if s.reward is not None else " + ".join(cfg["reward_funcs"])
        diff["reward functions"] = (ran(ref, base), ran(spec, run))
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_lib.course.gallery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(GALLERY_DIR), help="folder of the runs (default: %(default)s)")
    parser.add_argument("--only", default=None, help=f"comma-separated runs (default: all of {', '.join(SPECS)})")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per run (default {COMMON['steps']})")
    args = parser.parse_args(argv)
    names = list(SPECS) if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; runs: {', '.join(SPECS)}")
    for name in names:
        done = run_spec(SPECS[name], Path(args.out) / name, steps=args.steps)
        m, s = done["metrics"], done["summary"]
        print(f"{name:>13}: {done['seconds']:5.1f} s | reward {m[0]['reward']:.2f} -> {m[-1]['reward']:.2f} | "
              f"acc {s['accuracy_before']:.2f} -> {s['accuracy_after']:.2f} | kl_to_start "
              f"{m[-1]['gallery/kl_to_start']:.4f} | clip {max(r['clip_ratio/region_mean'] for r in m):.4f} | "
              f"len {m[0]['completions/mean_length']:.1f} -> {m[-1]['completions/mean_length']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

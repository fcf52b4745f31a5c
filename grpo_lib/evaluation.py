"""Held-out evaluation: batched greedy decoding, strict and lenient accuracy, format rate, 95% intervals.

What only the course uses (sampled evaluation, pass@k and maj@k curves, Fisher's exact test) is
grpo_lib.course.evaluation.

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. Greedy decoding (`do_sample=False`), passed explicitly: the tutorial passed `temperature=0.7` without
   `do_sample`, so its evaluation followed the checkpoint's sampling settings and was probably random.
2. The same `max_completion_length` as training (the tutorial trained with 400 new tokens and evaluated
   with 512), on held-out problems: the tiny task's 300 test sums, GSM8K's *test* split (the tutorial
   evaluated 30 questions of the train split it trained on).
3. Three rates per run:
   - strict accuracy: the answer inside the last closed `<answer>` tag is right (`rewards.strict_correct`);
   - lenient accuracy: the last number anywhere in the completion is right (`rewards.lenient_correct`),
     which forgives a broken format;
   - format rate: one well-formed `<reasoning>…</reasoning> <answer>…</answer>` and nothing else around
     it (`rewards.strict_format_reward` > 0), so a run-on "Human: ..." after `</answer>` fails it.
4. Each rate gets a 95% Wilson score interval (`wilson_interval`). Unlike the textbook p ± 1.96·sqrt(p(1-p)/n),
   it stays inside [0, 1] and does not collapse to zero width at p = 0 or 1: on 30 questions, 27 right
   (the tutorial's 90%) is [74.4%, 96.5%], so "23% → 90%" on 30 questions is a wide claim.
5. Under torchrun each rank evaluates every k-th problem and the counts are summed over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from grpo_lib import dist
from grpo_lib.data import build_prompt
from grpo_lib.rewards import lenient_correct, strict_correct, strict_format_reward
from grpo_lib.rollout import generate_completions

Z_95 = 1.959963984540054
"""the 97.5% quantile of the standard normal: a two-sided 95% interval"""


def wilson_interval(k: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion k/n: (c ∓ h) with

        c = (p̂ + z²/2n) / (1 + z²/n),   h = z / (1 + z²/n) · sqrt(p̂(1 - p̂)/n + z²/4n²),   p̂ = k/n.

    Args:
        k: successes, 0 <= k <= n.
        n: trials, n >= 1 (n = 0 gives the uninformative (0, 1)).
        z: normal quantile (1.96 for 95%).

    Returns:
        (low, high), both in [0, 1]; 27 of 30 gives (0.744, 0.965).

    Taught in: notebooks/05_full_run.ipynb
    """
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)        # exact ends: no 0.9999999999999999 at k = n
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high



@dataclass
class EvalResult:
    """Greedy evaluation of a policy on n held-out problems.

    Attributes:
        n: problems evaluated.
        n_strict, n_lenient, n_format: how many were strictly right, leniently right, well-formatted.
        strict_accuracy, lenient_accuracy, format_rate: the same as fractions in [0, 1].
        strict_ci, lenient_ci, format_ci: 95% Wilson intervals (low, high).
        samples: a few {question, answer, completion, strict, lenient, format} dicts (the first problems).
    """

    n: int
    n_strict: int
    n_lenient: int
    n_format: int
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def strict_accuracy(self) -> float:
        return self.n_strict / self.n if self.n else 0.0

    @property
    def lenient_accuracy(self) -> float:
        return self.n_lenient / self.n if self.n else 0.0

    @property
    def format_rate(self) -> float:
        return self.n_format / self.n if self.n else 0.0

    @property
    def strict_ci(self) -> tuple[float, float]:
        return wilson_interval(self.n_strict, self.n)

    @property
    def lenient_ci(self) -> tuple[float, float]:
        return wilson_interval(self.n_lenient, self.n)

    @property
    def format_ci(self) -> tuple[float, float]:
        return wilson_interval(self.n_format, self.n)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalResult:
        """The EvalResult that `to_dict` described (a checkpoint's evaluation before training)."""
        return cls(n=d["n"], n_strict=d["n_strict"], n_lenient=d["n_lenient"], n_format=d["n_format"],
                   samples=list(d.get("samples", [])))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, rates, intervals and samples."""
        return {**asdict(self), "strict_accuracy": self.strict_accuracy, "lenient_accuracy": self.lenient_accuracy,
                "format_rate": self.format_rate, "strict_ci": list(self.strict_ci),
                "lenient_ci": list(self.lenient_ci), "format_ci": list(self.format_ci)}

    def __str__(self) -> str:
        lo, hi = self.strict_ci
        return (f"strict {self.strict_accuracy:.1%} [95% CI {lo:.1%}, {hi:.1%}]  lenient {self.lenient_accuracy:.1%}"
                f"  format {self.format_rate:.1%}  (n = {self.n})")

    def _repr_markdown_(self) -> str:
        rows = ["| metric | value | 95% CI | count |", "| --- | --- | --- | --- |"]
        for name, rate, (lo, hi), k in (("strict accuracy", self.strict_accuracy, self.strict_ci, self.n_strict),
                                        ("lenient accuracy", self.lenient_accuracy, self.lenient_ci, self.n_lenient),
                                        ("format rate", self.format_rate, self.format_ci, self.n_format)):
            rows.append(f"| {name} | {rate:.1%} | [{lo:.1%}, {hi:.1%}] | {k} / {self.n} |")
        return "\n".join(rows)


def judge(text: str, gold: str) -> dict[str, bool]:
    """The three checks on one completion: {"strict", "lenient", "format"}.

    Taught in: notebooks/03_reward_design.ipynb
    """
    return {"strict": bool(strict_correct(text, gold)), "lenient": bool(lenient_correct(text, gold)),
            "format": strict_format_reward([[{"content": text}]])[0] > 0}


def evaluate(model: nn.Module, tokenizer: Any, problems: Sequence[dict], *, system_prompt: str | None = None,
             max_new_tokens: int = 40, batch_size: int = 64, n_samples: int = 3, progress: bool = True,
             desc: str = "eval") -> EvalResult:
    """Greedy-decode every problem and count strict / lenient / format successes.

    Args:
        model: the policy (unwrapped, not DDP).
        tokenizer: its tokenizer.
        problems: [{"question", "answer"}, ...] held-out problems.
        system_prompt: as in training (`data.build_prompt`).
        max_new_tokens: |o|_max, the same as in training.
        batch_size: prompts per generate() call.
        n_samples: completions kept in `samples` (the first problems, rank 0's share under torchrun).
        progress: show a tqdm bar (rank 0 only).
        desc: label of the bar.

    Returns:
        EvalResult, with counts summed over ranks under torchrun.

    Used by: `grpo_lib.run.lifecycle.Run` (before and after training)
    """
    if not problems:
        raise ValueError("evaluate needs at least one problem")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(problems)[rank::world]                     # rank k takes problems k, k + world, ...
    counts = {"strict": 0, "lenient": 0, "format": 0}
    samples = []
    bar = tqdm(total=len(mine), desc=desc, disable=not progress or rank != 0, leave=False)
    for start in range(0, len(mine), batch_size):
        batch = mine[start:start + batch_size]
        prompts = [build_prompt(tokenizer, p["question"], system_prompt) for p in batch]
        out = generate_completions(model, tokenizer, prompts, G=1, max_new_tokens=max_new_tokens, do_sample=False)
        for p, text in zip(batch, out.texts):
            verdict = judge(text, p["answer"])
            for k in counts:
                counts[k] += verdict[k]
            if len(samples) < n_samples:
                samples.append({"question": p["question"], "answer": p["answer"], "completion": text, **verdict})
        bar.update(len(batch))
    bar.close()
    n = len(mine)
    if world > 1:
        device = next(model.parameters()).device
        totals = dist.all_reduce_sum(torch.tensor([n, counts["strict"], counts["lenient"], counts["format"]],
                                                  device=device))
        n, counts["strict"], counts["lenient"], counts["format"] = (int(v) for v in totals.tolist())
    return EvalResult(n=n, n_strict=counts["strict"], n_lenient=counts["lenient"], n_format=counts["format"],
                      samples=samples)

"""The course's evaluation extras: sampled evaluation, pass@k and maj@k curves with bootstrap intervals, and
Fisher's exact test. Only the notebooks use them (03: `fisher_exact_2x2`; 05: the rest); a training run's
evaluation is grpo_lib.evaluation (greedy, strict / lenient accuracy, Wilson intervals).

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. Sampled evaluation (`sample_answers`): n completions per held-out problem at the training temperature,
   judged strictly (`judge`), with the answer of the last `<answer>` tag kept as the sample's vote.
2. pass@k is Chen et al.'s (2021, Codex) unbiased estimator from n >= k samples with c right,
   1 - C(n-c, k)/C(n, k), computed as the product 1 - Π_{i=n-c+1}^{n} (1 - k/i) (`pass_at_k`): no huge
   binomials, no cancellation. maj@k (`maj_at_k`) is the exact expected accuracy of a majority vote over a
   uniformly random k-subset of the same n samples (a hypergeometric sum, no Monte Carlo): right samples
   vote for the gold answer, wrong ones for their number (their text when it is not a number), samples with
   no answer abstain, a tie is broken uniformly at random (the right answer tied with j others scores
   1/(j + 1)), and a subset with no vote at all scores 0.
3. The interval of a curve is a percentile bootstrap over problems (`bootstrap_ci`): problems are the
   independent unit, a per-problem pass@k is a fraction, not a 0/1 outcome (so no Wilson interval), and
   resampling the same problems for every k keeps a curve's points and a paired before/after difference
   consistent. It covers the sampling noise of the n completions too, since each problem's estimate is
   resampled whole.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from grpo_lib.data import build_prompt
from grpo_lib.evaluation import judge
from grpo_lib.rewards import extract_answer_from_model_output, parse_number
from grpo_lib.rollout import generate_completions
from grpo_lib.threads import ThreadGovernor, start_threads


def fisher_exact_2x2(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test of k1/n1 against k2/n2: could both samples share one success rate?

    With the totals fixed (K = k1 + k2 successes among n1 + n2 tries), the number of successes x in the first
    sample is hypergeometric, P(x) = C(n1, x) C(n2, K - x) / C(n1 + n2, K), if both rates are equal. The p-value
    is the sum of P(x) over every x no more likely than the observed k1 (a relative tolerance of 1e-9 keeps
    ties that differ only by rounding). Exact integer binomials (`math.comb`), no scipy.

    Args:
        k1, n1: successes and trials of the first sample, 0 <= k1 <= n1.
        k2, n2: the same for the second, 0 <= k2 <= n2.

    Returns:
        the p-value in (0, 1]; 7 of 9 against 27 of 30 gives 0.5716 (the tutorial's tagged answers before
        training against its answers after).

    Raises:
        ValueError: a count outside 0 <= k <= n.

    Taught in: notebooks/03_reward_design.ipynb
    """
    for k, n, name in ((k1, n1, "first"), (k2, n2, "second")):
        if not (isinstance(k, int) and isinstance(n, int) and 0 <= k <= n):
            raise ValueError(f"need integers 0 <= k <= n for the {name} sample, got k={k!r}, n={n!r}")
    K, N = k1 + k2, n1 + n2
    total = math.comb(N, K)
    pmf = {x: math.comb(n1, x) * math.comb(n2, K - x) / total for x in range(max(0, K - n2), min(n1, K) + 1)}
    return min(1.0, sum(p for p in pmf.values() if p <= pmf[k1] * (1 + 1e-9)))


# --- sampled evaluation: pass@k and maj@k ------------------------------------------------------------


def _check_counts(n: Any, c: Any, k: Any) -> None:
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (right samples) must be in 0..n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..n: pass@k needs k <= n samples, got k={k}, n={n}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """pass@k from n samples with c right: the probability that a random k-subset holds a right one.

        pass@k = 1 - C(n - c, k) / C(n, k) = 1 - Π_{i=n-c+1}^{n} (1 - k/i)

    (Chen et al. 2021, the Codex paper: unbiased for the pass@k of the policy, unlike 1 - (1 - c/n)^k.)
    The product form never builds a binomial: C(n, k) overflows a float for large n, and 1 - a/b of two
    nearly equal large numbers loses the digits that matter.

    Args:
        n: samples of the problem, n >= 1.
        c: how many of them are right, 0 <= c <= n.
        k: subset size, 1 <= k <= n.

    Returns:
        a float in [0, 1]; n = 4, c = 1, k = 2 gives 0.5 (3 of the 6 pairs hold the right sample).

    Raises:
        ValueError: naming n, c or k when one is not an int or out of range (k > n included).

    Taught in: notebooks/05_full_run.ipynb
    """
    _check_counts(n, c, k)
    if n - c < k:                            # every k-subset must contain a right sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _vote_classes(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> tuple[int, list[int], int]:
    """(right votes, counts of each wrong answer, abstentions) of one problem's n samples."""
    if isinstance(answers, (str, bytes)) or isinstance(correct, (str, bytes)):
        raise ValueError("answers and correct must be sequences with one entry per sample, not strings")
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct must have one entry per sample, got {len(answers)} and {len(correct)}")
    wrong: Counter = Counter()
    c = abstain = 0
    for i, (answer, right) in enumerate(zip(answers, correct)):
        if not isinstance(right, bool):
            raise ValueError(f"correct[{i}] must be a bool, got {right!r}")
        if right and answer is None:
            raise ValueError(f"sample {i} is marked right but has no answer (None)")
        if right:
            c += 1
        elif answer is None:
            abstain += 1
        else:
            value = parse_number(answer) if isinstance(answer, str) else None
            wrong[("number", value) if value is not None else ("text", answer.strip() if isinstance(answer, str)
                                                               else answer)] += 1
    return c, sorted(wrong.values()), abstain


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool], k: int) -> float:
    """maj@k: the expected accuracy of a majority vote over a uniformly random k-subset of n samples.

    The votes: every right sample votes for the gold answer; a wrong one for its number (`parse_number`, so
    "5" and "5.0" are one vote), or its stripped text when it is not a number; a sample with no answer
    (None) abstains. The answer with most votes wins; a tie is broken uniformly at random, so a right answer
    tied with j others scores 1/(j + 1); a subset where nobody votes scores 0.

    Exact, by summing over how many right samples t the subset holds (hypergeometric weights):

        maj@k = Σ_{t>=1} C(c, t) · Σ_{ways to fill k - t from the rest, no wrong answer above t} 1/(1 + #ties)
                / C(n, k)

    where the inner sum runs over the wrong answers one at a time (a small dynamic programme over "samples
    taken" and "answers at exactly t votes"), abstentions fill the rest freely. Integer counts, one
    division at the end.

    Args:
        answers: n final answers (strings, numbers, any hashable), None where the sample gave none.
        correct: n bools, the judge's verdict on each sample (`judge(...)["strict"]`).
        k: votes per majority, 1 <= k <= n.

    Returns:
        a float in [0, pass@k]; maj@1 = pass@1 = c/n. Answers ["7", "7", "9", None] with "7" right give
        maj@2 = 4/6: of the 6 pairs, {7, 7} scores 1, the two {7, 9} tie (1/2 each), the two {7, None}
        score 1 each, {9, None} scores 0.

    Raises:
        ValueError: mismatched lengths, a non-bool verdict, a right sample without an answer, k outside 1..n.

    Taught in: notebooks/05_full_run.ipynb
    """
    c, wrong, abstain = _vote_classes(answers, correct)
    n = len(answers)
    _check_counts(n, c, k)
    total = Fraction(0)
    for t in range(1, min(c, k) + 1):                     # t right votes in the subset
        ways: dict[tuple[int, int], int] = {(0, 0): 1}    # (samples from wrong answers, answers at t) -> ways
        for m in wrong:
            nxt: dict[tuple[int, int], int] = {}
            for (s, j), w in ways.items():
                for x in range(0, min(m, t, k - t - s) + 1):   # x votes for this wrong answer, never above t
                    key = (s + x, j + (x == t))
                    nxt[key] = nxt.get(key, 0) + w * math.comb(m, x)
            ways = nxt
        for (s, j), w in ways.items():
            total += Fraction(math.comb(c, t) * w * math.comb(abstain, k - t - s), j + 1)
    return float(total / math.comb(n, k))


def bootstrap_ci(values: Any, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap interval of a mean over problems, for one or several columns at once.

    Draws n_boot resamples of the P problems (with replacement), the same resamples for every column, and
    returns the (1 - level)/2 and (1 + level)/2 quantiles of the resampled means. Per-problem pass@k values
    are fractions, not 0/1 outcomes, so Wilson's interval does not apply; the bootstrap needs no normal
    approximation and stays inside the values' range. When every problem has the same value the interval
    has zero width: say so rather than trust it.

    Args:
        values: (P,) or (P, K) per-problem values (a tensor, an array or nested lists), P >= 2.
        level: coverage, in (0, 1).
        n_boot: resamples, >= 100.
        seed: the resamples' generator seed (the same seed gives the same interval).

    Returns:
        (low, high), float64 tensors of shape () or (K,).

    Taught in: notebooks/05_full_run.ipynb
    """
    x = torch.as_tensor(values, dtype=torch.float64)
    if x.dim() not in (1, 2) or x.shape[0] < 2:
        raise ValueError(f"values must have shape (P,) or (P, K) with P >= 2 problems, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("values must be finite (a NaN or inf per-problem value)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise ValueError(f"n_boot must be an int >= 100, got {n_boot!r}")
    P = x.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(P, (n_boot, P), generator=g)                                # (n_boot, P)
    counts = torch.zeros(n_boot, P, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, P, dtype=torch.float64))
    means = counts @ x.reshape(P, -1) / P                                           # (n_boot, K)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q, dim=0)                                     # (K,) each
    shape = x.shape[1:]
    return low.reshape(shape), high.reshape(shape)


def sample_answers(model: nn.Module, tokenizer: Any, problems: Sequence[dict], *, n: int = 16,
                   temperature: float = 1.0, max_new_tokens: int = 40, system_prompt: str | None = None,
                   batch_size: int = 32, seed: int = 0, num_threads: int | None = None,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Sample n completions per held-out problem and judge each: the data of pass@k and maj@k.

    Uses the rollout sampler (`generate_completions`, plain temperature sampling) and the strict check of
    `judge`; a sample's answer is the content of its last `<answer>` tag (`extract_answer_from_model_output`,
    None when there is none). Batch b of prompts is sampled with seed `seed + b`, so the result depends on
    seed, batch_size and the CPU threads only. One process (not split over torchrun ranks).

    Args:
        model, tokenizer: the policy and its tokenizer.
        problems: [{"question", "answer"}, ...].
        n: completions per problem (the k of pass@k runs up to n).
        temperature: τ, as in training.
        max_new_tokens: |o|_max, as in training.
        system_prompt: as in training (`data.build_prompt`).
        batch_size: prompts per generate() call (batch_size · n rows).
        seed: base seed of the samples.
        num_threads: CPU threads while sampling (restored after): N fixes them; None (`cfg.num_threads`'s
            default) follows grpo_lib.threads, as a training run does: the usable cores, one given back per
            core other programs keep busy, checked before every batch (so a busy machine does not make the
            threads wait on each other). The thread count changes the speed, not the samples.
        progress: show a tqdm bar.

    Returns:
        one dict per problem: {"question", "answer" (gold), "answers" (n extracted answers or None),
        "correct" (n bools)}, JSON-ready.

    Taught in: notebooks/05_full_run.ipynb
    """
    if not problems:
        raise ValueError("sample_answers needs at least one problem")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (samples per problem) must be an int >= 1, got {n!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be None or an int >= 1, got {num_threads!r}")
    problems = list(problems)
    out = []
    governor = ThreadGovernor(max_threads=start_threads(num_threads), adaptive=num_threads is None)
    try:
        for b, start in enumerate(tqdm(range(0, len(problems), batch_size), desc="sample", disable=not progress,
                                       leave=False)):
            governor.update()                       # fewer threads while other programs hold cores
            batch = problems[start:start + batch_size]
            prompts = [build_prompt(tokenizer, p["question"], system_prompt) for p in batch]
            rollout = generate_completions(model, tokenizer, prompts, G=n, max_new_tokens=max_new_tokens,
                                           temperature=temperature, seed=seed + b)
            for i, p in enumerate(batch):
                texts = rollout.group(i)
                out.append({"question": p["question"], "answer": p["answer"],
                            "answers": [extract_answer_from_model_output(t) for t in texts],
                            "correct": [judge(t, p["answer"])["strict"] for t in texts]})
    finally:
        governor.restore()
    return out


def pass_maj_curves(samples: Sequence[dict], ks: Sequence[int], *, level: float = 0.95, n_boot: int = 2000,
                    seed: int = 0) -> dict[str, Any]:
    """pass@k and maj@k for every k, per problem and averaged, with bootstrap intervals over problems.

    Args:
        samples: what `sample_answers` returns (each problem's "answers" and "correct", all of one length n).
        ks: the k values, each in 1..n.
        level, n_boot, seed: of `bootstrap_ci`.

    Returns:
        {"k": list, "pass", "maj": (K,) means, "pass_ci", "maj_ci": ((K,) low, (K,) high),
        "pass_per_problem", "maj_per_problem": (P, K) float64 tensors}.

    Taught in: notebooks/05_full_run.ipynb
    """
    if len(samples) < 2:
        raise ValueError(f"pass_maj_curves needs at least 2 problems for an interval, got {len(samples)}")
    ns = {len(s["correct"]) for s in samples}
    if len(ns) != 1:
        raise ValueError(f"every problem needs the same number of samples n, got {sorted(ns)}")
    ks = [int(k) for k in ks]
    per = {"pass": torch.tensor([[pass_at_k(len(s["correct"]), sum(s["correct"]), k) for k in ks] for s in samples],
                                dtype=torch.float64),
           "maj": torch.tensor([[maj_at_k(s["answers"], s["correct"], k) for k in ks] for s in samples],
                               dtype=torch.float64)}                                     # (P, K) each
    out: dict[str, Any] = {"k": ks}
    for name, x in per.items():
        out[name] = x.mean(0)
        out[f"{name}_ci"] = bootstrap_ci(x, level=level, n_boot=n_boot, seed=seed)
        out[f"{name}_per_problem"] = x
    return out

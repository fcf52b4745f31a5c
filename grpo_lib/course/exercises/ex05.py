"""Checkers for the fill-in exercises of notebook 05: the completion mask of a real rollout (5.1) and maj@k (5.2).

Exercise 5.1 asks for `my_completion_mask(ids, eos_ids)`: for completion ids (B, T) and the list of ids that end a
completion (Qwen2.5-Instruct has two, `<|im_end|>` and `<|endoftext|>`), the 0/1 mask that is 1 up to and
including the first stop token of each row and 0 after it; a row with no stop token was truncated and is all 1.
The reference is `grpo_lib.logprobs.completion_mask` (what `generate_completions` builds). The checker rejects
a mask without the stop token itself (the model then never learns to stop: notebook 05's "pad = EOS" cell),
one that keeps the padding after it, one that stops at the last stop token instead of the first, one that
knows only the first of the stop ids, and one that drops a row that never stopped.

Like every checker it never raises: a student copy whose exercise cell still holds
`raise NotImplementedError("Exercise 5.1")` runs green under nbmake and prints "✗ Not yet: Exercise 5.1 is not
filled in yet" with a nudge; `hint("5.1")` shows the key step.

Exercise 5.2 asks for `maj_two_answers(n, c, k)`: maj@k when every wrong sample gives the same wrong answer, from
the definition (a majority vote over a random k-subset of the n samples, a tie won half the time); the general
case is `grpo_lib.course.evaluation.maj_at_k`.

Taught in: notebooks/05_full_run.ipynb
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import math

import torch

from grpo_lib.course.exercises.checking import ERROR_HINT, Case, CheckResult, Rejected, as_tensor, fmt, never_raises, \
    run_cases
from grpo_lib.course.exercises.checking import read_number as _one_number
from grpo_lib.course.evaluation import maj_at_k
from grpo_lib.logprobs import completion_mask

__all__ = ["CheckResult", "MASK_KEY", "MASK_NUDGE", "MASK_CASES", "reference_mask", "check_completion_mask",
           "MAJ_KEY", "MAJ_NUDGE", "MAJ_CASES", "maj_two_answers", "check_maj_two_answers"]

MASK_NUDGE = ("walk along one row: which positions did the model choose and must the loss train, and where did it "
              "stop? Is the stop token one of them, and what comes after it?")
MASK_KEY = ("stop = torch.isin(ids, torch.tensor(eos_ids)); the first stop of each row is at "
            "torch.where(stop.any(-1), stop.int().argmax(-1), T); mask = arange(T) <= that position.")


def reference_mask(ids: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 up to and including the first stop token of each row, 0 after it; all 1 for a row that never stops.

    Args:
        ids: completion ids, (B, T).
        eos_ids: the ids that end a completion (one or more).

    Returns:
        (B, T) int32, what `grpo_lib.logprobs.completion_mask` returns.

    Used by: `check_completion_mask` (exercise 5.1)
    """
    return completion_mask(ids, list(eos_ids))


def _random_batch() -> tuple[torch.Tensor, list[int]]:
    """8 rows × 12 ids from a 10-token vocabulary, stop ids 2 and 3 at random places (some rows twice, one never)."""
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(4, 10, (8, 12), generator=g)                        # (8, 12), no stop id yet
    for row, (pos, stop) in enumerate([(3, 2), (0, 3), (11, 2), (5, 3), (7, 2), (2, 2), (9, 3)]):
        ids[row, pos] = stop
    ids[0, 8], ids[3, 9] = 3, 2                                              # a second stop later in rows 0 and 3
    return ids, [2, 3]                                                       # row 7 never stops


MASK_CASES: tuple[tuple[str, torch.Tensor, list[int]], ...] = (
    ("one completion of 3 tokens, then EOS (id 2), then 2 pads (id 0): ids = [[5, 6, 7, 2, 0, 0]], eos_ids = [2]",
     torch.tensor([[5, 6, 7, 2, 0, 0]]), [2]),
    ("a completion that stopped twice: ids = [[5, 2, 6, 2, 0]], eos_ids = [2]", torch.tensor([[5, 2, 6, 2, 0]]), [2]),
    ("Qwen2.5-Instruct's two stop ids, <|im_end|> = 2 and <|endoftext|> = 3: ids = [[5, 3, 0, 0], [5, 6, 2, 0]], "
     "eos_ids = [2, 3]", torch.tensor([[5, 3, 0, 0], [5, 6, 2, 0]]), [2, 3]),
    ("a completion truncated at T = 4 (no stop token) beside one that stopped at once: ids = [[5, 6, 7, 8], "
     "[2, 0, 0, 0]], eos_ids = [2]", torch.tensor([[5, 6, 7, 8], [2, 0, 0, 0]]), [2]),
    ("a random batch of 8 completions × 12 tokens, eos_ids = [2, 3]", *_random_batch()),
)
"""(name, ids (B, T), eos_ids): the most telling case first."""


def _read_mask(got: Any, case: Case) -> Any:
    value = got if isinstance(got, torch.Tensor) else as_tensor(got)
    if value is None or value.shape != case.expected.shape:
        return Rejected("something else" if value is None else f"shape {tuple(value.shape)}",
                        "return one 0/1 value per token: a tensor of the shape of ids.",
                        expected=f"shape {tuple(case.expected.shape)}")
    value = value.detach()
    if not bool(((value == 0) | (value == 1)).all()):
        return Rejected(f"values {fmt(value.float())}", "a mask holds only 0 and 1 (or False and True).")
    return value.to(torch.int32)


def _mask_hint(case: Case, got: torch.Tensor) -> str:
    ids, eos_ids = case.args
    stop = torch.isin(ids, torch.tensor(eos_ids))                            # (B, T)
    expected = case.expected
    if torch.equal(got, expected * (~stop).int()):
        return ("you left out the stop token itself. Then nothing ever teaches the model to stop: that is the "
                "'pad = EOS masked out' bug of section 2. The stop token is the last token the model chose.")
    T = ids.shape[-1]
    last = torch.where(stop.any(-1), T - 1 - stop.flip(-1).int().argmax(-1), T - 1)         # last stop, or all
    if torch.equal(got, (torch.arange(T)[None, :] <= last[:, None]).int()):
        return "you went on to the last stop token: generation ends at the first one, the rest is padding."
    if len(eos_ids) > 1 and torch.equal(got, reference_mask(ids, eos_ids[:1])):
        return ("you used only the first of eos_ids: any of them ends a completion (Qwen2.5-Instruct stops on "
                "<|im_end|> and on <|endoftext|>).")
    no_stop = ~stop.any(-1)
    if bool(no_stop.any()) and not torch.equal(got[no_stop], expected[no_stop]):
        return "a row that never stops was cut at T: every one of its tokens is the model's and counts."
    if bool((got >= expected).all()):
        return "you kept tokens after the stop token: they are padding, not the model's choice; they must be 0."
    return "1 on every token up to and including the first stop token of the row, 0 after it."


@never_raises("5.1")
def check_completion_mask(fn: Callable[[torch.Tensor, list[int]], Any]) -> CheckResult:
    """Exercise 5.1: the completion mask, stop token included, first stop of any of the stop ids.

    Taught in: notebooks/05_full_run.ipynb
    """
    cases = [Case(name, (ids, list(eos_ids)), reference_mask(ids, eos_ids)) for name, ids, eos_ids in MASK_CASES]
    return run_cases(fn, cases, exercise="5.1", blank_hint=MASK_NUDGE, key_step=MASK_KEY, error_hint=ERROR_HINT,
                     read=_read_mask, matches=lambda got, exp: bool(torch.equal(got, exp)), hint=_mask_hint,
                     show=lambda t: str(t.int().tolist()), references=(completion_mask, reference_mask),
                     success="✓ Correct: the stop token is trained, the padding after it is not, and a truncated "
                             "completion counts whole: the mask `generate_completions` builds.")


# --- 5.2 maj@k with one wrong answer --------------------------------------------------------------------

MAJ_NUDGE = ("count subsets: of the C(n, k) ways to pick k of the n samples, how many hold exactly t right ones? "
             "For which t does the right answer win the vote, and what is a tie worth when k is even?")
MAJ_KEY = ("maj@k = Σ_t C(c, t)·C(n - c, k - t) / C(n, k) × (1 if 2t > k, 1/2 if 2t = k, 0 if 2t < k): the subset "
           "holds t right samples with that (hypergeometric) probability.")


def maj_two_answers(n: int, c: int, k: int) -> float:
    """maj@k of n samples, c right and n - c all giving the same wrong answer; a tie counts 1/2.

        Σ_t C(c, t) C(n - c, k - t) / C(n, k) · [1 if 2t > k, 1/2 if 2t = k, else 0]

    (math.comb is 0 when t > c or k - t > n - c, so t can run over 0..k.) The general case, any number of
    different wrong answers and abstentions, is `grpo_lib.course.evaluation.maj_at_k`; tests check that they agree.

    Used by: `check_maj_two_answers` (exercise 5.2)
    """
    won = sum(math.comb(c, t) * math.comb(n - c, k - t) * (1.0 if 2 * t > k else 0.5 if 2 * t == k else 0.0)
              for t in range(k + 1))
    return won / math.comb(n, k)


MAJ_CASES = (("n = 5 samples, c = 3 right, k = 3 votes", (5, 3, 3)),
             ("n = 16, c = 6, k = 4 (a tie at 2 right votes)", (16, 6, 4)),
             ("n = 16, c = 8, k = 16 (all samples vote: 8 against 8)", (16, 8, 16)),
             ("n = 16, c = 6, k = 16 (all samples vote: 6 against 10)", (16, 6, 16)),
             ("n = 16, c = 12, k = 1", (16, 12, 1)))
"""(name, (n, c, k)): the first separates sampling with and without replacement, the second the tie rules."""


def _maj_hint(case: Case, value: float) -> str:
    n, c, k = case.args
    p = c / n
    binomial = lambda tie: sum(math.comb(k, t) * p ** t * (1 - p) ** (k - t)          # noqa: E731
                               * (1.0 if 2 * t > k else tie if 2 * t == k else 0.0) for t in range(k + 1))
    hyper = lambda tie: sum(math.comb(c, t) * math.comb(n - c, k - t)                  # noqa: E731
                            * (1.0 if 2 * t > k else tie if 2 * t == k else 0.0) for t in range(k + 1)) / math.comb(n, k)
    close = lambda x: math.isclose(value, x, rel_tol=1e-6, abs_tol=1e-7)   # read_number: float32  # noqa: E731
    if any(close(binomial(tie)) for tie in (0.0, 0.5, 1.0)):
        return ("you drew the k votes with replacement (a binomial with p = c/n). A subset takes k different samples "
                "of the n: the chance of t right ones comes from counting subsets.")
    if close(hyper(0.0)) or close(hyper(1.0)):
        return "look at the tie: with k even, t = k/2 right votes against k/2 wrong ones is won by a coin flip."
    if close(1 - math.comb(n - c, k) / math.comb(n, k)):
        return "that is pass@k: one right sample is enough there. A majority needs more right votes than wrong ones."
    if close(p):
        return "that does not change with k: it is maj@1 (= pass@1). Votes from k samples are counted."
    return "for which numbers t of right samples in the subset does the right answer win, and how likely is each t?"


@never_raises("5.2")
def check_maj_two_answers(fn: Callable[[int, int, int], Any]) -> CheckResult:
    """Exercise 5.2: fn(n, c, k) == maj@k with a single wrong answer (ties 1/2), checked on five cases.

    Taught in: notebooks/05_full_run.ipynb
    """
    cases = [Case(name, args, maj_two_answers(*args)) for name, args in MAJ_CASES]
    return run_cases(fn, cases, exercise="5.2", blank_hint=MAJ_NUDGE, key_step=MAJ_KEY, error_hint=ERROR_HINT,
                     read=_one_number, matches=lambda got, exp: math.isclose(got, exp, rel_tol=1e-6, abs_tol=1e-7),
                     hint=_maj_hint, show=lambda v: f"{v:.4f}", references=(maj_at_k, maj_two_answers),
                     success="✓ Correct: a random k-subset holds t right samples with a hypergeometric probability, "
                             "and the vote is won when 2t > k (half the time when 2t = k). With c/n below 1/2 maj@k "
                             "falls as k grows, while pass@k rises: voting rewards a policy whose right answer is "
                             "its most likely one.")

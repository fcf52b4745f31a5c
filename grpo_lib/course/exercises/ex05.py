"""Checker for the fill-in exercise of notebook 05: the completion mask of a real rollout.

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

Taught in: notebooks/05_full_run.ipynb
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from grpo_lib.course.exercises.checking import ERROR_HINT, Case, CheckResult, Rejected, as_tensor, fmt, never_raises, \
    run_cases
from grpo_lib.logprobs import completion_mask

__all__ = ["CheckResult", "MASK_KEY", "MASK_NUDGE", "MASK_CASES", "reference_mask", "check_completion_mask"]

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
                     show=lambda t: str(t.int().tolist()),
                     success="✓ Correct: the stop token is trained, the padding after it is not, and a truncated "
                             "completion counts whole: the mask `generate_completions` builds.")

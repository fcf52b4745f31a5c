"""The tiny task: two-digit addition, answered in the tutorial's `<reasoning>`/`<answer>` format.

A problem is a pair (a, b) with a, b in 0..99. The prompt is the question and a newline (no system prompt,
no chat template); the completion adds digit by digit, ones first, writing the carry as "+1":

    What is 47 + 85?
    <reasoning>7+5=12,4+8+1=13</reasoning>
    <answer>132</answer>

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. All 100 × 100 = 10,000 pairs are shuffled once with a fixed seed (`SPLIT_SEED`); the first 300 are the
   held-out "test" split, never trained on, and the other 9,700 are "train". The split never depends on
   the `seed` argument, so every run evaluates on the same 300 problems.
2. The reasoning has one step per column, ones first; a missing digit counts as 0 (47 + 5: "7+5=12,4+0+1=5").
   There is no separate step for a final carry: the last column's full sum starts the answer
   (99 + 1: "9+1=10,9+0+1=10" gives 100).
3. The carry rule is a parameter, `carry_at` (a column carries 1 when its sum is at least carry_at), so
   the same code writes a careless student's work: `reasoning_for(47, 85, carry_at=None)` forgets the
   carry ("7+5=12,4+8=12") and `completion_for(47, 85, carry_at=None)` ends with the answer this wrong
   reasoning implies (122); `carry_at=9` carries although a column makes only 9 (27 + 32 -> 69). The
   tiny model's warm-up is taught these slips on part of the problems (scripts/build_tiny_model.py), so
   that it samples the right rule only part of the time and GRPO has something to sharpen.
"""

from __future__ import annotations

import random

PLAIN_PROMPT = "{question}\n"
"""Prompt text of the tiny task: the question and a newline. No system prompt, no chat template."""

SPLIT_SEED = 1234
"""Seed of the one shuffle of all 10,000 pairs that defines the train/test split (choice 1)."""

N_TEST = 300
"""Held-out problems: the first N_TEST pairs of the shuffled list."""

MAX_OPERAND = 99
SPLITS = ("train", "test")


def format_question(a: int, b: int) -> str:
    """The question text, "What is {a} + {b}?" (PLAIN_PROMPT adds the newline).

    Used by: `make_problem`
    """
    return f"What is {a} + {b}?"


def _columns(a: int, b: int, carry_at: int | None) -> tuple[list[str], str]:
    """Column-by-column addition, ones first: the reasoning steps and the answer they imply."""
    da, db = str(a)[::-1], str(b)[::-1]  # digits, ones first
    steps, answer_digits, c = [], [], 0
    n_cols = max(len(da), len(db))
    for i in range(n_cols):
        x = int(da[i]) if i < len(da) else 0  # a missing digit counts as 0 (choice 2)
        y = int(db[i]) if i < len(db) else 0
        s = x + y + c
        steps.append(f"{x}+{y}+1={s}" if c else f"{x}+{y}={s}")
        if i < n_cols - 1:
            answer_digits.append(str(s % 10))
            c = 1 if carry_at is not None and s >= carry_at else 0  # correct rule: carry_at = 10
        else:
            answer_digits.append(str(s)[::-1])  # the last column writes its full sum (final carry)
    return steps, "".join(answer_digits)[::-1]


def reasoning_for(a: int, b: int, carry_at: int | None = 10) -> str:
    """Digit-by-digit reasoning, ones first: 47 + 85 -> "7+5=12,4+8+1=13".

    Args:
        a, b: operands, integers in 0..99 (larger non-negative integers also work).
        carry_at: a column carries 1 into the next when its sum is at least carry_at. 10 is the right
            rule. None never carries, the classic slip of forgetting the carry: 47 + 85 ->
            "7+5=12,4+8=12". 9 also carries when a column makes exactly 9: 27 + 32 -> "7+2=9,2+3+1=6".

    Returns:
        the text that goes between `<reasoning>` and `</reasoning>`.

    Used by: `completion_for`, `has_carry` and scripts/build_tiny_model.py
    """
    _check_operands(a, b)
    steps, _ = _columns(a, b, carry_at)
    return ",".join(steps)


def answer_for(a: int, b: int, carry_at: int | None = 10) -> str:
    """The answer the reasoning implies: str(a + b) for carry_at = 10; 47 + 85 with carry_at = None -> "122".

    Used by: `completion_for`
    """
    _check_operands(a, b)
    _, answer = _columns(a, b, carry_at)
    return answer


def has_carry(a: int, b: int) -> bool:
    """True when forgetting the carry changes the reasoning (47 + 85: yes; 5 + 7 or 99 + 0: no).

    Used by: scripts/build_tiny_model.py (the carry slips of the warm-up)
    """
    return reasoning_for(a, b) != reasoning_for(a, b, carry_at=None)


def completion_for(a: int, b: int, carry_at: int | None = 10) -> str:
    """The target completion (without EOS): "<reasoning>7+5=12,4+8+1=13</reasoning>\\n<answer>132</answer>".

    Args:
        a, b: operands in 0..99.
        carry_at: the carry rule (see reasoning_for); a wrong rule gives the wrong reasoning and the
            wrong answer it implies (choice 3).

    Used by: `make_problem` and scripts/build_tiny_model.py
    """
    return f"<reasoning>{reasoning_for(a, b, carry_at)}</reasoning>\n<answer>{answer_for(a, b, carry_at)}</answer>"


def make_problem(a: int, b: int) -> dict:
    """One problem as a dict: question, answer (gold string), completion (correct target), a, b.

    Used by: `addition_problems`
    """
    return {
        "question": format_question(a, b),
        "answer": str(a + b),
        "completion": completion_for(a, b),
        "a": a,
        "b": b,
    }


def _check_operands(a: int, b: int) -> None:
    for name, v in (("a", a), ("b", b)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"operand {name} must be a non-negative int, got {v!r}")


def _split_pairs(split: str) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]  # 10,000 pairs
    random.Random(SPLIT_SEED).shuffle(pairs)  # fixed: the split never depends on the caller's seed
    return pairs[:N_TEST] if split == "test" else pairs[N_TEST:]


def addition_problems(split: str, n: int | None = None, seed: int | None = 0) -> list[dict]:
    """The addition problems of one split: "test" (300 held out) or "train" (the other 9,700).

    Args:
        split: "train" or "test".
        n: how many to return (the first n after the optional reshuffle); None returns the whole split.
        seed: reshuffles the split's order with random.Random(seed) before taking the first n, so two
            seeds give two different samples; None keeps the split's canonical order. The membership of
            each split is fixed and does not depend on seed.

    Returns:
        list of dicts {"question": "What is 47 + 85?", "answer": "132",
        "completion": "<reasoning>7+5=12,4+8+1=13</reasoning>\\n<answer>132</answer>", "a": 47, "b": 85}.

    Taught in: notebooks/05_full_run.ipynb
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pairs = _split_pairs(split)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be None or a non-negative int, got {n!r}")
        if n > len(pairs):
            raise ValueError(f"n={n} but the {split!r} split has only {len(pairs)} problems")
    if seed is not None:
        random.Random(seed).shuffle(pairs)
    if n is not None:
        pairs = pairs[:n]
    return [make_problem(a, b) for a, b in pairs]

"""Rule-based rewards r(q, o) for GSM8K: is the answer right, and is it in the format we asked for?

DeepSeekMath scored its RL samples with a learned reward model; the tutorial this course follows (and
DeepSeek-R1 after it) uses rules instead: a correctness reward plus a small format reward, summed.
The names, signatures and scores here are the tutorial's, so you can read both side by side:

    r(q, o) = correctness(o, gold) + format(o),   correctness ∈ {0, 1.5, 2.0},  format ∈ {0, 0.2, …, 0.8}

Completions come as the tutorial (and TRL's conversational format) pass them, `[[{"content": text}], ...]`,
and `answer` is a list of gold strings, one per completion. Every reward function returns one float per
completion and never raises on any completion text.

Choices made here (1-7 shown in notebooks/03_reward_design.ipynb; 8-8 tested in tests/test_rewards.py and
tests/test_golden_trl_post_r1.py):
1. The model's answer is the content of the LAST `<answer>` tag, and that tag must be closed (the
   tutorial's rule). An unclosed last tag gives no answer, even if an earlier tag was closed: the
   model's final word was an unfinished answer, and falling back to an earlier one would reward
   answering twice. Text after `</answer>` is ignored by the extractor (the tutorial's behaviour);
   only `strict_format_reward` penalises it. An empty answer or the prompt's placeholder "..." is no
   answer (the tutorial returned "" for an empty tag).
2. Numbers are read the way GSM8K golds and model answers are written: thousands separators
   ("2,125" = "2125"; only well-formed groups of three, so "12,34" is not a number), a leading "$"
   (also €, £, ¥), a sign ("-3", "−3", "-$3", "$-3"), trailing zeros ("18.00"), a trailing period,
   unit words ("18 dollars", "5 hours"), a percent sign ("50%" reads as 50, not 0.5: GSM8K asks
   "what percent" and writes the gold as 50), and simple fractions ("3/4" = 0.75). Mixed numbers
   ("1 1/2"), words ("five"), scientific notation and European decimal commas are not numbers.
   Only ASCII digits count.
3. Numeric equivalence is equality up to floating-point noise (relative and absolute tolerance
   1e-9): GSM8K answers are exact, so "18.00" equals 18 but 1000001 never equals 1000000.
4. The 2.0 exact match compares strings after stripping whitespace; 1.5 needs the same number
   (`parse_number` on the whole answer, else the single number inside it, as the tutorial's
   `extract_single_number`). A missing answer, a missing or non-string gold, or malformed input
   scores 0.0 (the tutorial gave 2.0 when both answer and gold were None).
5. Malformed completions get defined values, never an exception: a completion may be
   `[{"content": text}]` (the tutorial), a `{"content": text}` dict or a plain string (TRL's standard
   format); anything else (None content, a number, missing keys, an empty list) is "no text" and
   scores 0.0 everywhere. Wrong containers (a string instead of a list, lengths that disagree) are
   caller bugs and raise a clear TypeError / ValueError.
6. `format_reward` is the tutorial's lenient count of the four tags (0.2 each), which "four empty
   tags" can hack for 0.8; `strict_format_reward` gives 0.8 only to one well-formed
   `<reasoning>…</reasoning> <answer>…</answer>` with non-empty contents and nothing else around it.
7. No regular expression here can backtrack catastrophically: tags are found with str.find/rfind,
   and the number patterns are linear (no nested quantifiers over overlapping characters), so a
   200 KB completion scores in milliseconds.
8. DAPO's overlong shaping, `soft_overlong_punishment(L_max, L_cache)` (TRL's
   `get_soft_overlong_punishment`, DAPO eq. 13): 0 up to L_max - L_cache tokens, then falling linearly
   to -1 at L_max, and -1 beyond. It scores token counts (`completion_ids`, as TRL passes them), not
   text, so it is a factory rather than an entry of REWARD_FUNCTIONS. L_cache = 0 (TRL accepts it and
   divides by it only for lengths it never reaches) is refused here, as is L_cache > L_max.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
import math
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""

REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

CORRECT_EXACT = 2.0      # answer string equals the gold string
CORRECT_NUMERIC = 1.5    # same number, written differently ("2,125" for "2125", "$18.00" for "18")
FORMAT_PER_TAG = 0.2     # lenient format reward per tag present
FORMAT_STRICT = 0.8      # strict format reward for one well-formed reasoning + answer block
NUMERIC_TOLERANCE = 1e-9  # relative and absolute, only where a fraction meets a decimal ("1/3" vs "0.333333333333");
                          # two integers, or two decimals, are compared exactly, whatever their size

EXACT_MAX_DIGITS = 4000  # longer numbers are not read as answers (Python's int() stops at 4300 digits)

_PLACEHOLDER = "..."     # what SYSTEM_PROMPT puts inside the tags
_CURRENCY = "$€£¥"
_MINUS = "-−"            # ASCII hyphen-minus and the Unicode minus sign
# characters that may decorate the END of a number: "18 dollars.", "50 %", "18 $"
_TRAILING_DECORATION = string.ascii_letters + string.whitespace + ".%" + _CURRENCY

# A bare number, the whole string: "2125", "2,125", "1,000,000.50", "18.00", ".5".
# Linear: the comma groups start with "," so they cannot overlap the digits before them.
_BARE_NUMBER = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+")
_FRACTION = re.compile(r"([0-9]+)\s*/\s*([0-9]+)")
# A number inside running text. The minus sign counts only when it does not join two words or
# numbers ("5-3" and "2019-2020" hold no negative number); "(?![0-9])" stops "1,0000" from reading
# as "1,000" followed by "0". The leading lookahead only lets the engine skip, fast, every position
# that cannot start a number (5x faster on long prose).
_NUMBER_IN_TEXT = re.compile(
    r"(?=[-−0-9.])"
    r"(?P<sign>(?<![0-9A-Za-z.])[-−]\$?)?"
    r"(?P<digits>(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
)


# --- extracting answers -------------------------------------------------------------------------


def extract_answer_from_model_output(text: Any) -> str | None:
    """Answer = the content of the last <answer>…</answer> in the completion o, stripped.

    Args:
        text: a completion o (str). Anything else gives None.

    Returns:
        The stripped content between the last `<answer>` and the first `</answer>` after it, or None
        when there is no `<answer>`, the last one is not closed, or the content is empty or "...".
        Text after `</answer>` is ignored (`strict_format_reward` is the one that penalises it).

    Example:
        "<answer>5</answer> <answer>6</answer>" -> "6";  "<answer>5</answer> <answer>6" -> None.

    Taught in: notebooks/03_reward_design.ipynb
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(ANSWER_OPEN)
    if start == -1:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    if end == -1:                             # the last answer was never closed
        return None
    answer = text[start:end].strip()
    return None if answer in ("", _PLACEHOLDER) else answer


def extract_answer_from_dataset(text: Any) -> str | None:
    """GSM8K gold = the text after "####" in a dataset answer, stripped.

    Args:
        text: a GSM8K `answer` field, "…worked solution…\\n#### 72".

    Returns:
        "72" for the example above; None if there is no "####", nothing after it, or `text` is
        not a str. (Like the tutorial, a second "####" would end the gold; GSM8K has none.)

    Taught in: notebooks/03_reward_design.ipynb
    """
    if not isinstance(text, str) or "####" not in text:
        return None
    gold = text.split("####", 2)[1].strip()
    return gold or None


# --- reading numbers ----------------------------------------------------------------------------


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def parse_number(text: Any) -> float | None:
    """Read a whole short answer as one number: "$2,125.00 dollars." -> 2125.0.

    Accepts what GSM8K golds and model answers look like: thousands separators in groups of three,
    a leading currency sign and/or minus sign in either order, a trailing period, trailing unit
    words, a percent sign (kept as a percent: "50%" -> 50.0), and a simple fraction ("3/4" -> 0.75).
    The string must be that one number and nothing else: "x = 5", "1 1/2", "five", "12,34" -> None.

    Args:
        text: a short answer string; an int or float is returned as a float.

    Returns:
        The value as a float, or None (also for non-finite values and division by zero).

    Taught in: notebooks/03_reward_design.ipynb
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        try:
            return _finite(float(text))
        except OverflowError:                      # an int beyond the float range
            return None
    if not isinstance(text, str):
        return None
    negative, s = _sign_and_digits(text)
    sign = -1.0 if negative else 1.0
    if _BARE_NUMBER.fullmatch(s):
        return _finite(sign * float(s.replace(",", "")))
    fraction = _FRACTION.fullmatch(s)
    if fraction:
        numerator, denominator = (float(g) for g in fraction.groups())
        if denominator == 0:
            return None
        return _finite(sign * numerator / denominator)   # inf / inf = nan -> None
    return None


def _sign_and_digits(text: str) -> tuple[bool, str]:
    """(negative, the number's text): decorations, one currency symbol and one sign taken off."""
    s = text.strip().rstrip(_TRAILING_DECORATION).strip()  # "18 dollars." -> "18", "50 %" -> "50"
    has_sign = has_currency = negative = False
    while s and ((s[0] in _CURRENCY and not has_currency) or (s[0] in _MINUS + "+" and not has_sign)):
        if s[0] in _CURRENCY:                      # at most one sign and one currency symbol,
            has_currency = True                    # in either order: "-$3", "$-3", "$ 18", "+5"
        else:
            has_sign, negative = True, s[0] in _MINUS
        s = s[1:].lstrip()
    return negative, s


def _exact_number(text: Any) -> tuple[Fraction, bool] | None:
    """(the exact value, True if written as a decimal or integer) of what `parse_number` reads, else None.

    "1,000,000,001" -> (1000000001, True); "0.10" -> (1/10, True); "3/4" -> (3/4, False). Python's
    Fraction holds any size exactly, where a float has 53 bits (1000000001 vs 1000000000 is 1e-9 apart).
    """
    if isinstance(text, bool) or not isinstance(text, str):
        return None
    negative, s = _sign_and_digits(text)
    if len(s) > EXACT_MAX_DIGITS:                   # not an answer; and Python refuses int("9" * 5000)
        return None
    if _BARE_NUMBER.fullmatch(s):
        value, decimal = Fraction(s.replace(",", "")), True
    elif (fraction := _FRACTION.fullmatch(s)) and int(fraction.group(2)) != 0:
        value, decimal = Fraction(int(fraction.group(1)), int(fraction.group(2))), False
    else:
        return None
    return (-value if negative else value), decimal


def _exact_answer_value(answer: Any) -> tuple[Fraction, bool] | None:
    """`_exact_number` of the whole answer, else of the single number inside it (as `_answer_value`)."""
    exact = _exact_number(answer)
    if exact is not None or parse_number(answer) is not None:
        return exact
    first_two = list(itertools.islice(_number_matches(answer), 2))
    if len(first_two) != 1 or len(first_two[0].group("digits")) > EXACT_MAX_DIGITS:
        return None
    value = Fraction(first_two[0].group("digits").replace(",", ""))
    return (-value if first_two[0].group("sign") else value), True


def same_answer_number(predicted: Any, gold: Any) -> bool:
    """Do two answers hold the same number? Exact for integers and decimals of any size (up to
    EXACT_MAX_DIGITS characters); 1e-9 tolerance only where a fraction is involved ("1/3" vs "0.333333333333").

    Used by: `correctness_reward` (its 1.5 for the same number written differently)
    """
    a, b = _exact_answer_value(predicted), _exact_answer_value(gold)
    if a is not None and b is not None:
        (x, x_decimal), (y, y_decimal) = a, b
        if x == y:
            return True
        if (x_decimal and y_decimal) or (x.denominator == 1 and y.denominator == 1):
            return False                                   # two decimals, or two integers: exact
    return numbers_equal(_answer_value(predicted), _answer_value(gold))


def _number_matches(text: Any) -> Iterator[re.Match[str]]:
    """The numbers written in running text, in order, as lazy regex matches."""
    return _NUMBER_IN_TEXT.finditer(text) if isinstance(text, str) else iter(())


def _match_value(m: re.Match[str]) -> float | None:
    value = float(m.group("digits").replace(",", ""))    # "2,125" -> 2125.0; too many digits -> inf
    return _finite(-value if m.group("sign") else value)


def extract_last_number(text: Any) -> float | None:
    """The last number written anywhere in the text: "…so 2,125 apples." -> 2125.0.

    The tutorial's version only found a number that ended the text (after removing "$" and "%"),
    so "42." or "42 apples" gave None; this one takes the last number wherever it is.

    Args:
        text: any text, e.g. a whole completion o.

    Returns:
        The value as a float, or None if the text has no number or the last one is not finite.

    Used by: `lenient_correct`
    """
    last = None
    for last in _number_matches(text):
        pass
    return _match_value(last) if last is not None else None


def extract_single_number(text: Any) -> float | None:
    """The number in the text if it holds exactly one: "The total is $2,125." -> 2125.0.

    Like the tutorial's, but "2,125" is one number (the tutorial read it as 2 and 125).

    Args:
        text: any text, e.g. the content of the answer tag.

    Returns:
        The value as a float, or None when the text holds no number, several, or a non-finite one.

    Taught in: notebooks/03_reward_design.ipynb
    """
    first_two = list(itertools.islice(_number_matches(text), 2))   # stop at the second number
    return _match_value(first_two[0]) if len(first_two) == 1 else None


def _answer_value(answer: Any) -> float | None:
    """An answer's number: the whole answer parsed, else the single number inside it."""
    value = parse_number(answer)
    return value if value is not None else extract_single_number(answer)


def numbers_equal(a: float | None, b: float | None) -> bool:
    """a ≡ b: both numbers and |a - b| ≤ 1e-9 · max(1, |a|, |b|).

    Used by: `correctness_reward` and `lenient_correct`
    """
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=NUMERIC_TOLERANCE, abs_tol=NUMERIC_TOLERANCE)


# --- scoring one completion ----------------------------------------------------------------------


def _completion_text(completion: Any) -> str | None:
    """The text of one completion: [{"content": text}] (tutorial), {"content": text}, or text."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion:
        completion = completion[0]
    if isinstance(completion, dict):
        content = completion.get("content")
        return content if isinstance(content, str) else None
    return None


def _correctness(text: str | None, gold: Any) -> float:
    """2.0 exact, 1.5 same number, else 0.0, for one completion text and one gold string."""
    if not isinstance(gold, str) or not gold.strip():
        return 0.0
    predicted = extract_answer_from_model_output(text)
    if predicted is None:
        return 0.0
    if predicted == gold.strip():
        return CORRECT_EXACT
    if same_answer_number(predicted, gold):
        return CORRECT_NUMERIC
    return 0.0


def _format_score(text: str | None) -> float:
    """0.2 per tag present among <reasoning>, </reasoning>, <answer>, </answer>."""
    if text is None:
        return 0.0
    n_tags = sum(tag in text for tag in TAGS)
    return round(FORMAT_PER_TAG * n_tags, 10)    # 0.6, not 0.6000000000000001


def _is_strictly_formatted(text: str | None) -> bool:
    """One <reasoning>…</reasoning> then one <answer>…</answer>, non-empty, only whitespace around."""
    if text is None or any(text.count(tag) != 1 for tag in TAGS):
        return False
    r_open, r_close = text.find(REASONING_OPEN), text.find(REASONING_CLOSE)
    a_open, a_close = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
    if not r_open < r_close < a_open < a_close:
        return False
    reasoning = text[r_open + len(REASONING_OPEN):r_close].strip()
    answer = text[a_open + len(ANSWER_OPEN):a_close].strip()
    outside = text[:r_open] + text[r_close + len(REASONING_CLOSE):a_open] + text[a_close + len(ANSWER_CLOSE):]
    return outside.strip() == "" and reasoning not in ("", _PLACEHOLDER) and answer not in ("", _PLACEHOLDER)


def lenient_correct(text: Any, gold: Any) -> bool:
    """Lenient accuracy: the last number anywhere in the completion equals the gold number.

    Ignores the tags entirely, so it measures the maths without the format ("…so she has 72 left"
    counts for gold "72").

    Args:
        text: a whole completion o (str).
        gold: the gold answer string, e.g. "2,125".

    Taught in: notebooks/03_reward_design.ipynb
    """
    return numbers_equal(extract_last_number(text), _answer_value(gold))


def strict_correct(text: Any, gold: Any) -> bool:
    """Strict accuracy: the answer inside the last closed <answer> tag is right (exactly or as a number).

    Equivalent to a correctness reward > 0; the rest of the format is not checked
    (`strict_format_reward` does that).

    Args:
        text: a whole completion o (str).
        gold: the gold answer string, e.g. "2,125".

    Taught in: notebooks/03_reward_design.ipynb
    """
    return _correctness(text if isinstance(text, str) else None, gold) > 0.0


# --- the reward functions (tutorial names and signatures) ----------------------------------------


def _as_list(items: Any, what: str) -> list[Any]:
    """A batch (list, tuple, a 1-d numpy array, datasets Column: an ordered sequence) as a list; refuse a
    str, a dict, a generator, a set (no order: the rewards would not line up with the completions) and a
    tensor (not text)."""
    ordered = isinstance(items, Sequence) or (type(items).__module__ == "numpy" and getattr(items, "ndim", 0) == 1)
    if isinstance(items, (str, bytes, Mapping)) or not ordered:
        raise TypeError(f"{what}; got {type(items).__name__}")
    return list(items)


def _texts(completions: Any) -> list[str | None]:
    completions = _as_list(
        completions, "completions must be a list with one entry per completion, e.g. [[{'content': text}]]"
    )
    return [_completion_text(c) for c in completions]


def _golds(answer: Any, n_completions: int) -> list[Any]:
    golds = _as_list(answer, "answer must be a list of gold strings, one per completion")
    if len(golds) != n_completions:
        raise ValueError(
            f"got {n_completions} completions but {len(golds)} gold answers: pass one gold per "
            "completion (repeat each prompt's gold G times)"
        )
    return golds


def correctness_reward(prompts: Any, completions: Any, answer: Any, **kwargs: Any) -> list[float]:
    """r_correct(o_i) = 2.0 if the tagged answer equals the gold string, 1.5 if the same number, else 0.

    Args:
        prompts: the prompts, one per completion (unused; kept for the tutorial's and TRL's signature).
        completions: B completions, each `[{"content": text}]`.
        answer: B gold strings (GSM8K's text after "####"), one per completion.
        **kwargs: ignored (TRL passes the dataset's other columns).

    Returns:
        B floats in {0.0, 1.5, 2.0}.

    Raises:
        TypeError: completions or answer is not a list or tuple (or another ordered sequence, such as
            a numpy array); a str, a set, a dict, a generator or a tensor is refused.
        ValueError: len(completions) != len(answer).

    Taught in: notebooks/03_reward_design.ipynb
    """
    texts = _texts(completions)
    golds = _golds(answer, len(texts))
    return [_correctness(text, gold) for text, gold in zip(texts, golds)]


def format_reward(completions: Any, **kwargs: Any) -> list[float]:
    """r_format(o_i) = 0.2 · (number of the tags <reasoning>, </reasoning>, <answer>, </answer> present).

    The tutorial's lenient reward: "<reasoning></reasoning><answer></answer>" earns the full 0.8.

    Args:
        completions: B completions, each `[{"content": text}]`.
        **kwargs: ignored.

    Returns:
        B floats in {0.0, 0.2, 0.4, 0.6, 0.8}.

    Taught in: notebooks/03_reward_design.ipynb
    """
    return [_format_score(text) for text in _texts(completions)]


def strict_format_reward(completions: Any, **kwargs: Any) -> list[float]:
    """r_strict(o_i) = 0.8 if o_i is exactly "<reasoning>R</reasoning> <answer>A</answer>", else 0.0.

    Each tag appears once, in that order, R and A are neither empty nor "...", and only whitespace
    is allowed before <reasoning>, between </reasoning> and <answer>, and after </answer> (so a
    "Human: …" continuation scores 0). Defeats the empty-tags hack that `format_reward` pays 0.8 for.

    Args:
        completions: B completions, each `[{"content": text}]`.
        **kwargs: ignored.

    Returns:
        B floats in {0.0, 0.8}.

    Taught in: notebooks/03_reward_design.ipynb
    """
    return [FORMAT_STRICT if _is_strictly_formatted(text) else 0.0 for text in _texts(completions)]


def combined_reward(prompts: Any, completions: Any, answer: Any, **kwargs: Any) -> list[float]:
    """r(o_i) = r_correct(o_i) + r_format(o_i), in [0, 2.8] (the tutorial's total).

    Args:
        prompts: the prompts (unused, as in `correctness_reward`).
        completions: B completions, each `[{"content": text}]`.
        answer: B gold strings, one per completion.
        **kwargs: ignored (the tutorial's signature had none; accepted so TRL can call it too).

    Returns:
        B floats: {0.0, 1.5, 2.0} + {0.0, 0.2, 0.4, 0.6, 0.8}.

    Taught in: notebooks/03_reward_design.ipynb
    """
    correctness = correctness_reward(prompts=prompts, completions=completions, answer=answer)
    formatting = format_reward(completions=completions)
    return [round(c + f, 10) for c, f in zip(correctness, formatting)]


class SoftOverlongPunishment:
    """DAPO's soft overlong penalty R_len(|y|) (eq. 13), TRL's `get_soft_overlong_punishment`.

        R_len = 0                                 if |y| <= L_max - L_cache
              = ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
              = -1                                if |y| > L_max

    Call it as TRL does, `fn(completion_ids=[[ids], ...])`; it returns one float per completion.

    Args:
        max_completion_len: L_max, the generation budget in tokens.
        soft_punish_cache: L_cache, the width of the linear zone (DAPO: 4,096 of 20,480), 0 < L_cache <= L_max.
    """

    __name__ = "soft_overlong_punishment_reward"      # TRL's metric name

    def __init__(self, max_completion_len: int, soft_punish_cache: int):
        for name, v in (("max_completion_len", max_completion_len), ("soft_punish_cache", soft_punish_cache)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int (tokens), got {v!r}")
        if soft_punish_cache > max_completion_len:
            raise ValueError(f"soft_punish_cache ({soft_punish_cache}) must be <= max_completion_len "
                             f"({max_completion_len})")
        self.max_completion_len, self.soft_punish_cache = max_completion_len, soft_punish_cache

    def __call__(self, completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float]:
        L_max, L_c = self.max_completion_len, self.soft_punish_cache
        out = []
        for ids in _as_list(completion_ids, "completion_ids must be a list of token-id lists, one per completion"):
            n = len(ids)
            out.append(0.0 if n <= L_max - L_c else ((L_max - L_c) - n) / L_c if n <= L_max else -1.0)
        return out


def soft_overlong_punishment(max_completion_len: int, soft_punish_cache: int) -> SoftOverlongPunishment:
    """DAPO's soft overlong penalty as a reward function (see `SoftOverlongPunishment`; TRL's
    `get_soft_overlong_punishment(max_completion_len, soft_punish_cache)`)."""
    return SoftOverlongPunishment(max_completion_len, soft_punish_cache)


REWARD_FUNCTIONS = {"correctness": correctness_reward, "format": format_reward,
                    "strict_format": strict_format_reward}
"""name -> reward function: the names GRPOConfig.reward_funcs (and --reward-funcs) accept"""


def reward_functions(names: Iterable[str]) -> dict[str, Any]:
    """name -> reward function from `REWARD_FUNCTIONS`, for cfg.reward_funcs.

    Raises:
        ValueError: an unknown name (the message lists the known ones), or a single string instead of a list.

    Taught in: notebooks/05_full_run.ipynb
    """
    if isinstance(names, str):                     # list("correctness") would be its letters
        raise ValueError(f"reward_funcs must be a list of names, got the single string {names!r}; write [{names!r}]")
    names = list(names)
    unknown = [n for n in names if n not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"reward_funcs: unknown reward function(s) {unknown}; choose from {sorted(REWARD_FUNCTIONS)}")
    return {n: REWARD_FUNCTIONS[n] for n in names}

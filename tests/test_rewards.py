"""Tests for grpo_lib.rewards: hand-computed scores, tricky answers, real GSM8K golds, properties, speed.

The tutorial's own extraction and format code is copied below (`tutorial_*`) as an independent
implementation: where the tutorial is right, ours must agree with it exactly.
"""
from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpo_lib.rewards import (
    SYSTEM_PROMPT,
    combined_reward,
    correctness_reward,
    extract_answer_from_dataset,
    extract_answer_from_model_output,
    extract_last_number,
    extract_single_number,
    format_reward,
    lenient_correct,
    numbers_equal,
    parse_number,
    strict_correct,
    strict_format_reward,
)

TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
CORRECTNESS_VALUES = {0.0, 1.5, 2.0}
FORMAT_VALUES = {0.0, 0.2, 0.4, 0.6, 0.8}
STRICT_VALUES = {0.0, 0.8}
COMBINED_VALUES = {round(c + f, 10) for c in CORRECTNESS_VALUES for f in FORMAT_VALUES}

WELL_FORMED = "<reasoning>\n48/2 = 24 clips in May; 48 + 24 = 72.\n</reasoning>\n<answer>\n72\n</answer>"


def batch(*texts):
    """Completions in the tutorial's shape: [[{"content": text}], ...]."""
    return [[{"content": t}] for t in texts]


def correctness(text, gold):
    return correctness_reward(None, batch(text), [gold])[0]


def fmt(text):
    return format_reward(batch(text))[0]


def strict(text):
    return strict_format_reward(batch(text))[0]


# --- the tutorial's code, verbatim, as the reference implementation ---------------------------------


def tutorial_extract_answer_from_model_output(text):
    parts = text.split("<answer>")
    if len(parts) < 2:
        return None
    last_part = parts[-1]
    if "</answer>" not in last_part:
        return None
    answer = last_part.split("</answer>")[0].strip()
    return None if answer == "..." else answer


def tutorial_format_score(response):
    score = 0.0
    if "<reasoning>" in response: score += 0.2  # noqa: E701
    if "</reasoning>" in response: score += 0.2  # noqa: E701
    if "<answer>" in response: score += 0.2  # noqa: E701
    if "</answer>" in response: score += 0.2  # noqa: E701
    return score


def reference_strict(text):
    """Strict format by a different route: tag counts plus one DOTALL regex (safe: each tag is unique)."""
    if any(text.count(tag) != 1 for tag in TAGS):
        return 0.0
    m = re.fullmatch(r"\s*<reasoning>(.*)</reasoning>\s*<answer>(.*)</answer>\s*", text, re.DOTALL)
    if m is None or any(g.strip() in ("", "...") for g in m.groups()):
        return 0.0
    return 0.8


# --- the tutorial's cases, hand-computed ------------------------------------------------------------


def test_system_prompt_is_the_tutorials():
    assert SYSTEM_PROMPT == (
        "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
    )


@pytest.mark.parametrize(
    "text, gold, c, f, s",
    [
        (WELL_FORMED, "72", 2.0, 0.8, 0.8),                                    # right, well formed: 2.8
        (WELL_FORMED.replace("\n72\n", "\n72 clips\n"), "72", 1.5, 0.8, 0.8),  # same number, other text
        (WELL_FORMED.replace("\n72\n", "\n71\n"), "72", 0.0, 0.8, 0.8),        # wrong: format only
        ("<answer>72</answer>", "72", 2.0, 0.4, 0.0),                          # no reasoning block
        ("The answer is 72.", "72", 0.0, 0.0, 0.0),                            # no tags at all
        ("<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>", "72", 0.0, 0.8, 0.0),  # the prompt parroted
        ("<reasoning></reasoning><answer></answer>", "72", 0.0, 0.8, 0.0),     # the empty-tags hack
    ],
)
def test_tutorial_cases_hand_computed(text, gold, c, f, s):
    assert correctness(text, gold) == c
    assert fmt(text) == f
    assert strict(text) == s
    assert combined_reward(None, batch(text), [gold]) == [pytest.approx(c + f)]


def test_batch_of_rewards_keeps_order():
    texts = [WELL_FORMED, "<answer>$72.00</answer>", "nothing", "<answer>2,125</answer>"]
    golds = ["72", "72", "72", "2125"]
    assert correctness_reward(["q"] * 4, batch(*texts), golds) == [2.0, 1.5, 0.0, 1.5]
    assert format_reward(batch(*texts)) == [0.8, 0.4, 0.0, 0.4]
    assert strict_format_reward(batch(*texts)) == [0.8, 0.0, 0.0, 0.0]
    assert combined_reward(["q"] * 4, batch(*texts), golds) == [2.8, 1.9, 0.0, 1.9]


def test_format_values_are_the_decimal_literals():
    # the tutorial's running sum gives 0.6000000000000001 for three tags; ours gives 0.6
    assert fmt("<reasoning></reasoning><answer>") == 0.6
    assert tutorial_format_score("<reasoning></reasoning><answer>") == pytest.approx(0.6)


# --- tricky completions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer_text, gold, expected",
    [
        ("2,125", "2125", 1.5),          # thousands separator in the answer
        ("2125", "2,125", 1.5),          # ... or in the gold (93 GSM8K golds have one)
        ("2,125", "2,125", 2.0),         # same string
        ("1,000,000", "1000000", 1.5),
        ("$18", "18", 1.5),              # currency
        ("$18.00", "18", 1.5),
        ("18.00", "18", 1.5),            # trailing zeros
        ("18 dollars", "18", 1.5),       # unit word
        ("18.", "18", 1.5),              # trailing period
        ("-3", "-3", 2.0),               # negative, exact
        ("−3", "-3", 1.5),               # Unicode minus sign
        ("-$3", "-3", 1.5),
        ("3", "-3", 0.0),                # the sign matters
        ("50%", "50", 1.5),              # a percent stays a percent
        ("3/4", "0.75", 1.5),            # a simple fraction
        ("The total is 72", "72", 1.5),  # exactly one number inside the answer (tutorial's rule)
        ("24 + 48 = 72", "72", 0.0),     # several numbers: no numeric match (tutorial's rule)
        ("12,34", "1234", 0.0),          # not thousands groups: not a number
        ("  72  ", "72", 2.0),           # whitespace stripped before the exact match
        ("72", " 72\n", 2.0),            # ... on both sides
        ("1000001", "1,000,000", 0.0),   # tolerance never merges different integers
        ("seventy-two", "72", 0.0),
    ],
)
def test_tricky_answers(answer_text, gold, expected):
    assert correctness(f"<reasoning>r</reasoning>\n<answer>{answer_text}</answer>", gold) == expected


@pytest.mark.parametrize(
    "text, extracted",
    [
        ("<answer>5</answer> <answer>6</answer>", "6"),            # several answer tags: the last
        ("<answer>5</answer> <answer>6", None),                     # unclosed last tag: no answer
        ("<answer>6</answer>\nHuman: and 2+2?", "6"),               # text after </answer> is ignored
        ("<answer></answer>", None),                                # empty
        ("<answer>  \n </answer>", None),
        ("<answer>...</answer>", None),                             # the prompt's placeholder
        ("<answer>\n...\n</answer>", None),
        ("<answer><answer>7</answer>", "7"),                        # nested opening tags
        ("</answer>7<answer>", None),                               # tags in the wrong order
        ("<answer>7</answer></answer>", "7"),
        ("no tags 7", None),
        ("<answer> 2,125 </answer>", "2,125"),                      # stripped, not normalised
    ],
)
def test_extract_answer_from_model_output(text, extracted):
    assert extract_answer_from_model_output(text) == extracted


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>5</answer> <answer>6</answer>", 0.0),   # gold 5, final answer 6
        ("<answer>6</answer> <answer>5</answer>", 2.0),
        ("<answer>5</answer> <answer>5", 0.0),            # final answer unfinished
        ("<answer>5</answer>\nHuman: what is 2+3?", 2.0),
        ("<answer></answer>", 0.0),
        ("<answer>...</answer>", 0.0),
    ],
)
def test_tag_edge_cases_score(text, expected):
    assert correctness(text, "5") == expected


@pytest.mark.parametrize(
    "text, value",
    [
        ("72", 72.0), ("2,125", 2125.0), ("1,000,000", 1e6), ("1,234.50", 1234.5), ("$18", 18.0),
        ("$18.00", 18.0), ("18.00", 18.0), ("18 dollars", 18.0), ("18 dollars.", 18.0), ("-3", -3.0),
        ("−3", -3.0), ("-$3", -3.0), ("$-3", -3.0), ("$ 18", 18.0), ("+5", 5.0), ("18.", 18.0),
        ("50%", 50.0), ("50 %", 50.0), ("3/4", 0.75), ("-3/4", -0.75), ("6 / 3", 2.0), (".5", 0.5),
        ("  \n 7 \t", 7.0), ("€5", 5.0), ("5 hours", 5.0), (18, 18.0), (2.5, 2.5),
    ],
)
def test_parse_number_reads(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "...", ".", "$", "-", "five", "x = 5", "1 1/2", "12,34", "1,0000", "3/0", "1e5", "--3",
     "5 or 6", "9" * 400, "9" * 400 + "/" + "9" * 400, None, True, float("inf"), float("nan"), [5],
     10**400],
)
def test_parse_number_refuses(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    "text, last, single",
    [
        ("So she sold 48 + 24 = 72 clips.", 72.0, None),
        ("The answer is 42.", 42.0, 42.0),        # the tutorial's extract_last_number gave None here
        ("42 apples", 42.0, 42.0),                # ... and here
        ("It costs $2,125 in total", 2125.0, 2125.0),
        ("2,125", 2125.0, 2125.0),                # the tutorial read this as two numbers
        ("x = -3.", -3.0, -3.0),
        ("from 5-3 we get 2", 2.0, None),
        ("5-3", 3.0, None),                       # "5-3" holds no negative number
        ("in 2019-2020", 2020.0, None),
        ("total 1,2345", 2345.0, None),           # not "1,234" and "5"
        ("(-$4)", -4.0, -4.0),
        ("1, 2, 3", 3.0, None),
        ("no numbers", None, None),
        ("", None, None),
        ("9" * 400, None, None),                  # not a finite float
        (None, None, None),
    ],
)
def test_extract_last_and_single_number(text, last, single):
    assert extract_last_number(text) == last
    assert extract_single_number(text) == single


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
        ("…\n#### 2,125", "2,125"),
        ("#### -3 ", "-3"),
        ("no delimiter 72", None),
        ("#### ", None),
        (None, None),
    ],
)
def test_extract_answer_from_dataset(text, expected):
    assert extract_answer_from_dataset(text) == expected


@pytest.mark.parametrize(
    "text, s",
    [
        (WELL_FORMED, 0.8),
        ("  \n" + WELL_FORMED + "\n\n ", 0.8),                            # whitespace around is fine
        ("<reasoning>r</reasoning><answer>5</answer>", 0.8),              # no newline needed between
        (WELL_FORMED + "\nHuman: what is 2+2?", 0.0),                     # a continuation after </answer>
        ("Sure! " + WELL_FORMED, 0.0),                                    # chatter before <reasoning>
        ("<reasoning>r</reasoning> so <answer>5</answer>", 0.0),          # text between the blocks
        ("<reasoning></reasoning><answer>5</answer>", 0.0),               # empty reasoning
        ("<reasoning>r</reasoning><answer> </answer>", 0.0),              # empty answer
        ("<reasoning>...</reasoning><answer>5</answer>", 0.0),            # placeholder reasoning
        ("<answer>5</answer><reasoning>r</reasoning>", 0.0),              # blocks swapped
        (WELL_FORMED + "<answer>6</answer>", 0.0),                        # two answers
        ("<reasoning>a<reasoning>b</reasoning><answer>5</answer>", 0.0),  # nested reasoning tag
        ("<reasoning>r</answer><answer>5</reasoning>", 0.0),              # crossed tags
    ],
)
def test_strict_format_reward(text, s):
    assert strict(text) == s
    assert reference_strict(text) == s


def test_strict_format_defeats_the_empty_tags_hack():
    hack = "<reasoning></reasoning><answer></answer>"
    assert fmt(hack) == 0.8 and strict(hack) == 0.0


# --- lenient / strict accuracy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, gold, lenient, strict_",
    [
        (WELL_FORMED, "72", True, True),
        ("48 + 24 = 72, so 72 clips.", "72", True, False),            # right number, no tags
        ("<answer>72</answer>\nHuman: and 3?", "72", False, True),    # tagged right, rambles on
        ("<answer>$2,125.00</answer>", "2125", True, True),
        ("<answer>71</answer>", "72", False, False),
        ("", "72", False, False),
        (None, "72", False, False),
        (WELL_FORMED, None, False, False),
    ],
)
def test_lenient_and_strict_correct(text, gold, lenient, strict_):
    assert lenient_correct(text, gold) is lenient
    assert strict_correct(text, gold) is strict_


def test_numbers_equal_tolerance():
    assert numbers_equal(0.1 + 0.2, 0.3)
    assert numbers_equal(18.0, 18)
    assert not numbers_equal(1_000_000, 1_000_001)
    assert not numbers_equal(0.0, 1e-6)
    assert not numbers_equal(None, 1.0) and not numbers_equal(None, None)


# --- malformed input: defined values or clear errors -------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [[{"content": None}], [{"content": 72}], [{"text": "<answer>72</answer>"}], [], [None], None, 72,
     [[{"content": "<answer>72</answer>"}]], [{"content": b"<answer>72</answer>"}]],
)
def test_malformed_completion_scores_zero(completion):
    assert correctness_reward(None, [completion], ["72"]) == [0.0]
    assert format_reward([completion]) == [0.0]
    assert strict_format_reward([completion]) == [0.0]
    assert combined_reward(None, [completion], ["72"]) == [0.0]


@pytest.mark.parametrize("completion", ["<answer>72</answer>", {"content": "<answer>72</answer>"},
                                        ({"content": "<answer>72</answer>", "role": "assistant"},)])
def test_other_completion_shapes_are_read(completion):
    assert correctness_reward(None, [completion], ["72"]) == [2.0]
    assert format_reward([completion]) == [0.4]


@pytest.mark.parametrize("gold", [None, "", "  ", 72, 72.0, ["72"]])
def test_missing_or_non_string_gold_scores_zero(gold):
    assert correctness_reward(None, batch("<answer>72</answer>"), [gold]) == [0.0]


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="2 completions but 1 gold answers"):
        correctness_reward(None, batch("a", "b"), ["72"])
    with pytest.raises(ValueError, match="1 completions but 2 gold answers"):
        combined_reward(None, batch("a"), ["72", "72"])


def test_wrong_containers_are_clear_errors():
    with pytest.raises(TypeError, match="answer must be a list of gold strings"):
        correctness_reward(None, batch("<answer>7</answer>"), "7")   # would otherwise zip characters
    with pytest.raises(TypeError, match="completions must be a list"):
        format_reward("<answer>7</answer>")
    with pytest.raises(TypeError, match="completions must be a list"):
        strict_format_reward(None)


def test_other_batch_containers():
    np = pytest.importorskip("numpy")
    texts = ("<answer>7</answer>", "<answer>8</answer>")
    assert correctness_reward(None, tuple(batch(*texts)), np.array(["7", "7"])) == [2.0, 0.0]
    assert format_reward(np.array(texts)) == [0.4, 0.4]                  # plain-string completions
    with pytest.raises(TypeError, match="completions must be a list"):
        format_reward(c for c in batch(*texts))   # a generator would be exhausted by the first reward
    with pytest.raises(TypeError, match="answer must be a list"):
        correctness_reward(None, batch(*texts), {"a": "7", "b": "7"})


def test_empty_batch():
    assert correctness_reward([], [], []) == []
    assert format_reward([]) == [] and strict_format_reward([]) == [] and combined_reward([], [], []) == []


def test_kwargs_are_accepted_like_trl():
    kw = {"prompts": ["q"], "completions": batch(WELL_FORMED), "answer": ["72"], "question": ["q"]}
    assert correctness_reward(**kw) == [2.0]
    assert combined_reward(**kw) == [2.8]
    assert format_reward(completions=kw["completions"], answer=["72"]) == [0.8]


# --- real GSM8K golds -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_golds(gsm8k_dir):
    """Every GSM8K gold (train + test) as extracted from the dataset's answer field."""
    datasets = pytest.importorskip("datasets")
    files = {split: str(gsm8k_dir / f"{split}.jsonl") for split in ("train", "test")}
    ds = datasets.load_dataset("json", data_files=files)
    return [extract_answer_from_dataset(a) for split in ("train", "test") for a in ds[split]["answer"]]


def test_every_gsm8k_gold_parses(gsm8k_golds):
    assert len(gsm8k_golds) == 7473 + 1319
    assert all(g is not None for g in gsm8k_golds)
    for g in gsm8k_golds:
        # independent reading: GSM8K golds are (possibly negative) integers, commas as separators
        assert parse_number(g) == int(g.replace(",", "")), g


def test_every_gsm8k_gold_scores_exact_for_itself(gsm8k_golds):
    completions = batch(*(f"<reasoning>r</reasoning>\n<answer>{g}</answer>" for g in gsm8k_golds))
    assert correctness_reward(None, completions, gsm8k_golds) == [2.0] * len(gsm8k_golds)
    assert all(lenient_correct(f"... so the answer is {g}.", g) for g in gsm8k_golds)


def test_gsm8k_golds_with_thousands_separators(gsm8k_golds):
    with_commas = [g for g in gsm8k_golds if "," in g]
    assert len(with_commas) == 93                       # measured over train + test
    without = [g.replace(",", "") for g in with_commas]
    assert correctness_reward(None, batch(*(f"<answer>{g}</answer>" for g in without)), with_commas) == [1.5] * 93
    assert correctness_reward(None, batch(*(f"<answer>{g}</answer>" for g in with_commas)), without) == [1.5] * 93


def test_gsm8k_golds_with_separators_added(gsm8k_golds):
    big = [g for g in gsm8k_golds if "," not in g and abs(int(g)) >= 1000]
    assert big                                          # there are such golds, and each is checked
    added = [f"{int(g):,}" for g in big]                # Python's own formatting, not ours
    assert correctness_reward(None, batch(*(f"<answer>{a}</answer>" for a in added)), big) == [1.5] * len(big)
    dollars = [f"<answer>${int(g):,}.00</answer>" for g in big]
    assert correctness_reward(None, batch(*dollars), big) == [1.5] * len(big)


# --- properties (hypothesis) ------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    TAGS + ("...", "72", "2,125", "$18", "-3", "18.00", "3/4", "50%", " ", "\n", "Human: ", ".", ",", "dollars")
)
TAGGED_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=6)), max_size=14).map("".join)
ANY_TEXT = st.one_of(st.text(), TAGGED_TEXT)
GOLDS = st.one_of(st.sampled_from(["72", "2,125", "-3", "18", "0"]), st.text(max_size=8), st.none())
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(text=ANY_TEXT, gold=GOLDS)
def test_rewards_are_defined_on_any_text(text, gold):
    c = correctness(text, gold)
    f = fmt(text)
    s = strict(text)
    assert c in CORRECTNESS_VALUES and f in FORMAT_VALUES and s in STRICT_VALUES
    assert combined_reward(None, batch(text), [gold]) == [round(c + f, 10)]
    assert combined_reward(None, batch(text), [gold])[0] in COMBINED_VALUES
    assert s == 0.0 or f == 0.8                     # strict format implies all four tags
    assert (c == 2.0) == (isinstance(gold, str) and extract_answer_from_model_output(text) == gold.strip() != "")
    assert strict_correct(text, gold) == (c > 0)
    assert isinstance(lenient_correct(text, gold), bool)
    for fn in (parse_number, extract_last_number, extract_single_number):
        v = fn(text)
        assert v is None or isinstance(v, float)


@PROPS
@given(text=ANY_TEXT)
def test_agrees_with_the_tutorial_where_the_tutorial_is_right(text):
    expected = tutorial_extract_answer_from_model_output(text)
    assert extract_answer_from_model_output(text) == (expected or None)   # tutorial returned "" when empty
    assert fmt(text) == pytest.approx(tutorial_format_score(text))


@PROPS
@given(text=ANY_TEXT)
def test_strict_format_agrees_with_reference(text):
    assert strict(text) == reference_strict(text)


@PROPS
@given(text=TAGGED_TEXT)
def test_strict_format_on_built_blocks(text):
    block = f"<reasoning>{text}</reasoning>\n<answer>{text}</answer>"
    assert strict(block) == reference_strict(block)


@PROPS
@given(content=st.one_of(st.none(), st.integers(), st.floats(), st.text(), st.binary(),
                         st.lists(st.text(), max_size=2), st.dictionaries(st.text(max_size=3), st.text(max_size=3))))
def test_any_content_object_is_defined(content):
    for completion in ([{"content": content}], content, [content]):
        assert correctness_reward(None, [completion], ["72"])[0] in CORRECTNESS_VALUES
        assert format_reward([completion])[0] in FORMAT_VALUES
        assert strict_format_reward([completion])[0] in STRICT_VALUES


@PROPS
@given(n=st.integers(min_value=-10**12, max_value=10**12))
def test_integers_with_separators_and_currency(n):
    assert parse_number(f"{n:,}") == n
    assert parse_number(f"${n:,}.00") == n
    assert extract_single_number(f"The total is {n:,} dollars.") == n
    assert extract_last_number(f"Step 1: 7. So the answer is {n:,}.") == n
    expected = 2.0 if abs(n) < 1000 else 1.5          # below 1000 the formatted string has no comma
    assert correctness(f"<answer>{n:,}</answer>", str(n)) == expected


@PROPS
@given(x=st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False, allow_infinity=False))
def test_decimals_match_numerically(x):
    assert parse_number(f"{x}") == pytest.approx(float(x), rel=1e-12, abs=1e-12)
    assert correctness(f"<answer>{x:.2f} dollars</answer>", f"{x:.3f}") == 1.5


# --- speed: no catastrophic backtracking -----------------------------------------------------------

ADVERSARIAL = {
    "answer_open_x25000": "<answer>" * 25000,
    "commas_digits": "1," * 100_000,
    "thousands_groups_broken": "1,000" * 40_000 + "0",
    "nested_tags": "<reasoning><answer>" * 5300 + "</answer></reasoning>" * 5300,
    "huge_number_in_tags": "<answer>" + "9" * 200_000 + "</answer>",
    "huge_fraction_in_tags": "<answer>" + "9" * 100_000 + "/" + "9" * 100_000 + "</answer>",
    "minus_signs": "-" * 200_000 + "3",
    "spaces_then_letter": "<answer>" + " " * 200_000 + "x</answer>",
    "letters_then_digit": "<answer>" + "a " * 100_000 + "1</answer>",
    "dots": "<answer>" + "." * 200_000 + "</answer>",
    "decimals": "<answer>" + "1." * 100_000 + "</answer>",
    "currency": "<answer>" + "$-" * 100_000 + "5</answer>",
    "unclosed_with_digits": "<answer>" + "12 " * 70_000,
    "equals_spaces": "= " * 100_000 + "x",
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_200kb_adversarial_completion_is_fast(name):
    text = ADVERSARIAL[name]
    assert len(text) >= 200_000
    completions, golds = batch(text), ["72"]
    start = time.perf_counter()
    rewards = (correctness_reward(None, completions, golds), format_reward(completions),
               strict_format_reward(completions), combined_reward(None, completions, golds))
    answer = extract_answer_from_model_output(text)
    for fn in (parse_number, extract_last_number, extract_single_number):
        fn(text)
        fn(answer)
    lenient_correct(text, "72"), strict_correct(text, "72")
    elapsed = time.perf_counter() - start
    # A guard against catastrophic backtracking, not a benchmark: alone this takes ~0.1 s, while a quadratic
    # pattern on 200,000 characters needs ~4e10 steps (minutes). 3 s leaves room for a loaded CI machine.
    assert elapsed < 3.0, f"{name}: {elapsed:.3f} s"
    assert rewards[0] == [0.0] and rewards[2] == [0.0]


def test_adversarial_values():
    assert fmt(ADVERSARIAL["answer_open_x25000"]) == 0.2
    assert extract_answer_from_model_output(ADVERSARIAL["answer_open_x25000"]) is None
    assert fmt(ADVERSARIAL["nested_tags"]) == 0.8
    assert extract_answer_from_model_output(ADVERSARIAL["nested_tags"]) is None   # last <answer> is empty
    assert parse_number(ADVERSARIAL["huge_number_in_tags"][8:-9]) is None          # overflows to inf
    assert extract_last_number(ADVERSARIAL["minus_signs"]) == -3.0
    assert extract_single_number(ADVERSARIAL["commas_digits"]) is None             # many numbers


# --- integers are compared exactly, whatever their size ----------------------------------------------------------
def _score(answer_text: str, gold: str) -> float:
    return correctness_reward(["q"], [[{"content": f"<answer>{answer_text}</answer>"}]], [gold])[0]


def test_one_billion_and_one_is_not_one_billion():
    assert _score("1000000001", "1000000000") == 0.0                  # 1e-9 apart: the float tolerance took it
    assert _score("1,000,000,000", "1000000000") == 1.5 and _score("1000000000", "1000000000") == 2.0


@settings(max_examples=300, deadline=None)
@given(gold=st.integers(min_value=-10**60, max_value=10**60), delta=st.integers(min_value=-3, max_value=3))
def test_integers_of_any_size_score_exactly(gold, delta):
    predicted = gold + delta
    expected = 2.0 if delta == 0 else 0.0
    assert _score(str(predicted), str(gold)) == expected
    assert _score(f"{predicted:,}", str(gold)) == (0.0 if delta else (2.0 if f"{gold:,}" == str(gold) else 1.5))
    assert _score(f"{predicted}.00", str(gold)) == (1.5 if delta == 0 else 0.0)


@settings(max_examples=200, deadline=None)
@given(whole=st.integers(min_value=0, max_value=10**30), cents=st.integers(min_value=0, max_value=99))
def test_decimals_are_exact_too(whole, cents):
    gold = f"{whole}.{cents:02d}"
    assert _score(f"{whole}.{cents:02d}0", gold) == 1.5                # same number, another spelling
    assert _score(f"{whole}.{cents:02d}1", gold) == 0.0                # 0.001 more: never equal


def test_a_fraction_still_matches_its_decimal_within_the_tolerance():
    assert _score("0.333333333333", "1/3") == 1.5 and _score("3/4", "0.75") == 1.5 and _score("0.3333", "1/3") == 0.0


def test_unordered_or_tensor_completions_and_a_single_name_are_refused():
    torch = pytest.importorskip("torch")
    from grpo_lib.rewards import reward_functions

    texts = ["<answer>7</answer>", "<answer>8</answer>"]
    with pytest.raises(TypeError, match="completions must be a list .*; got set"):
        correctness_reward(None, set(texts), ["7", "7"])         # no order: the rewards would not line up
    with pytest.raises(TypeError, match="completions must be a list .*; got Tensor"):
        correctness_reward(None, torch.tensor([1, 2]), ["7", "7"])
    assert correctness_reward(None, tuple(batch(*texts)), ["7", "7"]) == [2.0, 0.0]
    with pytest.raises(ValueError, match=r"reward_funcs must be a list of names, got the single string 'correctness'; "
                                         r"write \['correctness'\]"):
        reward_functions("correctness")


def test_soft_overlong_punishment_by_hand():
    """L_max = 10, L_cache = 4: 0 up to 6 tokens, then (6 - n)/4: -0.25, -0.5, -0.75, -1 at 7..10, and -1 beyond."""
    from grpo_lib.rewards import soft_overlong_punishment

    fn = soft_overlong_punishment(10, 4)
    assert fn(completion_ids=[[0] * n for n in (0, 6, 7, 8, 9, 10, 11, 50)]) == [0.0, 0.0, -0.25, -0.5, -0.75, -1.0,
                                                                                 -1.0, -1.0]
    assert fn.__name__ == "soft_overlong_punishment_reward"
    for bad in ((10, 0), (10, 11), (0, 0), (10.0, 4)):
        with pytest.raises(ValueError):
            soft_overlong_punishment(*bad)
    with pytest.raises(TypeError):
        fn(completion_ids="abc")

"""No exercise can be passed by handing in the library's own answer.

Several exercises ask for a function the library already has, and the notebook imports it for its other cells
(`strict_format_reward` in 03, `fisher_exact_2x2`, `completion_mask`, `maj_at_k`). A checker that accepted a call to
it would print "✓ Correct" for no work. Each such checker passes `references=` to `run_cases`; this test hands it
every ordinary way of calling the reference (the function itself, a lambda, another name, a module attribute, a
helper of the learner's, `functools.partial`, `functools.wraps`, a closure) and asserts "✗ Not yet" naming the
function, while an answer written without it still passes (and the wording of a learner's own function that
merely shares the name is not flagged).
"""
import functools
import math

import pytest
import torch

import grpo_lib.course.evaluation
import grpo_lib.logprobs
import grpo_lib.rewards
from grpo_lib.course.exercises import checking as ck
from grpo_lib.course.evaluation import fisher_exact_2x2, maj_at_k
from grpo_lib.course.exercises import ex03, ex04, ex05, ex06
from grpo_lib.logprobs import completion_mask
from grpo_lib.loss import dapo_divisor
from grpo_lib.rewards import strict_format_reward


@pytest.fixture(autouse=True)
def fresh_attempts():
    ck.reset_attempts()
    yield
    ck.reset_attempts()


def _strict(t):
    return strict_format_reward([[{"content": t}]])[0] > 0


def _maj(n, c, k):
    return maj_at_k(["g"] * c + ["w"] * (n - c), [True] * c + [False] * (n - c), k)


def _helper_calls(fn):
    """A learner's helper that calls the reference, and the answer that calls the helper."""
    def helper(*args):
        return fn(*args)
    return lambda *args: helper(*args)


def _wrapped(fn):
    @functools.wraps(fn)
    def answer(*args):
        return fn(*args)
    return answer


# exercise: (checker, the reference's name, [bypasses])
BYPASSES = {
    "3.1": (ex03.check_strict_format, "strict_format_reward",
            [_strict, lambda t: _strict(t),
             lambda t: grpo_lib.rewards.strict_format_reward([[{"content": t}]])[0] > 0,
             _helper_calls(_strict)]),
    "3.2": (ex03.check_fisher, "fisher_exact_2x2",
            [fisher_exact_2x2, lambda *a: fisher_exact_2x2(*a), functools.partial(fisher_exact_2x2),
             lambda *a: grpo_lib.course.evaluation.fisher_exact_2x2(*a), _helper_calls(fisher_exact_2x2),
             _wrapped(fisher_exact_2x2)]),
    "4.2": (ex04.check_exact_kl, "exact_kl",
            [lambda lg, lr_, m: ((ex04.exact_kl(lg, lr_) * m).sum(-1) / m.sum(-1)).mean()]),
    "5.1": (ex05.check_completion_mask, "completion_mask",
            [completion_mask, lambda ids, eos: completion_mask(ids, eos),
             lambda ids, eos: grpo_lib.logprobs.completion_mask(ids, eos).bool(), _helper_calls(completion_mask),
             _wrapped(completion_mask)]),
    "5.2": (ex05.check_maj_two_answers, "maj_at_k",
            [_maj, lambda n, c, k: torch.tensor(_maj(n, c, k)), _helper_calls(_maj)]),
    "6.1": (ex06.check_dapo_normaliser, "dapo_divisor",
            [lambda masks, rank: float(dapo_divisor(torch.tensor(sum(float(m.sum()) for m in masks)), len(masks)))]),
}


@pytest.mark.parametrize("exercise", sorted(BYPASSES))
def test_calling_the_imported_reference_never_passes(exercise, capsys):
    check, name, bypasses = BYPASSES[exercise]
    for i, bypass in enumerate(bypasses):
        result = check(bypass)
        out = capsys.readouterr().out
        assert not result, (exercise, i, out)
        assert out.startswith(f"✗ Not yet: your function calls `{name}`"), (exercise, i, out)


def test_the_checkers_own_references_are_refused_too(capsys):
    """The references written in the checker modules answer the exercise just as well: refused the same way."""
    for check, ref in ((ex04.check_exact_kl, ex04.exact_kl_term), (ex05.check_completion_mask, ex05.reference_mask),
                       (ex05.check_maj_two_answers, ex05.maj_two_answers),
                       (ex06.check_dapo_normaliser, ex06.dapo_normaliser),
                       (ex06.check_decode_floor, ex06.decode_seconds_floor)):
        assert not check(ref)
        assert f"your function calls `{ref.__name__}`" in capsys.readouterr().out


def test_an_answer_written_without_the_reference_passes(capsys):
    """The detection does not refuse honest answers, nor a learner's own function that has the reference's name."""
    def completion_mask(ids, eos_ids):          # the learner's own, shadowing the library's name
        stop = torch.isin(ids, torch.tensor(eos_ids))
        first = torch.where(stop.any(-1), stop.int().argmax(-1), ids.shape[-1])
        return (torch.arange(ids.shape[-1])[None, :] <= first[:, None]).int()

    assert ex05.check_completion_mask(lambda ids, eos: completion_mask(ids, eos))
    assert ex03.check_fisher(lambda k1, n1, k2, n2: sum(
        w for x in range(n1 + 1) if 0 <= k1 + k2 - x <= n2
        for w in [math.comb(n1, x) * math.comb(n2, k1 + k2 - x)]
        if w <= math.comb(n1, k1) * math.comb(n2, k2)) / math.comb(n1 + n2, k1 + k2))
    def kl_term(logits, logits_ref, mask):      # written apart from ex04: probabilities, then the per-row mean
        p, q = torch.softmax(logits.double(), -1), torch.softmax(logits_ref.double(), -1)
        kl = (p * (p.log() - q.log())).sum(-1)
        return torch.stack([(kl[i] * mask[i]).sum() / mask[i].sum() for i in range(len(mask))]).mean()

    assert ex04.check_exact_kl(kl_term)
    assert ex06.check_decode_floor(lambda n, b, T, B, bw, P, kv: (n * b * T + B * kv * sum(range(P, P + T))) / bw)
    assert capsys.readouterr().out.count("✓ Correct") == 4


def test_calls_reference_names_what_it_found():
    assert ck.calls_reference(fisher_exact_2x2, [fisher_exact_2x2]) == "fisher_exact_2x2"
    assert ck.calls_reference(lambda x: x + 1, [fisher_exact_2x2]) is None
    alias = fisher_exact_2x2
    assert ck.calls_reference(lambda *a: alias(*a), [fisher_exact_2x2]) == "fisher_exact_2x2"    # a closure
    loop = {}
    def a(x):                                   # two helpers calling each other: no endless recursion
        return loop["b"](x)
    def b(x):
        return a(x)
    loop["b"] = b
    assert ck.calls_reference(a, [fisher_exact_2x2]) is None


PURE = ("grpo_lib.advantages", "grpo_lib.loss", "grpo_lib.logprobs", "grpo_lib.rewards", "grpo_lib.evaluation",
        "grpo_lib.toy", "grpo_lib.course.exercises")
"""modules whose functions a notebook imports for its lessons and that are cheap to call with an exercise's cases"""


def _notebook_imports_and_checkers(source):
    """(the grpo_lib functions a notebook imports from PURE, the checkers it calls on a learner's function)."""
    import ast
    import importlib

    tree = ast.parse(source.read_text())
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PURE):
            module = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(module, alias.name, None)
                if callable(obj) and not alias.name.startswith(("check_", "hint")) and isinstance(obj, type(_strict)):
                    imported[alias.name] = obj
    checkers = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name) and node.func.id.startswith("check_")
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id.startswith("my_")}
    modules = [importlib.import_module(f"grpo_lib.course.exercises.ex0{n}") for n in range(1, 8)]
    return imported, {name: next(getattr(m, name) for m in modules if hasattr(m, name)) for name in checkers}


SOURCES = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "notebooks" / "src").glob("0*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_no_function_a_notebook_imports_passes_its_exercises(source, capsys):
    """Whatever the notebook imports from grpo_lib, handed in as the answer (or wrapped in a lambda), fails."""
    imported, checkers = _notebook_imports_and_checkers(source)
    assert checkers, f"{source.name} calls no checker"
    for check_name, check in checkers.items():
        for name, fn in imported.items():
            for answer in (fn, lambda *args, fn=fn: fn(*args)):
                assert not check(answer), f"{source.name}: {check_name} accepts `{name}` handed in"
    capsys.readouterr()

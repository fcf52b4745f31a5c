"""What every exercise-checker test asserts about a checker's verdict (imported by tests/test_course_exercises_ex0N.py;
pytest puts tests/ on sys.path)."""
from grpo_lib.course.exercises.checking import CheckResult


def passes(result, capsys):
    """The checker accepted: a truthy CheckResult, and what it printed starts with ✓."""
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult)
    assert bool(result) and out.startswith("✓"), out
    assert result.message == out.rstrip("\n")
    return out


def fails(result, capsys, *parts):
    """The checker rejected: a falsy CheckResult printing "✗ Not yet" and every one of `parts` (case, hint)."""
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult)
    assert not result and out.startswith("✗ Not yet"), out
    assert result.message == out.rstrip("\n") and repr(result) == result.message
    for part in parts:
        assert part in out, out
    return out


def placeholder(exercise):
    """The function a student copy defines before the exercise is answered."""
    def fn(*args):
        # YOUR CODE HERE
        raise NotImplementedError(f"Exercise {exercise}")
    return fn

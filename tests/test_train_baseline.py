"""A refactor of the engine changes no number: a seeded 5-step run of the tiny preset gives, step for step, the
metrics.jsonl and evals.jsonl recorded in tests/data/tiny_5_steps/ (recorded with the engine as it was before
the run's lifecycle moved into grpo_lib/run/, `python -m grpo_lib.train --preset tiny --steps 5 --eval-n 20
--num-threads 1 --report-to none --progress false`; meta.json says with which torch, on which machine).

Compared: every field of every record, exactly (one thread: the run is bit-reproducible). Skipped: the wall-clock
fields (`WALL_CLOCK`), which measure the machine, not the run. On another torch version or another machine
architecture the float arithmetic (and so the sampled tokens) may differ: the test says so and skips.
"""
import json
import platform
from pathlib import Path

import pytest
import torch

from grpo_lib.config import GRPOConfig
from grpo_lib.models import TINY_MODEL_DIR
from grpo_lib.train import train

pytestmark = pytest.mark.trains

BASELINE = Path(__file__).resolve().parent / "data" / "tiny_5_steps"
SETTINGS = dict(steps=5, eval_n=20, num_threads=1, report_to="none", progress=False)
"""the run of the fixture: the tiny preset with these changes (the command line in the module docstring)"""
WALL_CLOCK = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
              "wall_seconds", "eval_seconds"}
"""fields that time the machine (seconds, and tokens per second): never the same twice, so never compared"""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def differences(expected: list[dict], got: list[dict], what: str) -> list[str]:
    """Every field (but WALL_CLOCK) that differs, as 'metrics.jsonl step 3 loss: 0.1 != 0.2'; [] when all agree."""
    if len(expected) != len(got):
        return [f"{what}: {len(expected)} records expected, {len(got)} written"]
    found = []
    for old, new in zip(expected, got):
        keys = (set(old) | set(new)) - WALL_CLOCK
        found += [f"{what} step {old.get('step')} {k}: {old.get(k, '<missing>')!r} != {new.get(k, '<missing>')!r}"
                  for k in sorted(keys) if old.get(k, "<missing>") != new.get(k, "<missing>")]
    return found


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    meta = json.loads((BASELINE / "meta.json").read_text())
    if (meta["torch"], meta["machine"]) != (torch.__version__, platform.machine()):
        pytest.skip(f"the baseline was recorded with torch {meta['torch']} on {meta['machine']}; here torch "
                    f"{torch.__version__} on {platform.machine()} may round differently")
    if not (TINY_MODEL_DIR / "model.safetensors").exists():
        pytest.skip(f"shipped tiny model not found at {TINY_MODEL_DIR}")
    out = tmp_path_factory.mktemp("baseline") / "run"
    # a callback (that does nothing) makes the run train for real, never a copy from the test session's run cache
    train(GRPOConfig.tiny(**SETTINGS, output_dir=str(out)), callback=lambda record, batch: None)
    return out


@pytest.mark.parametrize("name", ["metrics.jsonl", "evals.jsonl"])
def test_a_seeded_tiny_run_gives_the_recorded_numbers(fresh_run, name):
    expected, got = read_jsonl(BASELINE / name), read_jsonl(fresh_run / name)
    assert expected and len(expected) == (5 if name == "metrics.jsonl" else 2)
    assert not differences(expected, got, name), "\n".join(differences(expected, got, name)[:20])


def test_the_comparison_sees_a_change_in_any_field_but_the_wall_clock():
    """The checker itself: a change in one metric is named; a change in a wall-clock field is not."""
    rec = read_jsonl(BASELINE / "metrics.jsonl")
    changed = [dict(r) for r in rec]
    changed[2]["kl"] = changed[2]["kl"] * (1 + 1e-12) + 1e-300
    assert differences(rec, changed, "metrics.jsonl") == [
        f"metrics.jsonl step 3 kl: {rec[2]['kl']!r} != {changed[2]['kl']!r}"]
    slower = [dict(r, step_seconds=r["step_seconds"] * 2, wall_seconds=0.0) for r in rec]
    assert differences(rec, slower, "metrics.jsonl") == []
    assert differences(rec, rec[:4], "metrics.jsonl") == ["metrics.jsonl: 5 records expected, 4 written"]

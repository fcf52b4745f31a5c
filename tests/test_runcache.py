"""grpo_lib.runcache: within one test session (GRPO_RUN_CACHE), a run with exactly the same settings is copied,
not trained again; anything else trains."""
import random

import numpy as np
import pytest
import torch

from grpo_lib import runcache
from grpo_lib.config import GRPOConfig
from grpo_lib.run.lifecycle import Run
from grpo_lib.train import train

pytestmark = pytest.mark.trains


def cfg_in(folder, **overrides):
    values = dict(steps=1, N=2, G=4, eval_n=4, max_completion_length=12, report_to="none", progress=False,
                  output_dir=str(folder), log_every=1)
    return GRPOConfig.tiny(**{**values, **overrides})


@pytest.fixture
def trainings(monkeypatch, tmp_path):
    """GRPO_RUN_CACHE set to a fresh folder; the list of configs that really trained."""
    monkeypatch.setenv(runcache.ENV, str(tmp_path / "cache"))
    ran = []
    real = Run._start                          # the run's real work: data, model, evaluation, then the steps

    def counting(run, *args, **kwargs):
        ran.append(run.cfg)
        return real(run, *args, **kwargs)
    monkeypatch.setattr(Run, "_start", counting)
    return ran


def test_the_same_settings_are_copied_and_say_so(trainings, tmp_path, capsys):
    first = train(cfg_in(tmp_path / "a"))
    capsys.readouterr()
    second = train(cfg_in(tmp_path / "b"))
    assert len(trainings) == 1                                               # trained once
    assert "[run cache] reused the finished run" in capsys.readouterr().out
    assert second.history == first.history and second.summary == first.summary
    assert second.output_dir == tmp_path / "b" and second.model is not first.model
    for name in ("metrics.jsonl", "summary.json", "evals.jsonl"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    for (k, v), (k2, v2) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert second.eval_after.samples == first.eval_after.samples and second.evals == first.evals


def test_the_random_state_after_a_reused_run_is_the_one_the_real_run_left(trainings, tmp_path):
    train(cfg_in(tmp_path / "a"))
    after_real = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)        # anything else in between
    train(cfg_in(tmp_path / "b"))
    assert len(trainings) == 1
    after_copy = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after_copy[0], after_real[0]) and after_copy[1:] == after_real[1:]


def test_any_other_setting_trains_again(trainings, tmp_path):
    train(cfg_in(tmp_path / "a"))
    train(cfg_in(tmp_path / "b", seed=1))
    train(cfg_in(tmp_path / "c", steps=2))
    assert len(trainings) == 3


def test_a_changed_engine_is_never_served_an_old_run(trainings, tmp_path, monkeypatch):
    train(cfg_in(tmp_path / "a"))
    monkeypatch.setattr(runcache, "source_fingerprint", lambda: "another grpo_lib")
    train(cfg_in(tmp_path / "b"))
    assert len(trainings) == 2


def test_a_callback_or_no_cache_folder_always_trains(trainings, tmp_path, monkeypatch):
    train(cfg_in(tmp_path / "a"))
    train(cfg_in(tmp_path / "b"), callback=lambda rec, batch: None)
    assert len(trainings) == 2
    monkeypatch.delenv(runcache.ENV)
    train(cfg_in(tmp_path / "c"))
    assert len(trainings) == 3


def test_the_key_ignores_only_the_output_folder_and_the_progress_bar(tmp_path):
    base = cfg_in(tmp_path / "a")
    assert runcache.run_key(base) == runcache.run_key(base.replace(output_dir=str(tmp_path / "z"), progress=True))
    assert runcache.run_key(base) != runcache.run_key(base.replace(lr=base.lr * 2))
    assert sorted(runcache.IGNORED_FIELDS) == ["output_dir", "progress"]

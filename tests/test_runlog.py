"""grpo_lib.run.runlog: the metric records, summary.json, metrics.jsonl on resume, W&B offline; and the NaN/inf
check the records go through (grpo_lib.run.failures)."""
import json
import math
from pathlib import Path

import pytest
import torch

from grpo_lib.config import GRPOConfig
from grpo_lib.evaluation import EvalResult
from grpo_lib.run.failures import CHECKED_METRICS, NonFiniteMetricError, non_finite
from grpo_lib.run.runlog import METRICS, RunLog, completed_summary, wandb_logged_in, write_summary


def test_non_finite_names_only_the_checked_metrics():
    record = {"loss": float("nan"), "grad_norm": 1.0, "kl": math.inf, "reward": 0.5, "lr": float("nan")}
    assert non_finite(record).keys() == {"loss", "kl"}                  # lr is not checked
    assert set(CHECKED_METRICS) <= set(METRICS)


def test_non_finite_error_names_the_step_metric_and_checkpoint():
    err = NonFiniteMetricError(7, {"loss": math.nan}, Path("runs/x/checkpoints/step-000005"))
    assert str(err).startswith("training stopped at step 7: non-finite loss = nan; the last good checkpoint is "
                               "runs/x/checkpoints/step-000005 (resume with --resume runs/x/checkpoints/step-000005)")
    assert "no checkpoint was written before it" in str(NonFiniteMetricError(1, {"kl": math.inf}, None))


def test_summaries_and_atomic_write(tmp_path):
    cfg = GRPOConfig.tiny(output_dir=str(tmp_path))
    before, after = EvalResult(n=10, n_strict=5, n_lenient=6, n_format=9), EvalResult(n=10, n_strict=9, n_lenient=9, n_format=10)
    done = completed_summary(cfg, model_name="tiny", world_size=1, device="cpu", n_params=3, eval_before=before,
                             eval_after=after, train_seconds=1.0, wall_seconds=2.0)
    assert (done["status"], done["accuracy_before"], done["accuracy_after"], done["eval_n"]) == ("completed", 0.5, 0.9, 10)
    assert done["accuracy_after_ci"] == list(after.strict_ci) and done["config"] == cfg.to_dict()
    write_summary(tmp_path, done)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(done))
    assert not (tmp_path / "summary.json.tmp").exists()


def test_metrics_file_is_rewritten_up_to_the_resumed_history_then_continued(tmp_path):
    cfg = GRPOConfig.tiny(output_dir=str(tmp_path / "run"), report_to="none", progress=False, steps=3)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')   # a longer earlier run
    history = [{"step": 1, "reward": 0.0, "accuracy": 0.0}]
    log = RunLog(cfg, True, history=history, evals=[])
    log.start_steps(1)
    log.step({"step": 2, "reward": 1.0, "accuracy": 0.5})
    log.end_steps()
    log.close()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert [r["step"] for r in history] == [1, 2]                       # the caller's list is the history


def test_other_ranks_write_nothing(tmp_path):
    cfg = GRPOConfig.tiny(output_dir=str(tmp_path / "run"), report_to="none", progress=False)
    log = RunLog(cfg, False, history=[], evals=[])
    log.start_steps(0)
    log.step({"step": 1, "reward": 1.0, "accuracy": 0.5})
    log.summary({"status": "completed"})
    log.end_steps()
    log.close()
    assert not (tmp_path / "run").exists() and log.history == [{"step": 1, "reward": 1.0, "accuracy": 0.5}]


def test_wandb_login_detection_never_needs_the_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not wandb_logged_in()
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password not-a-real-key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_logged_in()

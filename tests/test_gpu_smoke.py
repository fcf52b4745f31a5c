"""scripts/gpu_smoke.py: the GPU check's whole path on CPU (--tiny), and its checks, one wrong fact at a time.

The real run (Qwen2.5-1.5B's size on one H100/H200) is not part of CI; the --tiny run keeps the script working
(build, train, checkpoint, resume, report, checks) and the check tests below show that each check can fail.
"""
import copy
import importlib.util
import json

import pytest

from conftest import REPO


def _load():
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    return smoke


@pytest.mark.slow
def test_gpu_smoke_tiny_runs_checks_and_passes(qwen_tokenizer_dir, gsm8k_dir, tmp_path, capsys):
    smoke = _load()
    code = smoke.main(["--tiny", "--steps", "2", "--eval-n", "1", "--data-dir", str(gsm8k_dir),
                       "--tokenizer-dir", str(qwen_tokenizer_dir), "--output-dir", str(tmp_path)])
    report = json.loads((tmp_path / "smoke_report.json").read_text())
    assert code == 0, report["checks"]
    assert [r["step"] for r in report["steps"]] == [1, 2] and report["resumed_step"][0]["step"] == 2
    assert (report["precision"], report["param_dtype"], report["compute_dtype"]) == ("mixed", "float32", "bfloat16")
    assert report["attn_implementation"] == "sdpa" and report["global_batch"] == 4
    assert report["peak_allocated_gib"] is None and report["planned"]["peak_gib"] > 0   # no GPU: not measured
    assert report["moved_share"] >= 0.99                          # the text score gives gradients; fp32 master weights
    for r in report["steps"]:
        assert r["generation_seconds"] > 0 and r["update_seconds"] > 0 and r["generated_tokens_per_second"] > 0
    assert report["checkpoint"].endswith("step-000001")
    ok = {c["check"]: c["ok"] for c in report["checks"]}
    assert list(ok.values()).count(None) == 2 and False not in ok.values()   # memory and time: GPU only
    text = capsys.readouterr().out
    assert "generation s" in text and "peak GPU memory: not measured (no GPU)" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("PASS (not checked here: peak memory within 15% of the planner; within 8 minutes)"), last


def _report(**changes):
    """A GPU report that passes every check; `changes` set one fact wrong."""
    step = {"step": 3, "reward": 1.5, "completions/mean_length": 311.0, "loss": 0.002, "kl": 0.01, "entropy": 0.9,
            "grad_norm": 0.25}
    report = {"steps": [{**step, "step": 1}, {**step, "step": 2}, step], "resumed_step": [dict(step)],
              "moved_share": 0.9998, "attn_implementation": "flash_attention_2", "peak_allocated_gib": 33.0,
              "planned": {"peak_gib": 31.0}, "seconds": {"total": 400.0}}
    for key, value in changes.items():
        report[key] = value
    return report


def _failed(report, *, on_gpu=True, flash_imports=True):
    smoke = _load()
    checks = smoke.evaluate_checks(report, on_gpu=on_gpu, flash_imports=flash_imports)
    return [c["check"] for c in checks if c["ok"] is False], smoke.verdict(checks)


def test_a_passing_gpu_report_passes():
    failed, line = _failed(_report())
    assert failed == [] and line == "PASS"


@pytest.mark.parametrize("change, named", [
    (dict(moved_share=0.05), "at least 99% of the weights with a gradient moved"),       # pure bf16 at lr 5e-6
    (dict(attn_implementation="sdpa"), "attention is flash_attention_2 (flash-attn imports)"),
    (dict(peak_allocated_gib=36.0), "peak memory within 15% of the planner"),             # 16% over 31 GiB
    (dict(peak_allocated_gib=26.0), "peak memory within 15% of the planner"),             # 16% under
    (dict(seconds={"total": 481.0}), "within 8 minutes"),
])
def test_each_check_fails_on_its_fact(change, named):
    failed, line = _failed(_report(**change))
    assert failed == [named] and line == f"FAIL: {named}"


def test_non_finite_loss_or_a_resumed_step_that_differs_fails():
    bad = _report()
    bad["steps"][1] = {**bad["steps"][1], "kl": float("nan")}
    assert _failed(bad)[0] == ["loss and KL finite at every step"]
    for key, value in (("reward", 1.5000001), ("kl", 0.0100001), ("grad_norm", 0.2506)):
        drift = _report()
        drift["resumed_step"] = [{**drift["resumed_step"][0], key: value}]
        assert _failed(drift)[0] == ["the resumed run reproduces the last step"], key
    close = _report()
    close["resumed_step"] = [{**close["resumed_step"][0], "grad_norm": 0.2501}]   # 4e-4: backward order, allowed
    assert _failed(close)[0] == []


def test_without_flash_attn_sdpa_is_expected_and_a_cpu_run_skips_memory_and_time():
    failed, line = _failed(_report(attn_implementation="sdpa"), flash_imports=False)
    assert failed == [] and line == "PASS"
    failed, line = _failed(_report(peak_allocated_gib=None, seconds={"total": 900.0}), on_gpu=False,
                           flash_imports=False)
    assert failed == ["attention is sdpa (flash-attn does not import)"]     # the report says flash_attention_2
    assert line.startswith("FAIL")


def test_gpu_smoke_refuses_missing_inputs_naming_the_option(tmp_path, capsys):
    smoke = _load()
    with pytest.raises(SystemExit):
        smoke.parse_args(["--tokenizer-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--data-dir" in err and "missing train.jsonl" in err

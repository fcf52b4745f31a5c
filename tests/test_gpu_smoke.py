"""scripts/gpu_smoke.py --tiny: the GPU smoke script's whole path (build, train, checkpoint, resume, report) on CPU.

The real run (Qwen2.5-1.5B's size on one H100/H200) is not part of CI; this keeps the script working.
"""
import importlib.util
import json

import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_smoke_tiny_runs_and_reports(qwen_tokenizer_dir, gsm8k_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    code = smoke.main(["--tiny", "--steps", "2", "--eval-n", "1", "--data-dir", str(gsm8k_dir),
                       "--tokenizer-dir", str(qwen_tokenizer_dir), "--output-dir", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "smoke_report.json").read_text())
    assert [r["step"] for r in report["steps"]] == [1, 2] and report["resumed_step"][0]["step"] == 2
    assert (report["precision"], report["param_dtype"], report["compute_dtype"]) == ("mixed", "float32", "bfloat16")
    assert report["attn_implementation"] == "sdpa" and report["global_batch"] == 4
    assert report["peak_allocated_gib"] is None and report["planned"]["peak_gib"] > 0   # no GPU: not measured
    for r in report["steps"]:
        assert r["generation_seconds"] > 0 and r["update_seconds"] > 0 and r["tokens_per_second"] > 0
    assert report["checkpoint"].endswith("step-000001")
    text = capsys.readouterr().out
    assert "generation s" in text and "peak GPU memory: not measured (no GPU)" in text


def test_gpu_smoke_refuses_missing_inputs_naming_the_option(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    with pytest.raises(SystemExit):
        smoke.parse_args(["--tokenizer-dir", str(tmp_path), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--data-dir" in err and "missing train.jsonl" in err

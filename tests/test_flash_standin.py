"""Every forward pass of a mixed-precision run reaches the attention in the compute dtype (FlashAttention-2's contract).

tests/flash_standin.py registers an attention function that casts like transformers' flash-attention path
and refuses what flash-attn refuses (fp32 after that cast). A forward pass of the fp32 master weights outside
the run's autocast context would crash flash-attn on a GPU at that point; here it fails these tests.
The Qwen preset's code path runs under the same stand-in in tests/test_qwen_preset.py.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

import flash_standin
from flash_standin import MESSAGE, STANDIN, use_flash_standin
from grpo_lib.cli import parse_config
from grpo_lib.models import load_policy
from grpo_lib.precision import resolve_precision
from grpo_lib.run.failures import logits_finite
from grpo_lib.train import train


@pytest.fixture(scope="module")
def tiny_pair():
    """The shipped tiny model twice in fp32: once with the stand-in, once with sdpa; and a batch of 3 prompts."""
    model, tok = load_policy("tiny", device="cpu", dtype="float32")
    standin, _ = load_policy("tiny", device="cpu", dtype="float32")
    standin.set_attn_implementation(STANDIN)
    enc = tok(["12+7=", "3+45+6=", "1+2="], return_tensors="pt", padding=True)   # left padding
    return model, standin, enc


def test_the_standin_refuses_fp32_outside_autocast_as_flash_attn_does(tiny_pair):
    _, standin, enc = tiny_pair
    with pytest.raises(RuntimeError, match=MESSAGE):
        standin(**enc)
    # the engine's post-update logits check, called as train.py called it before the fix: outside autocast
    with pytest.raises(RuntimeError, match=MESSAGE):
        logits_finite(standin, enc["input_ids"], enc["attention_mask"])
    with resolve_precision("bfloat16", "mixed", "cpu").context():
        assert logits_finite(standin, enc["input_ids"], enc["attention_mask"])


def test_under_autocast_the_standin_computes_what_sdpa_computes(tiny_pair):
    sdpa, standin, enc = tiny_pair
    before = flash_standin.calls["n"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = sdpa(**enc).logits
        b = standin(**enc).logits
    assert flash_standin.calls["n"] - before == sdpa.config.num_hidden_layers      # it really ran, once per layer
    # same bf16 attention inputs, the same SDPA kernel: equal up to the bf16 rounding of the cast order
    torch.testing.assert_close(b.float(), a.float(), rtol=0.05, atol=0.05)
    assert (b.argmax(-1) == a.argmax(-1)).float().mean() > 0.95


def test_pure_bf16_weights_pass_without_autocast(tiny_pair):
    _, _, enc = tiny_pair
    model, _ = load_policy("tiny", device="cpu", dtype="bfloat16")
    model.set_attn_implementation(STANDIN)
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits.float()).all()


def _config(out, *extra):
    return parse_config(["--preset", "tiny", "--dtype", "bfloat16", "--steps", "2", "--N", "4", "--G", "4",
                         "--max-completion-length", "12", "--mu", "2", "--num-iterations", "2", "--eval-n", "8",
                         "--eval-every", "2", "--save-every", "1", "--report-to", "none", "--no-progress",
                         "--output-dir", str(out), *extra])


def test_tiny_preset_in_mixed_precision_runs_to_the_end_under_the_standin(monkeypatch, tmp_path):
    """`--dtype bfloat16` (fp32 master weights, bf16 autocast): sampling, π_ref and π_old log-probs (β > 0,
    μ = 2, π_ref reset at step 3), updates, the logits check, evaluations, checkpoints and a resume."""
    use_flash_standin(monkeypatch)
    before = flash_standin.calls["n"]
    result = train(_config(tmp_path / "run"))
    s = result.summary
    assert s["status"] == "completed" and s["attn_implementation"] == STANDIN
    assert (s["precision"], s["param_dtype"], s["compute_dtype"]) == ("mixed", "float32", "bfloat16")
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["kl"]) for r in result.history)
    assert [e["step"] for e in result.evals] == [0, 2, 4]
    assert flash_standin.calls["n"] > before
    # resumed after step 3 (second outer iteration: π_ref saved), the last step is the same step
    resumed = train(_config(tmp_path / "resumed", "--resume", str(tmp_path / "run" / "checkpoints" / "step-000003")))
    assert resumed.summary["status"] == "completed"
    for key in ("reward", "loss", "kl", "grad_norm"):
        assert resumed.history[-1][key] == result.history[-1][key], key
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4


# --- a flash-attn install that cannot run is named at start-up, with the fallback in use ---
@pytest.fixture
def fake_flash_attn(monkeypatch):
    """A `flash_attn` package that imports but whose kernel fails (a build for another GPU or torch)."""
    import importlib.machinery
    import sys
    import types

    from grpo_lib import models

    module = types.ModuleType("flash_attn")
    module.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)

    def flash_attn_func(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    module.flash_attn_func = flash_attn_func
    monkeypatch.setitem(sys.modules, "flash_attn", module)
    models.flash_attn_problem.cache_clear()
    yield module
    models.flash_attn_problem.cache_clear()


def test_without_flash_attn_cpu_runs_use_sdpa_silently(capsys):
    from grpo_lib import models

    models.flash_attn_problem.cache_clear()
    assert models.flash_attn_problem("cpu", torch.bfloat16) == "flash-attn is not installed"
    assert models.pick_attn_implementation("cpu", torch.bfloat16) == "sdpa" and not models.flash_attn_available()
    model, _ = load_policy("tiny", device="cpu")
    assert model.config._attn_implementation == "sdpa" and "attention:" not in capsys.readouterr().out


def test_an_installed_flash_attn_that_cannot_run_is_named_with_the_fallback(fake_flash_attn, monkeypatch, capsys):
    from grpo_lib import models

    # no CUDA: the reason is printed when the model loads, and the model uses sdpa
    model, _ = load_policy("tiny", device="cpu", dtype="float32", compute_dtype="bfloat16")
    out = capsys.readouterr().out
    assert model.config._attn_implementation == "sdpa"
    assert "attention: PyTorch's sdpa, not FlashAttention-2: flash-attn is installed but runs only on a CUDA GPU" in out
    # a CUDA machine (faked): fp32 compute, a pre-Ampere GPU, a kernel that fails its test call
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (7, 5))
    assert "computes only in bf16 or fp16, and this run computes in float32" in models.flash_attn_problem(
        torch.device("cuda"), torch.float32)
    assert models.flash_attn_problem(torch.device("cuda"), torch.bfloat16) == (
        "FlashAttention-2 needs an Ampere or newer GPU (compute capability 8.0+); Tesla T4 has 7.5")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (9, 0))
    models.flash_attn_problem.cache_clear()
    problem = models.flash_attn_problem(torch.device("cuda"), torch.bfloat16)
    assert problem.startswith("flash-attn is installed but failed a test call")
    assert models.pick_attn_implementation("cuda", torch.bfloat16) == "sdpa"

"""LoRA through peft (grpo_lib.lora): the trainable parameters by the formula, π_ref as the base model with the
adapters off, the merge checked by hand, a short run where only the adapters move, and the refused combinations."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

from grpo_lib import lora
from grpo_lib.config import GRPOConfig
from grpo_lib.models import count_parameters, tiny_qwen2_config
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import make_optimizer, train

TOK = build_char_tokenizer()
needs_peft = pytest.mark.skipif(not lora.peft_available(), reason=lora.INSTALL_HINT)


def tiny(layers=4):
    torch.manual_seed(0)
    return Qwen2ForCausalLM(tiny_qwen2_config(len(TOK), num_hidden_layers=layers))


def lora_cfg(**overrides):
    return GRPOConfig.tiny(**{"lora_r": 4, "lora_alpha": 8.0, **overrides})


@needs_peft
def test_trainable_parameters_are_r_times_d_in_plus_d_out_per_target_module():
    # the tiny Qwen2: d = 128, 4 heads of 32 and 2 KV heads (k, v give 2·32 = 64 outputs), d_ff = 512, 4 layers
    d, kv, ff, layers, r = 128, 64, 512, 4, 4
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d), "gate_proj": (d, ff),
              "up_proj": (d, ff), "down_proj": (ff, d)}                        # (d_in, d_out)
    expected = layers * sum(r * (d_in + d_out) for d_in, d_out in shapes.values())
    assert expected == 4 * 4 * 2816 == 45_056
    model = tiny()
    total = count_parameters(model)
    adapted = lora.apply_lora(model, lora_cfg())
    assert adapted is model and lora.is_lora(model)                            # the same transformers model, in place
    assert count_parameters(model, trainable_only=True) == expected
    assert count_parameters(model) == total + expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    only_q = tiny()
    lora.apply_lora(only_q, lora_cfg(lora_target_modules=("q_proj",)))
    assert count_parameters(only_q, trainable_only=True) == layers * r * (d + d)


@needs_peft
def test_a_target_the_model_lacks_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"lora_target_modules names \['qkv_proj'\].*'q_proj'"):
        lora.apply_lora(tiny(), lora_cfg(lora_target_modules=("q_proj", "qkv_proj")))


@needs_peft
def test_the_reference_is_the_base_model_with_the_adapters_off():
    base = tiny(2)
    model = copy.deepcopy(base)
    lora.apply_lora(model, lora_cfg())
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        want = base(input_ids=ids).logits
        assert torch.equal(model(input_ids=ids).logits, want)                  # B = 0: π_θ starts as the base
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)
        moved = model(input_ids=ids).logits
    ref = lora.reference_model(model, torch.bfloat16, first_iteration=True)
    assert isinstance(ref, lora.AdaptersOff) and list(ref.parameters()) == []   # no second copy of the weights
    assert torch.equal(ref(input_ids=ids).logits, want)                        # the base model exactly
    assert not torch.allclose(moved, want)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, moved)                 # the adapters are back on after
    later = lora.reference_model(model, None, first_iteration=False)           # π_ref ← π_θ: a frozen copy
    assert not isinstance(later, lora.AdaptersOff) and not any(p.requires_grad for p in later.parameters())
    with torch.no_grad():
        assert torch.equal(later(input_ids=ids).logits, moved)


@needs_peft
def test_the_merged_weight_is_w_plus_alpha_over_r_times_b_a_by_hand():
    base = tiny(2)
    model = copy.deepcopy(base)
    cfg = lora_cfg(lora_r=2, lora_alpha=6.0)
    lora.apply_lora(model, cfg)
    layer = model.model.layers[1].mlp.down_proj                                 # d_in 512 -> d_out 128
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.arange(2 * 512, dtype=torch.float32).reshape(2, 512) / 1000)
        layer.lora_B["default"].weight.copy_(torch.tensor([[1.0, -2.0]] * 128) / 100)
    A, B = layer.lora_A["default"].weight.clone(), layer.lora_B["default"].weight.clone()
    W = base.model.layers[1].mlp.down_proj.weight.detach().clone()
    # one entry by hand: (α / r) Σ_k B[0, k] A[k, 3] = 3 · (0.01 · 0.003 - 0.02 · 0.515)
    assert (6.0 / 2 * (B @ A))[0, 3].item() == pytest.approx(3 * (0.01 * 0.003 - 0.02 * 0.515), rel=1e-6)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    merged = lora.merge_adapters(model)
    assert type(merged) is Qwen2ForCausalLM and not lora.is_lora(merged)
    assert set(merged.state_dict()) == set(base.state_dict())                  # a plain model: no adapter keys
    torch.testing.assert_close(merged.model.layers[1].mlp.down_proj.weight, W + 3.0 * (B @ A), rtol=0, atol=1e-6)
    for name, p in merged.state_dict().items():                                # every other weight untouched
        if "layers.1.mlp.down_proj" not in name:
            assert torch.equal(p, base.state_dict()[name]), name
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)
    assert lora.merge_adapters(base) is base                                   # no adapters: unchanged


@needs_peft
def test_adamw_runs_at_lr_times_the_multiplier():
    model = tiny(2)
    cfg = lora_cfg(lr=2e-5)
    lora.apply_lora(model, cfg)
    optimizer, _ = make_optimizer(model, cfg)
    assert cfg.optimizer_lr == pytest.approx(2e-4) and optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == count_parameters(model, trainable_only=True)
    assert GRPOConfig.tiny(lr=2e-5).optimizer_lr == 2e-5                      # without LoRA: lr as given
    assert lora_cfg(lr=2e-5, lora_lr_multiplier=1.0).optimizer_lr == 2e-5


@needs_peft
def test_a_short_run_moves_only_the_adapters_and_saves_the_merged_model(tmp_path):
    model = tiny(2)
    start = {n: p.detach().clone() for n, p in model.state_dict().items()}
    cfg = lora_cfg(steps=2, N=2, G=4, eval_n=4, max_completion_length=12, lr=1e-3, report_to="none", progress=False,
                   output_dir=str(tmp_path / "run"), log_every=1, beta=0.04)
    snaps = []

    def look(record, batch):                                   # after each step's update, before the final merge
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        snaps.append(state)
    result = train(cfg, model=model, tokenizer=TOK, callback=look)
    for state in snaps:
        for n, p in state.items():
            key = n.replace(".base_layer", "")
            if ".lora_" not in n:
                assert torch.equal(p, start[key]), n                           # base weights never move
    assert any((snaps[-1][n] != 0).any() for n in snaps[-1] if ".lora_B." in n)   # the adapters did
    # step 1: π_θ = base (B = 0) = π_ref (the adapters off), so the KL is 0 (float rounding of the passes aside);
    # step 2: π_θ has moved away from π_ref, which stayed the base model
    assert abs(result.history[0]["kl"]) < 1e-7 and result.history[1]["kl"] > 1e-6
    # the saved model/ is the merged one and loads like any run's
    final = snaps[-1]
    name = "model.layers.0.self_attn.q_proj"
    A, B = final[f"{name}.lora_A.default.weight"], final[f"{name}.lora_B.default.weight"]
    W = start[f"{name}.weight"]
    merged = result.model
    assert type(merged) is Qwen2ForCausalLM and not lora.is_lora(merged)
    torch.testing.assert_close(merged.state_dict()[f"{name}.weight"], W + (8.0 / 4) * (B @ A), rtol=0, atol=1e-6)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    assert set(reloaded.state_dict()) == set(start)
    for k, v in reloaded.state_dict().items():
        assert torch.equal(v, merged.state_dict()[k]), k
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["lora_r"] == 4


@needs_peft
def test_a_later_outer_iteration_resets_the_reference_to_the_adapted_policy(tmp_path):
    """I = 2 outer iterations of 1 step: π_ref ← π_θ at the start of the second is a frozen copy of the adapted
    policy, so its step starts at KL 0 again (π_ref as the base model would give the KL of the first step's move)."""
    cfg = lora_cfg(steps=1, num_iterations=2, N=2, G=4, eval_n=2, max_completion_length=12, lr=1e-3, report_to="none",
                   progress=False, output_dir=str(tmp_path / "run"), beta=0.04)
    result = train(cfg, model=tiny(2), tokenizer=TOK)
    assert [r["iteration"] for r in result.history] == [1, 2]
    assert all(abs(r["kl"]) < 1e-7 for r in result.history)


# --- bad input, refused before anything loads --------------------------------------------------------------------
@pytest.mark.parametrize("overrides, names", [
    (dict(lora_alpha=16.0), ["lora_alpha", "no effect without LoRA", "lora_r"]),
    (dict(lora_target_modules=("q_proj",), lora_lr_multiplier=4.0),
     ["lora_target_modules, lora_lr_multiplier have no effect", "lora_r"]),
    (dict(lora_r=8, precision="pure", dtype="bfloat16"), ["lora_r=8", "precision='pure'"]),
    (dict(lora_r=-1), ["lora_r (LoRA rank r) must be >= 0"]),
    (dict(lora_r=8, lora_alpha=0.0), ["lora_alpha (LoRA α) must be > 0"]),
    (dict(lora_r=8, lora_dropout=1.0), ["lora_dropout must be in [0, 1)"]),
    (dict(lora_r=8, lora_target_modules=()), ["lora_target_modules must name at least one module"]),
    (dict(lora_r=8, lr=1e10), ["lr × lora_lr_multiplier"]),
    (dict(lora_r=8, lora_lr_multiplier=0.0), ["lora_lr_multiplier must be > 0"]),
])
def test_lora_combinations_that_make_no_sense_are_refused_naming_the_options(overrides, names):
    with pytest.raises(ValueError) as err:
        GRPOConfig.tiny(**overrides)
    for name in names:
        assert name in str(err.value)


def test_without_peft_a_lora_run_stops_before_loading_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(lora, "peft_available", lambda: False)
    loaded = []
    monkeypatch.setattr("grpo_lib.run.lifecycle.load_policy", lambda *a, **k: loaded.append(1))
    with pytest.raises(Exception) as err:
        train(lora_cfg(steps=1, N=2, G=2, eval_n=1, report_to="none", progress=False, output_dir=str(tmp_path / "r")))
    assert 'pip install -e ".[lora]"' in str(err.value) and loaded == []


@needs_peft
def test_the_tiny_preset_trains_with_lora_from_the_command_line(tmp_path):
    """The shipped tiny model (4 layers) with --lora-r 8: 8 · 11,264 = 90,112 trainable parameters (the formula of
    the first test), lr 5e-5 × 10, and a model/ folder that loads as a plain Qwen2 with the adapters merged."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "grpo_lib", "--preset", "tiny", "--lora-r", "8", "--steps", "2",
                           "--N", "2", "--G", "4", "--eval-n", "4", "--max-completion-length", "16",
                           "--report-to", "none", "--no-progress", "--output-dir", str(out)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LoRA: r = 8, α = 32 (scale α/r = 4) on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj: " \
           "90,112 trainable of " in proc.stdout
    assert "AdamW lr = 5e-05 × lora_lr_multiplier 10 = 0.0005" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["lora_r"] == 8
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model")
    assert type(reloaded) is Qwen2ForCausalLM and not any("lora" in k for k in reloaded.state_dict())

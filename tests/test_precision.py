"""Mixed precision: fp32 master weights + fp32 AdamW + bf16 autocast move the weights that pure bf16 cannot.

At lr = 5e-6 a fresh AdamW step moves each weight by about 5e-6. In bf16 that is below half the spacing
of representable numbers for every |w| above about 1e-3, so pure-bf16 AdamW rounds most of the update
away. The tests run the engine's own `policy_update` on CPU, under bf16 autocast (the mixed mode) and on
bf16 parameters (the pure mode), and count the weights that changed among those that got a gradient.
"""
import copy
import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from grpo_lib.config import GRPOConfig
from grpo_lib.precision import changed_fraction, resolve_precision
from grpo_lib.rollout import generate_completions, score_rollout
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import make_optimizer, policy_update, train

from test_train import random_tiny, small_cfg


@pytest.fixture(scope="module")
def batch_and_model():
    tok = build_char_tokenizer()
    model = random_tiny(tok)                                          # N(0, 0.02) weights, RMSNorm gains at 1
    rollout = generate_completions(model, tok, ["What is 1 + 2?\n", "What is 47 + 85?\n"], G=4,
                                   max_new_tokens=8, seed=0)
    batch = score_rollout(rollout, ["3", "132"], {"chars": lambda completions, **kw: [
        float(sum(map(ord, c[0]["content"])) % 5) for c in completions]})
    assert batch.advantages.abs().sum() > 0                          # a learning signal
    return model, batch


def one_update(model, batch, precision_mode):
    precision = resolve_precision("bfloat16", precision_mode, "cpu")
    model = copy.deepcopy(model).to(precision.param_dtype)
    cfg = GRPOConfig.tiny(lr=5e-6, beta=0.0, max_completion_length=8)
    opt, _ = make_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    policy_update(model, opt, batch, cfg, precision)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, opt, changed_fraction(before, after, grads), before, after, grads


def test_mixed_precision_moves_at_least_90_percent_of_the_weights_that_get_a_gradient(batch_and_model):
    model, batch = batch_and_model
    trained, opt, frac, *_ = one_update(model, batch, "mixed")
    assert all(p.dtype == torch.float32 for p in trained.parameters())                 # fp32 master weights
    state = opt.state[next(iter(trained.parameters()))]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32           # fp32 AdamW state
    assert frac >= 0.90, frac


def test_pure_bf16_rounds_most_of_the_same_update_away(batch_and_model):
    model, batch = batch_and_model
    trained, opt, frac, before, after, grads = one_update(model, batch, "pure")
    assert all(p.dtype == torch.bfloat16 for p in trained.parameters())
    assert frac < 0.10, frac
    norm = next(n for n in before if n.endswith("input_layernorm.weight"))
    assert (grads[norm] != 0).all() and torch.equal(before[norm], after[norm])            # gains near 1 never move


def test_autocast_runs_the_matmuls_in_bf16_on_fp32_weights():
    mixed = resolve_precision("bfloat16", "mixed", "cpu")
    assert (mixed.param_dtype, mixed.compute_dtype, mixed.autocast) == (torch.float32, torch.bfloat16, True)
    lin = torch.nn.Linear(4, 3)
    with mixed.context():
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    fp32 = resolve_precision("auto", "mixed", "cpu")                  # auto = fp32 on CPU: no autocast
    assert (fp32.param_dtype, fp32.compute_dtype, fp32.autocast) == (torch.float32, torch.float32, False)
    pure = resolve_precision("bfloat16", "pure", "cpu")
    assert (pure.param_dtype, pure.compute_dtype, pure.autocast) == (torch.bfloat16, torch.bfloat16, False)


def test_a_precision_the_device_cannot_run_is_refused_naming_the_option(monkeypatch):
    with pytest.raises(ValueError, match="--dtype float16 is not supported for training: fp16 needs a gradient scaler"):
        resolve_precision("float16", "mixed", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ValueError, match=r"--dtype bfloat16: the GPU Tesla V100 cannot run bf16"):
        resolve_precision("bfloat16", "mixed", "cuda:0")
    with pytest.raises(ValueError, match="dtype='float16' is not supported"):
        GRPOConfig.tiny(dtype="float16")


def test_bf16_training_keeps_fp32_master_weights_and_saves_fp32_unless_told(tmp_path):
    tok = build_char_tokenizer()
    result = train(small_cfg(tmp_path / "a", steps=1, dtype="bfloat16", lr=5e-6), model=random_tiny(tok),
                   tokenizer=tok)
    s = result.summary
    assert (s["precision"], s["param_dtype"], s["compute_dtype"], s["saved_dtype"]) == (
        "mixed", "float32", "bfloat16", "float32")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "run" / "model").dtype == torch.float32
    result = train(small_cfg(tmp_path / "b", steps=1, dtype="bfloat16", precision="pure", save_dtype="bfloat16"),
                   model=random_tiny(tok), tokenizer=tok)
    assert (result.summary["param_dtype"], result.summary["saved_dtype"]) == ("bfloat16", "bfloat16")
    assert json.loads((tmp_path / "b" / "run" / "model" / "config.json").read_text())["dtype"] == "bfloat16"

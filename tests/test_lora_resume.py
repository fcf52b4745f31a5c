"""Checkpoints and resume of a LoRA run (grpo_lib.run.checkpoint choice 9, grpo_lib.lora choice 6).

A LoRA checkpoint holds the adapters apart and, in model/, the merged model; the base weights are the starting
model's. The test of record is the same as tests/test_checkpoint.py's for full fine-tuning: a run killed while
writing a checkpoint and resumed from the one before must continue exactly as a run never stopped (every metric
but timings ==, and the final merged weights ==). Two cases: a checkpoint in the first outer iteration, where
π_ref is the base model with the adapters off (not saved), and one in the second, where π_ref is a frozen copy of
the adapted policy (saved).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

from grpo_lib import lora
from grpo_lib.models import tiny_qwen2_config
from grpo_lib.run import checkpoint
from grpo_lib.run.checkpoint import ADAPTERS_FILE, CheckpointError
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import train

from test_checkpoint import RESUME_KW, read_jsonl, without_timing
from test_train import random_tiny, small_cfg

pytestmark = pytest.mark.skipif(not lora.peft_available(), reason=lora.INSTALL_HINT)

TOK = build_char_tokenizer()
LORA_KW = dict(RESUME_KW, lora_r=4, lora_alpha=8.0, lr=1e-3)   # 2 outer iterations of 3 steps, μ = 2, β > 0


class SimulatedKill(BaseException):       # like SIGKILL: no `except Exception` handler runs
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return train(small_cfg(tmp_path_factory.mktemp("full"), **LORA_KW), model=random_tiny(TOK), tokenizer=TOK)


def killed_while_writing(cfg, step, monkeypatch):
    """Run `cfg` until it dies writing checkpoint `step` (model and adapters on disk, no manifest)."""
    real_manifest = checkpoint._write_manifest

    def die(folder, s):
        if s == step:
            raise SimulatedKill(f"simulated kill while writing checkpoint {s}")
        real_manifest(folder, s)

    monkeypatch.setattr(checkpoint, "_write_manifest", die)
    with pytest.raises(SimulatedKill):
        train(cfg, model=random_tiny(TOK), tokenizer=TOK)
    monkeypatch.undo()


@pytest.mark.trains
@pytest.mark.parametrize("killed_at, resumed_from, reference", [(4, 2, "initial"), (6, 4, "saved")],
                         ids=["first-iteration", "second-iteration"])
def test_a_killed_lora_run_resumes_exactly(uninterrupted, tmp_path, monkeypatch, killed_at, resumed_from, reference):
    full = uninterrupted
    assert [r["step"] for r in full.history] == [1, 2, 3, 4, 5, 6] and full.history[3]["kl"] > 0
    cfg = small_cfg(tmp_path, **LORA_KW)
    killed_while_writing(cfg, killed_at, monkeypatch)
    ckpt = tmp_path / "run" / "checkpoints" / f"step-{resumed_from:06d}"
    assert json.loads((ckpt / "trainer_state.json").read_text())["reference"] == reference
    assert (ckpt / "reference.safetensors").exists() == (reference == "saved")
    resumed = train(cfg.replace(resume=str(tmp_path / "run")), model=random_tiny(TOK), tokenizer=TOK)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4, 5, 6]
    assert without_timing(resumed.history) == without_timing(full.history)
    assert without_timing(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == without_timing(full.history)
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.summary["accuracy_after"] == full.summary["accuracy_after"]


@pytest.mark.trains
def test_a_lora_checkpoint_holds_the_adapters_and_the_merged_model(uninterrupted):
    ckpt = uninterrupted.output_dir / "checkpoints" / "step-000002"
    names = {p.name for p in ckpt.iterdir()}
    assert {ADAPTERS_FILE, "model", "optimizer.pt", "manifest.json"} <= names
    assert ADAPTERS_FILE in json.loads((ckpt / "manifest.json").read_text())["files"]
    adapters = load_file(str(ckpt / ADAPTERS_FILE))
    # r = 4 on the 7 projections of 2 layers: A (r × d_in) and B (d_out × r) each
    assert len(adapters) == 2 * 7 * 2 and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    # AdamW's state is the adapters' only: one entry per adapter tensor, the same shapes
    opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert sorted(tuple(s["exp_avg"].shape) for s in opt["state"].values()) == \
        sorted(tuple(t.shape) for t in adapters.values())
    # model/ is the merged model: loads with from_pretrained, and is W + (α/r)·B A, W the starting weights
    merged = AutoModelForCausalLM.from_pretrained(ckpt / "model").state_dict()
    start = random_tiny(TOK).state_dict()
    assert set(merged) == set(start)
    scale = LORA_KW["lora_alpha"] / LORA_KW["lora_r"]
    changed = 0
    for key, w in start.items():
        stem = key.removesuffix(".weight")
        a_key = f"{stem}.lora_A.default.weight"
        if a_key in adapters:
            want = w + scale * (adapters[f"{stem}.lora_B.default.weight"] @ adapters[a_key])
            torch.testing.assert_close(merged[key], want, rtol=0, atol=1e-6)
            changed += not torch.equal(merged[key], w)
        else:
            assert torch.equal(merged[key], w), key
    assert changed == 2 * 7                            # every adapted layer moved after 2 steps


def test_merged_state_dict_equals_peft_s_merge_and_leaves_the_model_as_it_was(tmp_path):
    cfg = small_cfg(tmp_path, lora_r=2, lora_alpha=6.0)
    model = lora.apply_lora(random_tiny(TOK), cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_()                            # B = 0 at the start would make the merge trivial
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ours = lora.merged_state_dict(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # not changed
    peft_merged = lora.merge_adapters(model).state_dict()
    assert set(ours) == set(peft_merged)
    for k, v in peft_merged.items():
        assert torch.equal(ours[k], v), k


@pytest.mark.trains
def test_resuming_a_lora_checkpoint_needs_its_starting_model_and_its_lora_options(uninterrupted, tmp_path):
    run = uninterrupted.output_dir
    ckpt = run / "checkpoints" / "step-000004"          # second iteration: π_ref saved, no "initial" check needed
    cfg = small_cfg(tmp_path, **LORA_KW).replace(output_dir=str(run), resume=str(ckpt), overwrite=False)
    torch.manual_seed(123)
    other = Qwen2ForCausalLM(tiny_qwen2_config(len(TOK), num_hidden_layers=2))   # not the base weights
    with pytest.raises(CheckpointError, match=r"is a LoRA checkpoint: it holds the adapters, and its base weights "
                                              r"are the starting model's; but the model this run starts from is not"):
        train(cfg, model=other, tokenizer=TOK)
    with pytest.raises(CheckpointError, match=r"lora_r: saved 4, now 8"):
        train(cfg.replace(lora_r=8), model=random_tiny(TOK), tokenizer=TOK)


def test_load_adapter_state_refuses_adapters_of_another_shape(tmp_path):
    cfg = small_cfg(tmp_path, lora_r=2, lora_alpha=6.0)
    model = lora.apply_lora(random_tiny(TOK), cfg)
    state = lora.adapter_state(model)
    name = next(iter(state))
    with pytest.raises(ValueError, match=r"missing \["):
        lora.load_adapter_state(model, {k: v for k, v in state.items() if k != name})
    with pytest.raises(ValueError, match=r"do not fit this model's shapes"):
        lora.load_adapter_state(model, {**state, name: torch.zeros(3, 3)})
    doubled = {k: 2 * v for k, v in state.items()}
    lora.load_adapter_state(model, doubled)
    assert all(torch.equal(p, doubled[n]) for n, p in model.named_parameters() if n in doubled)

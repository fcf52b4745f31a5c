"""LoRA through the TRL recipe (grpo_lib.trl.recipe choice 10): TRL's GRPOTrainer gets the engine's LoraConfig as
peft_config. The trainer's trainable parameters by hand and against the engine's, AdamW at lr × lora_lr_multiplier,
π_ref as TRL computes it (the base model, the adapters disabled), a 2-step run where only the adapters move and
model/ is W + (α/r)·B·A, and the combinations TRL cannot run refused before anything loads.
"""

from __future__ import annotations

import json

import pytest
import torch

from grpo_lib import lora
from grpo_lib.config import GRPOConfig
from grpo_lib.data import load_problems
from grpo_lib.models import load_policy
from grpo_lib.rewards import reward_functions
from grpo_lib.trl import recipe as trl_recipe
from test_trl_recipe import needs_trl  # noqa: F401  (a fixture)

needs_peft = pytest.mark.skipif(not lora.peft_available(), reason=lora.INSTALL_HINT)

# the shipped tiny Qwen2: d = 128, 4 heads of 32 and 2 KV heads (k, v give 2·32 = 64 outputs), d_ff = 512, 4 layers
D, KV, FF, LAYERS = 128, 64, 512, 4
SHAPES = {"q_proj": (D, D), "k_proj": (D, KV), "v_proj": (D, KV), "o_proj": (D, D), "gate_proj": (D, FF),
          "up_proj": (D, FF), "down_proj": (FF, D)}                        # (d_in, d_out)
PREFIX = "base_model.model."                                              # peft's PeftModel around the model


def lora_cfg(**overrides):
    return GRPOConfig.tiny(**{"device": "cpu", "report_to": "none", "progress": False, "lora_r": 4,
                              "lora_alpha": 8.0, **overrides})


def build(cfg, tmp_path, overrides=None):
    model, tok = load_policy("tiny", device="cpu")
    dataset = trl_recipe.training_dataset(cfg, tok, load_problems("addition", "train"))
    rewards = [trl_recipe._named(n, f) for n, f in reward_functions(cfg.reward_funcs).items()]
    args = trl_recipe.trl_args(cfg, tmp_path, overrides=overrides)
    return trl_recipe.make_trainer(cfg, args, model, tok, dataset, rewards)


@needs_peft
@pytest.mark.parametrize("targets", [None, ("q_proj", "down_proj")], ids=["all-seven", "q-and-down"])
def test_the_recipe_s_trainer_trains_r_times_d_in_plus_d_out_per_target_at_lr_times_the_multiplier(
        needs_trl, tmp_path, targets):
    r = 4
    cfg = lora_cfg(steps=2, N=2, G=4, lr=2e-5, **({"lora_target_modules": targets} if targets else {}))
    trainer = build(cfg, tmp_path)
    names = targets or tuple(SHAPES)
    trainable = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    for layer in range(LAYERS):                            # each targeted Linear: A is r × d_in, B is d_out × r
        for name in names:
            d_in, d_out = SHAPES[name]
            block = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            stem = f"{PREFIX}model.layers.{layer}.{block}.{name}"
            assert trainable.pop(f"{stem}.lora_A.default.weight").shape == (r, d_in)
            assert trainable.pop(f"{stem}.lora_B.default.weight").shape == (d_out, r)
    assert trainable == {}, f"trainable besides the adapters: {sorted(trainable)}"
    by_hand = LAYERS * sum(r * sum(SHAPES[n]) for n in names)
    assert by_hand == (4 * 4 * 2816 if targets is None else 4 * 4 * (256 + 640))
    assert sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) == by_hand
    # the engine's LoRA on the same config: the same parameters, by name and count
    engine, _ = load_policy("tiny", device="cpu")
    lora.apply_lora(engine, cfg)
    assert {n for n, p in engine.named_parameters() if p.requires_grad} == \
        {n.removeprefix(PREFIX) for n, p in trainer.model.named_parameters() if p.requires_grad}
    # AdamW at lr × lora_lr_multiplier = 2e-5 × 10, over exactly the adapters
    assert trainer.args.learning_rate == pytest.approx(2e-4) == cfg.optimizer_lr
    optimizer = trainer.create_optimizer()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2e-4] * len(optimizer.param_groups))
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == by_hand


@needs_peft
def test_the_start_up_line_names_a_trl_learning_rate_override_instead_of_the_multiplier(needs_trl, tmp_path, capsys):
    """`--trl learning_rate=3e-4` wins over lr × lora_lr_multiplier (overrides win, `trl_args`); the LoRA line
    says the rate AdamW really gets, and where it came from."""
    cfg = lora_cfg(lr=2e-5)
    trainer = build(cfg, tmp_path, overrides={"learning_rate": 3e-4})
    line = capsys.readouterr().out
    assert "AdamW lr = 0.0003 (set by --trl learning_rate, not 2e-05 × lora_lr_multiplier 10 = 0.0002)" in line
    optimizer = trainer.create_optimizer()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([3e-4] * len(optimizer.param_groups))
    # the same rate as the config's rule: the rule, as before
    assert lora.describe(cfg, trainer.model, lr=cfg.optimizer_lr).endswith("AdamW lr = 2e-05 × lora_lr_multiplier 10 = 0.0002")


@needs_peft
def test_trl_s_reference_is_the_base_model_with_the_adapters_disabled(needs_trl, tmp_path):
    """TRL 1.16 with peft_config and beta > 0: no ref_model and no "ref" adapter, so its reference pass is
    `use_adapter(model, adapter_name=None)` (grpo_trainer.py), which disables the adapters: the base model exactly,
    as the engine's `AdaptersOff` in the first outer iteration."""
    from trl.trainer.utils import use_adapter

    cfg = lora_cfg(steps=2, N=2, G=4, beta=0.04)
    trainer = build(cfg, tmp_path)
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    assert trainer.ref_model is None and trainer.beta == 0.04 and "ref" not in peft_model.peft_config
    base, _ = load_policy("tiny", device="cpu")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        want = base(input_ids=ids).logits
        assert torch.equal(peft_model(input_ids=ids).logits, want)                 # B = 0: π_θ starts as the base
        for n, p in peft_model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.1)
        moved = peft_model(input_ids=ids).logits
        with use_adapter(peft_model, adapter_name="ref" if "ref" in peft_model.peft_config else None):
            assert torch.equal(peft_model(input_ids=ids).logits, want)             # TRL's π_ref: the base model
        # and the engine's π_ref of the same adapted model (grpo_lib.lora.AdaptersOff) is the same base model
        inner = peft_model.get_base_model()
        inner.__dict__[lora.PEFT_ATTR] = peft_model                                 # as apply_lora leaves it
        assert torch.equal(lora.AdaptersOff(inner)(input_ids=ids).logits, want)
    assert not torch.allclose(moved, want)


@needs_peft
@pytest.mark.slow           # measured 51 s wall (24 s CPU) at load 5.6 on the 2-core machine, 2026-12-07
def test_a_short_trl_lora_run_moves_only_the_adapters_and_saves_w_plus_alpha_over_r_b_a(
        needs_trl, tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    base, _ = load_policy("tiny", device="cpu")
    start = {k: v.clone() for k, v in base.state_dict().items()}
    n_base = sum(p.numel() for p in base.parameters())
    at_start, before_merge = {}, {}
    real_make, real_merge = trl_recipe.make_trainer, trl_recipe.merge_lora

    def weights(trainer):
        peft_model = trainer.accelerator.unwrap_model(trainer.model)
        return {n.removeprefix(PREFIX): p.detach().clone() for n, p in peft_model.named_parameters()}

    def make(*args, **kwargs):                               # the adapters as TRL starts from them
        trainer = real_make(*args, **kwargs)
        at_start.update(weights(trainer))
        return trainer

    def merge(trainer):                                      # the adapted weights after training, before the merge
        before_merge.update(weights(trainer))
        return real_merge(trainer)
    monkeypatch.setattr(trl_recipe, "make_trainer", make)
    monkeypatch.setattr(trl_recipe, "merge_lora", merge)
    out = tmp_path / "run"
    r, alpha = 4, 8.0
    assert trl_recipe.main(["--preset", "tiny", "--lora-r", str(r), "--lora-alpha", str(alpha), "--lr", "1e-4",
                            "--steps", "2", "--N", "4", "--G", "4", "--max-completion-length", "40", "--eval-n", "4",
                            "--log-every", "1", "--report-to", "none", "--progress", "false",
                            "--output-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "LoRA: r = 4, α = 8 (scale α/r = 2) on q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj: " \
           "45,056 trainable of " in stdout and "AdamW lr = 0.0001 × lora_lr_multiplier 10 = 0.001" in stdout
    # the base weights never moved; every adapter did: B from 0, A from its random start (A's gradient is 0
    # while B = 0, so A moves from the second step on)
    lora_names = [n for n in before_merge if ".lora_" in n]
    assert len(lora_names) == 2 * 7 * LAYERS and set(at_start) == set(before_merge)
    for n, p in before_merge.items():
        if ".lora_" not in n:
            assert torch.equal(p, start[n.replace(".base_layer", "")]), n
        elif ".lora_B." in n:
            assert torch.equal(at_start[n], torch.zeros_like(p)) and p.abs().max() > 0, n
        else:
            assert at_start[n].abs().max() > 0 and not torch.equal(p, at_start[n]), n
    # TRL's log: AdamW at lr × 10 at both steps; KL 0 at step 1 (π_θ = base = π_ref), > 0 at step 2 (π_ref is
    # still the base model: a π_ref synced to π_θ would give 0 again)
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [rec for rec in log if "loss" in rec]
    assert [rec["step"] for rec in steps] == [1, 2]
    assert [rec["learning_rate"] for rec in steps] == pytest.approx([1e-3, 1e-3])
    assert abs(steps[0]["kl"]) < 1e-7 and steps[1]["kl"] > 1e-6, [rec["kl"] for rec in steps]
    # model/ is the merged model: W + (α/r)·B·A in every adapted layer, every other weight as it started
    reloaded = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert set(reloaded) == set(start)
    merged_layers = set()
    for n in lora_names:
        if ".lora_A." in n:
            stem = n.split(".lora_A.")[0]
            A, B = before_merge[n], before_merge[f"{stem}.lora_B.default.weight"]
            want = start[f"{stem}.weight"] + (alpha / r) * (B @ A)
            torch.testing.assert_close(reloaded[f"{stem}.weight"], want, rtol=0, atol=1e-6)
            assert not torch.equal(reloaded[f"{stem}.weight"], start[f"{stem}.weight"])
            merged_layers.add(f"{stem}.weight")
    for k, v in reloaded.items():
        if k not in merged_layers:
            assert torch.equal(v, start[k]), k
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["config"]["lora_r"] == 4
    assert summary["parameters"] == n_base + 45_056                  # as the engine's: the adapters counted
    assert summary["trl_args"]["learning_rate"] == pytest.approx(1e-3)


@needs_peft
def test_lora_changes_only_the_learning_rate_of_trl_s_config(needs_trl, tmp_path):
    full = trl_recipe.trl_args(GRPOConfig.tiny(device="cpu"), tmp_path).to_dict()
    with_lora = trl_recipe.trl_args(lora_cfg(report_to="wandb", progress=True, lora_lr_multiplier=4.0),
                                    tmp_path).to_dict()
    assert {k: (with_lora[k], full[k]) for k in full if with_lora[k] != full[k]} == \
        {"learning_rate": (pytest.approx(2e-4), 5e-5)}


# --- what TRL cannot run, refused before anything loads --------------------------------------------------------
# the recipe's own refusals are one "error: ..." line and status 1; the config's (shared with python -m grpo_lib)
# are argparse's usage message and status 2
@pytest.mark.parametrize("extra, status, message", [
    (["--lora-r", "8", "--num-iterations", "2"], 1,
     "error: lora_r=8 with num_iterations=2 and beta=0.04: TRL 1.16 cannot reset π_ref under PEFT"),
    (["--lora-r", "8", "peft missing"], 1, 'error: LoRA needs peft: pip install -e ".[lora]"'),
    (["--lora-r", "8", "--resume", "runs/x"], 1, "error: python -m grpo_lib.trl.recipe does not resume"),
    (["--lora-r", "8", "--precision", "pure", "--dtype", "bfloat16"], 2, "lora_r=8 with precision='pure'"),
], ids=["outer-iterations", "no-peft", "resume", "pure"])
def test_lora_combinations_trl_cannot_run_are_refused_before_loading(needs_trl, tmp_path, monkeypatch, capsys,
                                                                     extra, status, message):
    if "peft missing" in extra:
        extra = extra[:-1]
        monkeypatch.setattr(lora, "peft_available", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(trl_recipe, "load_policy", refuse)
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--report-to", "none", "--output-dir", str(out), *extra]
    if status == 1:
        assert trl_recipe.main(argv) == 1
    else:
        with pytest.raises(SystemExit) as exit_:
            trl_recipe.main(argv)
        assert exit_.value.code == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_lora_with_beta_zero_and_outer_iterations_is_accepted(needs_trl, tmp_path):
    """β = 0: no π_ref to reset, so I > 1 is no reason to refuse (and TRL's sync_ref_model stays off)."""
    args = trl_recipe.trl_args(lora_cfg(num_iterations=2, beta=0.0), tmp_path)
    assert args.sync_ref_model is False and args.beta == 0.0


@needs_peft
def test_a_target_the_model_lacks_is_named_before_trl_sees_it(needs_trl, tmp_path, monkeypatch):
    import trl

    monkeypatch.setattr(trl, "GRPOTrainer", lambda *a, **k: pytest.fail("GRPOTrainer was built"))
    with pytest.raises(ValueError, match=r"lora_target_modules names \['qkv_proj'\].*'q_proj'"):
        build(lora_cfg(steps=1, N=2, G=2, lora_target_modules=("q_proj", "qkv_proj")), tmp_path)


@needs_peft
def test_mixed_precision_keeps_the_adapters_and_the_frozen_weights_in_fp32_under_bf16_autocast(needs_trl, tmp_path):
    """--dtype bfloat16 (precision mixed): the recipe loads the policy in fp32 and TRL runs bf16 autocast; peft's
    adapters are fp32 too, so AdamW's state is fp32, as in the engine ('pure' is refused with LoRA)."""
    cfg = lora_cfg(steps=1, N=2, G=2, dtype="bfloat16")
    prec = trl_recipe._precision(cfg, "cpu")
    model, tok = load_policy("tiny", device="cpu", dtype=prec.param_dtype, compute_dtype=prec.compute_dtype)
    args = trl_recipe.trl_args(cfg, tmp_path)
    rewards = [trl_recipe._named(n, f) for n, f in reward_functions(cfg.reward_funcs).items()]
    trainer = trl_recipe.make_trainer(cfg, args, model, tok,
                                      trl_recipe.training_dataset(cfg, tok, load_problems("addition", "train")), rewards)
    assert args.bf16 is True
    dtypes = {(p.requires_grad, p.dtype) for p in trainer.model.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.float32)}

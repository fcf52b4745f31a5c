"""DAPO's overlong filtering, GRPOConfig.mask_truncated_completions (TRL: mask_truncated_completions).

A completion cut at max_completion_length without an EOS keeps its reward and its place in the group's
advantages, but none of its tokens enters the loss. TRL does it in one line of
GRPOTrainer._generate_and_score_completions: `completion_mask * (~is_truncated).unsqueeze(1)`, with
`is_truncated = ids[-1] not in eos_and_pad` on each completion's ids (cut after its EOS).
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import Qwen2ForCausalLM

from grpo_lib.advantages import compute_advantages
from grpo_lib.config import GRPOConfig
from grpo_lib.models import tiny_qwen2_config
from grpo_lib.rollout import generate_completions, score_rollout
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import policy_update


def chars_reward(completions, **kw):
    return [float(sum(map(ord, c[0]["content"])) % 5) for c in completions]


@pytest.fixture(scope="module")
def rollout_and_model():
    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))
    rollout = generate_completions(model, tok, ["What is 1 + 2?\n", "Hi\n"], G=4, max_new_tokens=8, seed=0)
    # make the mix certain: rows 1 and 6 end with an EOS at positions 2 and 4, every other row runs to T
    T = rollout.T
    ids, mask = rollout.completion_ids.clone(), torch.ones(rollout.completion_ids.shape, dtype=torch.int64)
    ids[ids == tok.eos_token_id] = 5                                     # no accidental EOS anywhere
    for row, at in ((1, 2), (6, 4)):
        ids[row, at] = tok.eos_token_id
        mask[row, at + 1:] = 0
    rollout.completion_ids, rollout.completion_mask = ids, mask.to(rollout.completion_mask.dtype)
    assert T == 8
    return tok, model, rollout


def trl_is_truncated(rollout, eos_and_pad):
    """TRL's rule, on each completion's ids up to its mask (what TRL's completion_ids_list holds)"""
    rows = [ids[m.bool()].tolist() for ids, m in zip(rollout.completion_ids, rollout.completion_mask)]
    return torch.tensor([r[-1] not in eos_and_pad for r in rows])


def test_the_mask_drops_exactly_the_rows_without_an_eos_as_trl_does(rollout_and_model):
    tok, model, rollout = rollout_and_model
    batch = score_rollout(rollout, ["3", "0"], {"chars": chars_reward})
    assert torch.equal(batch.mask, rollout.completion_mask)                          # off: unchanged
    truncated = trl_is_truncated(rollout, [tok.eos_token_id, tok.pad_token_id])
    assert truncated.tolist() == [True, False, True, True, True, True, False, True]  # by construction above
    assert torch.equal(rollout.truncated, truncated)
    batch.mask_truncated = True
    expected = rollout.completion_mask * (~truncated).unsqueeze(1).to(rollout.completion_mask.dtype)  # TRL's line
    assert torch.equal(batch.mask, expected)
    assert batch.mask.sum(-1).tolist() == [0, 3, 0, 0, 0, 0, 5, 0]
    # the cut rows stay in their groups' advantages: A is the whole batch's, and some cut row has A != 0
    assert torch.equal(batch.advantages, compute_advantages(batch.rewards, rollout.G))
    assert (batch.advantages[truncated] != 0).any()


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_masked_rows_give_the_update_of_a_zero_advantage(rollout_and_model, loss_type):
    """With β = 0 and a loss whose per-row denominator does not depend on the other rows' tokens ("grpo": each
    row's own |o_i|, a masked row counts 1 in the mean over B; "dr_grpo": the constant B·T), leaving a row out of
    the mask is the same gradient as keeping it with A = 0: an independent way to the same number."""
    tok, base, rollout = rollout_and_model
    cfg = GRPOConfig.tiny(beta=0.0, loss_type=loss_type, max_completion_length=8, max_grad_norm=1e6)
    grads = {}
    for name in ("masked", "zero_advantage", "plain"):
        batch = score_rollout(rollout, ["3", "0"], {"chars": chars_reward})
        if name == "masked":
            batch.mask_truncated = True
        elif name == "zero_advantage":
            batch.advantages = batch.advantages * (~rollout.truncated).to(batch.advantages.dtype)
        model = copy.deepcopy(base)
        policy_update(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, cfg)
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(grads["masked"], grads["zero_advantage"], rtol=1e-5, atol=1e-8)
    assert (grads["masked"] - grads["plain"]).abs().max() > 1e-6                     # it changed the update


def test_every_row_cut_leaves_no_gradient(rollout_and_model):
    tok, base, rollout = rollout_and_model
    full = copy.copy(rollout)
    full.completion_ids = rollout.completion_ids.clone()
    full.completion_ids[full.completion_ids == tok.eos_token_id] = 5
    full.completion_mask = torch.ones_like(rollout.completion_mask)
    batch = score_rollout(full, ["3", "0"], {"chars": chars_reward})
    batch.mask_truncated = True
    assert batch.mask.sum() == 0
    cfg = GRPOConfig.tiny(beta=0.04, loss_type="dapo", max_completion_length=8)
    ref = copy.deepcopy(base)
    batch.logp_ref = score_rollout(full, ["3", "0"], {"chars": chars_reward}, ref_model=ref).logp_ref
    model = copy.deepcopy(base)
    stats = policy_update(model, torch.optim.SGD(model.parameters(), lr=0.0), batch, cfg)
    assert stats["loss"] == 0.0 and stats["grad_norm"] == 0.0


def test_the_option_reaches_the_command_line_and_trl():
    from grpo_lib.cli import parse_config

    assert GRPOConfig.tiny().mask_truncated_completions is False                      # off by default
    assert parse_config(["--mask-truncated-completions"]).mask_truncated_completions is True
    pytest.importorskip("trl")
    from grpo_lib.trl.recipe import trl_args

    assert trl_args(GRPOConfig.tiny(mask_truncated_completions=True), output_dir="/tmp/x").mask_truncated_completions
    assert not trl_args(GRPOConfig.tiny(), output_dir="/tmp/x").mask_truncated_completions


@pytest.mark.trains
def test_a_run_that_cuts_every_completion_learns_nothing_from_them(tmp_path):
    """max_completion_length 2: no completion of the tiny model reaches its EOS, so with the option every step's
    loss and gradient are 0 (and clipped_ratio 1), and without it they are not (a reward of 0, 1, 0, 1, ... by
    position, so no group is flat: the tiny model's first 2 characters are the same in every completion)."""
    from grpo_lib.train import train

    runs = {}
    for on in (True, False):
        cfg = GRPOConfig.tiny(steps=2, N=2, G=4, eval_n=2, max_completion_length=2, report_to="none",
                              progress=False, output_dir=str(tmp_path / f"run{on}"), mask_truncated_completions=on)
        runs[on] = train(cfg, reward_funcs={"alternating": lambda completions, **kw: [float(i % 2) for i in range(len(completions))]}).history
    for rec in runs[True]:
        assert rec["completions/clipped_ratio"] == 1.0
        assert rec["loss"] == 0.0 and rec["grad_norm"] == 0.0 and rec["frac_reward_zero_std"] < 1.0
    assert all(math.isfinite(r["grad_norm"]) for r in runs[False])
    assert any(r["grad_norm"] > 0 for r in runs[False])

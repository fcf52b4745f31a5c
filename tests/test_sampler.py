"""The perturbed sampler (grpo_lib.sampler): the copy and its re-sync, the mismatch it makes on the tiny model, the
correction weights it feeds to the loss, and the options refused before anything loads."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from grpo_lib import sampler as sampler_module
from grpo_lib.config import GRPOConfig
from grpo_lib.models import load_tiny_model
from grpo_lib.rewards import reward_functions
from grpo_lib.rollout import generate_completions, score_rollout
from grpo_lib.sampler import METRICS, parse_perturbation, sampler_correction, sync_sampler


@pytest.fixture(scope="module")
def tiny():
    model, tok = load_tiny_model()
    return model, tok


def scored(model, tok, sampler=None, seed=0):
    prompts = ["12+34=", "5+7=", "40+2="]
    rollout = generate_completions(sampler or model, tok, prompts, 4, max_new_tokens=12, seed=seed)
    return score_rollout(rollout, ["46", "12", "42"], reward_functions(("correctness", "format")))


def test_parse_perturbation():
    assert parse_perturbation("none") == ("none", 0.0) and parse_perturbation("bf16") == ("bf16", 0.0)
    assert parse_perturbation("noise:1e-3") == ("noise", 1e-3)
    for bad in ("noise:0", "noise:-1", "noise:nan", "noise:inf", "noise:", "fp8", "BF16"):
        with pytest.raises(ValueError, match="sampler_perturbation"):
            parse_perturbation(bad)


def test_none_is_the_policy_itself_no_weights_no_metrics(tiny):
    model, tok = tiny
    assert sync_sampler(None, model, "none", seed=0) is None
    batch = scored(model, tok)
    assert sampler_correction(batch, model, None, temperature=1.0, correction=True, mode="token_truncate",
                              clip_min=None, clip_max=3.0) == {}
    assert batch.is_weights is None


def test_an_unperturbed_copy_gives_weights_exactly_one_and_no_difference(tiny):
    model, tok = tiny
    batch = scored(model, tok)
    same = copy.deepcopy(model)
    m = sampler_correction(batch, model, same, temperature=1.0, correction=True, mode="token_truncate", clip_min=None,
                           clip_max=3.0)
    assert set(m) == set(METRICS)
    assert batch.is_weights.shape == batch.mask.shape and (batch.is_weights == 1.0).all()
    assert m["sampling/sampling_logp_difference/mean"] == m["sampling/sampling_logp_difference/max"] == 0.0
    assert m["sampling/importance_sampling_ratio/min"] == m["sampling/importance_sampling_ratio/max"] == 1.0


def test_the_bf16_sampler_is_the_policy_rounded_and_follows_it_every_step(tiny):
    model, _ = tiny
    policy = copy.deepcopy(model)
    s = sync_sampler(None, policy, "bf16", seed=0)
    params = list(zip(policy.parameters(), s.parameters()))
    assert all(q.dtype == torch.bfloat16 and not q.requires_grad for _, q in params) and not s.training
    assert all(torch.equal(q, p.detach().to(torch.bfloat16)) for p, q in params)
    assert any(not torch.equal(q.float(), p) for p, q in params)               # rounding changed some weights
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)                                                       # an update of the policy
    again = sync_sampler(s, policy, "bf16", seed=1)
    assert again is s                                                          # one copy, re-synced
    assert all(torch.equal(q, p.detach().to(torch.bfloat16)) for p, q in zip(policy.parameters(), s.parameters()))


def test_noise_has_the_asked_std_is_seeded_and_leaves_the_global_rng_alone(tiny):
    model, _ = tiny
    state = torch.get_rng_state()
    a = sync_sampler(None, model, "noise:0.01", seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    diff = torch.cat([(q - p).flatten() for p, q in zip(model.parameters(), a.parameters())])
    assert diff.numel() > 1_000_000 and diff.std().item() == pytest.approx(0.01, rel=0.01)
    assert abs(diff.mean().item()) < 1e-4
    b = sync_sampler(None, model, "noise:0.01", seed=5)
    c = sync_sampler(copy.deepcopy(b), model, "noise:0.01", seed=6)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert all(p.dtype == torch.float32 for p in a.parameters())


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_a_bf16_sampler_makes_a_real_measurable_mismatch_on_the_tiny_model(tiny, mode):
    model, tok = tiny
    s = sync_sampler(None, model, "bf16", seed=0)
    batch = scored(model, tok, sampler=s)
    m = sampler_correction(batch, model, s, temperature=1.0, correction=True, mode=mode, clip_min=None, clip_max=3.0)
    assert set(m) == set(METRICS) and all(math.isfinite(v) for v in m.values())
    assert 0 < m["sampling/sampling_logp_difference/mean"] <= m["sampling/sampling_logp_difference/max"]
    w = batch.is_weights
    assert w.shape == (batch.mask.shape if mode.startswith("token") else (batch.mask.shape[0], 1))
    assert (w <= 3.0).all() and (w != 1.0).any()
    # without the correction: no weights in the loss, the difference still reported
    batch.is_weights = None
    m2 = sampler_correction(batch, model, s, temperature=1.0, correction=False, mode=mode, clip_min=None, clip_max=3.0)
    assert batch.is_weights is None
    assert m2 == {k: m[k] for k in m if "logp_difference" in k}


def test_the_metrics_combine_over_ranks_as_trl_gathers_them(monkeypatch):
    ranks = [{"sampling/sampling_logp_difference/mean": 0.1, "sampling/sampling_logp_difference/max": 0.5,
              "sampling/importance_sampling_ratio/min": 0.7, "sampling/importance_sampling_ratio/mean": 1.0,
              "sampling/importance_sampling_ratio/max": 1.5},
             {"sampling/sampling_logp_difference/mean": 0.3, "sampling/sampling_logp_difference/max": 0.9,
              "sampling/importance_sampling_ratio/min": 0.4, "sampling/importance_sampling_ratio/mean": 1.2,
              "sampling/importance_sampling_ratio/max": 1.1}]
    monkeypatch.setattr(sampler_module.dist, "all_gather_objects", lambda obj: ranks)
    out = sampler_module._combine_over_ranks(ranks[0])
    assert out == pytest.approx({"sampling/sampling_logp_difference/mean": 0.2, "sampling/sampling_logp_difference/max": 0.9,
                                 "sampling/importance_sampling_ratio/min": 0.4,
                                 "sampling/importance_sampling_ratio/mean": 1.1,
                                 "sampling/importance_sampling_ratio/max": 1.5})


# --- bad input, refused before anything loads --------------------------------------------------------------------
@pytest.mark.parametrize("overrides, names", [
    (dict(vllm_importance_sampling_correction=True), ["vllm_importance_sampling_correction=True",
                                                       "sampler_perturbation='none'"]),
    (dict(sampler_perturbation="noise:0"), ["sampler_perturbation", "σ > 0"]),
    (dict(sampler_perturbation="fp8"), ["sampler_perturbation must be 'none', 'bf16' or 'noise:σ'"]),
    (dict(sampler_perturbation="bf16", dtype="bfloat16", precision="pure"),
     ["sampler_perturbation='bf16'", "precision='pure'", "dtype='bfloat16'"]),
])
def test_a_correction_without_a_mismatch_and_bad_perturbations_are_refused(overrides, names):
    with pytest.raises(ValueError) as err:
        GRPOConfig.tiny(**overrides)
    for name in names:
        assert name in str(err.value)
    cfg = GRPOConfig.tiny(sampler_perturbation="noise:1e-3", vllm_importance_sampling_correction=True)
    assert cfg.sampler_perturbation == "noise:1e-3"


# --- a run ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("correction", [True, False])
def test_a_run_with_a_bf16_sampler_logs_trl_s_metrics(tmp_path, correction):
    from transformers import Qwen2ForCausalLM

    from grpo_lib.models import tiny_qwen2_config
    from grpo_lib.tokenizer import build_char_tokenizer
    from grpo_lib.train import train

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))
    cfg = GRPOConfig.tiny(steps=2, N=2, G=4, eval_n=2, max_completion_length=8, report_to="none", progress=False,
                          output_dir=str(tmp_path / "run"), sampler_perturbation="bf16",
                          vllm_importance_sampling_correction=correction, vllm_importance_sampling_mode="token_truncate")
    weights = []
    result = train(cfg, model=model, tokenizer=tok, callback=lambda rec, batch: weights.append(batch.is_weights))
    expected = set(METRICS) if correction else {k for k in METRICS if "logp_difference" in k}
    for rec in result.history:
        assert {k for k in rec if k.startswith("sampling/")} == expected
        assert 0 < rec["sampling/sampling_logp_difference/mean"] < math.inf
    assert all((w is not None) == correction for w in weights)

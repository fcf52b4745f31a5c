"""Golden tests: grpo_lib computes what TRL's GRPOTrainer computes, on the same batch, with TRL's own code.

Each loss test builds a real `trl.GRPOTrainer` (TRL 1.16.0, the [trl] extra) around the tiny Qwen2 and
calls its `_compute_loss` (TRL's fused LM head for the log-probs, TRL's loss and metrics code); a second
copy of the same weights goes through `grpo_lib.logprobs.token_logprobs` + `grpo_lib.loss.grpo_loss`.
Values, gradients of every parameter and the logged clip/KL metrics must agree, for every loss_type x
beta (0, 0.04) x epsilon_high (None, 0.28). The advantage tests run TRL's scoring step
(`_generate_and_score_completions`, which really generates) with a reward function that returns known
rewards, and compare with `grpo_lib.advantages.group_advantages` for scale_rewards group / batch / none.

Where TRL differs on purpose, a test says so and asserts the difference:
- TRL 1.16 multiplies the KL term by the ratio ρ by default (`use_bias_correction_kl=True`, DeepSeek-V3.2);
  DeepSeekMath eq. 3 and grpo_lib do not. The agreement tests pass `use_bias_correction_kl=False`.
- TRL's defaults are loss_type="dapo" and beta=0; the paper's (and grpo_lib's) are "grpo" and 0.04.
- A group whose rewards are all equal gets A = (r - mean) / (0 + 1e-4) in TRL, which is float rounding
  noise times 1e4 (not always 0); grpo_lib gives exactly 0.
- bnpo under gradient accumulation: TRL averages the micro-batches' token means, grpo_lib's engine takes
  the token mean of the whole batch (the same without accumulation); both computed and compared.

Without TRL these tests skip with the reason; with GRPO_REQUIRE_TRL=1 (set by .ci/run) they fail instead.
About 20-40 s on 2 CPU cores. Run alone:  python -m pytest tests/test_golden_trl.py -q
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from grpo_lib.trl.compare import INSTALL_HINT, TRL_VERSION, trl_available

if not trl_available():
    if os.environ.get("GRPO_REQUIRE_TRL") == "1":
        pytest.fail(f"GRPO_REQUIRE_TRL=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip(INSTALL_HINT, allow_module_level=True)

import importlib.metadata  # noqa: E402

from grpo_lib.advantages import group_advantages  # noqa: E402
from grpo_lib.config import GRPOConfig  # noqa: E402
from grpo_lib.logprobs import token_logprobs  # noqa: E402
from grpo_lib.loss import kl_k3  # noqa: E402
from grpo_lib.models import load_policy  # noqa: E402
from grpo_lib.trl import compare as tc  # noqa: E402

TAU = 0.9             # a temperature != 1, so the temperature scaling of both log-prob paths is compared
T = 8                 # completion length of the batch
L_MAX = 10            # max_completion_length (dr_grpo divides by it, not by T)
EPS, EPS_HIGH = 0.2, 0.28


@pytest.fixture(scope="module")
def base():
    model, tok = load_policy("tiny", device="cpu", dtype="float32")
    return model, tok


@pytest.fixture(scope="module")
def batch(base):
    model, tok = base
    return tc.make_batch(model, tok, G=4, T=T, temperature=TAU)


def _pair(base, **trainer_kwargs):
    """(TRL trainer around one copy of the weights, an identical copy for grpo_lib)."""
    model, tok = base
    ours = copy.deepcopy(model)
    trainer = tc.make_trainer(copy.deepcopy(model), tok, temperature=TAU, max_completion_length=L_MAX,
                              epsilon=EPS, **trainer_kwargs)
    return trainer, ours


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(trl_model, our_model):
    g_trl, g_ours = _grads(trl_model), _grads(our_model)
    assert g_trl.keys() == g_ours.keys() and len(g_ours) > 0
    scale = max(g.abs().max().item() for g in g_ours.values())
    assert scale > 1e-3, "the test batch must give a real gradient"
    for name in g_ours:
        torch.testing.assert_close(g_trl[name], g_ours[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_trl_version_is_the_pinned_one():
    assert importlib.metadata.version("trl") == TRL_VERSION


def test_batch_exercises_padding_and_both_clip_sides(base, batch):
    """The batch is worth comparing on: left padding, varied lengths, and ρ outside the clip range both ways."""
    model, _ = base
    assert (batch.prompt_mask == 0).any(), "prompts of different lengths: left padding"
    lengths = batch.completion_mask.sum(1)
    assert lengths.min() < T and lengths.unique().numel() > 2, "completions of different lengths"
    with torch.no_grad():
        logp = token_logprobs(model, batch.input_ids, batch.attention_mask, T, temperature=TAU)
    rho, m = (logp - batch.logp_old).exp(), batch.completion_mask.bool()
    A = batch.advantages[:, None].expand_as(rho)
    assert ((rho < 1 - EPS) & (A < 0) & m).any(), "clipped from below"
    assert ((rho > 1 + EPS_HIGH) & (A > 0) & m).any(), "clipped from above even with epsilon_high"
    assert ((rho > 1 + EPS) & (rho <= 1 + EPS_HIGH) & (A > 0) & m).any(), "epsilon_high changes the loss"


@pytest.mark.parametrize("epsilon_high", [None, EPS_HIGH], ids=["eps_high=None", "eps_high=0.28"])
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["beta=0", "beta=0.04"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_and_gradients_match_trl(base, batch, loss_type, beta, epsilon_high):
    trainer, ours = _pair(base, loss_type=loss_type, beta=beta, epsilon_high=epsilon_high)
    loss_trl, metrics = tc.trl_loss(trainer, batch)
    loss_ours, stats = tc.our_loss(ours, batch, loss_type=loss_type, beta=beta, epsilon=EPS,
                                   epsilon_high=epsilon_high, temperature=TAU, max_completion_length=L_MAX)
    assert abs(loss_ours.item()) > 1e-3
    torch.testing.assert_close(loss_trl, loss_ours, rtol=1e-5, atol=1e-7)
    loss_trl.backward()
    loss_ours.backward()
    _assert_same_grads(trainer.model, ours)
    # the logged metrics under TRL's names
    assert metrics["clip_ratio/low_mean"] == pytest.approx(stats["clip_fraction_low"].item(), abs=1e-6)
    assert metrics["clip_ratio/high_mean"] == pytest.approx(stats["clip_fraction_high"].item(), abs=1e-6)
    assert metrics["clip_ratio/region_mean"] == pytest.approx(stats["clip_fraction"].item(), abs=1e-6)
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0
    if beta > 0:
        assert metrics["kl"] == pytest.approx(stats["kl"].item(), rel=1e-5)
    else:
        assert "kl" not in metrics          # TRL logs the KL only when beta != 0


def test_epsilon_high_changes_the_loss(base, batch):
    """Otherwise the epsilon_high half of the grid above would compare the same numbers twice."""
    model, _ = base
    a, _ = tc.our_loss(model, batch, loss_type="grpo", beta=0.0, temperature=TAU)
    b, _ = tc.our_loss(model, batch, loss_type="grpo", beta=0.0, epsilon_high=EPS_HIGH, temperature=TAU)
    assert abs(a.item() - b.item()) > 1e-4


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_on_policy_step_matches_trl(base, batch, loss_type):
    """μ = 1: no old log-probs; both use log π_θ detached (ρ = 1 in value, REINFORCE gradient)."""
    on_policy = tc.LossBatch(**{**batch.__dict__, "logp_old": None})
    trainer, ours = _pair(base, loss_type=loss_type, beta=0.04)
    loss_trl, metrics = tc.trl_loss(trainer, on_policy)
    loss_ours, stats = tc.our_loss(ours, on_policy, loss_type=loss_type, beta=0.04, temperature=TAU)
    torch.testing.assert_close(loss_trl, loss_ours, rtol=1e-5, atol=1e-7)
    loss_trl.backward()
    loss_ours.backward()
    _assert_same_grads(trainer.model, ours)
    assert metrics["clip_ratio/region_mean"] == 0 and stats["clip_fraction"].item() == 0


def test_trl_default_multiplies_the_kl_by_the_ratio(base, batch):
    """TRL 1.16 default use_bias_correction_kl=True: per-token loss gets β·ρ·k3, not β·k3 (DeepSeek-V3.2).

    So TRL's default loss = ours + β · (per-sequence mean, then mean) of (ρ - 1)·k3 for loss_type grpo.
    """
    beta = 0.04
    trainer, ours = _pair(base, loss_type="grpo", beta=beta, use_bias_correction_kl=True)
    assert trainer.args.use_bias_correction_kl is True
    loss_trl, _ = tc.trl_loss(trainer, batch)
    loss_ours, _ = tc.our_loss(ours, batch, loss_type="grpo", beta=beta, temperature=TAU)
    with torch.no_grad():
        logp = token_logprobs(ours, batch.input_ids, batch.attention_mask, T, temperature=TAU)
        m = batch.completion_mask.float()
        rho = (logp - batch.logp_old).exp()
        extra = ((rho - 1) * kl_k3(logp, batch.logp_ref) * m).sum(1) / m.sum(1)
        expected = loss_ours + beta * extra.mean()
    assert abs(loss_trl.item() - loss_ours.item()) > 1e-4, "the difference is real on this batch"
    torch.testing.assert_close(loss_trl.detach(), expected.detach(), rtol=1e-5, atol=1e-7)


# TRL 1.16's own default gradient_checkpointing=True is a name transformers 5 deprecated: TRL's, not ours
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_trl_defaults_differ_from_the_paper():
    """What a learner gets from TRL without setting anything, against DeepSeekMath / grpo_lib's defaults."""
    from trl import GRPOConfig as TRLConfig

    trl_cfg, ours = TRLConfig(output_dir="unused", use_cpu=True, report_to="none"), GRPOConfig()
    assert (trl_cfg.loss_type, ours.loss_type) == ("dapo", "grpo")            # token-level vs per-sequence mean
    assert (trl_cfg.beta, ours.beta) == (0.0, 0.04)                           # no KL by default in TRL
    assert trl_cfg.use_bias_correction_kl is True                             # KL term weighted by ρ
    assert trl_cfg.epsilon == ours.epsilon == 0.2
    assert trl_cfg.scale_rewards == ours.scale_rewards == "group"
    assert trl_cfg.num_iterations == ours.mu == 1                             # TRL's num_iterations is our μ


def test_logprobs_match_trl_fused_head(base, batch):
    """TRL's fused LM head (temperature-scaled, no (B, T, V) logits) vs grpo_lib.token_logprobs."""
    trainer, ours = _pair(base, loss_type="grpo", beta=0.0)
    with torch.no_grad():
        lp_trl, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, batch.input_ids,
                                                                  batch.attention_mask, T)
        lp_ours = token_logprobs(ours, batch.input_ids, batch.attention_mask, T, temperature=TAU)
    m = batch.completion_mask.bool()
    torch.testing.assert_close(lp_trl[m], lp_ours[m], rtol=1e-5, atol=1e-5)


# --- advantages: TRL's scoring step with known rewards --------------------------------------------
REWARDS = [1.0, 1.0, 1.0, 1.0,        # a flat group (exactly representable): A = 0 in both
           0.0, 2.0, 0.2, 2.2,
           0.0, 0.0, 0.0, 2.2]


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl(base, scale):
    model, tok = base
    trainer = tc.make_trainer(copy.deepcopy(model), tok, G=4, rewards=REWARDS, scale_rewards=scale,
                              max_completion_length=4)
    A_trl = tc.trl_advantages(trainer)
    A_ours = group_advantages(torch.tensor(REWARDS).view(-1, 4), scale=scale).reshape(-1)
    torch.testing.assert_close(A_trl, A_ours, rtol=1e-5, atol=1e-6)
    assert (A_ours[:4] == 0).all() and A_ours[4:].abs().min() > 0.1


def test_flat_group_is_exactly_zero_here_but_rounding_noise_in_trl(base):
    """Six rewards of 2.4: the float32 mean is off by one ulp, so TRL's (r - mean) / (std + 1e-4) is
    rounding noise times 1e4 (about 2e-3), not 0. grpo_lib zeroes a flat group exactly (it carries no signal)."""
    model, tok = base
    rewards = [2.4] * 6 + [0.0, 2.0, 0.2, 2.2, 0.0, 2.4]
    trainer = tc.make_trainer(copy.deepcopy(model), tok, G=6, rewards=rewards, max_completion_length=4)
    A_trl = tc.trl_advantages(trainer)
    A_ours = group_advantages(torch.tensor(rewards).view(-1, 6)).reshape(-1)
    assert (A_ours[:6] == 0).all()
    assert 0 < A_trl[:6].abs().max() < 1e-2
    torch.testing.assert_close(A_trl[6:], A_ours[6:], rtol=1e-5, atol=1e-6)


def test_agreement_summary_for_notebook_04():
    rows = tc.agreement(show=False)
    assert [r["loss_type"] for r in rows] == ["grpo", "bnpo", "dr_grpo", "dapo"]
    for r in rows:
        assert r["|Δ loss|"] < 1e-5 and r["max |Δ grad| / max |grad|"] < 1e-4 and abs(r["grpo_lib loss"]) > 1e-3


def _rows(batch: tc.LossBatch, rows: slice) -> tc.LossBatch:
    return tc.LossBatch(**{k: None if v is None else v[rows] for k, v in batch.__dict__.items()})


def test_bnpo_under_gradient_accumulation_differs_from_trl_as_documented(base, batch):
    """bnpo with 2 micro-batches (gradient accumulation 2): TRL divides each micro-batch's token sum by that
    micro-batch's own token count and averages the micro-batches; grpo_lib's engine weights each micro-batch
    by its share of the batch's tokens (`micro_batch_weight`), which gives the token mean of the whole batch,
    TRL's value without accumulation (test_loss_and_gradients_match_trl). Both are computed here, with TRL's
    own code for TRL's side, and they differ when the micro-batches hold different numbers of tokens."""
    from grpo_lib.loss import micro_batch_weight

    halves = [slice(0, 6), slice(6, 12)]
    micro = [_rows(batch, rows) for rows in halves]
    tokens = [int(m.completion_mask.sum()) for m in micro]
    assert batch.completion_mask.shape[0] == 12 and tokens[0] != tokens[1]
    # TRL: gradient accumulation over the two micro-batches (each loss divided by the 2 accumulation steps)
    trainer, ours = _pair(base, loss_type="bnpo", beta=0.04)
    trainer.current_gradient_accumulation_steps = 2
    trl_total = 0.0
    for m in micro:
        loss, _ = tc.trl_loss(trainer, m)
        loss.backward()
        trl_total += loss.item()
    # TRL's rule reproduced with grpo_lib's loss: the mean of the micro-batches' token means
    kw = dict(loss_type="bnpo", beta=0.04, epsilon=EPS, temperature=TAU, max_completion_length=L_MAX)
    trl_rule, per_micro = copy.deepcopy(ours), []
    for m in micro:
        loss, _ = tc.our_loss(trl_rule, m, **kw)
        (loss / 2).backward()
        per_micro.append(loss.item())
    assert trl_total == pytest.approx(sum(per_micro) / 2, rel=1e-5)
    _assert_same_grads(trainer.model, trl_rule)
    # the engine (grpo_lib.train.policy_update): weights tokens_k / tokens, summed = the whole batch's token mean
    engine = 0.0
    for m, n in zip(micro, tokens):
        loss, _ = tc.our_loss(ours, m, **kw)
        w = micro_batch_weight("bnpo", rows=6, tokens=n, batch_rows=12, batch_tokens=sum(tokens))
        (loss * w).backward()
        engine += loss.item() * w
    whole = tc.our_loss(copy.deepcopy(ours), batch, **kw)[0].item()
    assert engine == pytest.approx(whole, rel=1e-5)
    expected_gap = sum(l * (n / sum(tokens) - 0.5) for l, n in zip(per_micro, tokens))   # Σ_k L_k (n_k/n - 1/2)
    assert engine - trl_total == pytest.approx(expected_gap, rel=1e-4, abs=1e-7)
    assert abs(engine - trl_total) > 1e-4
    # and the gradients differ accordingly: TRL's equal weights vs the engine's token shares
    g_trl, g_ours = _grads(trainer.model), _grads(ours)
    assert max((g_trl[k] - g_ours[k]).abs().max().item() for k in g_ours) > 1e-4 * max(
        g.abs().max().item() for g in g_ours.values())

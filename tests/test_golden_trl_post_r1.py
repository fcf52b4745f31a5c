"""Golden tests of the post-R1 options against TRL 1.16's own code, in the style of tests/test_golden_trl.py.

The loss tests build a real `trl.GRPOTrainer` around the tiny Qwen2 and call its `_compute_loss` on the same
batch that `grpo_lib.loss.grpo_loss` gets (values, the gradient of every parameter, and TRL's logged metrics):
- GSPO: importance_sampling_level="sequence", loss_type "grpo", β 0 and 0.04, GSPO's tiny clip range.
- CISPO: loss_type "cispo" with ε_max = 5.0 (ScaleRL) and 1.1 (so the cap binds), β 0 and 0.04.
- ρ·k3: use_bias_correction_kl=True, token and sequence level, on- and off-policy.
- The sampler-trainer correction weights: TRL computes them inline in `_generate_and_score_completions` (under
  vLLM only), so the test runs those very lines, read from TRL's installed source, on the same tensors, for the
  four modes; then TRL's `_compute_loss` with the weights (use_vllm switched on) against grpo_loss(is_weights=).
- GDPO: TRL's scoring step with two reward functions and multi_objective_aggregation="normalize_then_sum".
- The soft overlong punishment: trl.rewards.get_soft_overlong_punishment on every length around the zone.

Where ours differs on purpose, a test asserts the difference: CISPO with ε_max < 1 (TRL accepts it and caps
every weight there, grpo_lib refuses it); GDPO's flat groups (exact 0 here, rounding noise times 1e4 in TRL).
The k1 and k2 estimators are not in TRL: tests/test_loss.py checks them by hand.
About 30-60 s on 2 CPU cores. Run alone:  python -m pytest tests/test_golden_trl_post_r1.py -q
"""

from __future__ import annotations

import copy
import inspect
import os
import textwrap
import types
from collections import defaultdict

import pytest
import torch

from grpo_lib.trl.compare import INSTALL_HINT, trl_available

if not trl_available():
    if os.environ.get("GRPO_REQUIRE_TRL") == "1":
        pytest.fail(f"GRPO_REQUIRE_TRL=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip(INSTALL_HINT, allow_module_level=True)

from grpo_lib.advantages import gdpo_advantages, group_advantages  # noqa: E402
from grpo_lib.loss import IS_MODES, grpo_loss, sampling_importance_weights  # noqa: E402
from grpo_lib.models import load_policy  # noqa: E402
from grpo_lib.rewards import soft_overlong_punishment  # noqa: E402
from grpo_lib.trl import compare as tc  # noqa: E402

TAU, T, L_MAX = 0.9, 8, 10
GSPO_EPS, GSPO_EPS_HIGH = 3e-4, 4e-4       # GSPO's paper values


@pytest.fixture(scope="module")
def base():
    return load_policy("tiny", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def batch(base):
    model, tok = base
    return tc.make_batch(model, tok, G=4, T=T, temperature=TAU)


def _pair(base, **trainer_kwargs):
    model, tok = base
    trainer = tc.make_trainer(copy.deepcopy(model), tok, temperature=TAU, max_completion_length=L_MAX,
                              **trainer_kwargs)
    return trainer, copy.deepcopy(model)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(trl_model, our_model, atol_rel=1e-5):
    g_trl, g_ours = _grads(trl_model), _grads(our_model)
    assert g_trl.keys() == g_ours.keys() and len(g_ours) > 0
    scale = max(g.abs().max().item() for g in g_ours.values())
    assert scale > 1e-3, "the test batch must give a real gradient"
    for name in g_ours:
        torch.testing.assert_close(g_trl[name], g_ours[name], rtol=1e-4, atol=atol_rel * scale, msg=name)


def _compare(trainer, ours, batch, *, extra_inputs=None, atol_rel=1e-5, **our_kwargs):
    loss_trl, metrics = tc.trl_loss(trainer, batch, extra_inputs)
    loss_ours, stats = tc.our_loss(ours, batch, temperature=TAU, max_completion_length=L_MAX, **our_kwargs)
    assert abs(loss_ours.item()) > 1e-4
    torch.testing.assert_close(loss_trl, loss_ours, rtol=1e-5, atol=1e-7)
    loss_trl.backward()
    loss_ours.backward()
    _assert_same_grads(trainer.model, ours, atol_rel)
    return metrics, stats


# --- GSPO ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["beta=0", "beta=0.04"])
def test_gspo_sequence_ratio_matches_trl(base, batch, beta):
    trainer, ours = _pair(base, loss_type="grpo", beta=beta, epsilon=GSPO_EPS, epsilon_high=GSPO_EPS_HIGH,
                          importance_sampling_level="sequence")
    metrics, stats = _compare(trainer, ours, batch, loss_type="grpo", beta=beta, epsilon=GSPO_EPS,
                              epsilon_high=GSPO_EPS_HIGH, importance_sampling_level="sequence")
    # TRL logs the clip fractions over completions at sequence level; both sides are clipped on this batch
    assert metrics["clip_ratio/low_mean"] == pytest.approx(stats["clip_fraction_low"].item(), abs=1e-6)
    assert metrics["clip_ratio/high_mean"] == pytest.approx(stats["clip_fraction_high"].item(), abs=1e-6)
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0
    if beta:
        assert metrics["kl"] == pytest.approx(stats["kl"].item(), rel=1e-5)


def test_gspo_differs_from_the_token_ratio(base, batch):
    """Otherwise the GSPO test would compare the token-level loss twice."""
    model, _ = base
    kw = dict(loss_type="grpo", beta=0.0, epsilon=GSPO_EPS, epsilon_high=GSPO_EPS_HIGH, temperature=TAU)
    a, _ = tc.our_loss(model, batch, **kw)
    b, _ = tc.our_loss(model, batch, importance_sampling_level="sequence", **kw)
    assert abs(a.item() - b.item()) > 1e-3


# --- CISPO -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps_max", [5.0, 1.1], ids=["eps_max=5", "eps_max=1.1"])
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["beta=0", "beta=0.04"])
def test_cispo_matches_trl(base, batch, beta, eps_max):
    trainer, ours = _pair(base, loss_type="cispo", beta=beta, epsilon_high=eps_max)
    # the CISPO loss holds log π_θ itself (about -5 per token here), so its gradients are ~30x the clipped
    # surrogate's and float32 summation-order noise reaches 3e-5 of the largest entry: atol 1e-4 of it
    metrics, stats = _compare(trainer, ours, batch, loss_type="cispo", beta=beta, epsilon_high=eps_max, atol_rel=1e-4)
    assert metrics["cispo_clip_ratio"] == pytest.approx(stats["clip_fraction_high"].item(), abs=1e-6)
    assert stats["clip_fraction_low"].item() == 0
    if eps_max == 1.1:
        assert metrics["cispo_clip_ratio"] > 0, "the cap binds on this batch"


def test_cispo_cap_below_one_runs_in_trl_and_is_refused_here(base, batch):
    """TRL's epsilon_high default is ε = 0.2: with loss_type="cispo" every weight is capped at 0.2. grpo_lib refuses
    a cap below 1 (it would shrink on-policy tokens, ρ = 1)."""
    trainer, ours = _pair(base, loss_type="cispo", beta=0.0, epsilon_high=None)
    assert trainer.epsilon_high == pytest.approx(0.2)
    loss_trl, metrics = tc.trl_loss(trainer, batch)
    assert torch.isfinite(loss_trl) and metrics["cispo_clip_ratio"] > 0.2
    with pytest.raises(ValueError, match="cispo.*epsilon_high"):
        tc.our_loss(ours, batch, loss_type="cispo", beta=0.0, epsilon_high=0.2, temperature=TAU)


# --- ρ·k3 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("on_policy", [False, True], ids=["off-policy", "on-policy"])
def test_bias_corrected_kl_matches_trl(base, batch, level, on_policy):
    b = tc.LossBatch(**{**batch.__dict__, "logp_old": None}) if on_policy else batch
    trainer, ours = _pair(base, loss_type="grpo", beta=0.04, use_bias_correction_kl=True,
                          importance_sampling_level=level)
    metrics, stats = _compare(trainer, ours, b, loss_type="grpo", beta=0.04, use_bias_correction_kl=True,
                              importance_sampling_level=level)
    assert metrics["kl"] == pytest.approx(stats["kl"].item(), rel=1e-5)


def test_bias_correction_changes_the_gradient_on_policy_not_the_value(base, batch):
    """μ = 1: ρ = 1 in value, so ρ·k3 = k3, but ∇(ρ·k3) = k3·∇log π_θ + ∇k3 differs from ∇k3."""
    model, _ = base
    b = tc.LossBatch(**{**batch.__dict__, "logp_old": None})
    runs = []
    for corrected in (False, True):
        m = copy.deepcopy(model)
        loss, _ = tc.our_loss(m, b, loss_type="grpo", beta=0.04, temperature=TAU, use_bias_correction_kl=corrected)
        loss.backward()
        runs.append((loss.item(), _grads(m)))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    assert max((runs[0][1][k] - runs[1][1][k]).abs().max().item() for k in runs[0][1]) > 1e-6


# --- sampler-trainer correction weights: TRL's inline code, read from its source -------------------
def _trl_is_blocks():
    """The two `if self.use_vllm and self.vllm_importance_sampling_correction:` blocks of TRL's
    `_generate_and_score_completions` (the weights, then the metrics), dedented, ready to exec."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    lines = inspect.getsource(GRPOTrainer._generate_and_score_completions).splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == "if self.use_vllm and self.vllm_importance_sampling_correction:":
            indent = len(line) - len(line.lstrip())
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
                j += 1
            blocks.append(textwrap.dedent("\n".join(lines[i + 1:j])))
    # TRL 1.16 has three: the weights, the metrics, and `output[...] = ...` (not needed here)
    assert len(blocks) == 3 and "vllm_importance_sampling_ratio = torch.exp" in blocks[0] \
        and "sampling/sampling_logp_difference/mean" in blocks[1], "TRL's source changed (the test reads TRL 1.16's)"
    return blocks[:2]


def _trl_is_weights(logp_train, logp_sampler, mask, mode, clip_min, clip_max, gather=None):
    import trl.trainer.grpo_trainer as gt

    weights_code, metrics_code = _trl_is_blocks()
    metrics = defaultdict(list)
    fake_self = types.SimpleNamespace(
        vllm_importance_sampling_mode=mode, vllm_importance_sampling_clip_min=clip_min,
        vllm_importance_sampling_clip_max=clip_max, _metrics={"train": metrics},
        accelerator=types.SimpleNamespace(gather=gather or (lambda x: x.reshape(-1))))
    scope = dict(vars(gt), self=fake_self, completion_mask=mask, tool_mask=None, mode="train",
                 old_per_token_logps=logp_train, sampling_per_token_logps=logp_sampler, device="cpu")
    exec(weights_code, scope)   # noqa: S102 (TRL's own lines, from the installed package)
    exec(metrics_code, scope)   # noqa: S102
    return scope["vllm_importance_sampling_ratio"], {k: v[-1] for k, v in metrics.items()}


@pytest.fixture(scope="module")
def mismatch(batch):
    """A sampler whose log-probs differ from the trainer's by N(0, 0.6²) per token (so every bound binds somewhere);
    padding holds -inf."""
    g = torch.Generator().manual_seed(7)
    logp_train = batch.logp_old.clone()
    logp_sampler = logp_train + 0.6 * torch.randn(logp_train.shape, generator=g)
    logp_sampler[batch.completion_mask == 0] = float("-inf")
    return logp_train, logp_sampler, batch.completion_mask


@pytest.mark.parametrize("clip_min, clip_max", [(None, 3.0), (0.5, 2.0), (0.8, None)],
                         ids=["max=3", "0.5..2", "min=0.8"])
@pytest.mark.parametrize("mode", IS_MODES)
def test_importance_sampling_weights_match_trl(mismatch, mode, clip_min, clip_max):
    logp_train, logp_sampler, mask = mismatch
    w_trl, m_trl = _trl_is_weights(logp_train, logp_sampler, mask, mode, clip_min, clip_max)
    w_ours, m_ours = sampling_importance_weights(logp_train, logp_sampler, mask, mode=mode, clip_min=clip_min,
                                                 clip_max=clip_max)
    assert w_ours.shape == w_trl.shape
    keep = mask.bool() if w_ours.shape[1] > 1 else torch.ones_like(w_ours, dtype=torch.bool)
    torch.testing.assert_close(w_ours[keep], w_trl[keep].float(), rtol=1e-5, atol=1e-6)
    assert set(m_ours) == set(m_trl)            # TRL's metric names
    for k in m_trl:
        assert m_ours[k] == pytest.approx(m_trl[k], rel=1e-5, abs=1e-6), k
    assert m_ours["sampling/sampling_logp_difference/mean"] > 0.1
    lo, hi = clip_min or 0.0, clip_max or float("inf")
    if mode.endswith("_mask"):     # the bounds act on this batch: some weights masked, the rest untouched
        assert (w_ours[keep] == 0).any() and ((w_ours[keep] >= lo) & (w_ours[keep] <= hi) | (w_ours[keep] == 0)).all()
    else:
        assert ((w_ours[keep] == lo) | (w_ours[keep] == hi)).any()


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_metrics_of_two_ranks_combine_as_trl_gathers_them(mismatch, mode, monkeypatch):
    """grpo_lib.sampler combines each rank's metrics as TRL's `accelerator.gather` lines do (mean of means, max of
    maxima, nanmin of minima): TRL's own metric block, run for rank 0 with a gather that adds rank 1's values."""
    from grpo_lib import sampler as sampler_module

    logp_train, logp_sampler, mask = mismatch
    half = mask.shape[0] // 2
    ranks = [slice(0, half), slice(half, None)]
    ours = [sampling_importance_weights(logp_train[r], logp_sampler[r], mask[r], mode=mode, clip_min=0.5,
                                        clip_max=2.0)[1] for r in ranks]
    monkeypatch.setattr(sampler_module.dist, "all_gather_objects", lambda obj: ours)
    combined = sampler_module._combine_over_ranks(ours[0])
    sent = []                                            # rank 1's tensors, in the order TRL gathers them
    _trl_is_weights(logp_train[ranks[1]], logp_sampler[ranks[1]], mask[ranks[1]], mode, 0.5, 2.0,
                    gather=lambda x: (sent.append(x.reshape(())), x.reshape(-1))[1])
    assert len(sent) == 5
    _, trl_metrics = _trl_is_weights(logp_train[ranks[0]], logp_sampler[ranks[0]], mask[ranks[0]], mode, 0.5, 2.0,
                                     gather=lambda x: torch.stack([x.reshape(()), sent.pop(0)]))
    assert set(combined) == set(trl_metrics)
    for k in trl_metrics:
        assert combined[k] == pytest.approx(trl_metrics[k], rel=1e-6, abs=1e-7), k
    assert combined["sampling/sampling_logp_difference/max"] == max(m["sampling/sampling_logp_difference/max"] for m in ours)


@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_loss_with_correction_weights_matches_trl(base, batch, mismatch, mode):
    logp_train, logp_sampler, mask = mismatch
    w, _ = sampling_importance_weights(logp_train, logp_sampler, mask, mode=mode, clip_min=0.5, clip_max=2.0)
    trainer, ours = _pair(base, loss_type="dapo", beta=0.04)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True   # _compute_loss multiplies by w
    _compare(trainer, ours, batch, extra_inputs={"importance_sampling_ratio": w}, loss_type="dapo", beta=0.04,
             is_weights=w)


# TRL 1.16's own default gradient_checkpointing=True is a name transformers 5 deprecated: TRL's, not ours
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_truncate_without_bounds_is_refused_as_trl_refuses_it():
    from trl import GRPOConfig as TRLConfig

    with pytest.raises(ValueError, match="must be set"):
        TRLConfig(output_dir="unused", use_cpu=True, report_to="none", vllm_importance_sampling_mode="token_truncate",
                  vllm_importance_sampling_clip_min=None, vllm_importance_sampling_clip_max=None)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must be set"):
        sampling_importance_weights(x, x, torch.ones(2, 3), mode="token_truncate", clip_min=None, clip_max=None)


# --- GDPO ------------------------------------------------------------------------------------------
CORRECT = [2.0, 0.0, 0.0, 2.0,      # two rewards traded off: same totals, different per-function rewards
           0.0, 2.0, 0.0, 0.0,
           1.0, 1.0, 1.0, 1.0]      # flat in correctness
FORMAT = [0.2, 0.8, 0.4, 0.0,
          0.0, 0.0, 0.6, 0.8,
          0.4, 0.4, 0.4, 0.4]       # and flat in format: a group flat in every function


def test_gdpo_advantages_match_trl(base):
    model, tok = base
    trainer = tc.make_trainer(copy.deepcopy(model), tok, G=4, rewards_per_func=[CORRECT, FORMAT],
                              multi_objective_aggregation="normalize_then_sum", max_completion_length=4)
    A_trl = tc.trl_advantages(trainer)
    A_ours = gdpo_advantages(torch.tensor([CORRECT, FORMAT]).view(2, 3, 4)).reshape(-1)
    torch.testing.assert_close(A_trl[:8], A_ours[:8], rtol=1e-5, atol=1e-5)
    # the flat group: exactly 0 here; TRL: 0 up to rounding of its batch mean (not asserted to be nonzero)
    assert (A_ours[8:] == 0).all() and A_trl[8:].abs().max() < 1e-4
    # and GDPO is not GRPO on the summed reward
    A_sum = group_advantages((torch.tensor(CORRECT) + torch.tensor(FORMAT)).view(3, 4)).reshape(-1)
    assert (A_sum[:8] - A_ours[:8]).abs().max() > 0.1


# --- DAPO's soft overlong punishment ---------------------------------------------------------------
@pytest.mark.parametrize("L_max, L_cache", [(100, 20), (10, 10), (40, 1)])
def test_soft_overlong_punishment_matches_trl(L_max, L_cache):
    from trl.rewards import get_soft_overlong_punishment

    ids = [[1] * n for n in range(0, L_max + 4)]
    theirs = get_soft_overlong_punishment(L_max, L_cache)(completion_ids=ids)
    ours = soft_overlong_punishment(L_max, L_cache)(completion_ids=ids)
    assert ours == pytest.approx(theirs, abs=0)
    assert min(ours) == -1.0 and max(ours) == 0.0


# TRL 1.16's own default gradient_checkpointing=True is a name transformers 5 deprecated: TRL's, not ours
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_post_r1_defaults_against_trls():
    """Ours are off (the run of before); TRL 1.16 turns the bias-corrected KL and the vLLM correction on."""
    from trl import GRPOConfig as TRLConfig

    from grpo_lib.config import GRPOConfig

    trl_cfg, ours = TRLConfig(output_dir="unused", use_cpu=True, report_to="none"), GRPOConfig()
    assert trl_cfg.importance_sampling_level == ours.importance_sampling_level == "token"
    assert trl_cfg.multi_objective_aggregation == ours.multi_objective_aggregation == "sum_then_normalize"
    assert (trl_cfg.use_bias_correction_kl, ours.use_bias_correction_kl) == (True, False)
    assert (trl_cfg.vllm_importance_sampling_correction, ours.vllm_importance_sampling_correction) == (True, False)
    assert trl_cfg.vllm_importance_sampling_mode == ours.vllm_importance_sampling_mode == "sequence_mask"
    assert (trl_cfg.vllm_importance_sampling_clip_min, trl_cfg.vllm_importance_sampling_clip_max) == \
        (ours.vllm_importance_sampling_clip_min, ours.vllm_importance_sampling_clip_max) == (None, 3.0)

"""Figure builders of notebook 04 (grpo_lib.plots): the drawn data equals the math, written out here.

Every expected curve is computed in this file from the formula (numpy, not grpo_lib.loss), so a plot
that drew the wrong function, or a library function that drifted, fails here.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grpo_lib import plots  # noqa: E402


def by_gid(ax, gid):
    """The one artist (line or patch) of `ax` with this gid."""
    found = [a for a in [*ax.lines, *ax.patches] if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist with gid {gid!r}, found {len(found)}"
    return found[0]


def span(patch):
    """x-extent (left, right) of an axvspan rectangle."""
    return patch.get_x(), patch.get_x() + patch.get_width()


def surrogate(rho, A, epsilon):
    return np.minimum(rho * A, np.clip(rho, 1 - epsilon, 1 + epsilon) * A)


def k3_at_ratio(rho):
    """k3 = e^d - d - 1 with d = -log ρ (π_ref = π_old): 1/ρ + log ρ - 1."""
    return 1 / rho + np.log(rho) - 1


# --- clipped_surrogate_vs_ratio -------------------------------------------------------------------------

@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.2, 0.35])
def test_surrogate_curves_equal_the_formula(epsilon):
    fig = plots.clipped_surrogate_vs_ratio(epsilon)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, A in zip(fig.axes, (1.0, -1.0)):
        rho, y = by_gid(ax, "surrogate").get_data()
        assert rho.min() > 0 and rho.max() == pytest.approx(2.0)
        np.testing.assert_allclose(y, surrogate(rho, A, epsilon), atol=1e-12)
        np.testing.assert_allclose(by_gid(ax, "unclipped").get_ydata(), rho * A, atol=1e-12)
        np.testing.assert_allclose(by_gid(ax, "clipped").get_ydata(),
                                   np.clip(rho, 1 - epsilon, 1 + epsilon) * A, atol=1e-12)


@pytest.mark.parametrize("epsilon", [0.1, 0.3])
def test_clip_band_and_flat_region_sit_at_one_plus_minus_epsilon(epsilon):
    fig = plots.clipped_surrogate_vs_ratio(epsilon)
    ax_pos, ax_neg = fig.axes
    for ax in fig.axes:
        assert span(by_gid(ax, "clip_band")) == pytest.approx((1 - epsilon, 1 + epsilon))
    assert span(by_gid(ax_pos, "flat_region")) == pytest.approx((1 + epsilon, 2.0))   # A > 0: flat beyond 1+ε
    assert span(by_gid(ax_neg, "flat_region")) == pytest.approx((0.0, 1 - epsilon))   # A < 0: flat below 1-ε
    # and the curve really is flat there, and not flat elsewhere
    rho, y = by_gid(ax_pos, "surrogate").get_data()
    assert np.ptp(y[rho > 1 + epsilon]) == 0 and np.ptp(y[rho < 1 + epsilon]) > 0.5
    rho, y = by_gid(ax_neg, "surrogate").get_data()
    assert np.ptp(y[rho < 1 - epsilon]) == 0 and np.ptp(y[rho > 1 - epsilon]) > 0.5


def test_surrogate_axes_are_fixed():
    limits = {(ax.get_xlim(), ax.get_ylim()) for eps in (0.05, 0.45)
              for ax in plots.clipped_surrogate_vs_ratio(eps).axes}
    assert limits == {((0.0, 2.0), (-2.1, 2.1))}


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_surrogate_refuses_bad_epsilon(bad):
    with pytest.raises(ValueError, match="epsilon"):
        plots.clipped_surrogate_vs_ratio(bad)


# --- per_token_objective_vs_ratio -----------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5, 2.0])
def test_objective_is_surrogate_minus_beta_k3(beta):
    fig = plots.per_token_objective_vs_ratio(beta=beta, epsilon=0.2)
    for ax, A in zip(fig.axes, (1.0, -1.0)):
        rho, y = by_gid(ax, "objective").get_data()
        np.testing.assert_allclose(by_gid(ax, "kl_penalty").get_ydata(), -beta * k3_at_ratio(rho), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(by_gid(ax, "surrogate").get_ydata(), surrogate(rho, A, 0.2), atol=1e-12)
        np.testing.assert_allclose(y, surrogate(rho, A, 0.2) - beta * k3_at_ratio(rho), rtol=1e-9, atol=1e-12)


def test_objective_maximum_sits_where_the_derivative_vanishes():
    # β = 0: flat maximum; the marked point is the clip edge nearest ρ = 1
    ax_pos, ax_neg = plots.per_token_objective_vs_ratio(beta=0.0, epsilon=0.2).axes
    assert by_gid(ax_pos, "argmax").get_xdata()[0] == pytest.approx(1.2, abs=3e-3)
    assert by_gid(ax_neg, "argmax").get_xdata()[0] == pytest.approx(0.8, abs=3e-3)
    # β = 10: the maximum is inside the clip range, where the slope A - β(ρ-1)/ρ² vanishes:
    # A = +1: 0.1ρ² - ρ + 1 = 0 -> ρ = (1 - sqrt(0.6)) / 0.2 = 1.127
    # A = -1: 0.1ρ² + ρ - 1 = 0 -> ρ = (sqrt(1.4) - 1) / 0.2 = 0.916
    ax_pos, ax_neg = plots.per_token_objective_vs_ratio(beta=10.0, epsilon=0.2).axes
    assert by_gid(ax_pos, "argmax").get_xdata()[0] == pytest.approx((1 - 0.6**0.5) / 0.2, abs=3e-3)
    assert by_gid(ax_neg, "argmax").get_xdata()[0] == pytest.approx((1.4**0.5 - 1) / 0.2, abs=3e-3)


def test_objective_refuses_negative_beta():
    with pytest.raises(ValueError, match="beta"):
        plots.per_token_objective_vs_ratio(beta=-0.1)


# --- kl_estimators ---------------------------------------------------------------------------------------

def test_kl_estimators_draws_running_means_and_the_exact_value():
    k1 = np.array([0.5, -1.0, 2.0, 0.25])
    k3 = np.expm1(-k1) + k1                                   # e^d - d - 1 with d = -k1
    fig = plots.kl_estimators(k1, k3, exact_kl=0.3)
    ax_d, ax_n = fig.axes
    np.testing.assert_allclose(by_gid(ax_n, "k1_mean").get_ydata(), [0.5, -0.25, 0.5, 0.4375])
    np.testing.assert_allclose(by_gid(ax_n, "k3_mean").get_ydata(), np.cumsum(k3) / np.arange(1, 5))
    assert list(by_gid(ax_n, "exact_kl").get_ydata()) == [0.3, 0.3]
    np.testing.assert_allclose(by_gid(ax_d, "k1_samples").get_xdata(), -k1)   # x is d = -k1
    np.testing.assert_allclose(by_gid(ax_d, "k3_samples").get_ydata(), k3)


def test_kl_estimators_refuses_mismatched_samples():
    with pytest.raises(ValueError, match="same length"):
        plots.kl_estimators([0.1, 0.2], [0.1], exact_kl=0.1)


# --- loss_type_token_weights -----------------------------------------------------------------------------

def test_loss_type_bars_show_the_given_pushes():
    lengths, A = [40, 120, 60], [0.0, -1.0, 1.0]
    push = {"grpo": [a / (3 * n) for a, n in zip(A, lengths)], "dapo": [a / 220 for a in A]}
    losses = {"grpo": 0.0, "dapo": 60 / 220}
    fig = plots.loss_type_token_weights(push, lengths, A, losses)
    ax_tok, ax_seq, ax_loss = fig.axes
    for k, name in enumerate(push):
        heights = [bar.get_height() for bar in ax_tok.containers[k]]
        np.testing.assert_allclose(heights, 1e3 * np.array(push[name]))
        heights = [bar.get_height() for bar in ax_seq.containers[k]]
        np.testing.assert_allclose(heights, np.array(push[name]) * lengths)
        assert ax_tok.containers[k].get_label() == name
    # grpo equalises whole completions (±1/3); dapo equalises tokens
    np.testing.assert_allclose([b.get_height() for b in ax_seq.containers[0]], [0, -1 / 3, 1 / 3])
    np.testing.assert_allclose([b.get_height() for b in ax_loss.containers[0]], [0.0, 60 / 220])


def test_loss_type_panel_count_and_errors():
    assert len(plots.loss_type_token_weights({"grpo": [0.1, -0.1]}, [3, 5], [1, -1]).axes) == 2
    with pytest.raises(ValueError, match="G = 2"):
        plots.loss_type_token_weights({"grpo": [0.1]}, [3, 5], [1, -1])
    with pytest.raises(ValueError, match="empty"):
        plots.loss_type_token_weights({}, [3, 5], [1, -1])
    with pytest.raises(ValueError, match="A has"):
        plots.loss_type_token_weights({"grpo": [0.1, -0.1]}, [3, 5], [1])

"""grpo_lib.course.plots: every figure builder draws exactly the data it is given (or the math, written out
here), on fixed axes; sections in notebook order.

Notebook 04's expected curves are computed in this file from the formula (numpy, not grpo_lib.loss), so a plot
that drew the wrong function, or a library function that drifted, fails here.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from grpo_lib.course import plots  # noqa: E402
from grpo_lib.course.plots import (  # noqa: E402
    accuracy_with_ci,
    advantage_by_correct_count,
    memory_stacks,
    question_weights,
    reward_strips,
    token_advantage_maps,
    toy_probabilities,
    toy_training_panels,
    zero_std_curves,
)


# --- notebook 01: the toy policy's training curves ------------------------------------------------------


ANSWERS = ("5", "6", "2 + 3 = 5")


def _history(S=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(S + 1, 3, generator=g), dim=-1)     # (S + 1, K), rows sum to 1
    return {"answers": ANSWERS, "rewards": (1.0, 0.0, 2.0), "probs": probs}


def _answer_lines(ax):
    """The lines that carry data (labelled), in drawing order; reference lines have '_' labels."""
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_toy_probabilities_lines_equal_the_history():
    h = _history(S=6)
    fig = toy_probabilities(h, title="fixed group")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = _answer_lines(ax)
    assert [line.get_label() for line in lines] == ['"5"  (r = 1)', '"6"  (r = 0)', '"2 + 3 = 5"  (r = 2)']
    for k, line in enumerate(lines):
        np.testing.assert_array_equal(line.get_xdata(), np.arange(7))
        np.testing.assert_array_equal(line.get_ydata(), h["probs"][:, k].numpy())
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_xlim() == (0.0, 6.0)
    assert ax.get_title() == "fixed group"


def test_toy_probabilities_axes_do_not_follow_the_data():
    low = {"probs": np.full((4, 3), 1 / 3)}
    fig = toy_probabilities(low)
    (ax,) = fig.axes
    assert ax.get_ylim() == (0.0, 1.0)                      # fixed, although the data spans only 1/3
    assert [line.get_label() for line in _answer_lines(ax)] == ['"answer 0"', '"answer 1"', '"answer 2"']


def test_toy_probabilities_accepts_lists_and_a_single_row():
    fig = toy_probabilities({"answers": ANSWERS, "probs": [[0.2, 0.3, 0.5]]})
    (ax,) = fig.axes
    assert [list(line.get_ydata()) for line in _answer_lines(ax)] == [[0.2], [0.3], [0.5]]
    assert ax.get_xlim() == (0.0, 1.0)


def test_toy_training_panels_one_axes_per_history_in_order():
    hs = {"fixed group": _history(S=3, seed=1), "sampled groups": _history(S=8, seed=2)}
    fig = toy_training_panels(hs)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    for ax, (title, h) in zip(fig.axes, hs.items()):
        assert ax.get_title() == title
        for k, line in enumerate(_answer_lines(ax)):
            np.testing.assert_array_equal(line.get_ydata(), h["probs"][:, k].numpy())
        assert ax.get_ylim() == (0.0, 1.0)


def test_figures_are_not_registered_with_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    toy_probabilities(_history())
    toy_training_panels({"a": _history()})
    assert plt.get_fignums() == before


def test_builders_refuse_bad_histories_clearly():
    with pytest.raises(KeyError, match="probs"):
        toy_probabilities({"answers": ANSWERS})
    with pytest.raises(ValueError, match="shape"):
        toy_probabilities({"probs": [0.2, 0.3, 0.5]})
    with pytest.raises(ValueError, match="labels"):
        toy_probabilities({"answers": ("5", "6"), "probs": np.full((2, 3), 1 / 3)})
    with pytest.raises(ValueError, match="empty"):
        toy_training_panels({})


# --- notebooks 02 and 03: advantages, memory, rewards, accuracy -----------------------------------------


def _labelled_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_advantage_by_correct_count_draws_the_two_series():
    k = np.arange(5)
    right = np.array([np.nan, 1.5, 0.8660, 0.5, 0.0])
    wrong = np.array([0.0, -0.5, -0.8660, -1.5, np.nan])
    fig = advantage_by_correct_count(k, right, wrong, G=4)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = _labelled_lines(ax)
    assert [line.get_label() for line in lines] == ["right answer (r = 1)", "wrong answer (r = 0)"]
    np.testing.assert_array_equal(lines[0].get_ydata(), right)          # NaN where there is no right answer
    np.testing.assert_array_equal(lines[1].get_ydata(), wrong)
    np.testing.assert_array_equal(lines[0].get_xdata(), k)
    assert ax.get_ylim() == (-3.0, 3.0) and ax.get_xlim() == (-0.5, 4.5)


def test_zero_std_curves_lines_and_simulated_dots():
    p = np.linspace(0, 1, 11)
    fractions = {2: (1 - p) ** 2 + p**2, 8: (1 - p) ** 8 + p**8}
    sim_p, sim_f = np.array([0.1, 0.5]), np.array([0.44, 0.01])
    fig = zero_std_curves(p, fractions, simulated={8: (sim_p, sim_f)})
    (ax,) = fig.axes
    lines = _labelled_lines(ax)
    assert [line.get_label() for line in lines] == ["G = 2", "G = 8"]
    np.testing.assert_allclose(lines[1].get_ydata(), fractions[8])
    dots = [line for line in ax.get_lines() if line.get_label() == "_simulated"]
    assert len(dots) == 1
    np.testing.assert_array_equal(dots[0].get_ydata(), sim_f)
    assert dots[0].get_color() == lines[1].get_color()                 # the dots share their curve's colour
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)


def test_question_weights_one_line_per_scale_fixed_axes():
    k = np.arange(9)
    weights = {"group": np.r_[0, np.ones(7), 0], "none": np.sqrt(k * (8 - k) / 16)}
    fig = question_weights(k, weights, G=8, ymax=1.5)
    (ax,) = fig.axes
    lines = _labelled_lines(ax)
    assert [line.get_label() for line in lines] == ['scale="group"', 'scale="none"']
    np.testing.assert_allclose(lines[1].get_ydata(), weights["none"])
    assert lines[0].get_linestyle() != lines[1].get_linestyle()        # coinciding curves stay visible
    assert ax.get_ylim() == (0.0, 1.5) and ax.get_xlim() == (-0.5, 8.5)


def test_memory_stacks_segments_stack_in_order_and_skip_zeros():
    stacks = {"GRPO": {"policy": 20.0, "reference": 3.0, "value": 0.0},
              "PPO": {"policy": 20.0, "reference": 3.0, "value": 21.0}}
    fig = memory_stacks(stacks, capacity_gib=74.5, capacity_label="one GPU", ymax=90)
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(b.get_x() + b.get_width() / 2, b.get_y(), b.get_height()) for b in bars] == [
        (0.0, 0.0, 20.0), (0.0, 20.0, 3.0), (1.0, 0.0, 20.0), (1.0, 20.0, 3.0), (1.0, 23.0, 21.0)]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["policy", "reference", "value"]                   # each model in the legend once
    texts = [t.get_text() for t in ax.texts]
    assert "23.0 GiB" in texts and "44.0 GiB" in texts and "one GPU" in texts
    assert ax.get_ylim() == (0.0, 90.0)
    assert any(np.allclose(line.get_ydata(), 74.5) for line in ax.get_lines())   # the capacity line


def test_token_advantage_maps_mask_padding_and_fix_the_colour_scale():
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    outcome = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])
    process = np.array([[2.0, 1.0, 0.5], [-0.5, -1.0, 9.0]])
    fig = token_advantage_maps(outcome, process, mask, step_ends=[[0, 2], [1]], vmax=2.0)
    ax_out, ax_proc = fig.axes[:2]
    img = ax_proc.get_images()[0]
    data = np.ma.filled(np.ma.masked_invalid(img.get_array()), np.nan)
    np.testing.assert_array_equal(data, np.array([[2.0, 1.0, 0.5], [-0.5, -1.0, np.nan]]))   # padding left blank
    assert img.get_clim() == (-2.0, 2.0) and ax_out.get_images()[0].get_clim() == (-2.0, 2.0)
    assert [t.get_text() for t in ax_proc.texts] == ["+2.00", "+0.50", "-1.00"]            # one value per step
    with pytest.raises(ValueError, match="do not match the mask"):
        token_advantage_maps(outcome[:, :2], process, mask)


def test_reward_strips_one_collection_per_group():
    r = np.array([[2.8, 0.8, 0.0], [0.0, 0.0, 0.8]])
    a = np.array([[1.1, -0.2, -0.9], [-0.6, -0.6, 1.2]])
    fig = reward_strips(r, a, labels=["q1", "q2"])
    ax_r, ax_a = fig.axes
    for ax, values in ((ax_r, r), (ax_a, a)):
        groups = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(groups) == 2
        for i, coll in enumerate(groups):
            offsets = coll.get_offsets()
            np.testing.assert_allclose(offsets[:, 1], values[i])
            assert np.all(np.abs(offsets[:, 0] - i) <= 0.3 + 1e-9)     # group i sits around x = i
        means = [line.get_ydata()[0] for line in ax.get_lines()]
        np.testing.assert_allclose(means, values.mean(axis=1))
    assert ax_r.get_ylim() == (-0.2, 3.0) and ax_a.get_ylim() == (-3.5, 3.5)
    assert [t.get_text() for t in ax_a.get_xticklabels()] == ["q1", "q2"]
    assert len(reward_strips(r).axes) == 1
    with pytest.raises(ValueError, match="shape"):
        reward_strips(r, a[:, :2])
    with pytest.raises(ValueError, match=r"\(N, G\)"):
        reward_strips(np.zeros(3))


def test_accuracy_with_ci_bar_heights_and_error_bars():
    fig = accuracy_with_ci(["a", "b"], [7, 27], [30, 30], [0.118, 0.744], [0.409, 0.965])
    (ax,) = fig.axes
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, [7 / 30, 0.9])
    (segments,) = [c for c in ax.collections if hasattr(c, "get_segments")]
    ends = [(seg[0][1], seg[1][1]) for seg in segments.get_segments()]
    np.testing.assert_allclose(ends, [(0.118, 0.409), (0.744, 0.965)])
    assert ax.get_ylim() == (0.0, 1.0)
    assert {"7/30", "27/30"} <= {t.get_text() for t in ax.texts}


# --- notebook 04: the loss (the clipped surrogate, the objective with β·k3, KL estimators, loss types) ---


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


# --- notebook 01's baseline figure, notebook 02's accuracy spread -----------------------------------------------
def test_variance_vs_baseline_draws_the_curve_and_the_points_on_fixed_axes():
    b = np.linspace(-1, 3, 5)
    v = (b - 0.9) ** 2 / 10 + 0.07
    fig = plots.variance_vs_baseline(b, v, {"b = 0": (0.0, 0.2), "b = J": (0.9, 0.08)}, J=0.9)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert np.allclose(lines[0].get_xdata(), b) and np.allclose(lines[0].get_ydata(), v)
    assert [tuple(np.ravel(line.get_xydata())) for line in lines[1:3]] == [(0.0, 0.2), (0.9, 0.08)]
    assert ax.get_xlim() == (-1.0, 3.0) and ax.get_ylim() == (0.0, 0.5)


def test_accuracy_spread_counts_every_question():
    p = [0.0, 0.05, 0.5, 0.55, 0.95, 1.0]
    fig = plots.accuracy_spread(p, 0.5)
    ax = fig.axes[0]
    heights = [patch.get_height() for patch in ax.patches]
    assert sum(heights) == len(p) and ax.get_xlim() == (0.0, 1.0)


# --- notebook 05: pass@k and maj@k before and after ------------------------------------------------------------


def _pass_maj(offset):
    k = [1, 2, 4, 8, 16]
    p = [0.4 + offset, 0.6 + offset, 0.75 + offset, 0.85, 0.9]
    m = [0.4 + offset, 0.45 + offset, 0.5 + offset, 0.55, 0.6]
    band = lambda v: ([x - 0.05 for x in v], [x + 0.05 for x in v])   # noqa: E731
    return {"k": k, "pass": p, "maj": m, "pass_ci": band(p), "maj_ci": band(m)}


def test_pass_maj_curves_plot_draws_the_given_curves_and_bands():
    curves = {"before": _pass_maj(0.0), "after": _pass_maj(0.05)}
    fig = plots.pass_maj_curves_plot(curves)
    (ax,) = fig.axes
    for label, c in curves.items():
        for metric, name in (("pass", "pass@k"), ("maj", "maj@k")):
            (line,) = [ln for ln in ax.lines if ln.get_gid() == f"{label} {name}"]
            np.testing.assert_allclose(line.get_xdata(), c["k"])
            np.testing.assert_allclose(line.get_ydata(), c[metric])
            (band,) = [col for col in ax.collections if col.get_gid() == f"{label} {name} band"]
            ys = band.get_paths()[0].vertices[:, 1]
            low, high = c[f"{metric}_ci"]
            assert ys.min() == pytest.approx(min(low)) and ys.max() == pytest.approx(max(high))
        colours = {ln.get_color() for ln in ax.lines if ln.get_gid().startswith(label)}
        assert len(colours) == 1                                    # one colour per model
    styles = {ln.get_gid().split(" ", 1)[1]: ln.get_linestyle() for ln in ax.lines}
    assert styles == {"pass@k": "-", "maj@k": "--"}
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_xlim() == (1.0, 16.0) and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]


def test_pass_maj_curves_plot_bad_input():
    with pytest.raises(ValueError, match="at least one model"):
        plots.pass_maj_curves_plot({})
    broken = _pass_maj(0.0)
    del broken["maj_ci"]
    with pytest.raises(KeyError, match="lacks \\['maj_ci'\\]"):
        plots.pass_maj_curves_plot({"before": broken})
    short = _pass_maj(0.0)
    short["pass"] = short["pass"][:3]
    with pytest.raises(ValueError, match="one value per k"):
        plots.pass_maj_curves_plot({"before": short})


# --- notebook 05: the run dashboard ----------------------------------------------------------------------------


def test_smooth_is_the_trailing_mean_computed_by_hand():
    np.testing.assert_allclose(plots.smooth([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(plots.smooth([2, 4, 9, 1, 5], 3), [2, 3, 5, 14 / 3, 5])
    np.testing.assert_allclose(plots.smooth([1, float("nan"), 3, None], 2), [1, 1, 3, 3])   # gaps skipped
    assert np.isnan(plots.smooth([None, 1.0], 1)[0])                                        # nothing to average
    np.testing.assert_array_equal(plots.smooth([3, 1, 4], 1), [3, 1, 4])                    # window 1 = raw
    with pytest.raises(ValueError, match="window"):
        plots.smooth([1, 2], 0)


def _run(n=8, **scale):
    """n metric records with distinct made-up values per metric (every dashboard metric present)."""
    recs = []
    for t in range(1, n + 1):
        rec = {"step": t, "reward": 0.1 * t, "rewards/correctness/mean": 0.07 * t, "rewards/format/mean": 0.03 * t,
               "accuracy": 0.05 * t, "loss": 0.001 * t, "kl": 0.002 * t, "grad_norm": 1.0 / t,
               "clip_ratio/region_mean": 0.01 * t, "clip_ratio/low_mean": 0.004 * t, "clip_ratio/high_mean": 0.006 * t,
               "entropy": 1.0 - 0.05 * t, "completions/mean_length": 20.0 + t, "frac_reward_zero_std": 0.1 * (t % 3)}
        recs.append({k: (v * scale.get("by", 1.0) if k != "step" else v) for k, v in rec.items()})
    return recs


def _lines(fig):
    return {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}


def test_run_dashboard_draws_every_panel_with_the_run_s_values():
    recs = _run()
    fig = plots.run_dashboard(recs, window=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [p.title for p in plots.DASHBOARD_PANELS]
    lines = _lines(fig)
    metrics = [k for k in recs[0] if k != "step"]
    assert sorted({gid.split("|")[1] for gid in lines}) == sorted(metrics)      # every metric, each once
    for key in metrics:
        raw, smooth = lines[f"run|{key}|raw"], lines[f"run|{key}|smooth"]
        np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 9))
        np.testing.assert_array_equal(raw.get_ydata(), [r[key] for r in recs])
        np.testing.assert_allclose(smooth.get_ydata(), plots.smooth([r[key] for r in recs], 3))
        assert raw.get_alpha() < 0.5 and smooth.get_alpha() is None            # raw faint, smoothed solid
    # the per-function rewards sit in the reward panel, the clip parts in the clip panel
    reward_ax = visible[0]
    assert {l.get_gid() for l in reward_ax.get_lines()} >= {"run|rewards/correctness/mean|smooth", "run|rewards/format/mean|smooth"}
    assert "β·KL" in visible[2].get_xlabel() and "not: progress" in visible[2].get_xlabel()
    assert visible[1].get_ylim() == (0.0, 1.0) and visible[0].get_xlim() == (0.0, 8.0)
    quiet = plots.run_dashboard(recs, notes=False)                                  # same curves, no notes
    assert all(ax.get_xlabel() == "step" for ax in quiet.axes if ax.get_visible())
    np.testing.assert_array_equal(_lines(quiet)["run|kl|raw"].get_ydata(), [r["kl"] for r in recs])


def test_run_dashboard_overlays_a_grey_reference_run(tmp_path):
    healthy, failing = _run(), _run(n=5, by=2.0)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(__import__("json").dumps(r) + "\n" for r in failing))
    fig = plots.run_dashboard({"healthy": healthy, "failing": tmp_path}, reference="healthy")   # a folder works
    lines = _lines(fig)
    np.testing.assert_array_equal(lines["failing|kl|raw"].get_ydata(), [r["kl"] for r in failing])
    np.testing.assert_array_equal(lines["healthy|kl|raw"].get_ydata(), [r["kl"] for r in healthy])
    assert lines["healthy|kl|smooth"].get_color() == "0.55" and lines["failing|kl|smooth"].get_color() == "C0"
    assert all(ax.get_xlim() == (0.0, 8.0) for ax in fig.axes if ax.get_visible())    # the longer run sets x
    # a metric missing from a record is a gap (NaN), not a zero
    gap = _run(n=3)
    del gap[1]["kl"]
    raw = _lines(plots.run_dashboard(gap))["run|kl|raw"].get_ydata()
    assert raw[0] == gap[0]["kl"] and np.isnan(raw[1])


def test_run_dashboard_refuses_bad_input():
    with pytest.raises(KeyError, match="reference 'nope'"):
        plots.run_dashboard({"a": _run()}, reference="nope")
    with pytest.raises(ValueError, match="metric records"):
        plots.run_dashboard([{"reward": 1.0}])
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plots.run_dashboard("/nonexistent/run")

"""Figure builders of notebooks 02 and 03: each draws exactly the data it is given, on fixed axes."""
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from grpo_lib.plots import (
    accuracy_with_ci,
    advantage_by_correct_count,
    memory_stacks,
    question_weights,
    reward_strips,
    token_advantage_maps,
    zero_std_curves,
)


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

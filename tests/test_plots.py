"""Tests for grpo_lib.plots: builders return Figures whose drawn data is exactly the data passed in."""
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from grpo_lib.plots import toy_probabilities, toy_training_panels

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

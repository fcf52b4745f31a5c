"""The ε and β sliders of notebook 04, driven without a browser: set a value, read the redrawn figure.

`interactive` swallows exceptions raised by its callback (it logs them), so every test here checks the
*result*: a broken callback leaves `.result` stale and the assertions on the figure's data fail.
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ipywidgets import FloatSlider, Output  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grpo_lib.course.widgets import beta_slider, epsilon_slider  # noqa: E402


def by_gid(ax, gid):
    found = [a for a in [*ax.lines, *ax.patches] if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist with gid {gid!r}, found {len(found)}"
    return found[0]


def band(fig):
    """(left, right) of the grey clip band, the same on both panels."""
    edges = {(round(p.get_x(), 9), round(p.get_x() + p.get_width(), 9))
             for p in (by_gid(ax, "clip_band") for ax in fig.axes)}
    assert len(edges) == 1
    return edges.pop()


def curve_at(fig, panel, gid, rho_points):
    """The plotted y of line `gid` on panel 0 (A = +1) or 1 (A = -1), interpolated at rho_points."""
    x, y = by_gid(fig.axes[panel], gid).get_data()
    return np.interp(rho_points, x, y)


def k3_at_ratio(rho):
    return 1 / rho + np.log(rho) - 1


RHO = np.array([0.5, 0.9, 1.0, 1.25, 1.5, 1.9])   # grid points of the plots (multiples of 0.0025)


# --- ε ---------------------------------------------------------------------------------------------------

def test_epsilon_slider_is_a_simple_float_slider():
    w = epsilon_slider()
    slider = w.children[0]
    assert isinstance(slider, FloatSlider) and isinstance(w.children[-1], Output)
    assert slider.description == "epsilon" and slider.value == 0.2
    assert (slider.min, slider.max, slider.step) == (0.0, 0.5, 0.05)
    assert slider.continuous_update is False and slider.readout is True and slider.readout_format == ".2f"


def test_epsilon_slider_draws_on_creation_and_redraws_on_change():
    w = epsilon_slider()
    first = w.result
    assert isinstance(first, Figure)
    assert band(first) == pytest.approx((0.8, 1.2))
    w.children[0].value = 0.3
    assert w.result is not first                                  # a new figure was drawn ...
    assert band(w.result) == pytest.approx((0.7, 1.3))             # ... with the band at 1 ± ε
    assert "ε = 0.30" in w.result.get_suptitle()
    w.children[0].value = 0.05
    assert band(w.result) == pytest.approx((0.95, 1.05))


@pytest.mark.parametrize("epsilon", [0.1, 0.25, 0.45])
def test_epsilon_slider_curve_equals_the_formula(epsilon):
    w = epsilon_slider()
    w.children[0].value = epsilon
    fig = w.result
    for panel, A in ((0, 1.0), (1, -1.0)):
        expected = np.minimum(RHO * A, np.clip(RHO, 1 - epsilon, 1 + epsilon) * A)
        np.testing.assert_allclose(curve_at(fig, panel, "surrogate", RHO), expected, atol=1e-9)
    # the reader's claim: beyond 1+ε the A > 0 curve is flat at (1+ε)·A
    assert curve_at(fig, 0, "surrogate", [1.6, 1.9]) == pytest.approx([1 + epsilon] * 2)


def test_epsilon_slider_keeps_the_axes_fixed():
    w = epsilon_slider()
    before = [(ax.get_xlim(), ax.get_ylim()) for ax in w.result.axes]
    w.children[0].value = 0.45
    assert [(ax.get_xlim(), ax.get_ylim()) for ax in w.result.axes] == before


def test_slider_refuses_a_start_value_outside_its_range():
    with pytest.raises(ValueError, match="outside the slider range"):
        epsilon_slider(value=0.8)
    with pytest.raises(ValueError, match="outside the slider range"):
        beta_slider(value=-1.0)


# --- β ---------------------------------------------------------------------------------------------------

def test_beta_slider_is_a_simple_float_slider():
    w = beta_slider()
    slider = w.children[0]
    assert isinstance(slider, FloatSlider) and slider.description == "beta"
    assert slider.value == 0.5 and (slider.min, slider.max) == (0.0, 2.0)
    assert slider.continuous_update is False and slider.readout is True


def test_beta_slider_scales_the_kl_term():
    w = beta_slider()
    kl_half = curve_at(w.result, 0, "kl_penalty", RHO)
    np.testing.assert_allclose(kl_half, -0.5 * k3_at_ratio(RHO), rtol=1e-6)
    w.children[0].value = 1.0
    np.testing.assert_allclose(curve_at(w.result, 0, "kl_penalty", RHO), 2 * kl_half, rtol=1e-6)   # linear in β
    w.children[0].value = 0.0
    np.testing.assert_allclose(curve_at(w.result, 0, "kl_penalty", RHO), 0.0, atol=1e-12)
    # β = 0: the objective is the bare clipped surrogate
    np.testing.assert_allclose(curve_at(w.result, 0, "objective", RHO),
                               np.minimum(RHO, np.clip(RHO, 0.8, 1.2)), atol=1e-9)


@pytest.mark.parametrize("beta", [0.25, 1.5])
def test_beta_slider_objective_equals_the_formula(beta):
    w = beta_slider()
    w.children[0].value = beta
    for panel, A in ((0, 1.0), (1, -1.0)):
        expected = np.minimum(RHO * A, np.clip(RHO, 0.8, 1.2) * A) - beta * k3_at_ratio(RHO)
        np.testing.assert_allclose(curve_at(w.result, panel, "objective", RHO), expected, rtol=1e-6, atol=1e-9)
    # beyond 1+ε the A > 0 objective now falls: the KL term pulls ρ back towards 1
    y = curve_at(w.result, 0, "objective", [1.3, 1.6, 1.9])
    assert y[0] > y[1] > y[2]


def test_beta_slider_passes_its_fixed_epsilon():
    w = beta_slider(epsilon=0.1)
    assert band(w.result) == pytest.approx((0.9, 1.1))
    w.children[0].value = 1.0
    assert band(w.result) == pytest.approx((0.9, 1.1))

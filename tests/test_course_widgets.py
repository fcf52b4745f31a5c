"""The ε and β sliders of notebook 04, driven without a browser: set a value, read the redrawn figure.

Every test here checks the *result* (the figure's data), and the output area's content: exactly one PNG of
that figure, put there without capturing output (capturing made nbclient stall, see grpo_lib.course.widgets).
"""
import base64

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ipywidgets import FloatSlider, Output  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from IPython.core.pylabtools import print_figure  # noqa: E402

from grpo_lib.course import widgets  # noqa: E402
from grpo_lib.course.widgets import FigureSlider, beta_slider, epsilon_slider  # noqa: E402


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


# --- how the figure reaches the output area ---------------------------------------------------------------

def shown_png(w) -> bytes:
    """The one output of the slider's output area, which must be a PNG image; its bytes."""
    (out,) = w.children[-1].outputs
    assert out["output_type"] == "display_data"
    return base64.b64decode(out["data"]["image/png"])


class FakeShell:
    """A kernel's shell as far as `figure_output` sees it: a display formatter that makes `made` for a Figure."""

    def __init__(self, made):
        self.display_formatter = type("Formatter", (), {"format": staticmethod(lambda fig: (made(fig), {}))})()


@pytest.mark.parametrize("make, value", [(epsilon_slider, 0.35), (beta_slider, 1.25)])
def test_in_a_kernel_the_slider_shows_exactly_the_current_figure(make, value, monkeypatch):
    # a kernel without `%matplotlib inline`: its formatter makes only text, so the slider renders the PNG
    monkeypatch.setattr(widgets, "get_ipython", lambda: FakeShell(lambda fig: {"text/plain": "<Figure>"}))
    w = make()
    first = shown_png(w)
    assert first[:8] == b"\x89PNG\r\n\x1a\n"
    assert first == base64.b64decode(print_figure(w.result, "png", base64=True))
    assert w.children[-1].outputs[0]["data"]["text/plain"] == "<Figure>"
    w.children[0].value = value
    assert shown_png(w) == base64.b64decode(print_figure(w.result, "png", base64=True))
    assert shown_png(w) != first                                   # replaced, not appended (one output)


def test_a_kernel_s_own_png_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(widgets, "get_ipython", lambda: FakeShell(lambda fig: {"image/png": "QUJD", "text/plain": "f"}))
    assert shown_png(epsilon_slider()) == b"ABC"


def test_outside_ipython_no_image_is_rendered():
    (out,) = epsilon_slider().children[-1].outputs
    assert set(out["data"]) == {"text/plain"} and out["data"]["text/plain"].startswith("<Figure")


def test_sliders_never_capture_output(monkeypatch):
    """`with out:` (output capture) is what made nbclient wait for the cell's timeout: never used here."""
    from ipywidgets import Output

    def refuse(self):
        raise AssertionError("the slider captured output with `with out:`")
    monkeypatch.setattr(Output, "__enter__", refuse)
    for w, value in ((epsilon_slider(), 0.1), (beta_slider(), 0.0)):
        w.children[0].value = value
        assert len(w.children[-1].outputs) == 1


def test_a_failing_callback_fails_the_first_draw_and_shows_later_errors():
    calls = []

    def draw(x):
        calls.append(x)
        if x > 0.5:
            raise ValueError(f"cannot draw x = {x}")
        return epsilon_slider().result

    with pytest.raises(ValueError, match="cannot draw x = 0.9"):
        FigureSlider(draw, x=FloatSlider(value=0.9, min=0, max=1))
    w = FigureSlider(draw, x=FloatSlider(value=0.1, min=0, max=1))
    good = w.result
    with pytest.raises(ValueError, match="cannot draw x = 0.75"):
        w.children[0].value = 0.75
    (out,) = w.children[-1].outputs
    assert out["output_type"] == "stream" and "ValueError: cannot draw x = 0.75" in out["text"]
    assert w.result is good                                        # the last good figure is kept
    w.children[0].value = 0.25
    assert isinstance(w.result, Figure) and w.children[-1].outputs[0]["output_type"] == "display_data"
    assert calls == [0.9, 0.1, 0.75, 0.25]

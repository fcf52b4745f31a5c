"""Slider widgets for notebook 04: ε and β moved by hand, redrawn by the pure builders in `grpo_lib.course.plots`.

Each function returns an `ipywidgets.interactive`: a FloatSlider (with its readout) above an output area
that shows the figure. Everything that is math lives in `grpo_lib.course.plots` (and `grpo_lib.loss` below it);
this module only wires sliders to those builders.

Choices made here (each shown in notebooks/04_the_loss.ipynb):
1. `continuous_update=False`: the figure is redrawn when the slider is released (or moved with the
   keyboard), not on every pixel of a drag, so a slow kernel never queues dozens of redraws.
2. The callback *returns* the Figure, and `interactive` keeps the return value in `.result`. Tests set
   `w.children[0].value` and read `w.result`: the figure's data, checked without a browser. The
   callback also displays it (as a PNG image in the output area); `interactive` itself does not
   (`auto_display=False`), so the figure shows exactly once.
3. `interactive` catches any exception raised by the callback and prints it in the output area, so a
   broken slider would not fail a notebook cell. That is why tests/test_course_widgets.py drives every slider
   and checks `.result`, and why the notebook calls each builder once directly before its slider.
4. Widgets do not render on GitHub's static view: the direct call before each slider is what a reader
   sees there.
"""

from __future__ import annotations

from IPython.display import display
from ipywidgets import FloatSlider, interactive
from matplotlib.figure import Figure

from grpo_lib.course import plots


def _slider(description: str, value: float, min: float, max: float, step: float) -> FloatSlider:
    """A FloatSlider with a 2-decimal readout that redraws only on release (continuous_update=False)."""
    if not min <= value <= max:
        raise ValueError(f"{description} = {value} lies outside the slider range [{min}, {max}]")
    return FloatSlider(value=value, min=min, max=max, step=step, description=description,
                       continuous_update=False, readout=True, readout_format=".2f")


def epsilon_slider(value: float = 0.2, min: float = 0.0, max: float = 0.5, step: float = 0.05) -> interactive:
    """Slider for the clip range ε, redrawing `plots.clipped_surrogate_vs_ratio(epsilon)`.

    Args:
        value: starting ε (the paper and TRL: 0.2).
        min, max, step: the slider range.

    Returns:
        an `interactive`: `children[0]` is the ε FloatSlider, `children[-1]` the output area, and
        `.result` the Figure drawn for the current ε.

    Taught in: notebooks/04_the_loss.ipynb
    """
    def show(epsilon: float) -> Figure:
        fig = plots.clipped_surrogate_vs_ratio(epsilon=epsilon)
        display(fig)
        return fig

    return interactive(show, epsilon=_slider("epsilon", value, min, max, step))


def beta_slider(value: float = 0.5, min: float = 0.0, max: float = 2.0, step: float = 0.05,
                epsilon: float = 0.2) -> interactive:
    """Slider for the KL weight β, redrawing `plots.per_token_objective_vs_ratio(beta, epsilon)`.

    Args:
        value: starting β. The paper's 0.04 barely shows on this scale; 0.5 makes the KL term visible.
        min, max, step: the slider range.
        epsilon: ε, fixed while β moves.

    Returns:
        an `interactive`: `children[0]` is the β FloatSlider, `children[-1]` the output area, and
        `.result` the Figure drawn for the current β.

    Taught in: notebooks/04_the_loss.ipynb
    """
    def show(beta: float) -> Figure:
        fig = plots.per_token_objective_vs_ratio(beta=beta, epsilon=epsilon)
        display(fig)
        return fig

    return interactive(show, beta=_slider("beta", value, min, max, step))

"""Slider widgets for notebook 04: ε and β moved by hand, redrawn by the pure builders in `grpo_lib.course.plots`.

Each function returns a `FigureSlider` (an `ipywidgets.interactive`): a FloatSlider (with its readout) above an
output area that shows the figure. Everything that is math lives in `grpo_lib.course.plots` (and
`grpo_lib.loss` below it); this module only wires sliders to those builders.

Choices made here (each shown in notebooks/04_the_loss.ipynb):
1. `continuous_update=False`: the figure is redrawn when the slider is released (or moved with the
   keyboard), not on every pixel of a drag, so a slow kernel never queues dozens of redraws.
2. The callback *returns* the Figure, kept in `.result`. Tests set `w.children[0].value` and read
   `w.result`: the figure's data, checked without a browser.
3. The figure is put in the output area by setting the Output widget's `outputs` (one PNG image, formatted
   as `display(fig)` would format it), never by capturing output (`with out: display(fig)`, which is how
   `interactive` and `interact` draw). A headless runner (nbclient, under nbmake and
   scripts/build_notebooks.py) mimics a captured output by sending a message back to the kernel on the shell
   socket while it waits for the cell's reply on that same socket; that send can swallow the socket's wake-up,
   and the runner then sits idle until the cell's timeout (15 minutes under nbmake) before it reads the reply
   that had arrived long before. docs/performance.md ("Why notebook 04 stalled") has the measurements, and
   scripts/repro_nbclient_stall.py reproduces it without this project.
4. An error in the callback fails the cell that creates the slider (the first draw runs there); on a later
   move, the traceback replaces the figure in the output area and the slider keeps working.
5. Widgets do not render on GitHub's static view: the direct call before each slider is what a reader
   sees there.
"""

from __future__ import annotations

import traceback
from typing import Any

from IPython import get_ipython
from IPython.core.pylabtools import print_figure
from ipywidgets import FloatSlider, interactive
from matplotlib.figure import Figure

from grpo_lib.course import plots


def _slider(description: str, value: float, min: float, max: float, step: float) -> FloatSlider:
    """A FloatSlider with a 2-decimal readout that redraws only on release (continuous_update=False)."""
    if not min <= value <= max:
        raise ValueError(f"{description} = {value} lies outside the slider range [{min}, {max}]")
    return FloatSlider(value=value, min=min, max=max, step=step, description=description,
                       continuous_update=False, readout=True, readout_format=".2f")


def figure_output(fig: Figure) -> dict[str, Any]:
    """One `display_data` output holding `fig` as a PNG, formatted as `display(fig)` would in this kernel.

    Inside IPython the shell's own formatter is used (same image and size as the plain call above the
    slider), with IPython's `print_figure` (which the inline backend also calls) where it makes no PNG (no
    `%matplotlib inline`). Outside IPython (plain Python, the tests) no front end can show the output area,
    so only the text form is made and no image is rendered.
    """
    ip = get_ipython()
    if ip is None:
        return {"output_type": "display_data", "data": {"text/plain": repr(fig)}, "metadata": {}}
    data, metadata = ip.display_formatter.format(fig)
    if "image/png" not in data:
        data = {**data, "image/png": print_figure(fig, "png", base64=True)}
    return {"output_type": "display_data", "data": data, "metadata": metadata}


class FigureSlider(interactive):
    """`interactive` whose callback returns a Figure that is shown by setting the output area's outputs.

    Same layout and attributes as `interactive` (`children[0]` the slider, `children[-1]` = `.out` the
    Output widget, `.result` the last Figure), but `update` never enters `with self.out:` (see choice 3).
    """

    def update(self, *args: Any) -> None:
        first = not hasattr(self, "_drawn")
        self._drawn = True
        self.kwargs = {w._kwarg: w.get_interact_value() for w in self.kwargs_widgets}
        try:
            fig = self.f(**self.kwargs)
            if not isinstance(fig, Figure):
                raise TypeError(f"the slider's callback returned {type(fig).__name__}, not a matplotlib Figure")
            self.out.outputs = (figure_output(fig),)
            self.result = fig
        except Exception as e:
            if first:
                raise                     # the cell creating the slider fails, naming the error
            self.out.outputs = ({"output_type": "stream", "name": "stderr",
                                 "text": "".join(traceback.format_exception(e))},)
            raise


def epsilon_slider(value: float = 0.2, min: float = 0.0, max: float = 0.5, step: float = 0.05) -> FigureSlider:
    """Slider for the clip range ε, redrawing `plots.clipped_surrogate_vs_ratio(epsilon)`.

    Args:
        value: starting ε (the paper and TRL: 0.2).
        min, max, step: the slider range.

    Returns:
        a `FigureSlider`: `children[0]` is the ε FloatSlider, `children[-1]` the output area, and
        `.result` the Figure drawn for the current ε.

    Taught in: notebooks/04_the_loss.ipynb
    """
    def draw(epsilon: float) -> Figure:
        return plots.clipped_surrogate_vs_ratio(epsilon=epsilon)

    return FigureSlider(draw, epsilon=_slider("epsilon", value, min, max, step))


def beta_slider(value: float = 0.5, min: float = 0.0, max: float = 2.0, step: float = 0.05,
                epsilon: float = 0.2) -> FigureSlider:
    """Slider for the KL weight β, redrawing `plots.per_token_objective_vs_ratio(beta, epsilon)`.

    Args:
        value: starting β. The paper's 0.04 barely shows on this scale; 0.5 makes the KL term visible.
        min, max, step: the slider range.
        epsilon: ε, fixed while β moves.

    Returns:
        a `FigureSlider`: `children[0]` is the β FloatSlider, `children[-1]` the output area, and
        `.result` the Figure drawn for the current β.

    Taught in: notebooks/04_the_loss.ipynb
    """
    def draw(beta: float) -> Figure:
        return plots.per_token_objective_vs_ratio(beta=beta, epsilon=epsilon)

    return FigureSlider(draw, beta=_slider("beta", value, min, max, step))

"""Figure builders for the notebooks: pure functions that take numbers and return a matplotlib Figure.

Conventions (every builder here follows them):
1. A builder only draws what it is given; it computes nothing that a test could not check elsewhere.
2. Axis limits are fixed (probabilities on [0, 1], steps from 0 to the last step), so a slider or a
   re-run moves the curves, not the axes.
3. Figures are made with `matplotlib.figure.Figure`, not `pyplot`: no global figure state, nothing is
   shown twice in a notebook, and tests build them headless. In a notebook, end the cell with the
   figure (or call `display(fig)`) to show it.

Taught in: notebooks/01_worked_example_2plus3.ipynb (and later notebooks for their own builders)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from grpo_lib.loss import clipped_surrogate, kl_k3

# --- notebook 01: the worked 2 + 3 example ------------------------------------------------------------------
# One colour per answer of the 2+3 world, the same in every figure: "5", "6", "2 + 3 = 5".
TOY_COLORS = ("tab:blue", "tab:red", "tab:green")


def _toy_probs(history: Mapping[str, Any]) -> np.ndarray:
    """history["probs"] as a float array (S + 1, K), or a clear error."""
    if "probs" not in history:
        raise KeyError("history needs a 'probs' entry of shape (steps + 1, K), as returned by train_toy")
    probs = np.asarray(history["probs"], dtype=float)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"history['probs'] must have shape (steps + 1, K), got {probs.shape}")
    return probs


def toy_probabilities(
    history: Mapping[str, Any],
    *,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Line plot of π_θ(o | q) for each answer against the update step, y fixed to [0, 1].

    Args:
        history: a dict as returned by `grpo_lib.toy.train_toy`: "probs" (S + 1, K) (row 0 is the
            policy before any update) and optionally "answers" (K labels) and "rewards" (K scores,
            shown in the legend).
        title: axes title.
        ax: draw into this Axes instead of a new Figure (used by `toy_training_panels`).

    Returns:
        The Figure holding the plot. Its axes carry one line per answer, in answer order, whose y-data
        is exactly the matching column of history["probs"] and whose x-data is 0..S.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    probs = _toy_probs(history)                                         # (S + 1, K)
    S, K = probs.shape[0] - 1, probs.shape[1]
    answers = list(history.get("answers") or [f"answer {k}" for k in range(K)])
    if len(answers) != K:
        raise ValueError(f"history['answers'] has {len(answers)} labels for {K} probability columns")
    rewards = history.get("rewards")

    if ax is None:
        fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        ax = fig.add_subplot()
    steps = np.arange(S + 1)                                            # (S + 1,)
    for k in range(K):
        label = f'"{answers[k]}"' + (f"  (r = {rewards[k]:g})" if rewards is not None else "")
        ax.plot(steps, probs[:, k], color=TOY_COLORS[k % len(TOY_COLORS)], lw=2, marker="o",
                ms=3 if S <= 40 else 0, label=label)
    ax.axhline(1 / K, color="0.6", lw=0.8, ls=":", zorder=0)            # the uniform start
    ax.set_xlim(0, max(S, 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("update step")
    ax.set_ylabel(r"$\pi_\theta(o \mid q)$")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=9, framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def toy_training_panels(histories: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Side-by-side `toy_probabilities` panels, one per history, sharing the y-axis [0, 1].

    Args:
        histories: panel title -> history dict (see `toy_probabilities`), drawn left to right.

    Returns:
        A Figure with one Axes per history, in the order given.

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    if not histories:
        raise ValueError("histories is empty: pass at least one title -> history pair")
    n = len(histories)
    fig = Figure(figsize=(5.2 * n, 3.8), layout="constrained")
    axes: Sequence[Axes] = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    for ax, (title, history) in zip(axes, histories.items()):
        toy_probabilities(history, title=title, ax=ax)
    for ax in axes[1:]:
        ax.set_ylabel("")
    return fig


# --- notebook 01 §1.6: the variance of the policy-gradient estimate against its baseline ----------------------
def variance_vs_baseline(b_grid: Sequence[float], exact_var: Sequence[float],
                         measured: Mapping[str, tuple[float, float]], J: float) -> Figure:
    """The exact variance of the REINFORCE estimate against a constant baseline b, with measured points.

    Args:
        b_grid: the baselines b of the curve.
        exact_var: the exact variance (summed over the logits) at each b.
        measured: label -> (b where the dot goes, the variance measured over sampled groups). A baseline that is
            not a constant (the group mean) is drawn at the value it estimates; its label should say its mean.
        J: the true mean reward, marked by a dotted line.

    Axes are fixed: b in [-1, 3], variance in [0, 0.5] (the toy of notebook 01).

    Taught in: notebooks/01_worked_example_2plus3.ipynb
    """
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    ax.plot(np.asarray(b_grid, dtype=float), np.asarray(exact_var, dtype=float), lw=1.6, color="tab:blue",
            label="exact, constant baseline b")
    for i, (name, (b, v)) in enumerate(measured.items()):
        ax.plot([b], [v], "o", color=f"C{i + 1}", label=f"sampled groups: {name}")
    ax.axvline(J, color="grey", ls=":", lw=1)
    ax.annotate("J", (J, 0.47), ha="center", color="grey")
    ax.set(xlabel="baseline b", ylabel="variance of the estimate\n(sum over the logits)", xlim=(-1, 3), ylim=(0, 0.5),
           title="constant b: same mean, not the same spread\n(dots at J: per-group baselines, means in the legend)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- notebook 02: group-relative advantages --------------------------------------------------------------------

# One colour per advantage scaling, the same in every figure of notebook 02.
SCALE_COLORS = {"group": "tab:purple", "batch": "tab:orange", "none": "tab:gray"}
# One colour per model in the memory figures: trained models dark, frozen ones light.
MODEL_COLORS = {"policy": "tab:blue", "reference": "lightsteelblue", "reward": "navajowhite", "value": "tab:orange"}


def advantage_by_correct_count(
    k: Sequence[int],
    A_right: Sequence[float],
    A_wrong: Sequence[float],
    *,
    G: int,
    ylim: float = 3.0,
) -> Figure:
    """Advantage of a right answer and of a wrong answer against the number k of right answers in a group.

    Args:
        k: 0..G, the number of right answers (reward 1) among the G completions (reward 0 otherwise).
        A_right: A of a right answer for each k (NaN where k = 0: there is none).
        A_wrong: A of a wrong answer for each k (NaN where k = G).
        G: group size, used for the x-axis and the title.
        ylim: the y-axis is fixed to [-ylim, ylim].

    Returns:
        A Figure with one Axes holding two labelled lines, "right answer" then "wrong answer", whose
        y-data are exactly A_right and A_wrong.

    Taught in: notebooks/02_advantages.ipynb
    """
    k = np.asarray(k, dtype=float)
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(k, np.asarray(A_right, dtype=float), "o-", color="tab:green", lw=2, label="right answer (r = 1)")
    ax.plot(k, np.asarray(A_wrong, dtype=float), "s-", color="tab:red", lw=2, label="wrong answer (r = 0)")
    ax.axhline(0, color="0.4", lw=0.8, zorder=0)
    ax.set_xlim(-0.5, G + 0.5)
    ax.set_ylim(-ylim, ylim)
    ax.set_xticks(range(G + 1))
    ax.set_xlabel(f"k = number of right answers in the group (G = {G})")
    ax.set_ylabel("advantage $A_i$")
    ax.set_title("The rarer outcome gets the larger push", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    return fig


def zero_std_curves(
    p: Sequence[float],
    fractions: Mapping[int, Sequence[float]],
    *,
    simulated: Mapping[int, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Figure:
    """Fraction of groups whose rewards are all equal (no learning signal) against the success rate p.

    Args:
        p: success probabilities on the x-axis, in [0, 1].
        fractions: group size G -> fraction of zero-std groups at each p (e.g. p^G + (1-p)^G),
            drawn as lines in the order given.
        simulated: optional G -> (p values, measured fractions), drawn as dots over the lines.

    Returns:
        A Figure with one Axes, both axes fixed to [0, 1]; the labelled lines are "G = ..." in the
        order of `fractions`, with y-data exactly the values given.

    Taught in: notebooks/02_advantages.ipynb
    """
    p = np.asarray(p, dtype=float)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    colors = {}
    for G, frac in fractions.items():
        (line,) = ax.plot(p, np.asarray(frac, dtype=float), lw=2, label=f"G = {G}")
        colors[G] = line.get_color()
    for G, (p_sim, frac_sim) in (simulated or {}).items():
        ax.plot(p_sim, frac_sim, "o", ms=4, color=colors.get(G, "k"), label="_simulated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("p = probability that one completion is right")
    ax.set_ylabel("fraction of groups with std = 0")
    ax.set_title("Very weak or very strong policies get no gradient from most groups", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", fontsize=9, ncol=len(fractions))
    return fig


def question_weights(
    k: Sequence[int],
    weights: Mapping[str, Sequence[float]],
    *,
    G: int,
    ymax: float = 2.5,
) -> Figure:
    """How hard each question pushes the policy, for each advantage scaling (Dr. GRPO's difficulty bias).

    Args:
        k: number of right answers out of G for each question, on the x-axis.
        weights: scale name ("group", "batch", "none") -> one weight per k, drawn as lines in order.
        G: group size (x-axis range and label).
        ymax: the y-axis is fixed to [0, ymax].

    Returns:
        A Figure with one Axes; labelled lines are the keys of `weights`, y-data exactly the values.

    Taught in: notebooks/02_advantages.ipynb
    """
    k = np.asarray(k, dtype=float)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    markers = {"group": "o", "batch": "s", "none": "^"}
    styles = {"group": "-", "batch": "--", "none": ":"}         # "batch" and "none" often coincide: keep both visible
    for name, w in weights.items():
        ax.plot(k, np.asarray(w, dtype=float), marker=markers.get(name, "o"), ls=styles.get(name, "-"), lw=2,
                ms=7 if name == "none" else 5, mfc="none" if name == "none" else None,
                color=SCALE_COLORS.get(name), label=f'scale="{name}"')
    ax.axhline(1, color="0.6", lw=0.8, ls=":", zorder=0)
    ax.set_xlim(-0.5, G + 0.5)
    ax.set_ylim(0, ymax)
    ax.set_xlabel(f"k = right answers out of G = {G} (hard question on the left, easy on the right)")
    ax.set_ylabel("push of the question\n(relative to the 50/50 one)")
    ax.set_title("Dividing by the group std up-weights nearly solved and nearly hopeless questions",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", fontsize=9, ncol=len(weights))
    return fig


def memory_stacks(
    stacks: Mapping[str, Mapping[str, float]],
    *,
    capacity_gib: float | None = None,
    capacity_label: str = "",
    ymax: float = 100.0,
) -> Figure:
    """Stacked bars of training memory in GiB: one bar per setup, one segment per model.

    Args:
        stacks: bar label -> (model name -> GiB), e.g. {"GRPO": {"policy": 23.0, "reference": 2.9}}.
            Segments are stacked in the order given.
        capacity_gib: draws a dashed line at this height (e.g. one GPU's memory); None draws none.
        capacity_label: text written at the right end of that line.
        ymax: the y-axis is fixed to [0, ymax].

    Returns:
        A Figure with one Axes; each segment is a bar patch labelled by its model name (once per model).

    Taught in: notebooks/02_advantages.ipynb
    """
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    labels = list(stacks)
    seen: set[str] = set()
    for x, label in enumerate(labels):
        bottom = 0.0
        for model, gib in stacks[label].items():
            if gib <= 0:
                continue
            ax.bar(x, gib, bottom=bottom, width=0.6, color=MODEL_COLORS.get(model, "0.7"),
                   edgecolor="white", label=model if model not in seen else "_" + model)
            seen.add(model)
            bottom += gib
        ax.text(x, bottom + ymax * 0.01, f"{bottom:.1f} GiB", ha="center", va="bottom", fontsize=9)
    if capacity_gib is not None:
        ax.axhline(capacity_gib, color="k", ls="--", lw=1)
        ax.text(len(labels) - 0.45, capacity_gib, capacity_label or f"{capacity_gib:g} GiB", va="bottom",
                ha="right", fontsize=8)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(0, ymax)
    ax.set_ylabel("GiB (weights, gradients, optimizer)")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return fig


def token_advantage_maps(
    outcome: Any,
    process: Any,
    mask: Any,
    *,
    step_ends: Sequence[Sequence[int]] | None = None,
    vmax: float = 2.0,
) -> Figure:
    """Per-token advantages A_{i,t} as two colour maps: outcome supervision above, process supervision below.

    Args:
        outcome: (G, T) advantages, the same A_i on every token of completion i.
        process: (G, T) advantages from per-step rewards.
        mask: (G, T) 1 on real tokens, 0 on padding (padding is left blank).
        step_ends: optional, for each completion the token indices where a step ends (drawn as ticks, with
            the step's value written in its middle).
        vmax: the colour scale is fixed to [-vmax, vmax] (blue negative, red positive).

    Returns:
        A Figure with two image Axes and one colour bar; the images hold exactly the masked arrays.

    Taught in: notebooks/02_advantages.ipynb
    """
    m = np.asarray(mask, dtype=float)
    panels = {"outcome supervision: one $A_i$ for every token": np.asarray(outcome, dtype=float),
              "process supervision: sum of the normalised step rewards still ahead": np.asarray(process, dtype=float)}
    G, T = m.shape
    fig = Figure(figsize=(7.2, 1.0 + 0.9 * G), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, (title, values) in zip(axes, panels.items()):
        if values.shape != m.shape:
            raise ValueError(f"advantages of shape {values.shape} do not match the mask's {m.shape}")
        image = ax.imshow(np.where(m > 0, values, np.nan), cmap="bwr", vmin=-vmax, vmax=vmax, aspect="auto",
                          interpolation="nearest")
        ax.set_yticks(range(G), [f"$o_{i + 1}$" for i in range(G)])
        ax.set_title(title, fontsize=9)
        for i, ends in enumerate(step_ends or []):
            start = 0
            for t in ends:                                    # a tick after each step, its value in the middle
                ax.plot([t + 0.5, t + 0.5], [i - 0.5, i + 0.5], color="k", lw=1.5)
                ax.text((start + t) / 2, i, f"{values[i, t]:+.2f}", ha="center", va="center", fontsize=8)
                start = t + 1
    axes[-1].set_xlabel("token position t")
    fig.colorbar(image, ax=list(axes), shrink=0.9, label="$A_{i,t}$")
    return fig


# --- notebook 02 §2.4: questions are not equally hard ---------------------------------------------------------
def accuracy_spread(p_per_question: Sequence[float], p_mean: float, bins: int = 16) -> Figure:
    """A histogram of each question's accuracy on [0, 1], with the mean accuracy marked.

    Taught in: notebooks/02_advantages.ipynb
    """
    fig = Figure(figsize=(6.4, 3.0))
    ax = fig.subplots()
    ax.hist(np.asarray(p_per_question, dtype=float), bins=np.linspace(0, 1, bins + 1), color="tab:blue", alpha=0.8)
    ax.axvline(p_mean, color="k", ls="--", lw=1, label=f"mean accuracy {p_mean:.2f}")
    ax.set(xlim=(0, 1), xlabel="accuracy of one question", ylabel="questions",
           title="questions are not equally hard")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# --- notebook 03: reward design -------------------------------------------------------------------------------
def reward_strips(
    rewards: Any,
    advantages: Any | None = None,
    *,
    labels: Sequence[str] | None = None,
    rmax: float = 2.8,
    amax: float = 3.5,
) -> Figure:
    """The G rewards of each group as a strip of dots (and, below, their advantages), one column per group.

    Args:
        rewards: (N, G) rewards; group i is drawn at x = i, its G dots spread sideways, its mean as a bar.
        advantages: optional (N, G) advantages, drawn the same way in a second panel.
        labels: N short group labels for the x-axis.
        rmax: the reward axis is fixed to [-0.2, rmax + 0.2]; the advantage axis to [-amax, amax].

    Returns:
        A Figure with one Axes (rewards) or two (rewards, advantages). In each, collection i holds the
        G points of group i, with y-values exactly row i.

    Taught in: notebooks/03_reward_design.ipynb
    """
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 2:
        raise ValueError(f"rewards must have shape (N, G), got {r.shape}")
    N, G = r.shape
    rows = [("reward $r_i$", r, (-0.2, rmax + 0.2))]
    if advantages is not None:
        a = np.asarray(advantages, dtype=float)
        if a.shape != r.shape:
            raise ValueError(f"advantages of shape {a.shape} do not match rewards of shape {r.shape}")
        rows.append(("advantage $A_i$", a, (-amax, amax)))
    fig = Figure(figsize=(max(6.4, 0.8 * N + 2), 2.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
    offsets = np.linspace(-0.3, 0.3, G) if G > 1 else np.zeros(1)
    for ax, (ylabel, values, ylim) in zip(axes, rows):
        for i in range(N):
            ax.scatter(i + offsets, values[i], s=18, color="tab:blue", alpha=0.8, zorder=3)
            ax.plot([i - 0.38, i + 0.38], [values[i].mean()] * 2, color="k", lw=1.5)
        ax.set_ylim(*ylim)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("Each column is one group of G completions; the bar is the group mean", fontsize=10)
    axes[-1].set_xlim(-0.6, N - 0.4)
    axes[-1].set_xticks(range(N), list(labels) if labels is not None else [f"q{i + 1}" for i in range(N)],
                        fontsize=8)
    return fig


def accuracy_with_ci(
    labels: Sequence[str],
    correct: Sequence[int],
    total: Sequence[int],
    low: Sequence[float],
    high: Sequence[float],
) -> Figure:
    """Accuracy bars k/n with their 95% confidence intervals as error bars, y fixed to [0, 1].

    Args:
        labels: one label per bar.
        correct, total: k and n per bar.
        low, high: the interval per bar (e.g. Wilson), in [0, 1].

    Returns:
        A Figure with one Axes holding one bar per label, of height exactly k/n.

    Taught in: notebooks/03_reward_design.ipynb
    """
    k = np.asarray(correct, dtype=float)
    n = np.asarray(total, dtype=float)
    acc = k / n
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    ax.bar(x, acc, width=0.6, color="tab:blue", alpha=0.8)
    ax.errorbar(x, acc, yerr=[acc - lo, hi - acc], fmt="none", ecolor="k", capsize=6, lw=1.5)
    for xi, a, ki, ni in zip(x, acc, k, n):
        ax.text(xi + 0.32, a, f"{int(ki)}/{int(ni)}", va="center", fontsize=9)
    ax.set_xticks(x, labels, fontsize=9)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (bars: 95% CI)")
    ax.grid(axis="y", alpha=0.3)
    return fig


# --- notebook 04: the loss (ε and β sliders, k3 estimator, loss_type weights) -----------------------------
# The slider figures evaluate grpo_lib.loss itself: the curve you see is the library's math, and
# tests/test_course_plots.py checks it against the formula written out independently.

RATIO_XLIM = (0.0, 2.0)
"""x-range of every ρ plot in notebook 04: ρ = π_θ/π_θold from 0 to 2 (ρ = 1 means π_θ = π_θold)."""
SURROGATE_PANELS = (1.0, -1.0)
"""The advantages drawn by the ρ plots, one panel each: a better-than-average and a worse-than-average token."""
LOSS_TYPE_COLORS = {"grpo": "tab:blue", "bnpo": "tab:orange", "dr_grpo": "tab:green", "dapo": "tab:red"}


def _ratio_grid(n: int = 801) -> np.ndarray:
    """ρ values for the ρ plots: steps of 2/(n-1) on (0, 2], leaving out ρ = 0 (k3 is infinite there)."""
    return np.linspace(RATIO_XLIM[1] / (n - 1), RATIO_XLIM[1], n - 1)   # (n-1,) 0.0025, 0.005, ..., 2.0


def _check_range(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if not (low <= value <= high) or not np.isfinite(value):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def clipped_surrogate_vs_ratio(epsilon: float = 0.2) -> Figure:
    """PPO/GRPO's clipped surrogate min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) against ρ, for A = +1 and A = -1.

    Each panel draws ρ·A (dashed), clip(ρ, 1-ε, 1+ε)·A (dotted) and their min (thick), computed with
    `grpo_lib.loss.clipped_surrogate`; a grey band marks the clip range [1-ε, 1+ε], and a hatched band
    the flat region where the min no longer depends on ρ (ρ > 1+ε for A > 0, ρ < 1-ε for A < 0): tokens
    there get no gradient. Axes are fixed (ρ in [0, 2], y in [-2.1, 2.1]) so the ε slider moves curves only.

    Args:
        epsilon: ε, the clip range, in [0, 1).

    Returns:
        A Figure with two Axes (A = +1, A = -1). Artists carry gids for tests: lines "unclipped",
        "clipped", "surrogate"; patches "clip_band" and "flat_region".

    Taught in: notebooks/04_the_loss.ipynb
    """

    epsilon = _check_range("epsilon", epsilon, 0.0, 0.999)
    rho = _ratio_grid()                                                 # (R,)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, A in zip(axes, SURROGATE_PANELS):
        surrogate = clipped_surrogate(torch.as_tensor(rho), torch.tensor(A), epsilon).numpy()  # (R,)
        ax.axvspan(1 - epsilon, 1 + epsilon, color="0.85", zorder=0, gid="clip_band",
                   label=rf"clip range $[1-\epsilon, 1+\epsilon]$")
        flat = (1 + epsilon, RATIO_XLIM[1]) if A > 0 else (RATIO_XLIM[0], 1 - epsilon)
        ax.axvspan(*flat, facecolor="none", edgecolor="0.6", hatch="//", lw=0, zorder=0, gid="flat_region",
                   label="flat: no gradient")
        ax.plot(rho, rho * A, ls="--", lw=1.2, color="tab:gray", gid="unclipped", label=r"$\rho A$")
        ax.plot(rho, np.clip(rho, 1 - epsilon, 1 + epsilon) * A, ls=":", lw=1.5, color="tab:purple",
                gid="clipped", label=r"$\mathrm{clip}(\rho, 1-\epsilon, 1+\epsilon)\,A$")
        ax.plot(rho, surrogate, lw=3, color="tab:blue" if A > 0 else "tab:red", gid="surrogate",
                label=r"$\min(\rho A,\ \mathrm{clip}(\rho)\,A)$")
        ax.axvline(1.0, color="k", lw=0.6)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xlim(*RATIO_XLIM)
        ax.set_ylim(-2.1, 2.1)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{\theta_{old}}$")
        ax.set_title(f"A = {A:+g}: " + ("a better-than-average token" if A > 0 else "a worse-than-average token"),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if A > 0 else "upper right", fontsize=8, framealpha=0.9)
    axes[0].set_ylabel("per-token surrogate")
    fig.suptitle(f"clipped surrogate, ε = {epsilon:.2f}", fontsize=11)
    return fig


def per_token_objective_vs_ratio(beta: float = 0.04, epsilon: float = 0.2) -> Figure:
    """Per-token GRPO objective min(ρA, clip(ρ, 1-ε, 1+ε)A) - β·k3 against ρ, for A = +1 and A = -1.

    Drawn for a token where π_ref = π_θold (true at the first step, when both are the starting model), so
    d = log π_ref - log π_θ = -log ρ and k3 = e^d - d - 1 = 1/ρ + log ρ - 1. Both terms come from
    `grpo_lib.loss` (`clipped_surrogate`, `kl_k3`). The dot marks the ρ where the objective is largest
    (on a flat maximum, the point of it closest to ρ = 1).
    Axes are fixed (ρ in [0, 2], y in [-2.1, 2.1]) so the β slider moves curves only.

    Args:
        beta: β, the KL weight, >= 0.
        epsilon: ε, the clip range, in [0, 1).

    Returns:
        A Figure with two Axes (A = +1, A = -1). Lines carry gids for tests: "surrogate",
        "kl_penalty" (-β·k3), "objective" (their sum) and "argmax" (one point).

    Taught in: notebooks/04_the_loss.ipynb
    """

    beta = _check_range("beta", beta, 0.0, 1e6)
    epsilon = _check_range("epsilon", epsilon, 0.0, 0.999)
    rho = _ratio_grid()                                                 # (R,)
    logp = torch.as_tensor(np.log(rho))                                 # (R,) log π_θ - log π_old, with log π_old = 0
    kl = kl_k3(logp, torch.zeros_like(logp)).numpy()                    # (R,) k3 with log π_ref = log π_old = 0
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, A in zip(axes, SURROGATE_PANELS):
        surrogate = clipped_surrogate(torch.as_tensor(rho), torch.tensor(A), epsilon).numpy()  # (R,)
        objective = surrogate - beta * kl                                # (R,)
        # where the objective is largest; on a flat maximum (β = 0) the point of it closest to ρ = 1
        at_max = np.flatnonzero(objective >= objective.max() - 1e-12)
        best = int(at_max[np.argmin(np.abs(rho[at_max] - 1.0))])
        ax.axvspan(1 - epsilon, 1 + epsilon, color="0.85", zorder=0, gid="clip_band",
                   label=rf"clip range $[1-\epsilon, 1+\epsilon]$")
        ax.plot(rho, surrogate, lw=1.2, ls="--", color="tab:gray", gid="surrogate",
                label=r"clipped surrogate")
        ax.plot(rho, -beta * kl, lw=1.5, ls=":", color="tab:purple", gid="kl_penalty",
                label=r"$-\beta\,k_3$,  $k_3 = 1/\rho + \log\rho - 1$")
        ax.plot(rho, objective, lw=3, color="tab:blue" if A > 0 else "tab:red", gid="objective",
                label=r"objective $= \min(\dots) - \beta k_3$")
        ax.plot([rho[best]], [objective[best]], "o", ms=8, color="k", gid="argmax",
                label=f"largest at ρ = {rho[best]:.2f}")
        ax.axvline(1.0, color="k", lw=0.6)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xlim(*RATIO_XLIM)
        ax.set_ylim(-2.1, 2.1)
        ax.set_xlabel(r"ratio $\rho = \pi_\theta / \pi_{\theta_{old}}$   ($\pi_{ref} = \pi_{\theta_{old}}$)")
        ax.set_title(f"A = {A:+g}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if A > 0 else "upper right", fontsize=8, framealpha=0.9)
    axes[0].set_ylabel("per-token objective (maximised)")
    fig.suptitle(f"surrogate minus KL penalty, β = {beta:.2f}, ε = {epsilon:.2f}", fontsize=11)
    return fig


def kl_estimators(k1: Sequence[float], k3: Sequence[float], exact_kl: float) -> Figure:
    """Two KL estimators on samples o ~ π_θ: k1 = log π_θ/π_ref (can be < 0) and k3 = e^d - d - 1 (>= 0).

    Left: every sample's value against d = log π_ref(o) - log π_θ(o) = -k1, over the curves -d and
    e^d - d - 1. Right: the running mean of each estimator against the number of samples, with the exact
    KL(π_θ ‖ π_ref) as a horizontal line: both means converge to it (both are unbiased).

    Args:
        k1: k1 per sample, (S,).
        k3: k3 per sample, (S,), same samples.
        exact_kl: Σ_o π_θ(o) log(π_θ(o) / π_ref(o)).

    Returns:
        A Figure with two Axes. Right-panel lines carry gids "k1_mean", "k3_mean", "exact_kl".

    Taught in: notebooks/04_the_loss.ipynb
    """
    k1 = np.asarray(k1, dtype=float).reshape(-1)                         # (S,)
    k3 = np.asarray(k3, dtype=float).reshape(-1)                         # (S,)
    if k1.shape != k3.shape or k1.size == 0:
        raise ValueError(f"k1 and k3 must be non-empty and the same length, got {k1.size} and {k3.size}")
    d = -k1                                                              # (S,)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_d, ax_n = fig.subplots(1, 2)

    lim = max(2.0, float(np.abs(d).max()) * 1.1)
    grid = np.linspace(-lim, lim, 200)                                   # (200,)
    ax_d.plot(grid, -grid, color="tab:orange", lw=1.2, label=r"$k_1 = -d$")
    ax_d.plot(grid, np.expm1(grid) - grid, color="tab:blue", lw=1.2, label=r"$k_3 = e^d - d - 1$")
    ax_d.plot(d, k1, "o", color="tab:orange", ms=7, alpha=0.6, gid="k1_samples", label="k1 of the samples")
    ax_d.plot(d, k3, "s", color="tab:blue", ms=7, alpha=0.6, gid="k3_samples", label="k3 of the samples")
    ax_d.axhline(0.0, color="k", lw=0.6)
    ax_d.set_xlim(-lim, lim)
    ax_d.set_ylim(-lim, lim + 1)
    ax_d.set_xlabel(r"$d = \log\pi_{ref}(o) - \log\pi_\theta(o)$")
    ax_d.set_ylabel("per-sample estimate")
    ax_d.set_title("k3 is never negative; k1 is, whenever π_θ(o) < π_ref(o)", fontsize=10)
    ax_d.grid(alpha=0.3)
    ax_d.legend(fontsize=8, loc="upper center")

    n = np.arange(1, k1.size + 1)                                        # (S,)
    ax_n.plot(n, np.cumsum(k1) / n, color="tab:orange", lw=1.5, gid="k1_mean", label="running mean of k1")
    ax_n.plot(n, np.cumsum(k3) / n, color="tab:blue", lw=1.5, gid="k3_mean", label="running mean of k3")
    ax_n.axhline(exact_kl, color="k", ls="--", lw=1.2, gid="exact_kl",
                 label=rf"exact KL$(\pi_\theta \| \pi_{{ref}})$ = {exact_kl:.3f}")
    ax_n.set_xscale("log")
    ax_n.set_xlim(1, k1.size)
    ax_n.set_xlabel("number of sampled tokens")
    ax_n.set_ylabel("estimate of the KL")
    ax_n.set_title("both are unbiased: their means reach the exact KL", fontsize=10)
    ax_n.grid(alpha=0.3)
    ax_n.legend(fontsize=8)
    return fig


def loss_type_token_weights(push: Mapping[str, Sequence[float]], lengths: Sequence[int],
                            A: Sequence[float], first_step_loss: Mapping[str, float] | None = None) -> Figure:
    """Bars of how hard each loss_type pushes each completion, per token and in total.

    `push[loss_type][i]` is -∂loss/∂log π_θ(o_{i,t}) for one token of completion i at the first step
    (ρ = 1, β = 0): the per-token weight w_i times A_i, the same for every token of o_i. Left: that
    per-token push. Middle: the whole completion's push |o_i|·push_i. Right (if given): the loss value
    each loss_type reads at that step.

    Args:
        push: loss_type -> per-token push of each completion, each of length G.
        lengths: |o_i|, G ints.
        A: A_i, G floats (for the labels).
        first_step_loss: loss_type -> loss value at the first step, or None to leave the panel out.

    Returns:
        A Figure with two or three Axes. Bar containers carry the loss_type as label; each bar's height is
        the plotted value (per-token push scaled by 1000 in the left panel, as its y label says).

    Taught in: notebooks/04_the_loss.ipynb
    """
    if not push:
        raise ValueError("push is empty: pass loss_type -> per-token push of each completion")
    lengths = [int(n) for n in lengths]
    A = [float(a) for a in A]
    G = len(lengths)
    if len(A) != G:
        raise ValueError(f"lengths has {G} entries but A has {len(A)}")
    for name, values in push.items():
        if len(values) != G:
            raise ValueError(f"push[{name!r}] has {len(values)} values for G = {G} completions")
    n_panels = 2 if first_step_loss is None else 3
    fig = Figure(figsize=(4.6 * n_panels, 4.0), layout="constrained")
    axes = fig.subplots(1, n_panels, gridspec_kw={"width_ratios": [1.3, 1.3, 1.0][:n_panels]})
    x = np.arange(G)                                                     # (G,)
    width = 0.8 / len(push)
    labels = [f"$o_{i + 1}$: |o| = {n}\nA = {a:g}" for i, (n, a) in enumerate(zip(lengths, A))]
    for k, (name, values) in enumerate(push.items()):
        values = np.asarray(values, dtype=float)                         # (G,)
        color = LOSS_TYPE_COLORS.get(name)
        offset = (k - (len(push) - 1) / 2) * width
        axes[0].bar(x + offset, 1e3 * values, width, color=color, label=name)
        axes[1].bar(x + offset, values * np.asarray(lengths), width, color=color, label=name)
    for ax, ylabel, title in (
        (axes[0], "push on each token  (×10⁻³)", "per token: −∂loss/∂log π_θ(o_t)"),
        (axes[1], "push on the whole completion", "per completion: |o_i| × per-token push"),
    ):
        ax.set_xticks(x, labels)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="loss_type", title_fontsize=8)
    if first_step_loss is not None:
        names = list(first_step_loss)
        values = [float(first_step_loss[n]) for n in names]
        bars = axes[2].bar(names, values, color=[LOSS_TYPE_COLORS.get(n, "0.5") for n in names])
        axes[2].bar_label(bars, fmt="%+.3f", fontsize=8)
        axes[2].axhline(0.0, color="k", lw=0.6)
        axes[2].set_ylabel("loss value")
        axes[2].set_title("what the loss reads at the first step", fontsize=10)
        axes[2].grid(axis="y", alpha=0.3)
    return fig


# --- notebook 05: reading a run (the dashboard of metrics.jsonl, one run or several overlaid) -------------------
@dataclass(frozen=True)
class Panel:
    """One panel of `run_dashboard`: the metrics it draws, what it tells, and what it does not.

    Attributes:
        title: the panel's title.
        keys: the metrics drawn (names of grpo_lib.run.runlog.METRICS, or `rewards/*/mean` for every per-function reward);
            the first is the solid line, the others dashed / dotted.
        tells: what the panel tells you (printed under it).
        misses: what it does not tell you (printed under it).
        ylim: fixed y-limits, or None to let matplotlib choose.
    """

    title: str
    keys: tuple[str, ...]
    tells: str
    misses: str
    ylim: tuple[float, float] | None = None


DASHBOARD_PANELS = (
    Panel("reward (— total, -- per function)", ("reward", "rewards/*/mean"),
          "whether π_θ earns more on its own samples", "held-out accuracy; a reward hack raises it too"),
    Panel("accuracy (sampled batch)", ("accuracy",),
          "share of sampled completions strictly right", "greedy held-out accuracy (eval before / after)", (0.0, 1.0)),
    Panel("loss", ("loss",),
          "at μ = 1 ('grpo' loss) it reads β·KL: the surrogate term averages to 0",
          "progress: it is not what GRPO maximises"),
    Panel("KL(π_θ ‖ π_ref)", ("kl",),
          "how far π_θ moved from π_ref on its own samples", "whether the move is good; 0 when β = 0 (no π_ref)"),
    Panel("grad norm (before clipping)", ("grad_norm",),
          "size of the update signal; spikes come before a collapse", "its direction, or whether it helps"),
    Panel("clip fraction (— region, -- low, : high)",
          ("clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"),
          "how often ρ leaves [1-ε, 1+ε]: 0 at μ = 1, rises with μ", "how far ρ went beyond the clip"),
    Panel("entropy (nats per token)", ("entropy",),
          "how spread the next-token choice is: falling = sharpening", "whether the sharpened answers are right"),
    Panel("completion length |o| (tokens)", ("completions/mean_length",),
          "how long the completions are", "which ones grow: right or wrong (split them)"),
    Panel("zero-std group fraction", ("frac_reward_zero_std",),
          "share of groups whose G rewards are equal: they teach nothing", "why: all right, or all wrong", (0.0, 1.0)),
)
"""the default panels of `run_dashboard`, in reading order (what each tells and does not is printed under it)"""

DASHBOARD_WINDOW = 5
"""steps in the trailing mean that smooths every dashboard curve"""


def smooth(values: Sequence[float | None], window: int = DASHBOARD_WINDOW) -> np.ndarray:
    """Trailing rolling mean: y_t = mean of the finite values among x_{t-window+1} .. x_t (fewer at the start).

    None and NaN are skipped inside a window; a window with no finite value gives NaN. So
    smooth([1, 2, 3, 4], 2) = [1, 1.5, 2.5, 3.5] and smooth([1, nan, 3], 2) = [1, 1, 3].

    Taught in: notebooks/05_full_run.ipynb
    """
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    out = np.full(x.shape, np.nan)
    for t in range(len(x)):
        w = x[max(0, t - window + 1): t + 1]
        w = w[np.isfinite(w)]
        if w.size:
            out[t] = w.mean()
    return out


def _records(run: Any) -> list[dict[str, Any]]:
    """A run as a list of metric records: records as given, or a metrics.jsonl path (or its folder)."""
    import json
    from pathlib import Path

    if isinstance(run, (str, Path)):
        path = Path(run)
        path = path / "metrics.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no metrics.jsonl there (train() writes it into its output_dir)")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    records = list(run)
    if not records or not all(isinstance(r, Mapping) and "step" in r for r in records):
        raise ValueError("a run must be a non-empty list of metric records with a 'step' (metrics.jsonl rows), "
                         "or the path of a metrics.jsonl")
    return records


def _panel_keys(panel: Panel, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics of `panel` this run has, with `rewards/*/mean` expanded to its per-function rewards (sorted)."""
    keys = []
    for key in panel.keys:
        if "*" in key:
            prefix, suffix = key.split("*", 1)
            keys += sorted({k for r in records for k in r
                            if k.startswith(prefix) and k.endswith(suffix) and "/" not in k[len(prefix):len(k) - len(suffix)]})
        elif any(key in r for r in records):
            keys.append(key)
    return keys


def run_dashboard(runs: Any, *, reference: str | None = None, panels: Sequence[Panel] = DASHBOARD_PANELS,
                  window: int = DASHBOARD_WINDOW, title: str | None = None, ncols: int = 3, notes: bool = True,
                  dpi: int = 72) -> Figure:
    """The dashboard of one run, or of several overlaid: one panel per metric, smoothed, raw values faint.

    Every curve is the trailing mean over `window` steps (`smooth`), drawn over the raw per-step values
    (thin, faint). Under each panel: what it tells, and what it does not.

    Args:
        runs: one run (records of metrics.jsonl, or its path) or a mapping label -> run, drawn in order.
        reference: the label of the healthy run to compare with: drawn grey, under the others.
        panels: the panels, in order (default DASHBOARD_PANELS; add e.g. a panel of gallery metrics).
        window: steps of the trailing mean.
        title: the figure's title (default: how the curves are smoothed).
        ncols: panels per row.
        notes: print under each panel what it tells and what it does not (False: just "step", for a figure
            shown after the panels were read once).
        dpi: pixels per inch of the figure (72 keeps a notebook's PNGs near 250 KB).

    Returns:
        A Figure with one Axes per panel, in order. Each drawn line has gid "<label>|<metric>|raw" or
        "<label>|<metric>|smooth"; the raw line's y-data are exactly the run's values (NaN where a record lacks
        the metric), the smooth line's are `smooth(raw, window)`, and both have x-data the run's steps.

    Taught in: notebooks/05_full_run.ipynb
    """
    import textwrap

    if not isinstance(runs, Mapping):
        runs = {"run": runs}
    if not runs:
        raise ValueError("runs is empty: pass a run, or label -> run pairs")
    if reference is not None and reference not in runs:
        raise KeyError(f"reference {reference!r} is not one of the runs {list(runs)}")
    data = {label: _records(run) for label, run in runs.items()}
    order = ([reference] if reference is not None else []) + [k for k in data if k != reference]
    colors, c = {}, 0
    for label in order:
        if label == reference:
            colors[label] = "0.55"
        else:
            colors[label] = f"C{c}"
            c += 1
    last_step = max(r["step"] for recs in data.values() for r in recs)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.4 * nrows) if notes else (4.0 * ncols, 2.7 * nrows), dpi=dpi,
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    styles = ("-", "--", ":", "-.")
    for ax, panel in zip(axes, panels):
        for label in order:
            recs = data[label]
            steps = np.array([r["step"] for r in recs], dtype=float)
            for i, key in enumerate(_panel_keys(panel, recs)):
                raw = np.array([np.nan if r.get(key) is None else r[key] for r in recs], dtype=float)
                ls = styles[min(i, len(styles) - 1)]
                faint = 0.35 if label == reference else 0.25
                (line,) = ax.plot(steps, raw, color=colors[label], lw=0.7, alpha=faint, ls=ls)
                line.set_gid(f"{label}|{key}|raw")
                name = label if i == 0 else f"{label}: {key.split('/')[1] if key.startswith('rewards/') else key}"
                (line,) = ax.plot(steps, smooth(raw, window), color=colors[label], ls=ls,
                                  lw=1.4 if label == reference else 1.8, label=name if len(data) > 1 or i else None)
                line.set_gid(f"{label}|{key}|smooth")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlim(0, last_step)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.grid(alpha=0.3)
        wrap = lambda s: "\n".join(textwrap.wrap(s, 46))
        ax.set_xlabel(f"step\ntells: {wrap(panel.tells)}\nnot: {wrap(panel.misses)}" if notes else "step", fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title or f"thick: trailing mean over {window} steps; thin and faint: each step's value"
                 + (f"; grey: {reference}" if reference is not None else ""), fontsize=11)
    return fig


# --- notebook 05: pass@k and maj@k before and after GRPO -------------------------------------------------------
PASS_MAJ_STYLES = {"pass": ("-", "o", "pass@k"), "maj": ("--", "s", "maj@k")}
"""metric -> (line style, marker, legend name): pass@k solid, maj@k dashed, in every figure."""


def pass_maj_curves_plot(curves: Mapping[str, Mapping[str, Any]], *, title: str | None = None) -> Figure:
    """pass@k (solid) and maj@k (dashed) against k for each model, with their intervals as shaded bands.

    Args:
        curves: model label -> {"k": ks, "pass": means, "maj": means, "pass_ci": (low, high), "maj_ci": (low, high)}
            (what `grpo_lib.course.evaluation.pass_maj_curves` returns), one colour per model in the given order.
        title: axes title.

    Returns:
        A Figure with one Axes: for each model and metric a line (gid "<label> pass@k" / "<label> maj@k") whose
        x-data is k and y-data the means, and a band (gid "<label> pass@k band", ...) from low to high. x is on a
        log2 scale from 1 to the largest k, y fixed to [0, 1].

    Taught in: notebooks/05_full_run.ipynb
    """
    if not curves:
        raise ValueError("curves needs at least one model: {label: pass_maj_curves(...)}")
    fig = Figure(figsize=(6.8, 3.8), layout="constrained")
    ax = fig.add_subplot()
    k_max = 1
    for i, (label, c) in enumerate(curves.items()):
        missing = [key for key in ("k", "pass", "maj", "pass_ci", "maj_ci") if key not in c]
        if missing:
            raise KeyError(f"curves[{label!r}] lacks {missing}: pass the dict grpo_lib.course.evaluation.pass_maj_curves returns")
        k = np.asarray(c["k"], dtype=float)
        k_max = max(k_max, int(k.max()))
        for metric, (ls, marker, name) in PASS_MAJ_STYLES.items():
            mean = np.asarray(c[metric], dtype=float)
            low, high = (np.asarray(v, dtype=float) for v in c[f"{metric}_ci"])
            if not (mean.shape == low.shape == high.shape == k.shape):
                raise ValueError(f"curves[{label!r}]: k, {metric} and {metric}_ci must have one value per k")
            ax.fill_between(k, low, high, color=f"C{i}", alpha=0.15, lw=0, gid=f"{label} {name} band")
            ax.plot(k, mean, ls=ls, marker=marker, ms=3.5, color=f"C{i}", label=f"{label}: {name}",
                    gid=f"{label} {name}")
    ax.set_xscale("log", base=2)
    ticks = [2 ** j for j in range(int(np.log2(k_max)) + 1)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlim=(1, k_max), ylim=(0, 1), xlabel="k (samples per problem)",
           ylabel="accuracy on held-out problems\n(bands: 95% bootstrap CI)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig

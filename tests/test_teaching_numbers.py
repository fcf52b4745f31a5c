"""docs/teaching.md's numbers get the notebooks' check: each is read from a built notebook's output, a committed
run, or recomputed with the library, and must appear in the guide as the guide writes it.

A number in the instructor's guide that no longer matches the notebook beside it misleads exactly the reader who
trusts it; this fails when a notebook, a committed run or the planner changes and the guide was not updated.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "teaching.md").read_text()


def outputs(notebook: str) -> str:
    """Every text output of a built notebook, joined (stream text, and the plain/markdown form of results)."""
    nb = json.loads((ROOT / "notebooks" / notebook).read_text())
    parts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if "text" in out:
                parts.append("".join(out["text"]))
            for kind in ("text/markdown", "text/plain"):
                if kind in out.get("data", {}):
                    parts.append("".join(out["data"][kind]))
    return "\n".join(parts)


def test_live_experiment_3_is_notebook_02s_measurement():
    m = re.search(r"mean accuracy ([\d.]+); flat groups of 8: measured ([\d.]+)%, formula at the mean ([\d.]+)%, "
                  r"formula per question ([\d.]+)%", outputs("02_advantages.ipynb"))
    assert m, "notebook 02 no longer prints its flat-group measurement"
    mean, measured, at_mean, per_q = m.groups()
    assert (f"**{measured} % flat groups measured, {at_mean} % predicted from its mean accuracy {mean}**, "
            f"{per_q} % from its per-question accuracies") in GUIDE
    assert f"mean accuracy {mean}, **{measured} % of groups of 8 flat**, against **{at_mean} %**" in GUIDE


def test_the_tiny_runs_accuracy_is_notebook_05s():
    m = re.search(r"accuracy ([\d.]+)% -> ([\d.]+)% in \d+ s", outputs("05_full_run.ipynb"))
    assert m, "notebook 05 no longer prints the tiny run's accuracy"
    before, after = m.groups()
    assert f"`accuracy {before}% -> {after}%`" in GUIDE
    assert f"held-out strict accuracy {before} % → {after} % in 100 steps" in GUIDE
    assert f"(held-out accuracy {before}% → {after}% in 100 steps)" in GUIDE


def test_gallery_wall_times_are_the_committed_runs():
    seconds = [json.loads(p.read_text())["gallery"]["train_call_seconds"]
               for p in sorted((ROOT / "grpo_lib" / "assets" / "gallery").glob("*/summary.json"))]
    assert len(seconds) == 7
    lo, hi = int(min(seconds) // 60), round(max(seconds) / 60)
    assert f"({lo} to {hi} minutes per run on the loaded 2-core course machine" in GUIDE


def test_gallery_length_run_signs_are_the_committed_runs():
    rows = [json.loads(line) for name in ("long_grpo", "long_dr_grpo")
            for line in (ROOT / "grpo_lib" / "assets" / "gallery" / name / "metrics.jsonl").read_text().splitlines()]
    acc = sum(r["accuracy"] for r in rows) / len(rows)
    fmt = sum(r["rewards/format/mean"] for r in rows) / len(rows)
    assert f"the batch accuracy is under 3% ({acc:.3f} over both runs) and the mean format reward {fmt:.2f} of 0.8" \
        in GUIDE and acc < 0.03


def test_exercise_6_4_uses_the_notebooks_fits_80():
    """The answer's limit is `fits(80)`'s (90% of 80 GiB = 72.0 GiB), and its numbers are the planner's."""
    from grpo_lib.config import GRPOConfig
    from grpo_lib.course.memory import plan_for_run, qwen2_5_1_5b_instruct_config

    qwen, config = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k"), qwen2_5_1_5b_instruct_config()

    def plan(**kw):
        return plan_for_run(qwen, config, prompt_len=256, **{"precision": "pure", **kw})

    def longest_T(ckpt):
        T = 100
        while plan(completion_len=T + 100, gradient_checkpointing=ckpt).fits(80):
            T += 100
        return T

    assert plan().fits(80) == (plan().peak_gib <= 72.0)
    with_ckpt, without = longest_T(True), longest_T(False)
    p = {T: plan(completion_len=T, gradient_checkpointing=c).peak_gib
         for T, c in ((with_ckpt, True), (with_ckpt + 100, True))}
    q = {T: plan(completion_len=T, gradient_checkpointing=False).peak_gib for T in (without, without + 100)}
    G = 12
    while plan(G=G + 1).fits(80):
        G += 1
    assert (f"fits up to `max_completion_length`\n{with_ckpt:,} with gradient checkpointing ({p[with_ckpt]:.1f} GiB; "
            f"{with_ckpt + 100:,} needs {p[with_ckpt + 100]:.1f}) and {without:,} without ({q[without]:.1f} GiB; "
            f"{without + 100:,} needs {q[without + 100]:.1f})") in GUIDE
    assert f"the largest G is {G} ({plan(G=G).peak_gib:.1f} GiB)" in GUIDE
    assert "72.0 GiB" in GUIDE and "67.1 GiB" not in GUIDE
    zero = plan(world_size=8, zero_stage=1).peak_gib
    assert f"peak {plan(world_size=8).peak_gib:.2f} → {zero:.2f} GiB per GPU" in GUIDE


def test_exercise_6_2_numbers_are_the_checkers():
    from grpo_lib.course.exercises.ex06 import decode_seconds_floor

    many = decode_seconds_floor(1_543_714_304, 2, 400, 84, 4.8e12, 256, 28_672)
    one = decode_seconds_floor(1_543_714_304, 2, 400, 1, 4.8e12, 256, 28_672)
    assert 28 * 2 * 2 * 128 * 2 == 28_672                      # Qwen2.5-1.5B: layers × (K, V) × KV heads × d_head × bf16
    assert f"{many:.3f} s for 84 rows, {one:.3f} s for one row" in GUIDE
    assert f"about {20.4 / many:.0f} times the floor" in GUIDE


def test_no_table_is_broken_by_a_blank_line():
    """A markdown table ends at a blank line: a row after one renders as text (the live experiments' row 7 did)."""
    lines = GUIDE.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i >= 2 and lines[i - 1] == "" and not lines[i + 1].startswith("|---") \
                and not lines[i + 1].startswith("| ---"):
            pytest.fail(f"docs/teaching.md line {i + 1} is a table row after a blank line: {line[:60]}")


def test_no_hand_typed_build_timing():
    """The build's timings change with the machine's load: the guide points to the notebook's print instead."""
    assert "took 30 s" not in GUIDE and "303 s" not in GUIDE


def test_exercise_1_6_best_constant_baseline():
    """The worked answer's b*, J and exact variances at both policies, recomputed by enumerating the 81 groups."""
    import itertools

    import torch

    from grpo_lib.toy import ToyPolicy

    r = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    groups = torch.tensor(list(itertools.product(range(3), repeat=4)))
    found = {}
    for theta in ([0.5, 0.0, -0.5], [-1.0, 2.0, -1.0]):
        p = ToyPolicy(theta).probs().detach().double()
        w = p[groups].prod(-1)
        score = torch.nn.functional.one_hot(groups, 3).double() - p

        def var(b):
            values = ((r[groups] - b)[..., None] * score).mean(1)
            mean = (w[:, None] * values).sum(0)
            return float((w[:, None] * (values - mean) ** 2).sum())

        sq = ((torch.eye(3, dtype=torch.float64) - p) ** 2).sum(-1)
        J, b_star = float((p * r).sum()), float((p * r * sq).sum() / (p * sq).sum())
        grid = torch.linspace(b_star - 0.5, b_star + 0.5, 101, dtype=torch.float64)
        assert min(grid.tolist(), key=var) == pytest.approx(b_star, abs=0.01)        # b* is the parabola's vertex
        found[tuple(theta)] = (J, b_star, var(b_star), var(J), var(0.0), float(p[1]))
    J, b_star, v_star, v_J, v_0, _ = found[(0.5, 0.0, -0.5)]
    assert f"this is {b_star:.4f} at θ = [0.5, 0, −0.5] (J = {J:.4f})" in GUIDE
    assert f"{v_star:.4f} at b*, {v_J:.4f} at J ({(v_J / v_star - 1):.1%} apart" in GUIDE
    assert f"{v_0:.4f} at b = 0" in GUIDE
    J, b_star, v_star, v_J, _, p6 = found[(-1.0, 2.0, -1.0)]
    assert f'says "6" {p6:.0%} of the time: J = {J:.4f} but b* = {b_star:.4f}' in GUIDE
    assert f"the variance is {v_star:.4f} at b* against {v_J:.4f} at J, about\n{v_J / v_star:.0f} times less" in GUIDE


def test_the_gallery_answers_are_the_committed_runs():
    """Part 2's answers to notebook 05's gallery questions (6.1, 6.2, 6.4), recomputed from the committed runs."""
    def load(name):
        folder = ROOT / "grpo_lib" / "assets" / "gallery" / name
        return ([json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()],
                json.loads((folder / "summary.json").read_text()))

    def avg(rows, key):
        return sum(m[key] for m in rows) / len(rows)

    (hi, hi_sum), (h, h_sum), (b0, b0_sum), (mu, _) = (load(n) for n in ("lr_high", "healthy", "beta0", "mu4"))
    cut = next(m["step"] for m in hi if m["completions/clipped_ratio"] > 0.5)
    g_max, g_step = max((m["grad_norm"], m["step"]) for m in hi)
    assert (f"at step 2 the batch accuracy is {hi[1]['accuracy']:.2f} ({hi[0]['accuracy']:.2f} at step 1), the KL to "
            f"π_ref {hi[1]['kl']:.1f} (the healthy run reaches {h[-1]['kl']:.3f} in 40 steps), the entropy "
            f"×{hi[1]['entropy'] / hi[0]['entropy']:.0f}") in GUIDE
    assert f"the entropy keeps rising (×{avg(hi[-10:], 'entropy') / hi[0]['entropy']:.0f}) and from step {cut} on" in GUIDE
    assert f"Held-out accuracy {hi_sum['accuracy_before']:.2f} → {hi_sum['accuracy_after']:.2f}. The grad norm spikes " \
           f"({g_max:.1f} at step {g_step})" in GUIDE
    kl_b0, kl_h = avg(b0[-10:], "gallery/kl_to_start"), avg(h[-10:], "gallery/kl_to_start")
    acc_min, acc_step = min((m["accuracy"], m["step"]) for m in b0)
    assert (f"{b0[3]['gallery/kl_to_start']:.3f} by step 4, more than the healthy run reaches in 40 steps "
            f"({max(m['gallery/kl_to_start'] for m in h):.3f} at most), and {kl_b0:.3f} on average over the last 10 "
            f"steps ({kl_b0 / kl_h:.1f}× the healthy run's)") in GUIDE
    assert (f"The grad norm averages {avg(b0, 'grad_norm'):.2f} ({avg(h, 'grad_norm'):.2f} healthy); batch accuracy "
            f"dips to {acc_min:.2f} at step {acc_step} and recovers; held-out {b0_sum['accuracy_before']:.2f} → "
            f"{b0_sum['accuracy_after']:.2f} (healthy {h_sum['accuracy_after']:.2f})") in GUIDE
    clip = [m["clip_ratio/region_mean"] for m in mu]
    assert (f"the clip fraction is {min(clip):.2%}–{max(clip):.2%} of the tokens at every step (mean "
            f"{avg(mu, 'clip_ratio/region_mean'):.2%}) instead of 0, mostly from below "
            f"({avg(mu, 'clip_ratio/low_mean'):.2%} low, {avg(mu, 'clip_ratio/high_mean'):.2%} high)") in GUIDE
    assert (f"({avg(mu[:10], 'clip_ratio/region_mean'):.2%} first 10 steps, {avg(mu[-10:], 'clip_ratio/region_mean'):.2%} "
            f"last 10)") in GUIDE
    assert f"({avg(mu[-10:], 'kl'):.3f} vs {avg(h[-10:], 'kl'):.3f}, last 10 steps)" in GUIDE


def test_exercise_7_answers_in_the_guide_are_the_references():
    """docs/teaching.md's worked answers to 7.1 and 7.2 quote what the checkers' references compute."""
    from grpo_lib.course.exercises.ex07 import ENTROPY_CASES, KL_CASES, entropy_change_pg, offpolicy_kl

    e_k3, e_rho_k3 = offpolicy_kl(*KL_CASES[0][1]).tolist()
    assert f"p_ref = [0.25, 0.75]: ({e_k3:.6f}, {e_rho_k3:.6f}), and KL(π_θ‖π_ref) =" in GUIDE
    assert f"0.5 ln 2 + 0.5 ln(2/3) = {e_rho_k3:.6f}" in GUIDE
    assert f"η = 0.1: −{-entropy_change_pg(*ENTROPY_CASES[0][1]):.7f}" in GUIDE
    assert entropy_change_pg(*ENTROPY_CASES[1][1]) > 0          # "with A = [0, 0, 1] ... the change is positive"

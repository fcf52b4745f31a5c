"""grpo_lib.course.post_r1: the committed post-R1 runs are what the specs and the command make (module docstring).

1. Each cached summary.json holds exactly the configuration its experiment, arm and seed build, every seed is
   there, and each metrics.jsonl has one row per step with the extra metrics.
2. A short regeneration (2 steps, one seed, two experiments) agrees with the cached rows of the first two steps,
   with the gallery test's tolerances (a flipped sampled token may change one completion on another CPU).
3. compare()'s arithmetic: the 95% Student-t interval and the paired differences, on hand-made records.
4. The random reward is seeded, ignores the completions and is 2.0 about half the time.
5. Bad options are refused, naming the option, before any training.
"""
import json
import math

import pytest
import torch

from grpo_lib.advantages import gdpo_advantages, group_advantages
from grpo_lib.course import post_r1
from grpo_lib.course.post_r1 import (EXPERIMENTS, POST_R1_DIR, QUANTITIES, CoinFlipReward, RunRecord,
                                     accuracy_at_budget, compare, compare_runs, distinct_per_group, load_experiment,
                                     plot_experiment, run_folder, t_interval)
from grpo_lib.run.checkpoint import FIELDS_ADDED_LATER, RESUME_MAY_DIFFER

RUNS = [(name, arm) for name, exp in EXPERIMENTS.items() for arm in exp.arms]


def _comparable(config):
    """The config as JSON, without the fields that do not change a run (as tests/test_course_gallery.py)."""
    return {k: v for k, v in json.loads(json.dumps({**FIELDS_ADDED_LATER, **config})).items()
            if k not in RESUME_MAY_DIFFER}


# --- 1. the committed cache ------------------------------------------------------------------------------------
def test_the_experiments_are_the_contract_s_in_order():
    assert list(EXPERIMENTS) == ["gspo", "cispo", "dynamic", "kl", "mismatch", "random_reward", "gdpo", "lora",
                                "clip_higher"]
    for exp in EXPERIMENTS.values():
        assert exp.claim in QUANTITIES and set(exp.also) <= set(QUANTITIES)
        assert len(exp.seeds) >= 3 and len(exp.arms) >= 2
        for arm in exp.arms:
            exp.config(arm, exp.seeds[0])           # every arm is a valid GRPOConfig


@pytest.mark.parametrize("name,arm", RUNS)
def test_the_cached_runs_were_made_by_their_spec(name, arm):
    exp = EXPERIMENTS[name]
    runs = load_experiment(name)[arm]
    assert [r.seed for r in runs] == list(exp.seeds), "a seed is missing: rerun python -m grpo_lib.course.post_r1"
    for run in runs:
        assert _comparable(run.summary["config"]) == _comparable(exp.config(arm, run.seed).to_dict()), \
            f"{name}/{arm}/seed{run.seed}: the spec changed; rerun python -m grpo_lib.course.post_r1 --only {name}"
        p = run.summary["post_r1"]
        assert (p["experiment"], p["arm"], p["seed"], p["reward"]) == (name, arm, run.seed, exp.rewards.get(arm))
        assert run.summary["status"] == "completed"
        assert [r["step"] for r in run.rows] == list(range(1, exp.steps + 1))
        assert all(set(post_r1.EXTRA_METRICS) | set(post_r1.gallery.EXTRA_METRICS) <= set(r) for r in run.rows)
        assert p["train_call_seconds"] > 0 and len(p["loadavg_start"]) == 3
        # without dynamic sampling a step generates N·G completions
        if not run.summary["config"]["dynamic_sampling"]:
            B = run.summary["config"]["N"] * run.summary["config"]["G"]
            assert [r["post_r1/generations"] for r in run.rows] == [B * s for s in range(1, exp.steps + 1)]


def test_every_comparison_of_the_cache_has_all_seeds_and_an_interval_around_its_mean():
    for name, exp in EXPERIMENTS.items():
        runs = load_experiment(name)
        for m in exp.metrics:     # an option's metrics (sampling/*, dynamic_sampling/*) exist only in its arms
            assert m == post_r1.EVAL_METRIC or any(m in rec.rows[0] for recs in runs.values() for rec in recs), \
                f"{name}: no run logs {m}"
        rows = compare(name)
        assert [r["arm"] for r in rows] == [*exp.arms, *(f"{a} - {list(exp.arms)[0]}" for a in list(exp.arms)[1:])]
        for r in rows:
            assert r["n_seeds"] == len(exp.seeds) and r["quantity"] == exp.claim
            assert r["lo"] <= r["mean"] <= r["hi"], (name, r)


def test_the_course_s_rewards_never_collide_in_a_sum_so_both_aggregations_keep_every_distinct_reward():
    """GDPO's argument is that summing first gives two different reward vectors the same advantage. The course's
    correctness (0, 1.5, 2) plus format (0.2 per tag, 4 tags) has 15 pairs and 15 different sums, so summing
    loses nothing here; the runs measure it: in every step of both arms a non-flat group has as many distinct
    advantages as distinct reward vectors (the "no difference" of compare("gdpo"))."""
    from grpo_lib.rewards import CORRECT_EXACT, CORRECT_NUMERIC, FORMAT_PER_TAG, TAGS

    pairs = [(c, round(FORMAT_PER_TAG * k, 10)) for c in (0.0, CORRECT_NUMERIC, CORRECT_EXACT) for k in range(len(TAGS) + 1)]
    assert len(pairs) == 15 and len({round(c + f, 10) for c, f in pairs}) == 15
    for arm, runs in load_experiment("gdpo").items():
        for run in runs:
            for row in run.rows:
                a, v = row["post_r1/distinct_advantages"], row["post_r1/distinct_reward_vectors"]
                assert (math.isnan(a) and math.isnan(v)) or 2 <= a == v, (arm, run.seed, row["step"], a, v)


def test_rho_k3_and_k2_train_alike_at_mu_1():
    """At μ = 1, ρ = 1 in value and ∇(ρ·k3) = k3·∇log π_θ + ∇k3 = (log π_θ - log π_ref)·∇log π_θ = ∇(k2): the same
    gradient, so the two runs sample the same completions and differ only by float rounding."""
    runs = load_experiment("kl")
    assert EXPERIMENTS["kl"].config("k2", 0).mu == 1
    for a, b in zip(runs["rho_k3"], runs["k2"]):
        for x, y in zip(a.rows, b.rows):
            assert x["reward"] == y["reward"] and x["completions/mean_length"] == y["completions/mean_length"]
            assert math.isclose(x["grad_norm"], y["grad_norm"], rel_tol=1e-4), (a.seed, x["step"])
    k3 = runs["k3"][0].rows
    assert any(x["grad_norm"] != y["grad_norm"] for x, y in zip(k3, runs["k2"][0].rows))   # k3 is another gradient


def test_the_lora_runs_count_their_trainable_parameters_and_measure_their_memory():
    """LoRA's trainable count is r·(d_in + d_out) summed over its target Linear layers, counted here on the model."""
    from grpo_lib.models import load_tiny_model

    model, _ = load_tiny_model()
    exp = EXPERIMENTS["lora"]
    cfg = exp.config("lora", 0)
    expected = sum(cfg.lora_r * (m.in_features + m.out_features) for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in cfg.lora_target_modules)
    runs = load_experiment("lora")
    for run in runs["lora"]:
        assert run.summary["post_r1"]["trainable_params"] == expected
    for run in runs["full"]:
        assert run.summary["post_r1"]["trainable_params"] == run.summary["parameters"]
    for arm in runs.values():
        for run in arm:
            p = run.summary["post_r1"]
            assert p["fresh_process"] and 0 < p["maxrss_start_bytes"] <= p["maxrss_after_load_bytes"] <= p["maxrss_end_bytes"]
            # the peak is this process image's own: before torch is imported it is tens of MiB, not the parent's
            # (getrusage's ru_maxrss, carried over through fork and exec, read 758 MiB there)
            assert p["maxrss_start_bytes"] < 100 * 2**20 < p["maxrss_after_load_bytes"]
    other = load_experiment("gdpo")["sum_then_normalize"][0].summary["post_r1"]
    assert other["maxrss_end_bytes"] is None       # a run in a shared process records no memory (choice 3)


def test_plot_experiment_draws_one_panel_per_metric():
    for name, exp in EXPERIMENTS.items():
        fig = plot_experiment(name)
        assert len(fig.axes) == len(exp.metrics) and [ax.get_title() for ax in fig.axes] == list(exp.metrics)
        runs = load_experiment(name)
        for ax, metric in zip(fig.axes, exp.metrics):   # one curve per arm that logs the metric
            assert len(ax.lines) == sum(metric == post_r1.EVAL_METRIC or any(metric in row for row in recs[0].rows)
                                        for recs in runs.values())


def test_the_evaluations_are_placed_at_their_step_or_their_generations():
    run = RunRecord("dynamic", 0, rows=[{"step": s, "post_r1/generations": g} for s, g in ((1, 384), (2, 640))],
                    summary={"post_r1": {"evals": [{"step": 0, "strict_accuracy": 0.5}, {"step": 2, "strict_accuracy": 0.7}]}})
    assert run.eval_points() == ([0.0, 2.0], [0.5, 0.7])
    assert run.eval_points("post_r1/generations") == ([0.0, 640.0], [0.5, 0.7])
    plain = load_experiment("dynamic")["plain"][0]
    xs, ys = plain.eval_points("post_r1/generations")     # every 2 steps of N·G = 128 generations, before included
    assert xs == [256.0 * k for k in range(7)] and ys[0] == plain.summary["accuracy_before"] \
        and ys[-1] == plain.summary["accuracy_after"]


def test_load_experiment_names_the_command_when_the_cache_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m grpo_lib.course.post_r1 --only gspo --out"):
        load_experiment("gspo", tmp_path)
    with pytest.raises(KeyError, match="no post-R1 experiment"):
        load_experiment("nope")


# --- 2. a short regeneration agrees with the cache ---------------------------------------------------------------
SAMPLED = ("reward", "accuracy", "frac_reward_zero_std", "completions/mean_length", "post_r1/distinct_advantages",
           "post_r1/distinct_reward_vectors")
CONTINUOUS = ("loss", "kl", "grad_norm", "entropy", "clip_ratio/region_mean", "ratio_mean", "gallery/kl_to_start")


def _close(a, b, rel, abs_):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@pytest.mark.slow
@pytest.mark.trains
def test_a_short_regeneration_agrees_with_the_cache(tmp_path, capsys):
    """Two steps of gdpo (both arms) and random_reward (its real arm is the same run, copied; the random arm is
    the seeded coin), seed 0, made by the command, against the committed rows."""
    assert post_r1.main(["--only", "gdpo,random_reward", "--steps", "2", "--seeds", "1", "--eval-n", "1",
                         "--out", str(tmp_path)]) == 0
    assert "random_reward/real/seed0: the same run as gdpo/sum_then_normalize/seed0 (copied)" in capsys.readouterr().out
    problems = []
    for name in ("gdpo", "random_reward"):
        exp = EXPERIMENTS[name]
        cached, fresh = load_experiment(name), load_experiment(name, tmp_path)
        for arm in exp.arms:
            cfg = exp.config(arm, 0)
            B, N = cfg.B, cfg.N
            tolerance = {"reward": 2 * 2.8 / B, "accuracy": 2 / B, "frac_reward_zero_std": 2 / N,
                         "completions/mean_length": 2 * cfg.max_completion_length / B,
                         "post_r1/distinct_advantages": 2.0, "post_r1/distinct_reward_vectors": 2.0}
            for old, new in zip(cached[arm][0].rows[:2], fresh[arm][0].rows):
                same = all(_close(old[k], new[k], 0.0, 0.0) for k in SAMPLED)
                for k in SAMPLED:
                    if not _close(old[k], new[k], 0.0, tolerance[k]):
                        problems.append(f"{name}/{arm} step {old['step']} {k}: cached {old[k]}, now {new[k]}")
                for k in CONTINUOUS if same else ():
                    if not _close(old[k], new[k], 1e-3, 1e-7):
                        problems.append(f"{name}/{arm} step {old['step']} {k}: cached {old[k]}, now {new[k]} (same samples)")
    assert not problems, "the committed runs do not match the command; rerun python -m grpo_lib.course.post_r1:\n" \
        + "\n".join(problems)


# --- 3. compare()'s arithmetic ---------------------------------------------------------------------------------
def _record(arm, seed, after, before=0.5):
    return RunRecord(arm, seed, rows=[], summary={"accuracy_after": after, "accuracy_before": before})


def test_t_interval_is_mean_plus_minus_t_s_over_root_n():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])          # s = 1, t(0.975, 2) = 4.302653, half = 4.302653 / √3
    assert mean == 2.0 and lo == pytest.approx(2 - 2.484138, abs=1e-6) and hi == pytest.approx(2 + 2.484138, abs=1e-6)
    mean, lo, hi = t_interval([0.1, 0.2])                # s = 0.0707107, t(0.975, 1) = 12.7062, half = 0.635310
    assert mean == pytest.approx(0.15) and hi - mean == pytest.approx(0.635310, abs=1e-6)
    mean, lo, hi = t_interval([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="1 to 21 values"):
        t_interval([])


def test_compare_gives_each_arm_and_the_paired_difference_to_the_first():
    runs = {"A": [_record("A", 0, 0.5), _record("A", 1, 0.6), _record("A", 2, 0.7)],
            "B": [_record("B", 0, 0.6), _record("B", 1, 0.8), _record("B", 2, 0.7)]}
    rows = compare_runs(runs, "eval_accuracy_end")
    assert [r["arm"] for r in rows] == ["A", "B", "B - A"] and all(r["n_seeds"] == 3 for r in rows)
    assert rows[0]["mean"] == pytest.approx(0.6) and rows[0]["hi"] - 0.6 == pytest.approx(0.248414, abs=1e-6)
    # differences by seed: 0.1, 0.2, 0.0 -> mean 0.1, s = 0.1, half = 4.302653 · 0.1 / √3 = 0.248414
    assert rows[2]["mean"] == pytest.approx(0.1) and rows[2]["lo"] == pytest.approx(0.1 - 0.248414, abs=1e-6)
    # unpaired seeds are left out of the difference: B lacks seed 2 -> differences 0.1, 0.2
    runs["B"] = runs["B"][:2]
    diff = compare_runs(runs, "eval_accuracy_change")[2]
    assert diff["n_seeds"] == 2 and diff["mean"] == pytest.approx(0.15) and diff["hi"] == pytest.approx(0.785310, abs=1e-6)
    with pytest.raises(KeyError, match="no quantity"):
        compare_runs(runs, "nope")


def test_accuracy_at_budget_takes_the_last_evaluation_within_steps_n_g_generations():
    run = RunRecord("dynamic", 0, rows=[{"step": s, "post_r1/generations": g} for s, g in ((1, 8), (2, 12), (3, 16))],
                    summary={"config": {"N": 2, "G": 2}, "post_r1": {"evals": [
                        {"step": 0, "strict_accuracy": 0.1}, {"step": 1, "strict_accuracy": 0.2},
                        {"step": 2, "strict_accuracy": 0.3}, {"step": 3, "strict_accuracy": 0.4}]}})
    assert accuracy_at_budget(run) == 0.3                 # budget 3·2·2 = 12 generations: reached at step 2


def test_distinct_per_group_shows_where_summing_rewards_merges_advantages():
    """Group 1's reward vectors (1, 0), (0, 1), (0, 1), (0, 0) have totals 1, 1, 1, 0: summing first gives two
    advantages; GDPO normalises a (std 0.5) and b (std 0.577) apart, so (1, 0) and (0, 1) get two, three in all."""
    per_func = {"a": torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
                "b": torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])}   # group 2 is flat
    summed = group_advantages((per_func["a"] + per_func["b"]).view(2, 4)).reshape(-1)
    gdpo = gdpo_advantages(torch.stack([per_func["a"].view(2, 4), per_func["b"].view(2, 4)]))
    assert distinct_per_group(summed, per_func, G=4) == (2.0, 3.0)
    assert distinct_per_group(gdpo.reshape(-1), per_func, G=4) == (3.0, 3.0)
    assert all(math.isnan(v) for v in distinct_per_group(torch.zeros(4), {"a": torch.ones(4)}, G=4))


# --- 4. the random reward ----------------------------------------------------------------------------------------
def test_the_coin_flip_reward_is_seeded_ignores_the_completions_and_is_fair():
    texts = [[{"content": f"<answer>{i}</answer>"}] for i in range(100)]
    a, b = CoinFlipReward(7), CoinFlipReward(7)
    first = a(None, texts, ["3"] * 100)
    assert first == b(None, [[{"content": ""}]] * 100, ["9"] * 100)   # the same seed, other completions: same flips
    assert set(first) == {0.0, 2.0} and first != CoinFlipReward(8)(None, texts, ["3"] * 100)
    flips = [v for _ in range(100) for v in a(None, texts, ["3"] * 100)]
    assert abs(sum(v == 2.0 for v in flips) / len(flips) - 0.5) < 0.02    # 10,000 flips: 4 standard errors


# --- 5. bad options --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv,option", [(["--only", "gspo,nope"], "--only: unknown experiment"),
                                         (["--only", ","], "--only"),
                                         (["--steps", "0"], "--steps must be >= 1"),
                                         (["--seeds", "0"], "--seeds must be >= 1"),
                                         (["--eval-n", "0"], "--eval-n must be >= 1")])
def test_bad_options_are_refused_naming_the_option_before_any_training(argv, option, monkeypatch, capsys, tmp_path):
    def no_training(*args, **kwargs):
        raise AssertionError("a run started")
    monkeypatch.setattr(post_r1, "run_arm", no_training)
    monkeypatch.setattr(post_r1, "run_arm_fresh", no_training)
    with pytest.raises(SystemExit) as exit_:
        post_r1.main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and option in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_run_folders_are_experiment_arm_seed():
    assert run_folder(POST_R1_DIR, "kl", "k2", 1) == POST_R1_DIR / "kl" / "k2" / "seed1"


def test_the_chosen_starts_are_what_the_experiments_need():
    """dynamic: about half the groups are flat in the plain arm (choice 5); mismatch: the noisy sampler's log-probs
    differ from the policy's by far more than a bf16 copy's ~0.002 (choice 8), in every seed."""
    for run in load_experiment("dynamic")["plain"]:
        flat = run.series("frac_reward_zero_std")
        assert sum(flat) / len(flat) >= 0.4 and flat[0] >= 0.3, (run.seed, flat)
    for arm in ("perturbed", "corrected"):
        for run in load_experiment("mismatch")[arm]:
            assert min(run.series("sampling/sampling_logp_difference/mean")) > 0.02, (arm, run.seed)
    assert all("sampling/sampling_logp_difference/mean" not in row for row in load_experiment("mismatch")["exact"][0].rows)

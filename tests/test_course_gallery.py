"""grpo_lib.course.gallery: the committed gallery runs are what the specs and the command make.

1. Each cached summary.json holds exactly the configuration its spec builds (a changed spec fails here until
   `python -m grpo_lib.course.gallery` is rerun), and each metrics.jsonl has one row per step.
2. The first two steps of every run, regenerated now, agree with the cached rows. What may legitimately differ
   on another machine: float rounding (another CPU's kernels), which can flip a sampled token of one of the
   128 completions and so change that completion. So the sampled quantities (reward, accuracy, lengths,
   zero-std fraction) may differ by at most two completions' worth; when they agree exactly (nothing flipped),
   the continuous ones (loss, KL, grad norm, entropy, ...) must agree to 1e-3 relative. A changed engine
   (another loss, another update) moves step 2's grad norm and KL far more than that.
"""
import json
import math

import pytest

from grpo_lib.course import gallery
from grpo_lib.course.gallery import GALLERY_DIR, SPECS, config_diff, load_run, r1_strict_reward, run_spec
from grpo_lib.run.checkpoint import FIELDS_ADDED_LATER, RESUME_MAY_DIFFER

SAMPLED = ("reward", "accuracy", "frac_reward_zero_std", "completions/mean_length", "gallery/length_wrong",
           "gallery/length_right")
CONTINUOUS = ("loss", "kl", "grad_norm", "entropy", "clip_ratio/region_mean", "ratio_mean", "gallery/kl_to_start")


def test_r1_strict_reward_needs_the_think_tags_and_the_right_answer():
    good = "<think>7+5=12,4+8+1=13</think>\n<answer>132</answer>"
    texts = [good, good.replace("132", "122"), "<reasoning>7+5=12,4+8+1=13</reasoning>\n<answer>132</answer>",
             good + " more", "<think></think><answer>132</answer>"]
    assert r1_strict_reward(None, [[{"content": t}] for t in texts], ["132"] * 5) == [2.0, 0.0, 0.0, 0.0, 0.0]


def test_config_diff_lists_exactly_the_overrides():
    assert config_diff("lr_high") == {"lr": (5e-5, 2e-3)}
    assert config_diff("healthy") == {}
    # train(reward_funcs=...) replaces the config's reward_funcs, so the diff shows the functions that ran
    assert config_diff("r1_tags") == {"reward functions": ("correctness + format", "r1_strict")}
    assert config_diff("long_grpo") == {"loss_type": ("dr_grpo", "grpo")}          # against its own reference


def test_load_run_names_the_command_when_the_cache_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m grpo_lib.course.gallery --only mu4"):
        load_run("mu4", tmp_path)
    with pytest.raises(KeyError, match="no gallery run"):
        load_run("nope")


@pytest.mark.parametrize("name", list(SPECS))
def test_the_cached_run_was_made_by_its_spec(name):
    run = load_run(name)
    # the fields a resumed run may change (output_dir, num_threads, ...) do not change the training: not compared
    spec_config = {k: v for k, v in json.loads(json.dumps(SPECS[name].config("x").to_dict())).items()
                   if k not in RESUME_MAY_DIFFER}
    # a field added to the config after the run counts as the default it ran with (as for a checkpoint's resume)
    ran_with = {k: v for k, v in json.loads(json.dumps({**FIELDS_ADDED_LATER, **run["summary"]["config"]})).items()
                if k not in RESUME_MAY_DIFFER}                                       # tuples as JSON lists
    assert ran_with == spec_config, f"{name}: the spec changed; rerun python -m grpo_lib.course.gallery"
    assert run["summary"]["gallery"]["reward"] == SPECS[name].reward and run["summary"]["status"] == "completed"
    assert [r["step"] for r in run["metrics"]] == list(range(1, gallery.COMMON["steps"] + 1))
    assert all(set(gallery.EXTRA_METRICS) <= set(r) for r in run["metrics"])


@pytest.mark.parametrize("name", [n for n in SPECS if SPECS[n].config("x").beta > 0 and SPECS[n].config("x").mu == 1])
def test_kl_to_start_is_the_engine_kl_when_pi_ref_is_the_start(name):
    """The callback's KL (choice 2) is what the engine logs as `kl` while π_ref is the starting model and μ = 1
    (with μ > 1 the engine averages its kl over the μ updates, the callback measures the policy before the first)."""
    for row in load_run(name)["metrics"]:
        assert math.isclose(row["gallery/kl_to_start"], row["kl"], rel_tol=1e-3, abs_tol=1e-7), (name, row["step"])


def _close(a, b, rel, abs_):
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return a is b or (isinstance(b, float) and math.isnan(b))
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


@pytest.mark.slow
def test_a_short_regeneration_agrees_with_the_cache(tmp_path):
    """Two steps of every run, made now with the command's code, against the committed rows (module docstring)."""
    problems = []
    for name, spec in SPECS.items():
        cached = load_run(name)["metrics"][:2]
        fresh = run_spec(spec, tmp_path / name, steps=2, eval_n=1)["metrics"]
        cfg = spec.config("x")
        B, N = cfg.B, cfg.N
        max_reward = 2.0 + 0.8 if spec.reward is None else 2.0
        tolerance = {"reward": 2 * max_reward / B, "accuracy": 2 / B, "frac_reward_zero_std": 2 / N,
                     "completions/mean_length": 2 * cfg.max_completion_length / B,
                     "gallery/length_wrong": 2 * cfg.max_completion_length / 2, "gallery/length_right": cfg.max_completion_length}
        for old, new in zip(cached, fresh):
            same_samples = all(old[k] == new[k] or (math.isnan(old[k]) and math.isnan(new[k])) for k in SAMPLED)
            for k in SAMPLED:
                if not _close(old[k], new[k], 0.0, tolerance[k]):
                    problems.append(f"{name} step {old['step']} {k}: cached {old[k]}, now {new[k]}")
            for k in CONTINUOUS if same_samples else ():
                if not _close(old[k], new[k], 1e-3, 1e-7):
                    problems.append(f"{name} step {old['step']} {k}: cached {old[k]}, now {new[k]} (same samples)")
    assert not problems, "the committed gallery does not match the command; rerun python -m grpo_lib.course.gallery:\n" \
        + "\n".join(problems)

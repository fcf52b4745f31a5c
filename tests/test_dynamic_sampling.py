"""DAPO's dynamic sampling (grpo_lib.dynamic_sampling): which groups are kept, how many draws, the padding of a
batch made of several draws, the lock-step rule under torchrun, and the options refused before anything loads.

Hand-built draws (rewards chosen per group) test the loop itself; one short training run checks the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from grpo_lib import dynamic_sampling as ds
from grpo_lib.config import GRPOConfig
from grpo_lib.data import load_problems, prompts_for_step
from grpo_lib.dynamic_sampling import (Draw, draw_problems, draw_seed, informative_groups, sample_groups,
                                       select_groups)
from grpo_lib.rollout import Rollout, score_rollout

G = 4


def fake_draw(tag: str, groups: list[list[float]], P: int = 3, T: int = 2, seconds: float = 1.0,
              fmt: list[list[float]] | None = None) -> Draw:
    """A Draw whose group n has rewards groups[n]; every id says which draw, group and row it came from."""
    N = len(groups)
    B = N * G
    base = 1000 * (ord(tag[-1]) - ord("0") + 1)
    prompt_ids = torch.tensor([[base + n] * P for n in range(N) for _ in range(G)])
    completion_ids = torch.tensor([[base + 100 + i] * T for i in range(B)])
    rollout = Rollout(prompts=[f"{tag}-q{n}" for n in range(N)], prompt_ids=prompt_ids,
                      prompt_mask=torch.ones(B, P, dtype=torch.long), completion_ids=completion_ids,
                      completion_mask=torch.ones(B, T, dtype=torch.long),
                      texts=[f"{tag}-{i // G}-{i % G}" for i in range(B)], G=G, eos_token_id=1,
                      generation_seconds=seconds, pad_token_id=0)
    r = torch.tensor(groups, dtype=torch.float32).reshape(-1)
    f = torch.zeros(B) if fmt is None else torch.tensor(fmt, dtype=torch.float32).reshape(-1)
    return Draw(rollout=rollout, answers=[f"{tag}-a{n}" for n in range(N)], rewards=r + f,
                rewards_per_func={"correctness": r, "format": f})


FLAT, MIXED = [0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]


def scripted(draws: list[Draw]):
    calls = []

    def draw(d: int) -> Draw:
        calls.append(d)
        return draws[d]
    return draw, calls


# --- which groups are informative --------------------------------------------------------------------------------
def test_a_group_is_informative_when_its_rewards_are_not_all_equal():
    r = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, 2, 2, 2, 2, 0, 0, 0, 1.0])
    assert informative_groups(r, G).tolist() == [False, True, False, True]
    # all correct and all wrong alike are flat (DAPO's 0 < #correct < G); a float-rounding difference is not flat
    assert informative_groups(torch.tensor([2.0] * 4 + [0.0] * 4 + [2.0, 2.0, 2.0, 2.0 + 1e-6]), G).tolist() == \
        [False, False, True]


def test_with_the_format_reward_an_all_wrong_group_that_differs_in_format_is_kept():
    d = fake_draw("d0", [FLAT, FLAT], fmt=[[0.2, 0.2, 0.2, 0.2], [0.4, 0.2, 0.2, 0.2]])
    assert informative_groups(d.rewards, G, d.rewards_per_func).tolist() == [False, True]


def test_gdpo_keeps_a_group_whose_functions_trade_off_to_a_flat_total():
    correctness, fmt = [[2.0, 0.0, 2.0, 0.0]], [[0.0, 2.0, 0.0, 2.0]]
    d = fake_draw("d0", correctness, fmt=fmt)
    assert d.rewards.tolist() == [2.0] * 4                                    # the total is flat
    assert informative_groups(d.rewards, G, d.rewards_per_func, "sum_then_normalize").tolist() == [False]
    assert informative_groups(d.rewards, G, d.rewards_per_func, "normalize_then_sum").tolist() == [True]
    with pytest.raises(ValueError, match="whole groups"):
        informative_groups(torch.zeros(6), G)


# --- the loop ----------------------------------------------------------------------------------------------------
def test_two_flat_groups_out_of_four_need_exactly_one_more_draw():
    d0 = fake_draw("d0", [MIXED, FLAT, MIXED, FLAT])
    d1 = fake_draw("d1", [FLAT, MIXED, MIXED, MIXED], P=5, T=4)
    d2 = fake_draw("d2", [MIXED] * 4)
    draw, calls = scripted([d0, d1, d2])
    batch, m = sample_groups(draw, 4, max_draws=10)
    assert calls == [0, 1]
    assert batch.rollout.prompts == ["d0-q0", "d0-q2", "d1-q1", "d1-q2"]       # d0's informative, then d1's
    assert batch.answers == ["d0-a0", "d0-a2", "d1-a1", "d1-a2"]
    assert informative_groups(batch.rewards, G).all()
    assert m == {"dynamic_sampling/draws": 2.0, "dynamic_sampling/generations": 32.0,
                 "dynamic_sampling/extra_generations": 16.0, "dynamic_sampling/informative_groups": 5.0,
                 "dynamic_sampling/flat_groups": 0.0}
    assert set(m) == set(ds.METRICS)
    assert batch.rollout.generation_seconds == 2.0                             # both draws' generation time


def test_the_cap_fills_the_batch_with_the_first_flat_groups_and_says_how_many():
    d0 = fake_draw("d0", [FLAT, MIXED, FLAT, FLAT])
    d1 = fake_draw("d1", [FLAT, FLAT, FLAT, FLAT])
    d2 = fake_draw("d2", [FLAT, FLAT, MIXED, FLAT])
    draw, calls = scripted([d0, d1, d2])
    batch, m = sample_groups(draw, 4, max_draws=3)
    assert calls == [0, 1, 2]                                                  # the cap: 3 draws, the first included
    assert batch.rollout.prompts == ["d0-q1", "d2-q2", "d0-q0", "d0-q2"]       # informative first, then flat in order
    assert (m["dynamic_sampling/draws"], m["dynamic_sampling/flat_groups"], m["dynamic_sampling/extra_generations"],
            m["dynamic_sampling/informative_groups"]) == (3.0, 2.0, 32.0, 2.0)


def test_a_draw_that_is_all_informative_is_the_batch_itself():
    d0 = fake_draw("d0", [MIXED] * 3)
    draw, calls = scripted([d0])
    batch, m = sample_groups(draw, 3, max_draws=10)
    assert batch is d0 and calls == [0]
    assert m["dynamic_sampling/draws"] == 1.0 and m["dynamic_sampling/extra_generations"] == 0.0


def test_off_is_one_draw_unchanged_and_no_metrics():
    d0 = fake_draw("d0", [FLAT, MIXED, FLAT])
    draw, calls = scripted([d0])
    batch, m = sample_groups(draw, 3, max_draws=1)
    assert batch is d0 and m == {} and calls == [0]
    with pytest.raises(ValueError, match="max_draws must be >= 1"):
        sample_groups(draw, 3, max_draws=0)


def test_ranks_stay_in_lock_step_a_full_rank_waits_without_generating(monkeypatch):
    """Under torchrun the decision is the missing groups summed over the ranks (one all-reduce per draw). Here the
    other rank (simulated) still misses groups after draws 0 and 1: this rank, full after draw 0, joins both
    all-reduces without generating, and both ranks count the same 3 draws."""
    other_missing = iter([2.0, 1.0, 0.0])
    reduced = []

    def all_reduce_sum(x):
        reduced.append(x.item())
        return x + next(other_missing)
    monkeypatch.setattr(ds.dist, "all_reduce_sum", all_reduce_sum)
    draw, calls = scripted([fake_draw("d0", [MIXED, MIXED])])
    batch, m = sample_groups(draw, 2, max_draws=10)
    assert calls == [0] and reduced == [0.0, 0.0, 0.0]
    assert m["dynamic_sampling/draws"] == 3.0 and m["dynamic_sampling/generations"] == 8.0   # this rank's 8


def _lock_step_worker(rank: int, port: int, tmp: str) -> None:
    """One of 2 gloo ranks: rank 0 is full after its first draw, rank 1 needs two more (1 informative group each)."""
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)
    ds.dist.init_distributed("cpu", timeout_minutes=2)
    plan = {0: [[MIXED, MIXED]], 1: [[FLAT, FLAT], [FLAT, MIXED], [MIXED, FLAT]]}[rank]
    draw, calls = scripted([fake_draw(f"d{d}", groups) for d, groups in enumerate(plan)])
    batch, metrics = sample_groups(draw, 2, max_draws=5)
    torch.save({"calls": calls, "metrics": metrics, "prompts": batch.rollout.prompts}, f"{tmp}/rank{rank}.pt")
    ds.dist.cleanup(barrier=True)


def test_two_gloo_ranks_make_the_same_number_of_draws(tmp_path):
    """The real all-reduce of choice 4 (2 spawned CPU processes, gloo): no rank waits in a collective the other
    never reaches, and both count 3 draws although rank 0 generated once."""
    from test_ddp import spawn

    spawn(_lock_step_worker, tmp_path, timeout=120.0)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert out[0]["calls"] == [0] and out[1]["calls"] == [0, 1, 2]
    assert out[0]["prompts"] == ["d0-q0", "d0-q1"] and out[1]["prompts"] == ["d1-q1", "d2-q0"]
    for rank in out:                                     # the metrics are the same on both ranks, summed over them
        assert rank["metrics"] == {"dynamic_sampling/draws": 3.0, "dynamic_sampling/generations": 32.0,
                                   "dynamic_sampling/extra_generations": 16.0,
                                   "dynamic_sampling/informative_groups": 4.0, "dynamic_sampling/flat_groups": 0.0}


# --- one batch from several draws --------------------------------------------------------------------------------
def test_groups_from_draws_of_other_widths_are_padded_with_mask_zero():
    d0 = fake_draw("d0", [MIXED, FLAT], P=3, T=2)
    d1 = fake_draw("d1", [MIXED, MIXED], P=5, T=4)
    d1.rollout.completion_mask[G:2 * G, 3] = 0                                 # group 1 stopped a token earlier
    out = select_groups([d0, d1], [(1, 1), (0, 0)])
    ro = out.rollout
    assert ro.prompt_ids.shape == (2 * G, 5) and ro.completion_ids.shape == (2 * G, 4)
    assert torch.equal(ro.prompt_ids[:G], d1.rollout.prompt_ids[G:])            # the widest prompt: as it was
    assert torch.equal(ro.prompt_ids[G:, 2:], d0.rollout.prompt_ids[:G])        # left-padded by 2 ...
    assert (ro.prompt_ids[G:, :2] == 0).all() and (ro.prompt_mask[G:, :2] == 0).all()   # ... with pad and mask 0
    assert torch.equal(ro.completion_ids[G:, :2], d0.rollout.completion_ids[:G])   # right-padded by 2
    assert (ro.completion_mask[G:, 2:] == 0).all() and (ro.completion_mask[:G, 3] == 0).all()
    assert ro.completion_lengths.tolist() == [3] * G + [2] * G                  # masks carried, never recomputed
    assert ro.texts == d1.rollout.texts[G:] + d0.rollout.texts[:G]
    assert torch.equal(out.rewards, torch.cat([d1.rewards[G:], d0.rewards[:G]]))
    assert torch.equal(out.rewards_per_func["format"], torch.cat([d1.rewards_per_func["format"][G:],
                                                                  d0.rewards_per_func["format"][:G]]))
    assert ro.G == G and ro.pad_token_id == 0 and ro.generation_seconds == 2.0


def test_score_rollout_takes_the_draw_s_rewards_without_calling_the_functions_again():
    d = fake_draw("d0", [MIXED, FLAT])

    def must_not_run(**kwargs):
        raise AssertionError("the reward function was called a second time")
    batch = score_rollout(d.rollout, d.answers, {"correctness": must_not_run, "format": must_not_run},
                          scores=d.scores)
    assert torch.equal(batch.rewards, d.rewards)
    assert batch.advantages[:G].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-3)   # (r - 0.5) / (1 + 1e-4)
    assert batch.advantages[G:].tolist() == [0.0] * G


# --- prompts and seeds of the extra draws ------------------------------------------------------------------------
def test_draw_zero_is_the_step_s_prompts_and_extra_draws_come_from_a_second_stream():
    problems = [{"question": f"q{i}", "answer": str(i)} for i in range(50)]
    for step in range(3):
        assert draw_problems(problems, step, 0, 4, 7, 0, 1, 5) == prompts_for_step(problems, step, 4, 7, 0, 1)
    extra = {(s, d): [p["question"] for p in draw_problems(problems, s, d, 4, 7, 0, 1, 5)]
             for s in range(3) for d in range(1, 5)}
    assert extra[(1, 2)] == [p["question"] for p in prompts_for_step(problems, 1 * 4 + 1, 4, 8, 0, 1)]
    positions = {(s * 4 + d - 1) for s, d in extra}
    assert len(positions) == len(extra) == 12                                  # no two (step, draw) share a place
    assert draw_problems(problems, 2, 3, 4, 7, 0, 1, 5) == draw_problems(problems, 2, 3, 4, 7, 0, 1, 5)
    with pytest.raises(ValueError, match="draw must be in"):
        draw_problems(problems, 0, 5, 4, 7, 0, 1, 5)
    assert draw_seed(123, 0) == 123 and draw_seed(123, 2) == 123 + 2 * ds.EXTRA_DRAW_SEED_STRIDE


# --- bad input, refused before anything loads --------------------------------------------------------------------
@pytest.mark.parametrize("overrides, names", [
    (dict(dynamic_sampling=True, dynamic_sampling_max_draws=1), ["dynamic_sampling=True", "dynamic_sampling_max_draws=1"]),
    (dict(dynamic_sampling=True, dynamic_sampling_max_draws=0), ["dynamic_sampling_max_draws must be >= 1"]),
    (dict(dynamic_sampling_max_draws=4), ["dynamic_sampling_max_draws=4", "no effect", "--dynamic-sampling"]),
])
def test_a_cap_that_cannot_fill_the_batch_is_refused_naming_the_options(overrides, names):
    with pytest.raises(ValueError) as err:
        GRPOConfig.tiny(**overrides)
    for name in names:
        assert name in str(err.value)
    assert GRPOConfig.tiny(dynamic_sampling=True, dynamic_sampling_max_draws=2).dynamic_sampling_max_draws == 2


# --- a run ------------------------------------------------------------------------------------------------------
def test_a_run_with_flat_rewards_draws_to_the_cap_every_step_and_logs_it(tmp_path):
    from transformers import Qwen2ForCausalLM

    from grpo_lib.models import tiny_qwen2_config
    from grpo_lib.tokenizer import build_char_tokenizer
    from grpo_lib.train import train

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))
    cfg = GRPOConfig.tiny(steps=2, N=2, G=4, eval_n=2, max_completion_length=8, report_to="none", progress=False,
                          output_dir=str(tmp_path / "run"), beta=0.0, dynamic_sampling=True,
                          dynamic_sampling_max_draws=3)
    seen = []
    result = train(cfg, model=model, tokenizer=tok, reward_funcs={"flat": lambda completions, **kw: [1.0] * len(completions)},
                   callback=lambda rec, batch: seen.append(batch.rollout.prompts))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for rec in records:
        assert {k: rec[k] for k in ds.METRICS} == {
            "dynamic_sampling/draws": 3.0, "dynamic_sampling/generations": 24.0,
            "dynamic_sampling/extra_generations": 16.0, "dynamic_sampling/informative_groups": 0.0,
            "dynamic_sampling/flat_groups": 2.0}
        assert rec["frac_reward_zero_std"] == 1.0
    problems = [p["question"] for p in prompts_for_step(load_problems("addition", "train"), 0, 2, 0)]
    assert len(seen) == 2 and len(seen[0]) == 2
    assert all(q in seen[0][i] for i, q in enumerate(problems))             # the fill keeps draw 0's groups first
    assert result.history == records


def test_a_resumed_run_with_dynamic_sampling_and_a_noisy_sampler_continues_exactly(tmp_path):
    """Extra draws take their prompts and seeds from (step, draw), and the noise from the step: a run resumed from a
    checkpoint gives the same metrics, step for step, as the run never stopped."""
    from test_train import random_tiny, small_cfg

    from grpo_lib.tokenizer import build_char_tokenizer
    from grpo_lib.train import train

    def parity(completions, **kw):          # depends on the text only: some groups flat, some not
        return [float(len(c[0]["content"]) % 2) for c in completions]

    tok = build_char_tokenizer()
    timing = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
              "wall_seconds"}
    cfg = small_cfg(tmp_path, steps=4, save_every=2, dynamic_sampling=True, dynamic_sampling_max_draws=3,
                    sampler_perturbation="noise:0.01", vllm_importance_sampling_correction=True, mu=2)
    full = train(cfg, model=random_tiny(tok), tokenizer=tok, reward_funcs={"parity": parity})
    assert sum(r["dynamic_sampling/extra_generations"] for r in full.history) > 0     # extra draws happened
    assert sum(r["dynamic_sampling/informative_groups"] for r in full.history) > 0    # and found groups to keep
    resumed = train(cfg.replace(resume=str(tmp_path / "run" / "checkpoints" / "step-000002"),
                                output_dir=str(tmp_path / "resumed")),
                    model=random_tiny(tok), tokenizer=tok, reward_funcs={"parity": parity})
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]   # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name


def _train_worker(rank: int, port: int, tmp: str) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                      WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from test_train import random_tiny, small_cfg

    from grpo_lib.tokenizer import build_char_tokenizer
    from grpo_lib.train import train

    tok = build_char_tokenizer()
    cfg = small_cfg(Path(tmp) / f"rank{rank}", steps=2, N=4, dynamic_sampling=True, dynamic_sampling_max_draws=3,
                    sampler_perturbation="bf16", vllm_importance_sampling_correction=True, lora_r=4)
    parity = {"parity": lambda completions, **kw: [float(len(c[0]["content"]) % 2) for c in completions]}
    result = train(cfg, model=random_tiny(tok), tokenizer=tok, reward_funcs=parity)
    torch.save({"history": result.history, "params": result.model.state_dict()}, f"{tmp}/train{rank}.pt")
    ds.dist.cleanup(barrier=True)


def test_two_gloo_ranks_train_with_dynamic_sampling_a_bf16_sampler_and_lora(tmp_path):
    """Every new option at once under DDP (2 CPU ranks): the run ends on both ranks with the same (all-reduced)
    metrics and the same merged weights."""
    from grpo_lib.lora import peft_available

    if not peft_available():
        pytest.skip("LoRA needs peft")
    from test_ddp import spawn

    spawn(_train_worker, tmp_path, timeout=240.0)
    out = [torch.load(tmp_path / f"train{r}.pt", weights_only=False) for r in range(2)]
    timing = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
              "wall_seconds"}
    same = [[{k: v for k, v in rec.items() if k not in timing} for rec in o["history"]] for o in out]
    assert same[0] == same[1] and len(same[0]) == 2
    for rec in same[0]:
        assert rec["dynamic_sampling/draws"] >= 1 and rec["sampling/sampling_logp_difference/mean"] > 0
        assert rec["dynamic_sampling/generations"] >= 4 * 4                   # N·G over the two ranks at least
    for k, v in out[0]["params"].items():
        assert torch.equal(v, out[1]["params"][k]), k

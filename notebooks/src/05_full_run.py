# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · The full run
#
# > The tutorial's whole job, sample → score → update, run for real: first on a tiny Qwen2 that learns
# > addition on a CPU in about two minutes, then (same code, other preset) Qwen2.5-1.5B-Instruct on GSM8K.
#
# You will:
# - map DeepSeekMath's Algorithm 1 line by line onto `grpo_lib/train.py`;
# - watch one rollout token by token: the completion ids, the mask (EOS included), rewards and advantages;
# - take one policy update by hand and read its loss, KL and clip fraction;
# - run the tiny preset end to end, plot its learning curves from `metrics.jsonl`, and compare held-out
#   completions before and after;
# - get the exact commands for the Qwen run, and see what the tutorial's 23% → 90% really measured;
# - see why the tutorial's `nn.DataParallel` and `device_map="auto"` do not train on several GPUs at once,
#   and watch DistributedDataParallel average gradients across two real processes;
# - launch the same run with `torchrun` on 1, 2 or 8 GPUs (and run it on 2 CPU processes here);
# - plan the memory of the Qwen2.5-1.5B run per GPU (weights, reference, gradients, AdamW, activations
#   with and without gradient checkpointing, logits, KV cache) and see whether 80 GB or 24 GB cards fit it;
# - fill in two exercises: the `dapo` normaliser under DDP (5.1) and the floor under generation time (5.2).
#
# Needs: notebooks 01–04 (advantages, rewards, the loss). Runs in: ~4 min on CPU (the tiny training run
# is ~2 min of it, the 2-process run ~1 min).
#
# ## The algorithm, and where each line lives
#
# The objective (DeepSeekMath eq. 3, per token $t$ of completion $o_i$, $\rho_{i,t} = \pi_\theta / \pi_{\theta_{old}}$):
#
# $$\mathcal{J}_{GRPO}(\theta) = \mathbb{E}\Big[\frac{1}{G}\sum_{i=1}^{G}\frac{1}{|o_i|}\sum_{t=1}^{|o_i|}
# \Big(\min\big(\rho_{i,t}\hat A_{i,t},\ \mathrm{clip}(\rho_{i,t}, 1-\epsilon, 1+\epsilon)\hat A_{i,t}\big)
# - \beta\,\mathbb{D}_{KL}[\pi_\theta\|\pi_{ref}]\Big)\Big]$$
#
# | Algorithm 1 (DeepSeekMath) | `grpo_lib` |
# | --- | --- |
# | for iteration = 1..I: reference model $\pi_{ref} \leftarrow \pi_\theta$ | `train()`: `ref_model = copy.deepcopy(model)` when `step % cfg.steps == 0` |
# | for step = 1..M: sample a batch of N questions | `grpo_lib.data.prompts_for_step`, `build_prompt` |
# | $\pi_{\theta_{old}} \leftarrow \pi_\theta$; sample G outputs per question | `grpo_lib.rollout.generate_completions` (KV cache, left padding, stop at EOS) |
# | compute rewards $r_i$ | `score_rollout` → `score_completions` with `grpo_lib.rewards` |
# | compute $\hat A_{i,t}$ by group-relative advantage estimation | `score_rollout` → `compute_advantages` (notebook 02) |
# | (log-probs of $\pi_{\theta_{old}}$ and $\pi_{ref}$) | `score_rollout` → `completion_logprobs` |
# | for GRPO iteration = 1..μ: update $\pi_\theta$ by maximizing $\mathcal{J}_{GRPO}$ | `grpo_lib.train.policy_update` → `grpo_loss` (notebook 04), grad clip, AdamW |
# | (update the reward model: not needed, rewards are rules) | — |

# %%
import copy
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex05 import check_dapo_normaliser, check_decode_floor
from grpo_lib.config import GRPOConfig
from grpo_lib.data import build_prompt, has_chat_template
from grpo_lib.evaluation import wilson_interval
from grpo_lib.models import count_parameters, load_tiny_model
from grpo_lib.course.notebook import check, markdown_table
from grpo_lib.rewards import reward_functions
from grpo_lib.advantages import group_advantages
from grpo_lib.logprobs import completion_mask, token_logprobs
from grpo_lib.loss import grpo_loss
from grpo_lib.rollout import RewardFunctionError, generate_completions, score_completions, score_rollout
from grpo_lib.toy import ToyPolicy, grpo_step
from grpo_lib.tasks import addition_problems
from grpo_lib.train import make_optimizer, policy_update, train

os.environ.setdefault("WANDB_MODE", "offline")
_ = torch.manual_seed(0)                             # `_ =`: no <torch._C.Generator at 0x...> output

# %% [markdown]
# ## 1 · The configuration
#
# Every setting of a run is one field of `GRPOConfig`, named by its paper symbol where it has one. The
# `tiny` preset is the CPU default; `report_to="none"` keeps W&B out of the notebook.

# %%
cfg = GRPOConfig.tiny(report_to="none", progress=False)
cfg

# %%
# check: the tiny preset's key numbers, and the batch size B = N · G
assert (cfg.G, cfg.N, cfg.steps, cfg.mu, cfg.beta, cfg.epsilon) == (8, 16, 100, 1, 0.04, 0.2)
assert cfg.B == cfg.N * cfg.G == 128 and cfg.total_steps == cfg.num_iterations * cfg.steps == 100
print("B =", cfg.B, "completions per step;", cfg.total_steps, "steps")


# %% [markdown]
# ### μ and the outer iterations are different loops
#
# Three loops hide behind two names. DeepSeekMath's Algorithm 1 has **outer iterations** (I; the tutorial's
# `num_iterations`) that reset $\pi_{ref} \leftarrow \pi_\theta$, **steps** (M) that each sample a new batch, and
# **μ** updates on every sampled batch. TRL's `num_iterations` is μ, not I, and TRL never resets π_ref.
# Run both loops on notebook 01's three-answer policy (G = 4 sampled answers per step, SGD) and watch two
# numbers: the clip fraction (only μ > 1 makes it non-zero) and the KL to π_ref (an outer reset sends it
# back to 0).

# %%
def toy_run(I, M, mu, beta=0.04, epsilon=0.2, lr=0.5, G=4, seed=0):
    """Algorithm 1 on the toy: I outer iterations (π_ref reset) × M steps (a new group) × μ updates per group."""
    gen = torch.Generator().manual_seed(seed)
    policy = ToyPolicy()
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    rows = []
    for iteration in range(I):
        ref_logits = policy.logits.detach().clone()                        # π_ref ← π_θ (Algorithm 1, line 3)
        for step in range(M):
            o = policy.sample(G, gen)                                      # π_old := π_θ; sample a group
            rec = grpo_step(policy, optimizer, o, epsilon=epsilon, beta=beta, ref_logits=ref_logits, mu=mu)
            rows.append((iteration + 1, step + 1, rec.stats["clip_fraction"].item(), rec.stats["kl"].item()))
    return rows

runs = {"μ = 1, I = 1 (DeepSeekMath, TRL default)": toy_run(I=1, M=6, mu=1),
        "μ = 4, I = 1 (TRL num_iterations=4)": toy_run(I=1, M=6, mu=4),
        "μ = 1, I = 3 (tutorial num_iterations=3)": toy_run(I=3, M=2, mu=1)}
markdown_table(["run", "(iteration, step): clip fraction of the last update / KL to π_ref"],
               [(name, "  ".join(f"({i},{s}): {c:.2f} / {k:.3f}" for i, s, c, k in rows)) for name, rows in runs.items()])

# %% jupyter={"source_hidden": true}
check("μ vs outer iterations",
      ("μ = 1: nothing is ever clipped", all(c == 0 for _, _, c, _ in runs["μ = 1, I = 1 (DeepSeekMath, TRL default)"])),
      ("μ = 4: the clip binds on reused groups", any(c > 0 for _, _, c, _ in runs["μ = 4, I = 1 (TRL num_iterations=4)"])),
      ("I = 3: the KL to π_ref is 0 again at the first step of every iteration",
       all(k == 0 for i, s, _, k in runs["μ = 1, I = 3 (tutorial num_iterations=3)"] if s == 1)),
      ("... and not 0 within an iteration", any(k > 0 for i, s, _, k in runs["μ = 1, I = 3 (tutorial num_iterations=3)"] if s > 1)))

# %% [markdown]
# ## 2 · One rollout, token by token
#
# The tiny model is a real `Qwen2ForCausalLM` with a character-level tokenizer (the tags `<reasoning>`,
# `<answer>`, ... are single tokens). It was warmed up with supervised learning to about 50% held-out
# accuracy, leaving room for GRPO. We sample $G = 8$ completions for two training questions.

# %%
model, tok = load_tiny_model()
problems = addition_problems("train", n=2)
prompts = [build_prompt(tok, p["question"]) for p in problems]
rollout = generate_completions(model, tok, prompts, cfg.G, max_new_tokens=cfg.max_completion_length,
                               temperature=cfg.temperature, seed=0)
print(f"{count_parameters(model):,} parameters; prompt q = {prompts[0]!r}")
print("completion_ids:", tuple(rollout.completion_ids.shape), " (B = N·G rows, T tokens)")

# %%
i = 0                                                    # first completion of the first group
o_ids, mask = rollout.completion_ids[i], rollout.completion_mask[i]
tokens = [tok.decode([t]) for t in o_ids.tolist()]
markdown_table(["t", "token id", "token", "mask"],
               [(t, int(o_ids[t]), repr(tokens[t]), int(mask[t])) for t in range(len(tokens))])

# %%
# check: the mask covers the completion up to and including the first EOS, and nothing after it
o_len = int(mask.sum())
assert o_ids[o_len - 1].item() == tok.eos_token_id, "last masked token must be EOS"
assert mask[:o_len].all() and not mask[o_len:].any()
assert (o_ids[:o_len - 1] != tok.eos_token_id).all()
print(f"|o_{i}| = {o_len} tokens, EOS included; text: {rollout.texts[i]!r}")

# %% [markdown]
# ### The model that never stops (pad = EOS, EOS masked out)
#
# Some training scripts set `tokenizer.pad_token = tokenizer.eos_token` and then mask every pad position out
# of the loss (`mask[ids == pad_id] = 0`, as in tiny-grpo). Since pad *is* EOS, that also masks the real EOS:
# the stop token never gets a gradient, so nothing ever teaches the model to stop. On the tiny model: take a
# group, mask it both ways, and ask the loss how hard it pushes on the EOS token's logit at the EOS position.

# %%
from grpo_lib.logprobs import completion_mask, token_logprobs
from grpo_lib.loss import grpo_loss

eos = tok.eos_token_id
ids = rollout.completion_ids                                                   # (B, T)
mask_right = completion_mask(ids, eos)                                         # 1 up to and including the first EOS
tok_pad_is_eos = copy.deepcopy(tok)
tok_pad_is_eos.pad_token = tok_pad_is_eos.eos_token                           # the common "fix" for a missing pad
mask_pad_is_eos = (ids != tok_pad_is_eos.pad_token_id).int() * mask_right     # "mask out the padding": EOS goes too
seq = torch.cat([rollout.prompt_ids, ids], dim=1)
attn = torch.cat([rollout.prompt_mask, mask_right], dim=1)
A_demo = torch.ones(ids.shape[0])                                              # pretend every completion was good

def eos_push(mask):
    logp = token_logprobs(model, seq, attn, logits_to_keep=ids.shape[1])      # (B, T)
    loss, _ = grpo_loss(logp, logp.detach(), None, A_demo, mask, beta=0.0)
    (g,) = torch.autograd.grad(loss, logp)
    return -(g * (ids == eos)).sum().item()                                    # total push on the EOS tokens

push_right, push_pad_is_eos = eos_push(mask_right), eos_push(mask_pad_is_eos) + 0.0   # + 0.0: no "-0.0"
print(f"push on the EOS tokens: mask keeps EOS {push_right:.4f}, pad = EOS masked out {push_pad_is_eos:.4f}")

# %% jupyter={"source_hidden": true}
check("pad = EOS masked out of the loss",
      ("the course's mask trains the EOS token", push_right > 0),
      ("with pad = EOS masked out, the EOS token gets exactly no gradient", push_pad_is_eos == 0.0),
      ("every completion here ends in EOS, so the difference is the whole stopping signal",
       bool((mask_right.sum(-1) > mask_pad_is_eos.sum(-1)).all())))

# %% [markdown]
# Now the rewards ($r$ = correctness + format, notebook 03) and the group advantages
# $A_i = (r_i - \mathrm{mean}(r))/\mathrm{std}(r)$ (notebook 02), one row per group.

# %%
reward_funcs = reward_functions(cfg.reward_funcs)
ref_model = copy.deepcopy(model).eval().requires_grad_(False)     # π_ref ← π_θ
batch = score_rollout(rollout, [p["answer"] for p in problems], reward_funcs, policy=model,
                      ref_model=ref_model, scale_rewards=cfg.scale_rewards, temperature=cfg.temperature)
r, A = batch.rewards.view(-1, cfg.G), batch.advantages.view(-1, cfg.G)   # (N, G)
for n, p in enumerate(problems):
    print(f"{p['question']}  gold {p['answer']}")
    print("  r =", [round(x, 2) for x in r[n].tolist()])
    print("  A =", [round(x, 2) for x in A[n].tolist()])

# %%
# check: advantages are group-normalised rewards (sample std, 1e-4 floor); a zero-std group gets A = 0
for n in range(len(problems)):
    std = r[n].std()
    expected = torch.zeros(cfg.G) if std < 1e-6 else (r[n] - r[n].mean()) / (std + 1e-4)
    assert torch.allclose(A[n], expected, atol=1e-4), n
    assert abs(A[n].sum()) < 1e-4
print("advantages match (r - mean) / std per group")

# %% [markdown]
# ### A reward function that returns None or NaN
#
# A reward function that cannot score a completion may return `None` (TRL allows it, for a function that does
# not apply to a sample) or NaN (a 0/0 inside it). One NaN reward makes its group's mean and std NaN, so every
# advantage of the group is NaN, the loss is NaN and the whole batch's gradient with it: one bad completion
# poisons the update. The library refuses both before any gradient is computed: `group_advantages` rejects
# NaN rewards, and `score_completions` names the reward function, the completion and the prompt.

# %%
from grpo_lib.advantages import group_advantages
from grpo_lib.rollout import RewardFunctionError, score_completions

r_nan = torch.tensor([[1.0, float("nan"), 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])        # (N, G): one NaN in group 0
A_by_hand = (r_nan - r_nan.mean(-1, keepdim=True)) / (r_nan.std(-1, keepdim=True) + 1e-4)   # the formula, unguarded
print("advantages by hand:", A_by_hand)
try:
    group_advantages(r_nan)
    library_refuses = False
except ValueError as err:
    library_refuses = True
    print("group_advantages:", err)

def flaky_reward(prompts, completions, answer, **kw):
    return [None if i == 3 else 1.0 for i in range(len(completions))]              # cannot score completion 3

try:
    score_completions(rollout, [p["answer"] for p in problems], {"flaky": flaky_reward})
    refusal = None
except RewardFunctionError as err:
    refusal = str(err)
    print("RewardFunctionError:", refusal.splitlines()[0])

# %% jupyter={"source_hidden": true}
check("a reward of None or NaN",
      ("one NaN makes every advantage of its group NaN", bool(torch.isnan(A_by_hand[0]).all())),
      ("... and leaves the other groups alone", bool(torch.isfinite(A_by_hand[1]).all())),
      ("group_advantages refuses NaN rewards", library_refuses),
      ("score_completions refuses None, naming the function", refusal is not None and "'flaky'" in refusal))

# %% [markdown]
# ## 3 · One update
#
# `policy_update` computes $\log\pi_\theta$ with gradients, `grpo_loss`, backward, clips the gradient norm
# and takes one AdamW step. With $\mu = 1$, $\pi_{\theta_{old}} = \pi_\theta$, so $\rho = 1$, nothing is
# clipped, and right after the reset $\pi_\theta = \pi_{ref}$, so the KL is 0: the loss value is about 0
# while its gradient is not.

# %%
optimizer, scheduler = make_optimizer(model, cfg)
before = [q.detach().clone() for q in model.parameters()]
stats = policy_update(model, optimizer, batch, cfg)
moved = sum((a - b).abs().sum().item() for a, b in zip(model.parameters(), before))
print({k: round(v, 6) for k, v in stats.items()}, f" total |Δθ| = {moved:.3f}")

# %%
# check: μ = 1 and π_θ = π_ref at the first update: ρ = 1, no clipping, KL 0, loss ≈ 0, but θ moved
assert stats["clip_fraction"] == 0.0 and abs(stats["ratio_mean"] - 1) < 1e-6
assert abs(stats["kl"]) < 1e-6 and abs(stats["loss"]) < 1e-5
assert stats["grad_norm"] > 0 and moved > 0
print("one update: loss ≈ 0, gradient", round(stats["grad_norm"], 3))
del model, ref_model, optimizer

# %% [markdown]
# ## 4 · The full tiny run
#
# `train(cfg)` is what `python -m grpo_lib.train --preset tiny` runs: evaluate on the 300 held-out test
# problems, 100 steps of sample → score → update, evaluate again, save. It writes `metrics.jsonl`,
# `evals.jsonl`, `summary.json` and `model/` to a temporary folder. The seed is fixed and the preset uses
# one CPU thread, so the run is reproducible (measured: 51.7% → 93.7%).

# %%
import contextlib, io

cfg = cfg.replace(output_dir=tempfile.mkdtemp(prefix="grpo05-"))   # a scratch folder, not runs/tiny
out = Path(cfg.output_dir)
log = io.StringIO()                     # train() prints its log; we show it without the temp path
with contextlib.redirect_stdout(log), contextlib.redirect_stderr(io.StringIO()):
    result = train(cfg)
print(log.getvalue().replace(str(out), "<output_dir>"))
summary = json.loads((out / "summary.json").read_text())
metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
print(sorted(p.name for p in out.iterdir()))
print(f"accuracy {summary['accuracy_before']:.1%} -> {summary['accuracy_after']:.1%} "
      f"in {summary['wall_seconds']:.0f} s")

# %%
# check: the course target (+30 points, ending at >= 80%). The wall time is printed, not asserted: it is a
# measurement of this machine (benchmarks/ measure speed), and a loaded machine would fail a timed check.
s = result.summary
assert len(metrics) == cfg.total_steps and len(result["loss"]) == cfg.total_steps
assert s["accuracy_after"] >= 0.80, s["accuracy_after"]
assert s["accuracy_after"] - s["accuracy_before"] >= 0.30
assert s["accuracy_after"] == summary["accuracy_after"]  # the file says what train() returned
print("target met:", f"+{s['accuracy_after'] - s['accuracy_before']:.1%}")

# %% [markdown]
# ### Learning curves from `metrics.jsonl`
#
# One record per step. The batch reward and accuracy climb; the KL to $\pi_{ref}$ grows slowly (β = 0.04
# keeps it small); the completion length grows a little (a correct carry adds `+1` to the reasoning); and the share of
# zero-std groups rises as the model gets most questions right: those groups teach nothing (notebook 02).

# %%
step = [m["step"] for m in metrics]
panels = [("reward", "mean reward r"), ("accuracy", "batch accuracy (sampled)"), ("kl", "KL(π_θ‖π_ref)"),
          ("completions/mean_length", "|o_i| (tokens)"), ("frac_reward_zero_std", "zero-std group fraction")]
fig, axes = plt.subplots(1, 5, figsize=(17, 3.2))
for ax, (key, label) in zip(axes, panels):
    ax.plot(step, [m[key] for m in metrics], lw=1.2)
    ax.set_title(label, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()

# %%
# check: the curves tell the story: later steps beat early ones on reward and accuracy, KL grows from 0
first, last = metrics[:10], metrics[-10:]
mean = lambda rows, k: sum(m[k] for m in rows) / len(rows)
assert mean(last, "reward") > mean(first, "reward") and mean(last, "accuracy") > mean(first, "accuracy")
assert mean(last, "frac_reward_zero_std") > mean(first, "frac_reward_zero_std")
assert metrics[0]["kl"] < 1e-6 < mean(last, "kl")
print({k: (round(mean(first, k), 3), round(mean(last, k), 3))
       for k in ("reward", "accuracy", "kl", "completions/mean_length", "frac_reward_zero_std")})

# %% [markdown]
# ### Held-out evaluation with 95% confidence intervals
#
# Greedy decoding on the 300 test problems. Strict: the answer is in `<answer>` tags and right; lenient:
# the last number is right; format: the tags are well formed. Each with a Wilson interval.

# %%
rows = []
for name, ev in (("before", result.eval_before), ("after", result.eval_after)):
    for what, k, ci in (("strict", ev.n_strict, ev.strict_ci), ("lenient", ev.n_lenient, ev.lenient_ci),
                        ("format", ev.n_format, ev.format_ci)):
        rows.append((name, what, f"{k}/{ev.n}", k / ev.n, ci[0], ci[1]))
markdown_table(["eval", "metric", "count", "rate", "95% low", "95% high"], rows, floatfmt=".3f")

# %%
# check: the intervals are Wilson's, and before/after strict intervals do not overlap
eb, ea = result.eval_before, result.eval_after
assert eb.n == ea.n == 300
assert eb.strict_ci == wilson_interval(eb.n_strict, eb.n) and ea.strict_ci == wilson_interval(ea.n_strict, ea.n)
assert eb.strict_ci[1] < ea.strict_ci[0]
print("before", [round(x, 3) for x in eb.strict_ci], "after", [round(x, 3) for x in ea.strict_ci])

# %% [markdown]
# ## 5 · Reading a run: the dashboard
#
# Once a run starts, the question is "is it working?", and the loss does not answer it. With μ = 1 the ratio
# ρ is exactly 1 at the update, so the surrogate term of the loss is −mean(A), which is 0 because each group's
# advantages sum to 0 (notebook 04): what the loss prints is **β·KL**. It grows as π_θ moves away from π_ref,
# whether the move helps or hurts. A run that learns and a run that wanders off both show a rising loss. (That is
# the preset's `loss_type="grpo"`, which averages each completion's tokens first. The length-weighted types weigh
# each A_i by its completion's length, so their surrogate term is not even 0: §6.5's `dr_grpo` run logs a loss
# between −0.05 and +0.01, mean −0.024.)
#
# `run_dashboard` draws everything `metrics.jsonl` holds about the learning, one panel per question. Each curve
# is the **trailing mean over 5 steps** (`smooth`: the mean of the last 5 steps' values, fewer at the start),
# drawn over the raw per-step values (thin, faint), because one step's batch of 16 questions is noisy. Under
# each panel: what it tells, and what it does not.

# %%
from grpo_lib.course.plots import DASHBOARD_PANELS, Panel, run_dashboard, smooth

markdown_table(["panel", "tells", "does not tell"], [(p.title, p.tells, p.misses) for p in DASHBOARD_PANELS])

# %%
run_dashboard(metrics)          # the records of this run's metrics.jsonl; run_dashboard(out) reads the file itself

# %% [markdown]
# How to read it for the run above, top left to bottom right:
#
# - **reward** climbs, and its per-function parts say where from: `reward/correctness` carries the gain,
#   `reward/format` was already near its 0.8 ceiling (the warm-up taught the tags);
# - **accuracy** on the sampled batch climbs with it (sampled at τ = 1, so below the greedy held-out accuracy);
# - **loss** rises from 0, and it is β·KL: the check below compares the two at every step;
# - **KL** grows slowly from 0 (β = 0.04 holds it back);
# - **grad norm**: the size of the signal, bounded as long as nothing blows up;
# - **clip fraction** is 0 at every step: μ = 1, so ρ = 1 and the clip never acts;
# - **entropy** falls: the policy sharpens on the answers that earned reward;
# - **completion length** stays near 21 tokens (a correct carry adds `+1`);
# - **zero-std fraction** rises as more groups are all right: those teach nothing (notebook 02).

# %% jupyter={"source_hidden": true}
first10, last10 = metrics[:10], metrics[-10:]
avg = lambda rows, k: sum(m[k] for m in rows) / len(rows)
check("5 · the dashboard",
      ("at μ = 1 the loss is β·KL: summed over the run, within 5% (the loss averages per sequence, kl per token)",
       abs(sum(m["loss"] for m in metrics) / sum(cfg.beta * m["kl"] for m in metrics) - 1) < 0.05),
      ("... and within 25% at every step", all(abs(m["loss"] - cfg.beta * m["kl"]) <= 0.25 * cfg.beta * m["kl"] + 1e-6
                                               for m in metrics)),
      ("the clip fraction is 0 at every step (μ = 1)", all(m["clip_ratio/region_mean"] == 0 for m in metrics)),
      ("reward/correctness carries the gain: it rises more than reward/format",
       avg(last10, "reward/correctness") - avg(first10, "reward/correctness")
       > avg(last10, "reward/format") - avg(first10, "reward/format")),
      ("the entropy falls", avg(last10, "entropy") < avg(first10, "entropy")),
      ("the smoothed curve is the trailing mean of 5 steps",
       abs(smooth([m["reward"] for m in metrics])[9] - avg(metrics[5:10], "reward")) < 1e-12))

# %% [markdown]
# ## 6 · A gallery of failing runs
#
# What does a broken run look like? Below are six real runs of the tiny model, each the tiny preset for 40 steps
# with **one** change, each breaking in its own way, and one healthy reference run (the same 40 steps with no
# change: the first 40 steps of section 4's run). They took one to eight minutes each on the course machine, too
# long to rerun in every notebook execution, so their `metrics.jsonl` and `summary.json` are committed in
# `grpo_lib/assets/gallery/` and loaded here. `python -m grpo_lib.course.gallery` regenerates them, and
# `tests/test_course_gallery.py` checks that the committed files are what that command makes (the configuration
# exactly; the first two steps, rerun, to float rounding).
#
# The gallery adds three metrics to the engine's, measured by a `train(callback=...)` on each step's batch:
# the KL of the policy that sampled the batch to the **starting** model, which is the engine's `kl` when π_ref
# is the starting model and μ = 1, but exists also when β = 0 (the engine then keeps no π_ref and logs `kl` = 0; the
# callback measures the drift without changing the run); and the mean length of the batch's **wrong** and
# **right** completions. They get two extra panels.
#
# For each run: what changed, a question to answer **before** you look, the dashboard of the failing run (in
# colour) over the healthy one (grey; the panels as above, without their notes), and which panel gives it away. The tell is never the final accuracy: by
# then the compute is spent. A dashboard tells you in the first minutes.

# %%
from grpo_lib.course.gallery import EXTRA_METRICS, SPECS, config_diff, load_run

gallery = {name: load_run(name) for name in SPECS}
G_PANELS = DASHBOARD_PANELS + (
    Panel("KL to the starting model (gallery)", ("gallery/kl_to_start",),
          "how far π_θ has drifted from where it started, also when β = 0", "whether the drift is good"),
    Panel("|o| of wrong (—) and right (--) completions", ("gallery/length_wrong", "gallery/length_right"),
          "which completions grow or shrink", "why"),
)

def gallery_dashboard(name):
    """The config diff as a table, then the dashboard: this run in colour over its reference in grey."""
    ref = SPECS[name].reference
    display(markdown_table(["option", ref, name], [(k, repr(a), repr(b)) for k, (a, b) in config_diff(name).items()]))
    return run_dashboard({ref: gallery[ref]["metrics"], name: gallery[name]["metrics"]}, reference=ref,
                         panels=G_PANELS, ncols=4, notes=False, title=f"{SPECS[name].title}  (grey: {ref})")

markdown_table(["run", "what changes", "train() wall time (s)", "held-out accuracy before → after"],
               [(name, SPECS[name].title, f"{run['summary']['gallery']['train_call_seconds']:.0f}",
                 f"{run['summary']['accuracy_before']:.2f} → {run['summary']['accuracy_after']:.2f}")
                for name, run in gallery.items()])

# %% jupyter={"source_hidden": true}
healthy = gallery["healthy"]["metrics"]
check("6 · the gallery",
      ("every run has 40 steps and the three gallery metrics",
       all(len(r["metrics"]) == 40 and set(EXTRA_METRICS) <= set(r["metrics"][0]) for r in gallery.values())),
      ("the healthy run is the first 40 steps of section 4's run (batch reward within 2 completions' worth)",
       all(abs(h["reward"] - m["reward"]) <= 2 * 2.8 / cfg.B for h, m in zip(healthy, metrics[:40]))),
      ("with loss_type 'dr_grpo' the loss is not β·KL: the long_dr_grpo run's mean loss is negative",
       avg(gallery["long_dr_grpo"]["metrics"], "loss") < 0))

# %% [markdown]
# ### 6.1 · Learning rate too high
#
# The learning rate goes from 5e-5 to 2e-3. **Predict, then look:** AdamW's first steps move every weight by
# about η. Which panels move first, and in which direction: reward, entropy, completion length, grad norm?

# %%
gallery_dashboard("lr_high")

# %% [markdown]
# Broken after one update. Step 1 is the healthy run's step 1 (same samples); its update, about η = 2e-3 on every
# weight (a fresh AdamW moves each weight by about η), knocks the policy off what it knew. At step 2 the batch
# accuracy is 0.00 (0.69 at step 1), the KL to π_ref is 1.6 (the healthy run reaches 0.016 after 40 steps) and
# the entropy has tripled. The reward falls to 0.80, which is exactly the format reward: the tags are still
# there, the numbers are wrong. From then on almost every group is flat (all wrong, all 0.8: the zero-std panel
# sits near 1), so there is no signal to climb back with, and the policy wanders: the entropy keeps rising
# (about 17× the start) and from step 15 on the completions run to the 40-token limit without stopping. The
# tells, in the order they appear: the KL jumps, the accuracy drops, the entropy climbs, the length hits the
# limit. The grad norm spikes (4.0 at step 5) but is the weakest tell: the update is clipped to norm 1 anyway.

# %% jupyter={"source_hidden": true}
hi = gallery["lr_high"]["metrics"]
check("6.1 · learning rate too high",
      ("step 1 is the healthy run's step 1 (same samples)", hi[0]["reward"] == healthy[0]["reward"]),
      ("after one update the batch accuracy is 0", hi[1]["accuracy"] == 0.0 < healthy[1]["accuracy"]),
      ("... and the KL to π_ref is over 50 times the healthy run's after 40 steps", hi[1]["kl"] > 50 * healthy[-1]["kl"]),
      ("the reward left is the format reward alone (last 10 steps, within 0.02)",
       abs(avg(hi[-10:], "reward") - avg(hi[-10:], "reward/format")) < 0.02),
      ("the entropy ends over 10 times the healthy run's (last 10 steps)",
       avg(hi[-10:], "entropy") > 10 * avg(healthy[-10:], "entropy")),
      ("the completions end at the length limit (over 90% cut at 40 tokens, last 10 steps)",
       avg(hi[-10:], "completions/clipped_ratio") > 0.9))

# %% [markdown]
# ### 6.2 · β = 0 with a large learning rate
#
# No KL term (β = 0: no π_ref is kept at all) and η = 5e-4, ten times the preset. **Predict, then look:** what
# does the engine's `kl` panel show for this run, and what does the KL to the starting model show?

# %%
gallery_dashboard("beta0")

# %% [markdown]
# Two KL panels, two answers. The engine's `kl` reads 0 at every step: with β = 0 no π_ref is kept, so nothing
# is measured. A flat KL panel in a β = 0 run means "not measured", not "not moved". The gallery's KL to the
# starting model shows where π_θ went: by step 4 it is 0.076, more than the healthy run reaches in 40 steps
# (0.023 at most), and it stays up there, 0.060 on average over the last 10 steps (3.7 times the healthy run's),
# jumping between 0.03 and 0.13. Four times the learning rate and nothing pulling back: the grad-norm panel sits
# higher (1.18 on average against 0.72; the update is clipped to norm 1), and the batch accuracy drops to 0.41 at
# step 5 before it recovers. In 40 steps the run still learns (held-out accuracy 0.48 → 0.84 on 100 problems,
# the healthy run 0.89): drift is not yet failure. That is the lesson: only a KL to the start shows how far the
# policy has gone, and nothing in this loss would stop it going further in a longer run.

# %% jupyter={"source_hidden": true}
b0 = gallery["beta0"]["metrics"]
check("6.2 · β = 0",
      ("the engine's kl is 0 at every step (no π_ref)", all(m["kl"] == 0.0 for m in b0)),
      ("by step 4 the KL to the start exceeds the healthy run's largest in 40 steps",
       b0[3]["gallery/kl_to_start"] > max(m["gallery/kl_to_start"] for m in healthy)),
      ("over the last 10 steps it is over 3 times the healthy run's",
       avg(b0[-10:], "gallery/kl_to_start") > 3 * avg(healthy[-10:], "gallery/kl_to_start")),
      ("the grad norm is larger: over 1.5 times the healthy run's on average",
       avg(b0, "grad_norm") > 1.5 * avg(healthy, "grad_norm")))

# %% [markdown]
# ### 6.3 · A strict reward on tags the start never writes
#
# The reward is DeepSeek-R1's: 2.0 for `<think>…</think><answer>…</answer>` with the right answer, 0 otherwise
# (`r1_strict_reward`, the only reward function). The tiny model was warmed up on `<reasoning>` tags and never
# writes `<think>` (it is not even one token of its vocabulary). It is what happens when a recipe's reward is
# copied from a paper that used other tags. **Predict, then look:** what is the zero-std fraction? What is the
# gradient made of, and how large is it?

# %%
gallery_dashboard("r1_tags")

# %% [markdown]
# The zero-std panel is the tell: 1.0 at every step. Every completion scores 0, so every group is flat and every
# advantage is 0; the reward panel is flat at 0. Nothing is learned, and the final accuracy would say so only
# after the whole run (held-out accuracy 0.48 → 0.47 on 100 problems). The grad-norm panel shows what is left:
# the KL term, whose gradient is exactly 0 while π_θ = π_ref, so the grad norm is exactly 0 for the first 14
# steps. Then a surprise worth knowing: at step 15 the two forward passes (π_θ's, with gradients, and π_ref's)
# differ by float rounding and a gradient of 1e-9 appears. AdamW divides each gradient by its own running size
# (plus its ε = 1e-8), so once the per-weight gradients approach 1e-8 it takes steps of about η whatever their
# size: the grad norm goes 1e-9, 8e-8, 1.5e-4 at steps 15–17, and the KL to the start 6e-14, 6e-8, 1.6e-4 at
# steps 16–18 (8e-4 by step 20). From
# then on the KL term's own gradient keeps the weights moving (grad norm up to 0.033, still far below the
# healthy run's 0.36 at its smallest). A run with flat groups does not stand still: it drifts, with no reward
# to steer it.

# %% jupyter={"source_hidden": true}
r1 = gallery["r1_tags"]["metrics"]
first_kick = next(m["step"] for m in r1 if m["grad_norm"] > 0)
check("6.3 · flat groups",
      ("the zero-std fraction is 1.0 at every step", all(m["frac_reward_zero_std"] == 1.0 for m in r1)),
      ("the reward is 0 at every step", all(m["reward"] == 0.0 for m in r1)),
      ("the gradient is exactly 0 until a rounding difference appears", first_kick > 5),
      ("after it, the largest grad norm is below a tenth of the healthy run's smallest",
       max(m["grad_norm"] for m in r1) < 0.1 * min(m["grad_norm"] for m in healthy)),
      ("and yet π_θ drifts from the start: KL to the start > 1e-4 three steps after the kick",
       r1[first_kick + 2]["gallery/kl_to_start"] > 1e-4))

# %% [markdown]
# ### 6.4 · μ = 4 updates per batch
#
# Each sampled batch is used for four AdamW steps instead of one (TRL's `num_iterations=4`). **Predict, then
# look:** at μ = 1 the clip fraction is 0 at every step. What is it now, and does it stay put during the run?

# %%
gallery_dashboard("mu4")

# %% [markdown]
# The clip panel gives it away. At μ = 1 it is 0 at every step: ρ = 1 at the only update. At μ = 4 it is
# 0.12%–0.96% of the tokens at every step (mean 0.50%), mostly clipped from
# below (0.39% low against 0.11% high: tokens of worse-than-average completions whose
# probability has already fallen below (1 − ε)·π_old, where the objective stops pushing). The first of the four
# updates is never clipped (there π_θ = π_old, every ρ = 1), so this is an average over updates 2–4. It does not
# climb during the run (0.55% in the first 10 steps, 0.45% in the last 10): every
# step samples a fresh batch and ρ starts again at 1. The KL panel shows the other side: four updates per batch
# move π_θ faster (0.033 against 0.016, last 10 steps). μ > 1 is not a bug (PPO reuses its
# batches, TRL calls it `num_iterations`); the clip fraction is how you see that it is on, and how often the
# trust region binds.

# %% jupyter={"source_hidden": true}
mu = gallery["mu4"]["metrics"]
check("6.4 · μ = 4",
      ("the healthy run (μ = 1) never clips", all(m["clip_ratio/region_mean"] == 0 for m in healthy)),
      ("μ = 4 clips some tokens at every step", all(m["clip_ratio/region_mean"] > 0 for m in mu)),
      ("mostly from below (A < 0, ρ < 1 - ε)", avg(mu, "clip_ratio/low_mean") > avg(mu, "clip_ratio/high_mean")),
      ("the clip fraction does not climb during the run (last 10 steps below twice the first 10)",
       avg(mu[-10:], "clip_ratio/region_mean") < 2 * avg(mu[:10], "clip_ratio/region_mean")),
      ("π_θ moves faster: KL over twice the healthy run's (last 10 steps)",
       avg(mu[-10:], "kl") > 2 * avg(healthy[-10:], "kl")))

# %% [markdown]
# ### 6.5 · A length-biased loss type when wrong answers are long
#
# Two runs that differ only in `loss_type`, at a sampling temperature τ = 1.8 with room for 80 tokens: hot enough
# that the tiny model often garbles its answer, and then writes more (its wrong completions are about 5 tokens
# longer than its right ones). `"grpo"` divides each completion's token losses by its own length |o_i|;
# `"dr_grpo"` by the constant |o|_max (notebook 04). Here the reference (grey) is the `dr_grpo` run.
# **Predict, then look:** a wrong completion has A < 0. Under which loss type is a long wrong completion pushed
# down less per token, and what does that do to the length of the wrong completions over the run?

# %%
gallery_dashboard("long_grpo")

# %% [markdown]
# The panel of the wrong and right lengths gives it away (the extra panel, bottom right). The wrong completions
# start at the same length in both runs, then under `grpo` they grow, from 25.0 to 26.1 tokens (mean of the first
# vs the last 10 steps), while under `dr_grpo` they stay at 25.0 → 24.9; the overall length panel shows the same
# split. Why: a wrong completion's push down is A/|o_i| per token under `grpo`, so one of 40 tokens gets half the
# push per token of one of 20: the long way of being wrong is discouraged least, and survives. Under `dr_grpo`
# every token weighs A/|o|_max, so a long wrong completion is pushed down in proportion to its length. The reward
# and accuracy panels look alike for the two runs: the bias is in how the completions change, not in the score.
# One token in 40 steps is small; it is the length bias that Dr. GRPO (Liu et al. 2025) names, which over long
# runs lets wrong answers grow long (notebook 04, the loss normalisations).

# %% jupyter={"source_hidden": true}
lg, ld = gallery["long_grpo"]["metrics"], gallery["long_dr_grpo"]["metrics"]
grow = lambda rows: avg(rows[-10:], "gallery/length_wrong") - avg(rows[:10], "gallery/length_wrong")
check("6.5 · the length bias",
      ("at the start the wrong completions are over 3 tokens longer than the right ones, in both runs",
       all(avg(r[:10], "gallery/length_wrong") - avg(r[:10], "gallery/length_right") > 3 for r in (lg, ld))),
      ("under grpo the wrong completions grow by more than half a token (first vs last 10 steps)", grow(lg) > 0.5),
      ("under dr_grpo they change by less than half a token", abs(grow(ld)) < 0.5),
      ("the two runs' batch accuracy stays within 0.02 of each other (last 10 steps)",
       abs(avg(lg[-10:], "accuracy") - avg(ld[-10:], "accuracy")) < 0.02))

# %% [markdown]
# ## 5 · Completions before and after
#
# The same held-out problems, greedy, before and after training.

# %%
for b, a in zip(result.eval_before.samples, result.eval_after.samples):
    print(f"{b['question']}   gold {b['answer']}")
    print(f"  before ({'right' if b['strict'] else 'wrong'}): {b['completion']!r}")
    print(f"  after  ({'right' if a['strict'] else 'wrong'}): {a['completion']!r}")

# %%
# check: the samples are the same problems, and after training at least as many are right
sb, sa = result.eval_before.samples, result.eval_after.samples
assert len(sb) == len(sa) >= 3 and [x["question"] for x in sb] == [x["question"] for x in sa]
assert sum(x["strict"] for x in sa) >= sum(x["strict"] for x in sb)
print(sum(x["strict"] for x in sb), "->", sum(x["strict"] for x in sa), "of", len(sa), "shown right")

# %% [markdown]
# ## 6 · The Qwen run
#
# Same engine, other preset: `Qwen/Qwen2.5-1.5B-Instruct` on GSM8K with the tutorial's hyperparameters
# (G = 12, 7 prompts, 400 new tokens, β = 0.04, lr 5e-6, ε = 0.1, μ = 1), flash-attention when it
# imports on CUDA. Two things differ from the tutorial. The 7 prompts are **per GPU**
# (`prompts_per_device`): on $K$ GPUs a step samples $7K$ prompts, $84K$ completions, so 8 GPUs do 8 times
# the work instead of splitting one GPU's batch. And `dtype="bfloat16"` means **mixed precision**: fp32
# master weights and fp32 AdamW state, with the forward and backward passes under `torch.autocast(bfloat16)`
# (the next cells show why). It needs a GPU and the weights, so this notebook only prints the commands;
# set `GRPO_FULL=1` to run the single-GPU one from here.

# %%
one_gpu = ("python -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k --output-dir runs/qwen "
           "--data-dir ../shared/data/gsm8k")
eight_gpus = ("torchrun --standalone --nproc_per_node=8 -m grpo_lib.train --preset qwen2.5-1.5b-gsm8k "
              "--output-dir runs/qwen-8gpu --data-dir ../shared/data/gsm8k")
print("1 GPU: ", one_gpu)
print("8 GPUs:", eight_gpus)
if os.environ.get("GRPO_FULL") == "1":
    import subprocess
    subprocess.run(one_gpu.split(), cwd="..", check=True)

# %%
qwen = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k")
qwen

# %%
# check: the tutorial's hyperparameters, 7 prompts per GPU (the batch grows with the GPUs), mixed precision
assert (qwen.G, qwen.prompts_per_device, qwen.max_completion_length, qwen.beta, qwen.lr, qwen.epsilon, qwen.mu) == \
    (12, 7, 400, 0.04, 5e-6, 0.1, 1)
assert qwen.model == "Qwen/Qwen2.5-1.5B-Instruct" and qwen.task == "gsm8k"
assert (qwen.dtype, qwen.precision, qwen.N) == ("bfloat16", "mixed", None)
assert qwen.global_B(1) == 84 and qwen.global_B(8) == 672
print("qwen preset OK; completions per step: 1 GPU", qwen.global_B(1), "| 8 GPUs", qwen.global_B(8))

# %% [markdown]
# ### Why bf16 weights cannot learn at lr = 5e-6
#
# AdamW's first step moves each weight by about the learning rate, 5e-6. bfloat16 keeps 8 bits of
# mantissa: next to a weight $w$ the representable numbers are about $|w| \cdot 2^{-7}$ apart, so for
# every $|w|$ above about $10^{-3}$ the step is less than half the gap and **rounds away**. The tutorial
# (and this engine before) ran AdamW straight on bf16 weights. Count it: one update of the tiny model at
# lr = 5e-6, on the same batch, in pure bf16 (`precision="pure"`) and in mixed precision (fp32 master
# weights, bf16 autocast), and the share of the weights with a non-zero gradient whose value changed.

# %%
import copy
from grpo_lib.models import load_tiny_model
from grpo_lib.precision import changed_fraction, resolve_precision
from grpo_lib.rewards import reward_functions
from grpo_lib.rollout import generate_completions, score_rollout
from grpo_lib.train import make_optimizer, policy_update

lr_cfg = GRPOConfig.tiny(lr=5e-6, beta=0.0)
base, tok_small = load_tiny_model()
questions = {"What is 38 + 47?\n": "85", "What is 59 + 66?\n": "125", "What is 17 + 28?\n": "45",
             "What is 94 + 79?\n": "173"}
roll = generate_completions(base, tok_small, list(questions), G=8, max_new_tokens=lr_cfg.max_completion_length, seed=0)
scored = score_rollout(roll, list(questions.values()), reward_functions(lr_cfg.reward_funcs))
changed = {}
for mode in ("pure", "mixed"):
    prec = resolve_precision("bfloat16", mode, "cpu")
    m = copy.deepcopy(base).to(prec.param_dtype)
    opt, _ = make_optimizer(m, lr_cfg)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    policy_update(m, opt, scored, lr_cfg, prec)
    grads = {n: p.grad for n, p in m.named_parameters() if p.grad is not None}
    changed[mode] = changed_fraction(before, dict(m.named_parameters()), grads)
    print(f"{mode:>5}: {prec.describe()}\n       {changed[mode]:.1%} of the weights with a gradient changed")

# %%
# check: mixed precision moves (nearly) every weight that gets a gradient; pure bf16 rounds most updates away
assert scored.advantages.abs().sum() > 0
assert changed["mixed"] >= 0.9 and changed["pure"] < 0.25, changed
print({k: round(v, 3) for k, v in changed.items()})

# %% [markdown]
# ### Why Qwen stops after `</answer>`
#
# The tutorial built its prompt by gluing the system prompt and the question together as plain text, so
# the Instruct model saw no chat turn and had no reason to end one: it kept writing after `</answer>`.
# `build_prompt` uses the tokenizer's chat template (`apply_chat_template`) whenever it has one. Qwen's
# template is ChatML: the prompt ends with `<|im_start|>assistant\n`, and the model was instruction-tuned
# to close its turn with `<|im_end|>`, which is its EOS token for generation. So it stops right after
# `</answer>`, and because the completion mask includes EOS, GRPO keeps rewarding that stop. Below, the
# same function on a tokenizer given a ChatML template (Qwen2.5's, shortened); the tiny tokenizer has
# none and gets the plain format.

# %%
from grpo_lib.rewards import SYSTEM_PROMPT

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
_, chat_tok = load_tiny_model()
chat_tok.chat_template = CHATML
chat_prompt = build_prompt(chat_tok, "What is 33 + 16?", SYSTEM_PROMPT)
print(chat_prompt)
print("--- without a template:", repr(build_prompt(tok, "What is 33 + 16?")))

# %%
# check: with a template the prompt is a ChatML turn ending in the assistant header; without, plain text
assert has_chat_template(chat_tok) and not has_chat_template(tok)
assert chat_prompt.startswith("<|im_start|>system\n") and chat_prompt.endswith("<|im_start|>assistant\n")
assert "<|im_start|>user\nWhat is 33 + 16?<|im_end|>" in chat_prompt
assert build_prompt(tok, "What is 33 + 16?") == "What is 33 + 16?\n"
print("chat template applied")

# %% [markdown]
# ## 7 · What the tutorial's numbers really measured
#
# The tutorial reported 23% → 90% accuracy. Three things to know about those numbers:
#
# - They were measured on **30 questions from GSM8K's train split**, held out of its training: the same
#   split as the training data, not the same examples, and not the test split.
# - Before training, **21 of the 30** completions had no `<answer>` tags at all, and its evaluation only
#   accepted tagged answers. So most of the gain is **format**: the model learning to put its answer in
#   tags, not learning arithmetic it could not already do.
# - With n = 30 the uncertainty is large: a 95% interval around 23% spans roughly 12% to 41%.
#
# The last two rows of the table are **this course's tiny model on two-digit addition** (300 test problems),
# not a model on GSM8K: no Qwen2.5 result is reported here, because the Qwen preset has not been run to the end
# for this course. The rows show what an evaluation with intervals looks like, next to the tutorial's.
#
# Our evaluation uses the **test** split, greedy decoding, and reports strict accuracy, lenient accuracy
# (last number right, tags or not) and format rate separately, each with a Wilson interval, so a format
# gain and a reasoning gain cannot be confused.

# %%
n_tut = 30
k_before, k_after, untagged = 7, 27, 21                  # 23% and 90% of 30; 21 untagged before
ci_b, ci_a = wilson_interval(k_before, n_tut), wilson_interval(k_after, n_tut)
tagged_before = n_tut - untagged
markdown_table(["", "count", "rate", "95% low", "95% high"], [
    ("tutorial before (train split)", f"{k_before}/30", k_before / n_tut, *ci_b),
    ("tutorial after (train split)", f"{k_after}/30", k_after / n_tut, *ci_a),
    ("this course, tiny model on addition, before (test split)", f"{eb.n_strict}/{eb.n}", eb.strict_accuracy,
     *eb.strict_ci),
    ("this course, tiny model on addition, after (test split)", f"{ea.n_strict}/{ea.n}", ea.strict_accuracy,
     *ea.strict_ci),
], floatfmt=".3f")

# %%
# check: 7/30 and 27/30 are the tutorial's 23% and 90%; with only 9 tagged completions before,
# strict accuracy could not exceed 30%; an n = 30 interval is over twice as wide as ours at n = 300
assert round(k_before / n_tut, 2) == 0.23 and k_after / n_tut == 0.90
assert tagged_before / n_tut == 0.30 and k_before <= tagged_before
assert 0.11 < ci_b[0] < 0.13 and 0.40 < ci_b[1] < 0.42
assert (ci_b[1] - ci_b[0]) > 2 * (eb.strict_ci[1] - eb.strict_ci[0])
# and ours separates the three rates: lenient >= strict, format reported on its own
assert ea.n_lenient >= ea.n_strict and eb.n_lenient >= eb.n_strict
print(f"tutorial 95% CI before: {ci_b[0]:.2f}-{ci_b[1]:.2f}; ours: {eb.strict_ci[0]:.2f}-{eb.strict_ci[1]:.2f}")

# %% [markdown]
# ## 8 · Many GPUs: DistributedDataParallel with torchrun
#
# The tutorial's title promises multi-GPU DataParallel. Its code loads the model with
# `device_map="auto"` and then wraps it in `nn.DataParallel`, but every forward pass and every `generate`
# call goes through `model.module`, which skips the wrapper. `grpo_lib` uses PyTorch's
# `DistributedDataParallel` (DDP) launched by `torchrun` instead. Here are the three side by side, for
# one GRPO step on $K$ GPUs:
#
# | | `nn.DataParallel`, as the tutorial uses it | `device_map="auto"` | DDP with `torchrun` (`grpo_lib`) |
# |---|---|---|---|
# | processes | one Python process | one Python process | $K$ processes, one per GPU |
# | who holds the weights | GPU 0; a call `model(x)` copies a replica to every GPU, *every call* | each GPU holds a contiguous block of layers, about $1/K$ of the model | every GPU holds the whole model, its own gradients and its own AdamW state |
# | what is communicated | on `model(x)`: the batch is scattered, the weights replicated, the outputs gathered on GPU 0, the gradients summed there. On `model.module(x)`: nothing, it never leaves GPU 0's code path | the hidden states ($b \times s \times h$) cross from one GPU to the next at every block boundary, forward and backward | one all-reduce of the gradients ($\Psi$ numbers) per update, overlapped with the backward pass; a few metric scalars |
# | when GPUs are idle | with `model.module`: GPUs 1..K−1 always | all but one at any moment: GPU $k$ waits while the others run their layers | none: each GPU samples, scores and back-propagates its own $N/K$ prompts |
# | what it buys | nothing, as used | a model too big for one GPU (at $1/K$ of the speed) | $K\times$ the rollouts and updates per second |
#
# Three cells below show each column on this CPU: the wrapper that is never called, layers that run one
# after another, and DDP's gradient averaging in two real processes.

# %% [markdown]
# ### `nn.DataParallel` through `.module`: the wrapper never runs
#
# All of `DataParallel`'s work (scatter the inputs, replicate the module, run the replicas, gather the
# outputs) happens inside its `forward`. We wrap the tiny model, call it the tutorial's way, and count
# how often the wrapper's `forward` and the inner model's `forward` run.

# %%
import inspect
from torch import nn

dp_model, dp_tok = load_tiny_model()
dp = nn.DataParallel(dp_model)                 # the tutorial: model = nn.DataParallel(model)
calls = {"DataParallel.forward": 0, "Qwen2ForCausalLM.forward": 0}
dp.register_forward_hook(lambda *_: calls.__setitem__("DataParallel.forward", calls["DataParallel.forward"] + 1))
dp.module.register_forward_hook(
    lambda *_: calls.__setitem__("Qwen2ForCausalLM.forward", calls["Qwen2ForCausalLM.forward"] + 1))
ids = dp_tok(["What is 12 + 34?\n"], return_tensors="pt").input_ids
with torch.no_grad():
    dp.module(input_ids=ids)                   # the tutorial's log-prob pass: model.module(...)
    dp.module.generate(ids, max_new_tokens=5, do_sample=False)   # its rollouts: model.module.generate
print(calls)
print("where DataParallel's work happens, in DataParallel.forward:")
for line in inspect.getsource(nn.DataParallel.forward).splitlines():
    if any(k in line for k in ("scatter(", "replicate(", "parallel_apply(", "gather(")):
        print("   ", line.strip())

# %%
# check: the tutorial's calls run the model 6 times (1 forward + 5 generated tokens) and the wrapper 0 times,
# so no batch is ever scattered; the wrapper's forward is the only place that would do it
forward_src = inspect.getsource(nn.DataParallel.forward)
assert calls["DataParallel.forward"] == 0 and calls["Qwen2ForCausalLM.forward"] == 6, calls
assert all(k in forward_src for k in ("self.scatter(", "self.replicate(", "self.parallel_apply(", "self.gather("))
with torch.no_grad():
    dp(input_ids=ids)                          # calling the wrapper itself does go through it
assert calls["DataParallel.forward"] == 1
print("model.module(...) and model.module.generate(...) bypass DataParallel")

# %% [markdown]
# ### `device_map="auto"`: layers on different GPUs run one after another
#
# `device_map="auto"` (Hugging Face Accelerate) gives each GPU a contiguous block of decoder layers.
# That fits a big model, but a token's hidden state must pass through the layers in order, so GPU 1
# waits for GPU 0, and so on. We give the tiny model's 4 layers to 2 pretend GPUs the same way (layers
# 0–1 on GPU 0, 2–3 on GPU 1), record which GPU is busy at each layer of one forward pass, and count
# the share of time each one works.

# %%
n_gpus, layers = 2, dp_model.model.layers
device_map = {i: i * n_gpus // len(layers) for i in range(len(layers))}     # contiguous blocks
timeline = []
hooks = [layer.register_forward_pre_hook(lambda mod, args, i=i: timeline.append(device_map[i]))
         for i, layer in enumerate(layers)]
with torch.no_grad():
    dp_model(input_ids=ids)
for h in hooks:
    h.remove()
print("layer -> GPU:", device_map)
print("GPU busy at each layer of the forward pass:", timeline)
busy = {gpu: timeline.count(gpu) / len(timeline) for gpu in range(n_gpus)}
print("share of the forward pass each GPU works:", busy)

# %%
# check: the GPUs take turns (the timeline never goes back to an earlier GPU), so one works at a time and
# each is busy 1/K of the time; with K = 8 GPUs, 7 of them are idle at any moment
assert timeline == sorted(timeline) and set(timeline) == {0, 1}
assert all(abs(share - 1 / n_gpus) < 1e-9 for share in busy.values())
print("pipeline without overlap: utilisation 1/K per GPU")
del dp, dp_model

# %% [markdown]
# ### DDP: every rank has the whole model and half the batch; backward averages the gradients
#
# DDP's contract: each of the $K$ processes (ranks) starts from the same weights, computes a loss on
# its own share of the batch, and `loss.backward()` all-reduces the gradients so every rank ends up
# with their **average**. If each rank's loss is the mean over its $B/K$ rows, the average of those
# gradients is the gradient of the mean over all $B$ rows, exactly what one process with the whole
# batch would get. Then every rank takes the same AdamW step and the copies stay identical.
#
# The script below is complete DDP: a small network, a batch of 8 rows, each of 2 ranks takes 4 of
# them. `torchrun` starts the two processes on this CPU with the `gloo` backend (on GPUs: `nccl`,
# same code).

# %%
from grpo_lib.course.notebook import run_torchrun    # torchrun --standalone from a cell (once: a failure raises)

DDP_SCRIPT = '''
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

dist.init_process_group("gloo")                      # torchrun set RANK, WORLD_SIZE, MASTER_ADDR/PORT
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)                                 # the same initial weights on every rank
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
g = torch.Generator().manual_seed(1)                 # the same global batch on every rank ...
X, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)
rows = slice(rank * 8 // world, (rank + 1) * 8 // world)   # ... of which each rank takes its own rows
ddp = DDP(model)                                     # broadcasts rank 0's weights, hooks the gradients
loss = ((ddp(X[rows]) - y[rows]) ** 2).mean()        # this rank's rows only
loss.backward()                                      # DDP all-reduces and averages the gradients here
torch.save({"rank": rank, "loss": loss.item(), "grads": [p.grad for p in model.parameters()]},
           f"{sys.argv[1]}/rank{rank}.pt")
dist.barrier()                                       # leave together ...
del ddp, loss                                        # ... with no DDP reducer still holding gloo work
dist.destroy_process_group()
'''
ddp_dir = Path(tempfile.mkdtemp(prefix="ddp-demo-"))
(ddp_dir / "ddp_grad.py").write_text(DDP_SCRIPT)
proc = run_torchrun([ddp_dir / "ddp_grad.py", ddp_dir], nproc=2)   # torchrun --standalone --nproc_per_node=2 ...
ranks = [torch.load(ddp_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
print("local losses (each on its own 4 rows):", [round(r["loss"], 4) for r in ranks])
print("rank 0, first layer's weight gradient:\n", ranks[0]["grads"][0])


# %%
# the same network and batch in this one process: the full-batch gradient, and each half's own gradient
def grads_on(rows):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)
    ((net(X[rows]) - y[rows]) ** 2).mean().backward()
    return [p.grad for p in net.parameters()]

full, half0, half1 = grads_on(slice(0, 8)), grads_on(slice(0, 4)), grads_on(slice(4, 8))
print("max |rank 0 - rank 1|          :", max((a - b).abs().max().item() for a, b in zip(ranks[0]["grads"], ranks[1]["grads"])))
print("max |rank 0 - full batch|      :", max((a - b).abs().max().item() for a, b in zip(ranks[0]["grads"], full)))
print("max |half 0 alone - full batch|:", max((a - b).abs().max().item() for a, b in zip(half0, full)))

# %%
# check: after backward both ranks hold the same gradient, equal to the full-batch gradient = the average of
# the two halves' gradients, while one half's gradient alone is not
for g0, g1, gf, h0, h1 in zip(ranks[0]["grads"], ranks[1]["grads"], full, half0, half1):
    assert torch.allclose(g0, g1, atol=1e-7)
    assert torch.allclose(g0, gf, atol=1e-6) and torch.allclose((h0 + h1) / 2, gf, atol=1e-6)
assert not torch.allclose(half0[0], full[0], atol=1e-3)
print("DDP's averaged gradient = the full-batch gradient")


# %% [markdown]
# This is why `grpo_lib` keeps a prompt's whole group on one rank: advantages need the group's mean
# and std, and with whole groups no rank needs another's rewards. Only the gradients (by DDP) and the
# logged metrics (`grpo_lib.dist.all_reduce_metrics`) cross between ranks.
#
# It is also why a token-level loss needs care. The `"grpo"` loss is a mean over completions, and
# every rank has the same number of completions, so averaging the ranks' means gives the global mean,
# as above. TRL's `"dapo"` loss divides the summed token losses by the number of tokens, and ranks
# hold different numbers of tokens.
#
# **5.1 · The dapo normaliser under DDP (fill in).** `masks` is a list of the $K$ ranks' completion
# masks, `masks[k]` of shape $(B_k, T_k)$ (each rank pads to its own longest completion). Return the
# number that rank `rank` divides its summed token losses $\sum_{i,t} m_{i,t}\,\ell_{i,t}$ by, so that
# after DDP averages the $K$ ranks' gradients the loss is the token mean over the **whole** batch.
# Compare with `global_num_tokens` and `world_size` in `grpo_lib.loss.grpo_loss` when you are done.

# %% tags=["solution"]
def my_dapo_normaliser(masks, rank):   # masks: K tensors (B_k, T_k); rank: int -> float
    ### BEGIN SOLUTION
    n_global = sum(float(m.sum()) for m in masks)      # active tokens on all ranks (an all-reduce)
    return n_global / len(masks)                         # DDP's average divides by K once more
    ### END SOLUTION

check_dapo_normaliser(my_dapo_normaliser);

# %% [markdown]
# ### Launching on 1, 2 and 8 GPUs
#
# `torchrun --nproc_per_node=K` starts $K$ copies of the same command; `grpo_lib.train` reads its rank
# from the environment, so the command is the one you ran on one GPU. The Qwen preset states its batch
# **per GPU** (7 prompts x $G$ = 12 = 84 completions), so on $K$ GPUs a step processes $7K$ prompts and
# $84K$ completions: the effective batch is $K$ times larger, and 500 steps see $K$ times more problems.
# The learning rate stays 5e-6: with the per-sequence "grpo" loss the update averages over more groups,
# a less noisy gradient of the same size (scale it only if you measure that it helps). To keep the
# tutorial's total batch instead, give `--N` (prompts per step over all GPUs; it must divide by $K$).
# $G$ stays 12: it is a property of the algorithm (how many samples estimate a group's baseline), not of
# the hardware. Every run prints its per-GPU and global batch at the start and records them in
# summary.json.

# %%
QWEN = "--preset qwen2.5-1.5b-gsm8k --data-dir ../shared/data/gsm8k"
launch = {
    1: f"python -m grpo_lib.train {QWEN} --output-dir runs/qwen-1gpu",
    2: f"torchrun --standalone --nproc_per_node=2 -m grpo_lib.train {QWEN} --output-dir runs/qwen-2gpu",
    8: f"torchrun --standalone --nproc_per_node=8 -m grpo_lib.train {QWEN} --output-dir runs/qwen-8gpu",
}
multi_node = (f"torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD_NODE:29500 "
              f"-m grpo_lib.train {QWEN} --output-dir runs/qwen-16gpu   # same line on both machines")
for K, cmd in launch.items():
    print(f"{K} GPU{'s' if K > 1 else ' '}: {cmd}")
print("2 nodes x 8 GPUs:", multi_node)

# %%
# check: each launch gives 7 prompts x 12 completions per GPU and K times that per step; a total --N that
# does not divide by K is refused (train() checks it at the start, naming --N)
from grpo_lib.cli import parse_config
for K, cmd in launch.items():
    run_cfg = parse_config(cmd.split("grpo_lib.train ", 1)[1].split())
    print(f"K = {K}: {run_cfg.N_per_rank(K)} prompts x G = {run_cfg.G} per GPU; effective batch "
          f"{run_cfg.global_N(K)} prompts = {run_cfg.global_B(K)} completions per step, lr {run_cfg.lr}")
    assert run_cfg.N_per_rank(K) == 7 and run_cfg.global_B(K) == 84 * K and run_cfg.lr == 5e-6
try:
    qwen.replace(N=7).N_per_rank(2)
    raise AssertionError("--N 7 on 2 GPUs should be refused")
except ValueError as err:
    print("--N 7 on 2 GPUs:", err)

# %% [markdown]
# ### The tiny preset on 2 CPU processes
#
# The same `torchrun` line, on this CPU: 2 processes over `gloo`, 10 steps, evaluation on 100 held-out
# problems. Each rank samples 8 of the 16 prompts (64 of the 128 completions); evaluation is sharded too
# (each rank scores half of the held-out problems, the counts are summed), and rank 0 alone logs,
# reports and writes the files. On 2 CPU cores this is not faster than one process (they share the cores); the
# point is that the code path is the one the GPUs use.

# %%
ddp_out = Path(tempfile.mkdtemp(prefix="grpo05-ddp-"))
ddp_args = ["-m", "grpo_lib.train", "--preset", "tiny", "--steps", "10", "--eval-n", "100", "--num-threads", "1",
           "--report-to", "none", "--progress", "false", "--log-every", "2", "--output-dir", str(ddp_out)]
print("torchrun --standalone --nproc_per_node=2 -m grpo_lib.train --preset tiny --steps 10 --eval-n 100 "
      "--num-threads 1 --report-to none --progress false --log-every 2")
ddp_run = run_torchrun(ddp_args, nproc=2, env={"WANDB_MODE": "offline"})
print(ddp_run.stdout.replace(str(ddp_out), "<output_dir>"))

# %%
# check: rank 0 alone wrote the files (one record per step, no duplicates), the run knew it had 2 processes,
# every step used the whole batch, and accuracy went up, not down
ddp_metrics = [json.loads(line) for line in (ddp_out / "metrics.jsonl").read_text().splitlines()]
ddp_summary = json.loads((ddp_out / "summary.json").read_text())
assert [m["step"] for m in ddp_metrics] == list(range(1, 11))
assert ddp_summary["world_size"] == 2 and ddp_summary["steps"] == 10 and ddp_summary["eval_n"] == 100
assert ddp_run.stdout.count("[eval @ step 0]") == 1                       # only rank 0 prints
assert all(0 <= m["accuracy"] <= 1 and m["completions/mean_length"] > 0 for m in ddp_metrics)
assert ddp_summary["accuracy_after"] >= ddp_summary["accuracy_before"] + 0.1, ddp_summary
print(f"2 processes: {ddp_summary['accuracy_before']:.0%} -> {ddp_summary['accuracy_after']:.0%} in 10 steps, "
      f"{ddp_summary['wall_seconds']:.0f} s")

# %% [markdown]
# ### Will it fit? A memory planner for one GPU
#
# Before renting GPUs, add up what each one holds. `grpo_lib.course.memory.plan_gpu_memory` does it from the
# model's config alone (no weights), for a chosen $G$, $N$, number of GPUs $K$, prompt length $P$ and
# completion length $T$, with $a$ = 2 bytes per number in bf16:
#
# - **model states**, for $\Psi$ parameters. In `grpo_lib`'s mixed precision (the preset): fp32 weights
#   $4\Psi$ (they are the master copy), fp32 gradients $4\Psi$, AdamW's two fp32 moments $8\Psi$, the frozen
#   reference in bf16 $2\Psi$ when $\beta > 0$, and autocast's bf16 copy of the weights $2\Psi$ during an
#   update and during generation. In pure bf16 (the tutorial): weights $2\Psi$, gradients $2\Psi$, moments
#   $4\Psi$, reference $2\Psi$. DDP replicates all of it on every GPU (ZeRO would shard it);
# - **activations** of one micro-batch of $b$ completions, $n = b(P+T)$ tokens: every tensor autograd
#   saves for the backward pass. Korthikanti et al. (2022, *Reducing Activation Recomputation in Large
#   Transformer Models*, §4.1) count them per layer for GPT: $sbh(34 + 5 n_{heads} s/h)$ bytes
#   in 16-bit. The same count
#   on Qwen2's layer (RMSNorm in fp32, SwiGLU MLP of width $f$, grouped-query attention through SDPA,
#   which keeps no $s\times s$ scores) gives per token and per layer
#   $2((4+a)h + 4) + 2ah + 2ah_q + 2ah'_{kv} + 4n_{heads} + 4af$ (+ $as$ for the padding mask),
#   about 106 KiB per token per layer for Qwen2.5-1.5B. `tests/test_course_memory.py` measures this with
#   `torch.autograd.graph.saved_tensors_hooks` on a small Qwen2 and gets the same bytes;
# - **gradient checkpointing** keeps only each layer's input ($ah$ per token per layer) and recomputes
#   one layer at a time in the backward pass;
# - **logits**: `grpo_lib.logprobs` computes them only for the $T$ completion positions, $bTV$ numbers
#   ($V$ = 151,936), where the tutorial's full log-softmax keeps $b(P+T)V$ in fp32;
# - **generation**: the KV cache, $N G/K \times (P+T) \times L \times 2 \times n_{kv} \times d_{head}$
#   numbers (only 2 KV heads in Qwen2.5-1.5B, so 28 KiB per token).
#
# We budget $P = 256$ prompt tokens (system prompt, chat template and a GSM8K question are about
# 100 tokens on average at ~4 characters per token, the longest about 300, and a batch is padded to
# its longest) and the preset's $T = 400$.

# %%
from grpo_lib.course.memory import (GIB, count_parameters_from_config, plan_for_run, plan_gpu_memory,
                                    qwen2_5_1_5b_instruct_config, qwen2_parameter_count)

qwen_config = qwen2_5_1_5b_instruct_config()
P_BUDGET = 256
preset_plan = plan_for_run(qwen, qwen_config, prompt_len=P_BUDGET)   # the preset: 7 x 12 per GPU, b 12, mixed
preset_plan

# %%
# check: the weights line is Ψ x 4 bytes (fp32 master weights), with Ψ from the config in closed form = torch's
# count of the model built on the meta device; fp32 AdamW is 8 bytes per parameter, π_ref 2 (bf16); the KV
# cache is 28 KiB per token
psi = qwen2_parameter_count(qwen_config)
assert psi == count_parameters_from_config(qwen_config) == 1_543_714_304
assert preset_plan.row("policy", "weights").bytes == 4 * psi
assert preset_plan.row("policy", "AdamW m and v").bytes == 8 * psi
assert preset_plan.row("reference", "weights").bytes == 2 * psi
assert preset_plan.row("generation", "KV cache").bytes == 84 * (P_BUDGET + 400) * 28 * 1024
print(f"Ψ = {psi:,}; weights {4 * psi / GIB:.2f} GiB; peak {preset_plan.peak_gib:.1f} GiB per GPU")


# %% [markdown]
# Now the scenarios a learner meets: the tutorial's settings (pure bf16, the layout the H100 record below
# measured) with and without checkpointing, without micro-batching, the preset's mixed precision, and
# DeepSeekMath's $G = 64$ on 8 GPUs. Each gets a verdict for
# an 80 GB GPU (H100, A100) and a 24 GB one (RTX 4090, A10G). The planner allows 90% of the card: the
# CUDA context, fragmentation and short-lived buffers take the rest.

# %%
def qwen_plan(**kw):   # the tutorial's pure-bf16 layout unless precision="mixed" is given
    return plan_for_run(qwen, qwen_config, prompt_len=P_BUDGET, **{"precision": "pure", **kw})

scenarios = {
    "tutorial settings, pure bf16: G 12, N 7, micro-batch 12, checkpointing": qwen_plan(),
    "... without gradient checkpointing": qwen_plan(gradient_checkpointing=False),
    "... without micro-batching (84 completions at once)": qwen_plan(micro_batch_size=None),
    "the tutorial's own loop: 84 at once, fp32 log-softmax over every position": qwen_plan(
        micro_batch_size=None, logits="full_fp32"),
    "... the preset's mixed precision (fp32 weights + AdamW, bf16 autocast)": qwen_plan(precision="mixed"),
    "... with β = 0 (no reference model)": qwen_plan(beta=0.0),
    "G 64, N 8 on 8 GPUs (64 per GPU), micro-batch 16, checkpointing": qwen_plan(G=64, N=8, world_size=8,
                                                                              micro_batch_size=16),
    "G 64, N 8 on 8 GPUs, micro-batch 16, no checkpointing": qwen_plan(G=64, N=8, world_size=8, micro_batch_size=16,
                                                                  gradient_checkpointing=False),
}
markdown_table(["scenario", "GPUs", "completions / GPU", "peak GiB", "80 GB GPU", "24 GB GPU"],
               [(name, p.settings["world_size"], p.settings["completions_per_gpu"], p.peak_gib,
                 "fits" if p.fits(80) else "does not fit", "fits" if p.fits(24) else "does not fit")
                for name, p in scenarios.items()], floatfmt=".1f")

# %%
for name, p in scenarios.items():
    print(f"{name}:\n    {p.verdict(80)};  {p.verdict(24)}")

# %%
# check: properties of the plans: checkpointing and micro-batches shrink the update, β = 0 saves exactly the
# reference's 2Ψ, the tutorial's full-vocabulary loop does not fit one 80 GB GPU, the verdicts follow the 90% rule
s = list(scenarios.values())
assert s[0].peak_bytes < s[1].peak_bytes and s[0].peak_bytes < s[2].peak_bytes < s[3].peak_bytes
assert s[0].states_bytes - s[5].states_bytes == 2 * psi
assert s[4].row("policy", "AdamW m and v").bytes == 8 * psi and s[4].row("policy", "weights").bytes == 4 * psi
assert s[0].fits(24) and not s[1].fits(24) and s[1].fits(80) and s[2].fits(80) and not s[2].fits(24)
assert not s[3].fits(80) and not s[4].fits(24) and s[5].fits(24)
assert s[6].peak_bytes < s[7].peak_bytes and s[6].fits(80)
for p in s:
    assert p.fits(80) == (p.peak_gib <= 0.9 * 80) and p.fits(24) == (p.peak_gib <= 0.9 * 24)
print("plans behave as the formulas say")

# %% [markdown]
# Per-GPU memory against the completion length $T$, for the tutorial's batch on one GPU: with
# checkpointing the activations grow slowly (one hidden state per layer per token); without it they
# dominate quickly. The dashed lines are 90% of a 24 GB and an 80 GB card.

# %%
T_values = [64, 128, 256, 400, 512, 768, 1024, 1536, 2048, 3072, 4096]
curves = {label: [plan_for_run(qwen.replace(max_completion_length=T), qwen_config, prompt_len=P_BUDGET,
                               gradient_checkpointing=ck, precision="pure").peak_gib for T in T_values]
          for label, ck in (("gradient checkpointing", True), ("no checkpointing", False))}
fig, ax = plt.subplots(figsize=(7, 4))
for label, gib in curves.items():
    ax.plot(T_values, gib, marker="o", ms=3, label=label)
for size in (24, 80):
    ax.axhline(0.9 * size, ls="--", color="grey", lw=1)
    ax.text(T_values[-1], 0.9 * size - 2, f"{size} GB GPU (90%)", fontsize=8, color="grey", ha="right", va="top")
ax.set_xscale("log", base=2)
ax.set_xlabel("completion length T (tokens)")
ax.set_ylabel("peak GiB per GPU")
ax.set_title("Qwen2.5-1.5B, G = 12, N = 7 on 1 GPU, micro-batch 12, P = 256, pure bf16")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %%
# check: memory grows with T on both curves, checkpointing is below at every T, and the longest T that fits
# a 24 GB card is far longer with checkpointing
ck, no_ck = curves["gradient checkpointing"], curves["no checkpointing"]
assert ck == sorted(ck) and no_ck == sorted(no_ck) and all(a < b for a, b in zip(ck, no_ck))
longest = {label: max([T for T, g in zip(T_values, gib) if g <= 0.9 * 24], default=0) for label, gib in curves.items()}
assert longest["gradient checkpointing"] >= 4 * max(longest["no checkpointing"], 64)
print("longest T that fits 24 GB:", longest)

# %% [markdown]
# **Measured, not only planned.** `scripts/measure_gpu_memory.py` builds Qwen2.5-1.5B from this config
# with random bf16 weights on a GPU and runs the three phases the way `grpo_lib.train` did before mixed precision (pure-bf16
# AdamW, a reference copy, left-padded micro-batches of 12 through `token_logprobs`, `generate` with the
# KV cache). The record below is its output on one NVIDIA H100 80GB (torch 2.11, transformers 5.17,
# 2026-11-26), for the preset's settings; it is a record, since this notebook runs without a GPU. The
# planner's peak is within a few percent in every phase (part of the reason: `grpo_lib` zeroes the
# gradients with `set_to_none=True`, so they are freed while the forward pass builds its activations,
# which the planner models).

# %%
H100_RECORD = {  # scripts/measure_gpu_memory.py, NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, transformers 5.17.0
    "update peak, checkpointing": 17.33, "update peak, no checkpointing": 37.05,
    "generation peak": 14.46 + 1.93,    # persistent 14.46 GiB + 1.93 GiB during generate()
}
planned = {
    "update peak, checkpointing": qwen_plan().update_peak_bytes / GIB,
    "update peak, no checkpointing": qwen_plan(gradient_checkpointing=False).update_peak_bytes / GIB,
    "generation peak": qwen_plan().generation_peak_bytes / GIB,
}
markdown_table(["phase", "measured on H100 (GiB)", "planned (GiB)", "planned / measured"],
               [(k, H100_RECORD[k], planned[k], planned[k] / H100_RECORD[k]) for k in H100_RECORD], floatfmt=".2f")

# %%
# check: the plan is within 10% of the measurement in every phase
for k in H100_RECORD:
    assert abs(planned[k] / H100_RECORD[k] - 1) < 0.10, (k, planned[k], H100_RECORD[k])
print("planner within 10% of the H100 measurement")

# %% [markdown]
# ### Why generation dominates a step at LLM scale
#
# The update runs every token of the batch through the model in a few large parallel passes. Generation makes
# T passes one after another, one new token per row each, and every pass reads all the weights. For the
# tutorial's run (Qwen2.5-1.5B, 84 rows, up to 400 new tokens), the planner's arithmetic and the H200
# measurement of docs/performance.md:

# %%
psi = qwen2_parameter_count(qwen_config)                                       # 1,543,714,304
B_tut, P_tut, T_tut = 84, 256, 400
update_flops = 6 * psi * B_tut * (P_tut + T_tut)                               # forward + backward, every token
generation_flops = 2 * psi * B_tut * T_tut                                     # forward only, new tokens
weights_bytes = 2 * psi                                                        # bf16, read once per decode step
measured_generation_s = 33_600 / 1650                                          # docs/performance.md: 84 x 400 tokens at 1,650 tok/s, H200
markdown_table(["quantity", "value"], [
    ("update: FLOPs (6 Ψ per token, all B·(P+T) tokens)", f"{update_flops:.3g}"),
    ("generation: FLOPs (2 Ψ per new token)", f"{generation_flops:.3g}"),
    ("generation: sequential forward passes", T_tut),
    ("generation: bytes of weights read per pass", f"{weights_bytes / 1e9:.2f} GB"),
    ("generation measured on an H200 (KV cache, 2026-11-26)", f"{measured_generation_s:.1f} s"),
])

# %% [markdown]
# Generation does about 5 times fewer FLOPs than the update, yet on the GPU it takes most of the step: 400 passes
# that cannot run in parallel, each a full read of the weights plus kernel-launch and Python overhead for one
# token per row. Exercise 5.2 asks for the floor this sets. Faster inference engines (vLLM, SGLang) attack
# exactly this part, which is why production GRPO trainers generate with them.

# %% jupyter={"source_hidden": true}
check("why generation dominates",
      ("the update does about 5 times the arithmetic of generation", 4.5 < update_flops / generation_flops < 5.5),
      ("the measured generation time is over 50 times the bandwidth floor (4.8 TB/s)",
       measured_generation_s > 50 * T_tut * weights_bytes / 4.8e12))


# %% [markdown]
# **5.2 · The floor under generation time (fill in).** Write `my_decode_floor(n_params, bytes_per_param, T, B,
# bandwidth)`: a lower bound, in seconds, on generating `T` new tokens for `B` rows at once with a model of
# `n_params` weights of `bytes_per_param` bytes each, on a GPU that reads `bandwidth` bytes per second from its
# memory (ignore the KV cache and all overheads). Then compare it with the measured 20.4 s above: what takes the
# rest of the time? Stuck? `hint("5.2")`.

# %% tags=["solution"]
def my_decode_floor(n_params, bytes_per_param, T, B, bandwidth):   # -> seconds
    ### BEGIN SOLUTION
    return T * n_params * bytes_per_param / bandwidth    # every decode step reads all weights once, for all B rows
    ### END SOLUTION

check_decode_floor(my_decode_floor);

# %% [markdown]
# ## Summary
#
# One GRPO step is: sample N questions and G completions each (the mask includes EOS so the model learns
# to stop), score them, normalise the rewards within each group, and take μ clipped, KL-regularised
# policy-gradient steps; the reference model is reset every outer iteration. On the tiny Qwen2 this takes
# held-out accuracy from about 52% to about 94% in 100 steps and about two minutes on a CPU. The same
# `train()` runs Qwen2.5-1.5B on GSM8K with a different preset, where the chat template removes the
# tutorial's "keeps writing after `</answer>`" problem. And the tutorial's 23% → 90% was 30 train
# questions, mostly a format gain; ours is the test split with strict, lenient and format rates and CIs.
#
# On several GPUs the tutorial's `nn.DataParallel` never ran (every call went through `model.module`)
# and `device_map="auto"` only split the layers, so the GPUs took turns. DistributedDataParallel runs
# one process per GPU, each with the whole model and whole groups of its own prompts, and averages the
# gradients in the backward pass: the same update as one GPU with the whole batch, as the two-process
# demo showed, provided the loss is normalised globally (exercise 5.1). `torchrun --nproc_per_node=K`
# launches it, with N divisible by K. The memory planner says the tutorial's settings need about 17 GiB
# per GPU with gradient checkpointing and micro-batches of 12 (so a 24 GB card is enough) and about 38 GiB
# without checkpointing; an H100 measurement agrees within a few percent.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.train`: `train`, `policy_update`, `make_optimizer` and the CLI (`grpo_lib.cli`)
#   `python -m grpo_lib.train` (metrics.jsonl, evals.jsonl, summary.json, model/).
# - `grpo_lib.config.GRPOConfig` with the `tiny` and `qwen2.5-1.5b-gsm8k` presets.
# - `grpo_lib.rollout`: `generate_completions`, `score_rollout`, `completion_logprobs`;
#   `grpo_lib.advantages.compute_advantages`.
# - `grpo_lib.evaluation`: `evaluate`, `judge`, `wilson_interval`, `EvalResult`.
# - `grpo_lib.data.build_prompt` (chat template or plain), `grpo_lib.models.load_tiny_model`,
#   `grpo_lib.tasks.addition_problems`.
# - `grpo_lib.dist`: rank and world size from torchrun, `print0`, `all_reduce_metrics`; `train()` wraps the
#   policy in DistributedDataParallel under torchrun.
# - `grpo_lib.course.memory.plan_gpu_memory`, `plan_for_run`, `qwen2_parameter_count`, `activation_breakdown`,
#   `kv_cache_bytes`: the per-GPU memory planner, tested in `tests/test_course_memory.py` (by hand, against torch's
#   parameter count and against the bytes autograd saves); `scripts/measure_gpu_memory.py` measures it on a GPU.
# - `grpo_lib.course.exercises.ex05`: the checkers of exercises 5.1 and 5.2, tested in
#   `tests/test_course_exercises_ex05.py` and `tests/test_course_exercises_hints.py`.
#
# ## Exercises
#
# Exercises 5.1 and 5.2 (fill in, checked) are in section 8. Open ones:
#
# **5.3 · Fewer steps.** Run `train(cfg.replace(steps=20, output_dir=tempfile.mkdtemp()))`. How much of
# the gain is there already after 20 steps? Look at `frac_reward_zero_std` in `metrics.jsonl`: why does
# learning slow down as accuracy rises?
#
# **5.4 · No KL.** Set `beta=0` (no reference model at all). Does accuracy change? Does the completion
# length or the format rate drift? Compare the KL curve with the run above.
#
# **5.5 · μ > 1.** Set `mu=2` and `epsilon=0.2`. The clip fraction is no longer 0: plot it. Which updates
# get clipped, and why is the first of the μ updates never clipped?
#
# **5.6 · Group size.** Try `G=4` and `G=16` with the same `B = N·G`. Which reaches 80% first, in steps and
# in seconds?
#
# **5.7 · Per-rank normalisation.** In the DDP demo of section 8, give rank 1 only 2 of the 8 rows (6 for
# rank 0) and keep `.mean()` as each rank's loss. Is the averaged gradient still the full-batch one?
# Which rows now weigh more, and how is this the same bug as normalising `dapo` by the local token count?
#
# **5.8 · Plan your own GPUs.** With `plan_for_run`, find the largest `max_completion_length` that fits
# your GPU for the tutorial's batch, with and without gradient checkpointing, and the largest `G` at
# `micro_batch_size=12`. Which term of the table grows with G, and which does not? What does ZeRO stage 1
# (`zero_stage=1`) save on 8 GPUs?
#
# ## Next
#
# Run the Qwen preset on a GPU with the commands of section 8, after checking its memory plan; then
# compare your learning curves with the tiny run's. docs/teaching.md lists discussion questions for
# this notebook.

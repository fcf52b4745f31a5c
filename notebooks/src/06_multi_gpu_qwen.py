# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · The multi-GPU Qwen run
#
# > Notebook 05's engine, unchanged, on `Qwen/Qwen2.5-1.5B-Instruct` and GSM8K, on one GPU or eight: what
# > changes (the preset, mixed precision, the chat template), how several GPUs share a step, whether it fits
# > in memory, how a run survives a crash, and the same run on TRL for when you outgrow the engine.
#
# You will:
# - read the Qwen preset and its commands for 1 and 8 GPUs, and see why its weights are fp32 while it computes
#   in bf16 (mixed precision), and why Qwen stops after `</answer>`;
# - see why the tutorial's `nn.DataParallel` and `device_map="auto"` do not train on several GPUs at once, and
#   watch DistributedDataParallel average gradients across two real processes;
# - launch the same run with `torchrun` on 1, 2 or 8 GPUs, and run the tiny preset on 2 CPU processes here;
# - write checkpoints, rotate them, load one with `from_pretrained`, and resume from one with the same metrics,
#   step for step, as the run that never stopped;
# - plan the memory of the Qwen2.5-1.5B run per GPU, and see why generation dominates a step at this scale;
# - map the run option by option onto TRL's `GRPOTrainer`, down to the 8-GPU command with vLLM;
# - fill in two exercises: the `dapo` normaliser under DDP (6.1) and the floor under generation time (6.2).
#
# Needs: notebook 05 (the engine, the tiny run). Runs in: a few minutes on a CPU, no GPU (2 min 50 s and 3 min 45 s
# measured on the course's shared 2-core machine at load averages 6 to 10; the two runs of the tiny preset on 2
# processes are most of it).
#
# **What has been measured on a GPU, and what has not.** This notebook runs on a CPU, so every GPU number in it
# is a record, with its machine and date:
#
# | what | where it was measured | in this notebook |
# |---|---|---|
# | memory of one update and of generation at the preset's shape (pure-bf16 layout, random weights) | one NVIDIA H100 80GB, 2026-11-26, `scripts/measure_gpu_memory.py` | section 5, beside the planner |
# | generation speed at the tutorial's shape (84 rows × 400 tokens, KV cache, random weights) | one NVIDIA H200, 2026-11-26, `benchmarks/bench_kv_cache.py` (docs/performance.md) | section 5 |
# | the Qwen preset end to end (`scripts/gpu_smoke.py`: 3 steps, checkpoint, resume) | **never run on a GPU** | — |
# | the full 500-step Qwen run and its GSM8K accuracy | **never run** | — |
# | the same run on TRL with vLLM on 8 GPUs | **never run** | section 6 (the command) |
#
# So no step time, no peak memory in mixed precision and no accuracy of the Qwen run is reported here:
# the planner's numbers are plans, and the commands are what to run when you have the GPUs.

# %%
import copy
import inspect
import json
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

from grpo_lib.config import GRPOConfig
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex06 import check_dapo_normaliser, check_decode_floor
from grpo_lib.course.notebook import check, markdown_table, run_torchrun
from grpo_lib.data import build_prompt, has_chat_template
from grpo_lib.models import load_tiny_model
from grpo_lib.precision import changed_fraction, resolve_precision
from grpo_lib.rewards import SYSTEM_PROMPT, reward_functions
from grpo_lib.rollout import generate_completions, score_rollout
from grpo_lib.train import make_optimizer, policy_update

os.environ.setdefault("WANDB_MODE", "offline")
_ = torch.manual_seed(0)                             # `_ =`: no <torch._C.Generator at 0x...> output

# %% [markdown]
# ## 1 · The Qwen preset
#
# Same engine, other preset: `Qwen/Qwen2.5-1.5B-Instruct` on GSM8K with the tutorial's hyperparameters
# (G = 12, 7 prompts, 400 new tokens, β = 0.04, lr 5e-6, ε = 0.1, μ = 1), flash-attention when it
# imports on CUDA. Two things differ from the tutorial. The 7 prompts are **per GPU**
# (`prompts_per_device`, and `N` is left unset): on $K$ GPUs a step samples $7K$ prompts, $84K$ completions,
# so 8 GPUs do 8 times the work instead of splitting one GPU's batch. And `dtype="bfloat16"` means **mixed
# precision** (`precision="mixed"`): fp32 master weights and fp32 AdamW state, with the forward and backward
# passes under `torch.autocast(bfloat16)` (the next cells show why). It needs a GPU and the weights, so this
# notebook only prints the commands; set `GRPO_FULL=1` to run the single-GPU one from here.

# %%
one_gpu = ("python -m grpo_lib --preset qwen2.5-1.5b-gsm8k --output-dir runs/qwen "
           "--data-dir ../shared/data/gsm8k")
eight_gpus = ("torchrun --standalone --nproc_per_node=8 -m grpo_lib --preset qwen2.5-1.5b-gsm8k "
              "--output-dir runs/qwen-8gpu --data-dir ../shared/data/gsm8k")
print("1 GPU: ", one_gpu)
print("8 GPUs:", eight_gpus)
if os.environ.get("GRPO_FULL") == "1":
    import subprocess
    subprocess.run(one_gpu.split(), cwd="..", check=True)

# %%
qwen = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k")
qwen

# %% jupyter={"source_hidden": true}
check("1 · the Qwen preset",
      ("the tutorial's hyperparameters: G 12, 7 prompts, 400 new tokens, β 0.04, lr 5e-6, ε 0.1, μ 1",
       (qwen.G, qwen.prompts_per_device, qwen.max_completion_length, qwen.beta, qwen.lr, qwen.epsilon, qwen.mu)
       == (12, 7, 400, 0.04, 5e-6, 0.1, 1)),
      ("Qwen2.5-1.5B-Instruct on GSM8K", qwen.model == "Qwen/Qwen2.5-1.5B-Instruct" and qwen.task == "gsm8k"),
      ("bf16 in mixed precision; N unset (the prompts are per GPU)",
       (qwen.dtype, qwen.precision, qwen.N) == ("bfloat16", "mixed", None)),
      ("84 completions per step on 1 GPU, 672 on 8", qwen.global_B(1) == 84 and qwen.global_B(8) == 672))

# %% [markdown]
# ### Why bf16 weights cannot learn at lr = 5e-6
#
# AdamW's first step moves each weight by about the learning rate, 5e-6. bfloat16 keeps 8 bits of
# mantissa: next to a weight $w$ the representable numbers are about $|w| \cdot 2^{-7}$ apart, so for
# every $|w|$ above about $10^{-3}$ the step is less than half the gap and **rounds away**. The tutorial
# (and this engine before) ran AdamW straight on bf16 weights. Count it: one update of the tiny model at
# lr = 5e-6, on the same batch, in pure bf16 (`precision="pure"`) and in mixed precision (fp32 master
# weights, bf16 autocast), and the share of the weights with a non-zero gradient whose value changed.
# Mixed precision moves (nearly) every one of them; pure bf16 rounds most of the updates away.

# %%
lr_cfg = GRPOConfig.tiny(lr=5e-6, beta=0.0)
base, tok = load_tiny_model()
questions = {"What is 38 + 47?\n": "85", "What is 59 + 66?\n": "125", "What is 17 + 28?\n": "45",
             "What is 94 + 79?\n": "173"}
roll = generate_completions(base, tok, list(questions), G=8, max_new_tokens=lr_cfg.max_completion_length, seed=0)
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
del m, opt

# %% jupyter={"source_hidden": true}
check("1 · mixed precision",
      ("the batch has a learning signal (some advantages are not 0)", bool(scored.advantages.abs().sum() > 0)),
      ("mixed precision changes at least 90% of the weights that get a gradient", changed["mixed"] >= 0.9),
      ("pure bf16 changes fewer than 25% of them", changed["pure"] < 0.25))

# %% [markdown]
# ### Why Qwen should stop after `</answer>` (expected, not measured here)
#
# The tutorial built its prompt by gluing the system prompt and the question together as plain text, so
# the Instruct model saw no chat turn and had no reason to end one: its saved outputs kept writing after
# `</answer>`.
# `build_prompt` uses the tokenizer's chat template (`apply_chat_template`) whenever it has one. Qwen's
# template is ChatML: the prompt ends with `<|im_start|>assistant\n`, and the model was instruction-tuned
# to close its turn with `<|im_end|>`, which is its EOS token for generation. So it is expected to stop right
# after `</answer>`, and because the completion mask includes EOS (notebook 05), GRPO keeps training that stop.
# No Qwen model was run in this course, so this is the expectation from how it was tuned, not a measurement:
# the first thing to read in a real run's completions (and its `completions/clipped_ratio`).
# Below, the same function on a tokenizer given a ChatML template (Qwen2.5's, shortened); the tiny tokenizer
# has none and gets the plain format. (This belongs here rather than in notebook 05: only the Qwen run has a
# chat template.)

# %%
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
chat_tok = copy.deepcopy(tok)
chat_tok.chat_template = CHATML
chat_prompt = build_prompt(chat_tok, "What is 33 + 16?", SYSTEM_PROMPT)
print(chat_prompt)
print("--- without a template:", repr(build_prompt(tok, "What is 33 + 16?")))

# %% jupyter={"source_hidden": true}
check("1 · the chat template",
      ("only the tokenizer given a template has one", has_chat_template(chat_tok) and not has_chat_template(tok)),
      ("the prompt is a ChatML turn that ends in the assistant header",
       chat_prompt.startswith("<|im_start|>system\n") and chat_prompt.endswith("<|im_start|>assistant\n")),
      ("the question is the user's turn", "<|im_start|>user\nWhat is 33 + 16?<|im_end|>" in chat_prompt),
      ("without a template the prompt is the plain question", build_prompt(tok, "What is 33 + 16?") == "What is 33 + 16?\n"))

# %% [markdown]
# ## 2 · Many GPUs: DistributedDataParallel with torchrun
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
# how often the wrapper's `forward` and the inner model's `forward` run: the model runs 6 times (1 forward
# pass and 5 generated tokens), the wrapper 0 times, so no batch is ever scattered. Only calling the wrapper
# itself, `dp(...)`, goes through it.

# %%
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
tutorial_calls = dict(calls)
print("the tutorial's calls:", tutorial_calls)
with torch.no_grad():
    dp(input_ids=ids)                          # calling the wrapper itself does go through it
print("after one call of the wrapper itself:", calls)
forward_src = inspect.getsource(nn.DataParallel.forward)
print("where DataParallel's work happens, in DataParallel.forward:")
for line in forward_src.splitlines():
    if any(k in line for k in ("scatter(", "replicate(", "parallel_apply(", "gather(")):
        print("   ", line.strip())

# %% jupyter={"source_hidden": true}
check("2 · nn.DataParallel through .module",
      ("the tutorial's calls run the model 6 times (1 forward + 5 generated tokens) and the wrapper 0 times",
       tutorial_calls == {"DataParallel.forward": 0, "Qwen2ForCausalLM.forward": 6}),
      ("the wrapper's forward is where scatter, replicate, parallel_apply and gather happen",
       all(k in forward_src for k in ("self.scatter(", "self.replicate(", "self.parallel_apply(", "self.gather("))),
      ("calling the wrapper itself does go through it", calls["DataParallel.forward"] == 1))

# %% [markdown]
# ### `device_map="auto"`: layers on different GPUs run one after another
#
# `device_map="auto"` (Hugging Face Accelerate) gives each GPU a contiguous block of decoder layers.
# That fits a big model, but a token's hidden state must pass through the layers in order, so GPU 1
# waits for GPU 0, and so on. We give the tiny model's 4 layers to 2 pretend GPUs the same way (layers
# 0–1 on GPU 0, 2–3 on GPU 1), record which GPU is busy at each layer of one forward pass, and count
# the share of time each one works. The GPUs take turns: one works at a time, each is busy $1/K$ of the
# time, and with $K = 8$ GPUs, 7 of them are idle at any moment.

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
del dp, dp_model

# %% jupyter={"source_hidden": true}
check("2 · device_map=\"auto\"",
      ("the timeline never goes back to an earlier GPU: they take turns",
       timeline == sorted(timeline) and set(timeline) == {0, 1}),
      ("each GPU is busy 1/K of the forward pass", all(abs(share - 1 / n_gpus) < 1e-9 for share in busy.values())))

# %% [markdown]
# ### DDP: every rank has the whole model and a share of the batch; backward averages the gradients
#
# DDP's contract: each of the $K$ processes (ranks) starts from the same weights, computes a loss on
# its own share $S_k$ of the batch, $|S_k| = B/K$ rows, and `loss.backward()` all-reduces the gradients so
# every rank ends up with their **average**. If each rank's loss is the mean over its own rows,
#
# $$L_k = \frac{K}{B}\sum_{i \in S_k} \ell_i, \qquad
# \frac{1}{K}\sum_{k=1}^{K} \nabla L_k = \frac{1}{K}\sum_{k=1}^{K}\frac{K}{B}\sum_{i\in S_k}\nabla \ell_i
# = \frac{1}{B}\sum_{i=1}^{B}\nabla \ell_i = \nabla L,$$
#
# exactly the gradient one process with the whole batch would get. Then every rank takes the same AdamW step
# and the copies stay identical. One half's gradient alone is not the full-batch gradient; only the average is.
#
# The script below is complete DDP: a small network, a batch of 8 rows, each of 2 ranks takes 4 of
# them. `torchrun` starts the two processes on this CPU with the `gloo` backend (on GPUs: `nccl`,
# same code). Its last line ends each rank with `os._exit(0)`, once every result is saved and the process
# group destroyed. In 15 stress runs of this notebook on a 2-core machine (5 of them beside a busy loop per
# core), one loaded run lost rank 1 to SIGABRT ("terminate called without an active exception") after both
# ranks had saved their results; the script alone did not fail in 80 runs on a loaded machine, so we could
# not catch where. C++ prints that message when it aborts outside any exception, as when a thread still
# running is destroyed; gloo's worker threads meeting Python's interpreter shutdown is a known upstream problem
# (pytorch/pytorch#179291). `os._exit(0)` skips the interpreter's shutdown: nothing is left to tear down.

# %%
DDP_SCRIPT = '''
import os
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
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)   # skip interpreter shutdown: a gloo thread freeing a tensor during it aborts the rank (rarely)
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

# %% jupyter={"source_hidden": true}
zipped = list(zip(ranks[0]["grads"], ranks[1]["grads"], full, half0, half1))
check("2 · DDP averages the gradients",
      ("after backward both ranks hold the same gradient", all(torch.allclose(g0, g1, atol=1e-7) for g0, g1, *_ in zipped)),
      ("it is the full-batch gradient", all(torch.allclose(g0, gf, atol=1e-6) for g0, _, gf, _, _ in zipped)),
      ("which is the average of the two halves' gradients",
       all(torch.allclose((h0 + h1) / 2, gf, atol=1e-6) for _, _, gf, h0, h1 in zipped)),
      ("while one half's gradient alone is not", not torch.allclose(half0[0], full[0], atol=1e-3)))


# %% [markdown]
# This is why `grpo_lib` keeps a prompt's whole group on one rank: advantages need the group's mean
# and std, and with whole groups no rank needs another's rewards. Only the gradients (by DDP) and the
# logged metrics (`grpo_lib.dist.all_reduce_metrics`) cross between ranks.
#
# It is also why a token-level loss needs care. The `"grpo"` loss is a mean over completions, and
# every rank has the same number of completions, so averaging the ranks' means gives the global mean,
# as above. TRL's `"dapo"` loss divides the summed token losses by the number of tokens, and ranks
# hold different numbers of tokens: with $n_k$ active tokens on rank $k$ and $n = \sum_k n_k$, dividing by
# $n_k$ gives $\frac{1}{K}\sum_k \frac{1}{n_k}\sum_{S_k} m\,\ell$, not the token mean $\frac{1}{n}\sum m\,\ell$.
#
# **6.1 · The dapo normaliser under DDP (fill in).** `masks` is a list of the $K$ ranks' completion
# masks, `masks[k]` of shape $(B_k, T_k)$ (each rank pads to its own longest completion). Return the
# number that rank `rank` divides its summed token losses $\sum_{i,t} m_{i,t}\,\ell_{i,t}$ by, so that
# after DDP averages the $K$ ranks' gradients the loss is the token mean over the **whole** batch.
# Compare with `global_num_tokens` and `world_size` in `grpo_lib.loss.grpo_loss` when you are done.
# Stuck? `hint("6.1")`.

# %% tags=["solution"]
def my_dapo_normaliser(masks, rank):   # masks: K tensors (B_k, T_k); rank: int -> float
    ### BEGIN SOLUTION
    n_global = sum(float(m.sum()) for m in masks)      # active tokens on all ranks (an all-reduce)
    return n_global / len(masks)                         # DDP's average divides by K once more
    ### END SOLUTION

check_dapo_normaliser(my_dapo_normaliser);

# %% [markdown]
# ## 3 · Launching on 1, 2 and 8 GPUs
#
# `torchrun --nproc_per_node=K` starts $K$ copies of the same command; `grpo_lib.train` reads its rank
# from the environment, so the command is the one you ran on one GPU. The Qwen preset states its batch
# **per GPU** (7 prompts x $G$ = 12 = 84 completions), so on $K$ GPUs a step processes $7K$ prompts and
# $84K$ completions: the effective batch is $K$ times larger, and 500 steps see $K$ times more problems.
# The learning rate stays 5e-6: with the per-sequence "grpo" loss the update averages over more groups,
# a less noisy gradient of the same size (scale it only if you measure that it helps). To keep the
# tutorial's total batch instead, give `--N` (prompts per step over all GPUs; it must divide by $K$, and
# `train()` refuses one that does not at the start, naming `--N`). $G$ stays 12: it is a property of the
# algorithm (how many samples estimate a group's baseline), not of the hardware. Every run prints its
# per-GPU and global batch at the start and records them in summary.json.

# %%
from grpo_lib.cli import parse_config

QWEN = "--preset qwen2.5-1.5b-gsm8k --data-dir ../shared/data/gsm8k"
launch = {
    1: f"python -m grpo_lib {QWEN} --output-dir runs/qwen-1gpu",
    2: f"torchrun --standalone --nproc_per_node=2 -m grpo_lib {QWEN} --output-dir runs/qwen-2gpu",
    8: f"torchrun --standalone --nproc_per_node=8 -m grpo_lib {QWEN} --output-dir runs/qwen-8gpu",
}
multi_node = (f"torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=$HEAD_NODE:29500 "
              f"-m grpo_lib {QWEN} --output-dir runs/qwen-16gpu   # same line on both machines")
for K, cmd in launch.items():
    print(f"{K} GPU{'s' if K > 1 else ' '}: {cmd}")
print("2 nodes x 8 GPUs:", multi_node)
launched = {K: parse_config(cmd.split("-m grpo_lib ", 1)[1].split()) for K, cmd in launch.items()}
markdown_table(["GPUs K", "prompts × G per GPU", "prompts per step", "completions per step", "lr"],
               [(K, f"{c.N_per_rank(K)} × {c.G}", c.global_N(K), c.global_B(K), c.lr) for K, c in launched.items()],
               floatfmt="g")

# %%
try:
    qwen.replace(N=7).N_per_rank(2)
    refused = None
except ValueError as err:
    refused = str(err)
    print("--N 7 on 2 GPUs:", refused)

# %% jupyter={"source_hidden": true}
check("3 · launching on K GPUs",
      ("every launch gives 7 prompts × 12 completions per GPU",
       all(c.N_per_rank(K) == 7 and c.G == 12 for K, c in launched.items())),
      ("and 84·K completions per step", all(c.global_B(K) == 84 * K for K, c in launched.items())),
      ("the learning rate stays 5e-6", all(c.lr == 5e-6 for c in launched.values())),
      ("a total --N of 7 on 2 GPUs is refused, naming N", refused is not None and "N = 7" in refused))

# %% [markdown]
# ### The tiny preset on 2 CPU processes
#
# The same `torchrun` line, on this CPU: 2 processes over `gloo`, 10 steps, evaluation on 100 held-out
# problems, and a checkpoint every 3 steps of which the newest 2 are kept (section 4 uses them). Each rank
# samples 8 of the 16 prompts (64 of the 128 completions); evaluation is sharded too (each rank scores half of
# the held-out problems, the counts are summed), and rank 0 alone logs, reports and writes the files. On 2 CPU
# cores this is not faster than one process (they share the cores); the point is that the code path is the one
# the GPUs use. In 10 steps held-out accuracy rises by at least 10 points.

# %%
ddp_out = Path(tempfile.mkdtemp(prefix="grpo06-ddp-"))
ddp_args = ["-m", "grpo_lib", "--preset", "tiny", "--steps", "10", "--eval-n", "100", "--num-threads", "1",
            "--report-to", "none", "--progress", "false", "--log-every", "2",
            "--save-every", "3", "--save-total-limit", "2", "--output-dir", str(ddp_out)]
print("torchrun --standalone --nproc_per_node=2", " ".join(ddp_args[:-2]), "--output-dir <output_dir>")
ddp_run = run_torchrun(ddp_args, nproc=2, env={"WANDB_MODE": "offline"})
print(ddp_run.stdout.replace(str(ddp_out), "<output_dir>"))
ddp_metrics = [json.loads(line) for line in (ddp_out / "metrics.jsonl").read_text().splitlines()]   # rank 0's files
ddp_summary = json.loads((ddp_out / "summary.json").read_text())

# %% jupyter={"source_hidden": true}
check("3 · the tiny preset on 2 processes",
      ("rank 0 alone wrote metrics.jsonl: one record per step, no duplicates",
       [m["step"] for m in ddp_metrics] == list(range(1, 11))),
      ("the run knew it had 2 processes", ddp_summary["world_size"] == 2),
      ("10 steps, 100 held-out problems", ddp_summary["steps"] == 10 and ddp_summary["eval_n"] == 100),
      ("only rank 0 printed", ddp_run.stdout.count("[eval @ step 0]") == 1),
      ("every step's metrics are in range",
       all(0 <= m["accuracy"] <= 1 and m["completions/mean_length"] > 0 for m in ddp_metrics)),
      ("held-out accuracy rose by at least 10 points",
       ddp_summary["accuracy_after"] >= ddp_summary["accuracy_before"] + 0.1))

# %% [markdown]
# ## 4 · Checkpoints: rotation, `from_pretrained`, resume
#
# A 500-step Qwen run takes hours; a lost GPU or a preempted job must not lose them. With `--save-every K` the
# run writes `OUTPUT_DIR/checkpoints/step-XXXXXX/` every $K$ steps: the model as `save_pretrained` writes it,
# AdamW's state, the learning-rate schedule, every rank's random-number states, the metrics so far, and
# `manifest.json` last, with each file's size and sha256 (`grpo_lib.run.checkpoint`). The folder is written under a
# temporary name and renamed when complete, so a run killed while writing never leaves a half checkpoint that
# looks whole. `--save-total-limit 2` keeps the newest 2 complete ones: the run above wrote steps 3, 6 and 9,
# and deleted step 3 once step 9 was complete.

# %%
ckpts = sorted((ddp_out / "checkpoints").iterdir())
print("checkpoints kept:", [c.name for c in ckpts])
newest = ckpts[-1]
manifest = json.loads((newest / "manifest.json").read_text())
state = json.loads((newest / "trainer_state.json").read_text())
print(f"{newest.name}: step {state['step']}, written by {state['world_size']} processes")
markdown_table(["file in " + newest.name, "bytes", "sha256 (first 16 hex digits)"],
               [(name, info["bytes"], info["sha256"][:16] + "…") for name, info in sorted(manifest["files"].items())])

# %% [markdown]
# The `model/` folder of a checkpoint (and the run's final `model/`) is a plain Hugging Face model: it loads
# with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`, with no `grpo_lib` code,
# so you can evaluate it, share it or serve it. Here the final model answers a held-out question.

# %%
from transformers import AutoModelForCausalLM, AutoTokenizer

final = AutoModelForCausalLM.from_pretrained(ddp_out / "model")
final_tok = AutoTokenizer.from_pretrained(ddp_out / "model")
question = build_prompt(final_tok, "What is 47 + 38?")
with torch.no_grad():
    out_ids = final.generate(**final_tok(question, return_tensors="pt"), max_new_tokens=40, do_sample=False)
answer = final_tok.decode(out_ids[0, len(final_tok(question).input_ids):], skip_special_tokens=True)
print(type(final).__name__, f"{sum(p.numel() for p in final.parameters()):,} parameters")
print(repr(question), "->", repr(answer))

# %% [markdown]
# **Resume.** `--resume DIR` (a checkpoint, or a run folder: its newest complete checkpoint) continues with the
# saved configuration, on the same number of processes: every rank restores its own random-number state and its
# own slice of the prompts. So the resumed run is not just close to the run that never stopped, it is the same
# run: steps 7 to 10 after resuming from step 6 give the same metrics, to the last digit. We resume the run above
# from its step-6 checkpoint (it continues in the same folder, rewriting `metrics.jsonl` from step 7 on) and
# compare every metric except the timings.

# %%
step6 = ddp_out / "checkpoints" / "step-000006"
resume_args = ["-m", "grpo_lib", "--resume", str(step6), "--progress", "false"]
print("torchrun --standalone --nproc_per_node=2 -m grpo_lib --resume <output_dir>/checkpoints/" + step6.name)
resumed_run = run_torchrun(resume_args, nproc=2, env={"WANDB_MODE": "offline"})
print(resumed_run.stdout.replace(str(ddp_out), "<output_dir>"))
resumed_metrics = [json.loads(line) for line in (ddp_out / "metrics.jsonl").read_text().splitlines()]
resumed_summary = json.loads((ddp_out / "summary.json").read_text())
TIMING = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
          "wall_seconds"}
same = lambda a, b: {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
markdown_table(["step", "reward (never stopped)", "reward (resumed)", "KL (never stopped)", "KL (resumed)",
                "all metrics but timings equal"],
               [(a["step"], a["reward"], b["reward"], a["kl"], b["kl"], same(a, b))
                for a, b in zip(ddp_metrics[6:], resumed_metrics[6:])], floatfmt=".6f")

# %% jupyter={"source_hidden": true}
check("4 · checkpoints",
      ("--save-every 3 --save-total-limit 2 over 10 steps keeps steps 6 and 9",
       [c.name for c in ckpts] == ["step-000006", "step-000009"]),
      ("the manifest lists the model, AdamW, the schedule and both ranks' RNG states",
       {"optimizer.pt", "scheduler.pt", "rng-rank0.pt", "rng-rank1.pt", "trainer_state.json"} <= set(manifest["files"])
       and any(name.startswith("model/") for name in manifest["files"])),
      ("the final model loads with from_pretrained and has the tiny model's size",
       sum(p.numel() for p in final.parameters()) == sum(p.numel() for p in base.parameters())),
      ("the resumed run has one record per step, 1 to 10", [m["step"] for m in resumed_metrics] == list(range(1, 11))),
      ("steps 7-10 resumed from step 6 equal the run that never stopped, every metric but the timings",
       all(same(a, b) for a, b in zip(ddp_metrics, resumed_metrics))),
      ("and so does the final held-out accuracy", resumed_summary["accuracy_after"] == ddp_summary["accuracy_after"]))

# %% [markdown]
# ## 5 · Will it fit? A memory planner for one GPU
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
#   in 16-bit, with $s = P + T$ the sequence length, $b$ the micro-batch, $h$ the hidden size. The same count
#   on Qwen2's layer (RMSNorm in fp32, SwiGLU MLP of width $f$, grouped-query attention through SDPA,
#   which keeps no $s\times s$ scores) gives per token and per layer
#   $2((4+a)h + 4) + 2ah + 2ah_q + 2ah'_{kv} + 4n_{heads} + 4af$ (+ $as$ for the padding mask),
#   where $h_q = n_{heads} d_{head}$ is the width of the queries, $h'_{kv}$ the width of the saved keys (and of
#   the values), $n_{kv} d_{head}$, except that with a padding mask transformers repeats K and V to every query
#   head before SDPA, so $h'_{kv} = h_q$ in GRPO's left-padded batches; $f$ is the MLP width and $s$ the
#   sequence length,
#   about 106 KiB per token per layer for Qwen2.5-1.5B. `tests/test_course_memory.py` measures this with
#   `torch.autograd.graph.saved_tensors_hooks` on a small Qwen2 and gets the same bytes;
# - **gradient checkpointing** keeps only each layer's input ($ah$ per token per layer) and recomputes
#   one layer at a time in the backward pass;
# - **logits**: `grpo_lib.logprobs` computes them only for the $T$ completion positions, $bTV$ numbers
#   ($V$ = 151,936), where the tutorial's full log-softmax keeps $b(P+T)V$ in fp32;
# - **generation**: the KV cache, $N G/K \times (P+T) \times L \times 2 \times n_{kv} \times d_{head}$
#   numbers (only 2 KV heads in Qwen2.5-1.5B, so 28 KiB per token);
# - **what autocast keeps in fp32** (mixed precision): the residual stream stays fp32 (fp32 embeddings plus
#   fp32 residual adds), so each RMSNorm saves $8h + 4$ bytes per token, each projection saves its own bf16
#   cast of the normed input ($5ah$ per layer instead of $2ah$), a checkpointed layer input is $4h$, and on
#   CUDA the log-softmax of the kept logits runs in fp32 ($4bTV$). `tests/test_course_memory.py` measures
#   this count under autocast too and gets the same bytes;
# - **the optimizer step**: torch's AdamW computes $\sqrt{v}$ for every parameter at once, one more
#   moment-sized temporary ($4\Psi$ in mixed precision) on top of weights, gradients and moments;
# - **gradient accumulation**: the first micro-batch of an update runs with the gradients freed
#   (`zero_grad(set_to_none=True)`), every later one with them allocated, so the update's peak is
#   states + gradients + one micro-batch.
#
# We budget $P = 256$ prompt tokens (system prompt, chat template and a GSM8K question are about
# 100 tokens on average at ~4 characters per token, the longest about 300, and a batch is padded to
# its longest) and the preset's $T = 400$. `plan_for_run(cfg, ...)` reads $G$, $N$, $T$, β, the micro-batch,
# checkpointing and the precision from a `GRPOConfig` and calls `plan_gpu_memory` with them. In the preset's plan the weights line is $4\Psi$ bytes (fp32 master
# weights), with $\Psi$ from the config in closed form equal to torch's count of the model built on the meta
# device; AdamW is $8\Psi$, $\pi_{ref}$ $2\Psi$ (bf16), and the KV cache 28 KiB per token.

# %%
from grpo_lib.course.memory import (GIB, count_parameters_from_config, plan_for_run, plan_gpu_memory,
                                    qwen2_5_1_5b_instruct_config, qwen2_parameter_count)

qwen_config = qwen2_5_1_5b_instruct_config()
P_BUDGET = 256
psi = qwen2_parameter_count(qwen_config)                            # 1,543,714,304
preset_plan = plan_for_run(qwen, qwen_config, prompt_len=P_BUDGET)   # the preset: 7 x 12 per GPU, b 12, mixed
by_hand = plan_gpu_memory(qwen_config, G=12, N=7, prompt_len=P_BUDGET, completion_len=400, micro_batch_size=12,
                          gradient_checkpointing=True, beta=0.04, precision="mixed")   # the same, every number given
preset_plan

# %% jupyter={"source_hidden": true}
check("5 · the preset's plan",
      ("Ψ in closed form = torch's count on the meta device = 1,543,714,304",
       psi == count_parameters_from_config(qwen_config) == 1_543_714_304),
      ("fp32 master weights: 4Ψ bytes", preset_plan.row("policy", "weights").bytes == 4 * psi),
      ("fp32 AdamW m and v: 8Ψ bytes", preset_plan.row("policy", "AdamW m and v").bytes == 8 * psi),
      ("π_ref in bf16: 2Ψ bytes", preset_plan.row("reference", "weights").bytes == 2 * psi),
      ("KV cache: 84 rows × (P + T) tokens × 28 KiB",
       preset_plan.row("generation", "KV cache").bytes == 84 * (P_BUDGET + 400) * 28 * 1024),
      ("plan_for_run is plan_gpu_memory with the preset's numbers", by_hand == preset_plan))


# %% [markdown]
# Now the scenarios a learner meets: the tutorial's settings (pure bf16, the layout the H100 record below
# measured) with and without checkpointing, without micro-batching, the preset's mixed precision, and
# DeepSeekMath's $G = 64$ on 8 GPUs. Each gets a verdict for an 80 GB GPU (H100, A100) and a 24 GB one (RTX
# 4090, A10G). The planner allows 90% of the card: the CUDA context, fragmentation and short-lived buffers take
# the rest. Checkpointing and micro-batches shrink the update; β = 0 saves exactly the reference's $2\Psi$; the
# tutorial's own loop (84 completions at once, an fp32 log-softmax over every position) does not fit even one
# 80 GB GPU.

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

# %% jupyter={"source_hidden": true}
s = list(scenarios.values())
check("5 · scenarios",
      ("checkpointing and micro-batches shrink the update; the tutorial's full-vocabulary loop is the largest",
       s[0].peak_bytes < s[1].peak_bytes and s[0].peak_bytes < s[2].peak_bytes < s[3].peak_bytes),
      ("β = 0 saves exactly the reference's 2Ψ", s[0].states_bytes - s[5].states_bytes == 2 * psi),
      ("mixed precision: fp32 weights 4Ψ and AdamW 8Ψ",
       s[4].row("policy", "AdamW m and v").bytes == 8 * psi and s[4].row("policy", "weights").bytes == 4 * psi),
      ("the tutorial's settings fit 24 GB; without checkpointing or micro-batching only 80 GB",
       s[0].fits(24) and not s[1].fits(24) and s[1].fits(80) and s[2].fits(80) and not s[2].fits(24)),
      ("the tutorial's own loop does not fit 80 GB; mixed precision does not fit 24 GB; β = 0 does",
       not s[3].fits(80) and not s[4].fits(24) and s[5].fits(24)),
      ("G 64 on 8 GPUs fits 80 GB with checkpointing, and needs more without",
       s[6].peak_bytes < s[7].peak_bytes and s[6].fits(80)),
      ("every verdict follows the 90% rule",
       all(p.fits(80) == (p.peak_gib <= 0.9 * 80) and p.fits(24) == (p.peak_gib <= 0.9 * 24) for p in s)))

# %% [markdown]
# Per-GPU memory against the completion length $T$, for the tutorial's batch on one GPU: with
# checkpointing the activations grow slowly (one hidden state per layer per token); without it they
# dominate quickly. The dashed lines are 90% of a 24 GB and an 80 GB card. Memory grows with $T$ on both
# curves, checkpointing is below at every $T$, and the longest $T$ that fits a 24 GB card is at least 4 times
# longer with checkpointing.

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
longest = {label: max([T for T, g in zip(T_values, gib) if g <= 0.9 * 24], default=0) for label, gib in curves.items()}
print("longest T that fits a 24 GB card:", longest)

# %% jupyter={"source_hidden": true}
ck, no_ck = curves["gradient checkpointing"], curves["no checkpointing"]
check("5 · memory against T",
      ("memory grows with T on both curves", ck == sorted(ck) and no_ck == sorted(no_ck)),
      ("checkpointing is below at every T", all(a < b for a, b in zip(ck, no_ck))),
      ("the longest T that fits 24 GB is at least 4 times longer with checkpointing",
       longest["gradient checkpointing"] >= 4 * max(longest["no checkpointing"], 64)))

# %% [markdown]
# ### Measured, not only planned
#
# `scripts/measure_gpu_memory.py` builds Qwen2.5-1.5B from this config with random bf16 weights on a GPU and
# runs the three phases the way `grpo_lib.train` did before mixed precision (pure-bf16 AdamW, a reference copy,
# left-padded micro-batches of 12 through `token_logprobs`, `generate` with the KV cache). The record below is
# its output on **one NVIDIA H100 80GB (torch 2.11, transformers 5.17, 2026-11-26)**, for the preset's settings;
# it is a record, since this notebook runs without a GPU. The script measures the update of **one** micro-batch,
# which runs with the gradients freed (`set_to_none=True`), so it is compared with the planner's first
# micro-batch; within 10% in every phase. A real update accumulates 7 micro-batches, and the 6 later ones run
# with the gradients allocated: the planner's update peak adds them, and no measurement covers that yet.

# %%
H100_RECORD = {  # scripts/measure_gpu_memory.py, NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, transformers 5.17.0
    "update peak, checkpointing": 17.33, "update peak, no checkpointing": 37.05,
    "generation peak": 14.46 + 1.93,    # persistent 14.46 GiB + 1.93 GiB during generate()
}
planned = {
    "update peak, checkpointing": qwen_plan().first_micro_batch_peak_bytes / GIB,             # one micro-batch,
    "update peak, no checkpointing": qwen_plan(gradient_checkpointing=False).first_micro_batch_peak_bytes / GIB,
    "generation peak": qwen_plan().generation_peak_bytes / GIB,
}
markdown_table(["phase", "measured on H100, 2026-11-26 (GiB)", "planned (GiB)", "planned / measured"],
               [(k, H100_RECORD[k], planned[k], planned[k] / H100_RECORD[k]) for k in H100_RECORD], floatfmt=".2f")

# %% jupyter={"source_hidden": true}
check("5 · measured on an H100",
      *((f"{k}: the plan is within 10% of the measurement", abs(planned[k] / H100_RECORD[k] - 1) < 0.10)
        for k in H100_RECORD))

# %% [markdown]
# **The preset's mixed-precision layout has no GPU record.** The H100 record above is of the pure-bf16 layout
# and one micro-batch; the H200 record (below: generation at the tutorial's shape) is of speed, not memory; no
# GPU was available when the planner learned what autocast keeps in fp32, AdamW's temporary and gradient
# accumulation. So the gap between this plan and a measurement is not known: `scripts/gpu_smoke.py` measures it
# on one GPU and fails when the peak is more than 15% from the plan. What the plan still leaves out: the CUDA
# context and the attention and cuBLAS workspaces (the 10% the planner keeps free), blocks the caching
# allocator reserves but does not use, the entropy's temporaries in the update and, under `torchrun`, DDP's
# gradient buckets (a second copy of the gradients, $4\Psi$ in mixed precision).

# %%
mixed_plan = plan_for_run(qwen, qwen_config, prompt_len=P_BUDGET)
print(f"the preset (mixed precision), one GPU: planned peak {mixed_plan.peak_gib:.1f} GiB = max(update "
      f"{mixed_plan.update_peak_bytes / GIB:.1f}, optimizer step {mixed_plan.step_peak_bytes / GIB:.1f}, generation "
      f"{mixed_plan.generation_peak_bytes / GIB:.1f}); measured: never (no GPU)")
check("5 · the preset's mixed-precision plan",
      ("7 micro-batches of 12: the update peak is states + gradients + one micro-batch",
       mixed_plan.micro_batches == 7 and mixed_plan.update_peak_bytes
       == mixed_plan.states_bytes + mixed_plan.gradient_bytes + mixed_plan.update_bytes),
      ("AdamW's temporary is one more fp32 moment, 4Ψ", mixed_plan.row("optimizer step", "AdamW update temporary").bytes
       == 4 * psi),
      ("it needs an 80 GB card", mixed_plan.fits(80) and not mixed_plan.fits(24)))

# %% [markdown]
# ### Why generation dominates a step at LLM scale
#
# The update runs every token of the batch through the model in a few large parallel passes. Generation makes
# T passes one after another, one new token per row each, and every pass reads all the weights. For the
# tutorial's run (Qwen2.5-1.5B, 84 rows, up to 400 new tokens), the planner's arithmetic and the measurement of
# docs/performance.md on **one NVIDIA H200, 2026-11-26** (84 × 400 tokens at 1,650 tokens/s with the KV cache,
# random weights in bf16):

# %%
B_tut, P_tut, T_tut = 84, 256, 400
update_flops = 6 * psi * B_tut * (P_tut + T_tut)                               # forward + backward, every token
generation_flops = 2 * psi * B_tut * T_tut                                     # forward only, new tokens
weights_bytes = 2 * psi                                                        # bf16, read once per decode step
measured_generation_s = 33_600 / 1650                                          # docs/performance.md: 84 x 400 tokens at 1,650 tok/s, H200
H200_BF16_PEAK = 989e12                                                        # NVIDIA's datasheet, dense bf16 FLOP/s (a spec, not measured)
update_s_at = {u: update_flops / (H200_BF16_PEAK * u) for u in (0.4, 0.1)}    # the update's time at a utilisation u (estimate)
breakeven_util = update_flops / (H200_BF16_PEAK * measured_generation_s)       # below this the update would take longer
markdown_table(["quantity", "value"], [
    ("update: FLOPs (6 Ψ per token, all B·(P+T) tokens)", f"{update_flops:.3g}"),
    ("generation: FLOPs (2 Ψ per new token)", f"{generation_flops:.3g}"),
    ("generation: sequential forward passes", T_tut),
    ("generation: bytes of weights read per pass", f"{weights_bytes / 1e9:.2f} GB"),
    ("generation measured on an H200 (KV cache, 2026-11-26)", f"{measured_generation_s:.1f} s"),
    ("update estimated at 40% / 10% of the H200's bf16 peak (not measured)",
     f"{update_s_at[0.4]:.1f} s / {update_s_at[0.1]:.1f} s"),
    ("utilisation at which the update would take as long as generation", f"{breakeven_util:.1%}"),
])

# %% [markdown]
# Generation does about 5 times fewer FLOPs than the update, yet on the GPU it is expected to take most of the
# step. The update's time on a GPU was not measured here; the table estimates it from its FLOPs and the H200's
# datasheet peak: at 40% utilisation (typical of a large dense training step) it is a small fraction of the
# measured generation time, and it would match generation only below the utilisation in the last row. Why
# generation is slow: 400 passes that cannot run in parallel, each a full read of the weights plus kernel-launch and Python overhead for one
# token per row. The measured time is over 50 times the floor that the H200's memory bandwidth (4.8 TB/s) sets.
# Exercise 6.2 asks for that floor. Faster inference engines (vLLM, SGLang) attack exactly this part, which is
# why production GRPO trainers generate with them (TRL's `use_vllm`, section 6). On the tiny CPU run generation is
# only a quarter to a third of a step (notebook 05's log prints the seconds of `gen`, `score` and `upd` per step):
# 40 new tokens of a 1M-parameter model are cheap, so the tiny run hides what dominates at this scale.

# %% jupyter={"source_hidden": true}
check("5 · why generation dominates",
      ("the update does about 5 times the arithmetic of generation", 4.5 < update_flops / generation_flops < 5.5),
      ("the measured generation time is over 50 times the bandwidth floor (4.8 TB/s)",
       measured_generation_s > 50 * T_tut * weights_bytes / 4.8e12),
      ("estimated update time, even at 10% of peak, is under a third of the measured generation time",
       update_s_at[0.1] < measured_generation_s / 3),
      ("the update would take as long as generation only below 5% utilisation", breakeven_util < 0.05))


# %% [markdown]
# **6.2 · The floor under generation time, with the KV cache (fill in).** The check above compares the
# measured time with the weights alone. Generation also reads the KV cache. Write `my_decode_floor(n_params,
# bytes_per_param, T, B, bandwidth, P, kv_bytes_per_token)`: a lower bound, in seconds, on generating `T` new
# tokens for `B` rows of `P`-token prompts at once with a model of `n_params` weights of `bytes_per_param` bytes
# each, on a GPU that reads `bandwidth` bytes per second from its memory, when every token a row has seen costs
# `kv_bytes_per_token` bytes of cache (at the step that generates token t a row's cache holds its P prompt
# tokens and the t − 1 tokens before; ignore all overheads). Which part grows with B? Then compare it with the
# measured 20.4 s above: what takes the rest of the time? Stuck? `hint("6.2")`.

# %% tags=["solution"]
def my_decode_floor(n_params, bytes_per_param, T, B, bandwidth, P, kv_bytes_per_token):   # -> seconds
    ### BEGIN SOLUTION
    weights = T * n_params * bytes_per_param              # every step reads all weights once, for all B rows
    cache = B * kv_bytes_per_token * sum(P + t - 1 for t in range(1, T + 1))   # each row reads its own cache
    return (weights + cache) / bandwidth
    ### END SOLUTION

check_decode_floor(my_decode_floor);

# %% [markdown]
# ## 6 · The same run on TRL
#
# `grpo_lib`'s engine stops at one machine with DDP, `generate`-style sampling and full AdamW states on every
# GPU. [TRL](https://github.com/huggingface/trl)'s `GRPOTrainer` adds what a larger run needs: vLLM generation
# (the part that dominates a step, section 5), DeepSpeed ZeRO and FSDP (sharded AdamW state, gradients and
# weights, for a model whose training state does not fit one GPU), several machines, LoRA. The recipe
# `python -m grpo_lib.trl.recipe` trains **this course's configuration** with TRL: the same model and tokenizer,
# the same prompts step by step, the same reward functions and the same held-out evaluation, so two runs differ
# only in the trainer. Its options are `grpo_lib.train`'s, plus `--trl KEY=VALUE` for TRL-only ones.
# `tests/test_golden_trl.py` (in CI) checks that TRL 1.16.0's own loss computation and `grpo_lib`'s agree on
# the same batch: the loss, every parameter's gradient and the clip and KL metrics, for every loss type.
#
# Several of TRL's defaults are not the paper's, and the recipe overrides each: `loss_type="dapo"` (ours:
# `grpo`), `beta=0.0` (no KL and no reference model), `use_bias_correction_kl=True` (the KL term multiplied by
# the ratio), a linear learning-rate decay, bf16 and gradient checkpointing on. And TRL counts its batch in
# **completions** (`per_device_train_batch_size`), where ours counts prompts. The full option map, by name
# (`grpo_lib.trl.recipe.TRL_NAMES`; docs/trl.md prints it with these defaults):

# %%
from grpo_lib.trl.recipe import TRL_NAMES

markdown_table(["our option (GRPOConfig, --option)", "TRL (trl.GRPOConfig / GRPOTrainer)"],
               [(f"`{ours}`", theirs) for ours, theirs in TRL_NAMES.items()
                if ours in ("G", "epsilon", "beta", "mu", "num_iterations", "loss_type", "N", "prompts_per_device",
                            "steps", "max_completion_length", "lr", "lr_schedule", "precision",
                            "gradient_checkpointing", "micro_batch_size", "save_every", "resume")])

# %% [markdown]
# **The tiny run on TRL** (a CPU is enough; measured on this course's shared 2-core machine on 2026-11-30, load
# average about 3, recorded in docs/trl.md): the command below took held-out strict accuracy from 48.0% to
# 87.0% in 170 s of training. It is not run here: even 3 steps (`--steps 3 --eval-n 50`) took 42 s on the same
# machine (2026-11-30, load average about 3), more than this notebook's budget.
#
# ```bash
# pip install -e ".[trl]"                                     # TRL, pinned to 1.16.0
# python -m grpo_lib.trl.recipe --preset tiny --steps 40 --eval-n 100 --report-to none
# ```
#
# **The Qwen run on 8 GPUs through TRL, with vLLM generation and ZeRO-2 (never run: no GPU was available).** The
# same per-GPU batch as the engine's `torchrun` run: 7 prompts × $G = 12$ = 84 completions on each GPU (672 per
# step), in micro-batches of 12, so TRL accumulates 7 of them per optimizer step. TRL counts *optimizer* steps, so
# with μ > 1 the recipe multiplies `max_steps`, the reference syncs, saves and logs by μ (TRL then samples the same
# number of batches as the engine). The policy is loaded in fp32 and TRL's `bf16=True` is bf16 autocast: the
# engine's mixed precision. What the mapping gives TRL is computed below, on this CPU: `trl_args` builds TRL's own
# `GRPOConfig` for the same command line (it needs TRL installed; without it the cell says how to install it).

# %%
import contextlib, io, warnings

from grpo_lib.trl.compare import INSTALL_HINT, trl_available
from grpo_lib.trl.recipe import parse_trl_overrides, trl_args

TRL_8_GPUS = """\
accelerate launch --config_file "$ZERO2" --num_processes 8 -m grpo_lib.trl.recipe \\
    --preset qwen2.5-1.5b-gsm8k --data-dir ../shared/data/gsm8k \\
    --trl use_vllm=true --trl vllm_mode=colocate --trl vllm_gpu_memory_utilization=0.3 \\
    --output-dir runs/qwen2.5-1.5b-gsm8k-trl"""
print(TRL_8_GPUS)
trl_cfg = parse_config(["--preset", "qwen2.5-1.5b-gsm8k", "--data-dir", "../shared/data/gsm8k",
                        "--device", "cpu"])          # device cpu: built on this machine; on the GPUs it is cuda
vllm = parse_trl_overrides(["use_vllm=true", "vllm_mode=colocate", "vllm_gpu_memory_utilization=0.3"])
if trl_available():
    # importing TRL prints a W&B line and transformers warns about a renamed option: neither concerns this cell
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trl_8 = trl_args(trl_cfg, tempfile.mkdtemp(prefix="trl-args-"), world_size=8, overrides=vllm)
    shown = ("num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps",
             "max_completion_length", "loss_type", "beta", "use_bias_correction_kl", "epsilon", "learning_rate",
             "lr_scheduler_type", "bf16", "gradient_checkpointing", "use_vllm", "vllm_mode")
    display_table = markdown_table(["TRL option", "value for the 8-GPU command"],
                                   [(k, str(getattr(getattr(trl_8, k), "value", getattr(trl_8, k)))) for k in shown])
else:
    trl_8, display_table = None, INSTALL_HINT
display_table

# %% jupyter={"source_hidden": true}
check("6 · the same run on TRL",
      ("every GRPOConfig field has a row in the option map", set(GRPOConfig.__dataclass_fields__) <= set(TRL_NAMES)),
      ("μ is TRL's num_iterations, G its num_generations",
       TRL_NAMES["mu"].startswith("num_iterations") and TRL_NAMES["G"] == "num_generations"),
      ("each GPU takes the engine's 7 × 12 = 84 completions: micro-batches of 12, 7 accumulated",
       trl_8 is None or (trl_8.per_device_train_batch_size, trl_8.gradient_accumulation_steps) == (12, 7)),
      ("max_steps = I · M · μ optimizer steps = 500",
       trl_8 is None or trl_8.max_steps == trl_cfg.total_steps * trl_cfg.mu == 500),
      ("TRL gets the paper's loss and KL: loss grpo, β 0.04, the KL not multiplied by the ratio",
       trl_8 is None or (trl_8.loss_type, trl_8.beta, trl_8.use_bias_correction_kl) == ("grpo", 0.04, False)),
      ("... bf16 with gradient checkpointing, vLLM colocated",
       trl_8 is None or (trl_8.bf16, trl_8.gradient_checkpointing, trl_8.use_vllm, trl_8.vllm_mode)
       == (True, True, True, "colocate")))

# %% [markdown]
# ## Summary
#
# The Qwen run is notebook 05's engine with another preset: 7 prompts × 12 completions per GPU, 400 new tokens,
# mixed precision (fp32 master weights and AdamW, bf16 compute: pure bf16 rounds away most updates at lr 5e-6),
# and the chat template, with which Qwen-Instruct is expected to stop after `</answer>` (it was tuned on
# ChatML turns that end in `<|im_end|>`; no Qwen run here measured it).
#
# On several GPUs the tutorial's `nn.DataParallel` never ran (every call went through `model.module`)
# and `device_map="auto"` only split the layers, so the GPUs took turns. DistributedDataParallel runs
# one process per GPU, each with the whole model and whole groups of its own prompts, and averages the
# gradients in the backward pass: the same update as one GPU with the whole batch, as the two-process
# demo showed, provided the loss is normalised globally (exercise 6.1). `torchrun --nproc_per_node=K`
# launches it; the per-GPU batch stays 84 completions and the step grows to $84K$. Checkpoints hold everything
# the next step depends on, rotate, load with `from_pretrained`, and resume to the same metrics as a run that
# never stopped. The memory planner says the tutorial's settings fit a 24 GB card with gradient checkpointing
# and micro-batches of 12, and not without checkpointing; an H100 measurement of one micro-batch
# agrees within 10%. The preset's mixed precision needs an 80 GB card (planned in section 5), not yet
# measured. At this scale generation is expected to dominate the step (generation measured on an H200; the
# update estimated from its FLOPs, not measured), which is what TRL's vLLM route addresses; the recipe
# maps every option of this course onto TRL's `GRPOTrainer`.
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.config.GRPOConfig`'s `qwen2.5-1.5b-gsm8k` preset (`prompts_per_device`, mixed precision);
#   `grpo_lib.precision` (`resolve_precision`, `changed_fraction`).
# - `grpo_lib.data.has_chat_template` (and `build_prompt`'s chat-template path).
# - `grpo_lib.dist`: rank and world size from torchrun, `print0`, `all_reduce_metrics`; `train()` wraps the
#   policy in DistributedDataParallel under torchrun. `grpo_lib.course.notebook.run_torchrun` launches it from a
#   cell.
# - `grpo_lib.run.checkpoint`: atomic checkpoints with a manifest, rotation (`--save-total-limit`), resume
#   (`--resume`), tested in `tests/test_checkpoint.py` and, on 2 processes, `tests/test_ddp.py`.
# - `grpo_lib.course.memory.plan_gpu_memory`, `plan_for_run`, `qwen2_parameter_count`, `activation_breakdown`,
#   `kv_cache_bytes`: the per-GPU memory planner, tested in `tests/test_course_memory.py` (by hand, against torch's
#   parameter count and against the bytes autograd saves); `scripts/measure_gpu_memory.py` measures it on a GPU.
# - `grpo_lib.trl.recipe` (`python -m grpo_lib.trl.recipe`, `trl_args`, `TRL_NAMES`): the same run on TRL
#   (docs/trl.md; tested in `tests/test_trl_recipe.py` and `tests/test_golden_trl.py`).
# - `grpo_lib.course.exercises.ex06`: the checkers of exercises 6.1 and 6.2, tested in
#   `tests/test_course_exercises_ex06.py` and `tests/test_course_exercises_hints.py`.
#
# ## Exercises
#
# Exercises 6.1 (section 2) and 6.2 (section 5) are fill-in and checked. Open ones (worked answers for
# instructors in docs/teaching.md):
#
# **6.3 · Per-rank normalisation.** In the DDP demo of section 2, give rank 1 only 2 of the 8 rows (6 for
# rank 0) and keep `.mean()` as each rank's loss. Is the averaged gradient still the full-batch one?
# Which rows now weigh more, and how is this the same bug as normalising `dapo` by the local token count?
#
# **6.4 · Plan your own GPUs.** With `plan_for_run`, find the largest `max_completion_length` that fits
# your GPU for the tutorial's batch, with and without gradient checkpointing, and the largest `G` at
# `micro_batch_size=12`. Which term of the table grows with G, and which does not? What does ZeRO stage 1
# (`zero_stage=1`) save on 8 GPUs?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

plain = scenarios["tutorial settings, pure bf16: G 12, N 7, micro-batch 12, checkpointing"]
quiz("Quiz · notebook 06",
     Question("The update does about 5 times the FLOPs of generation. Which is expected to take most of a GPU step?",
              ("the update", "generation", "they take the same time"), 1,
              f"Generation was measured at {measured_generation_s:.1f} s on an H200; the update is estimated at "
              f"{update_s_at[0.4]:.1f} s at 40% of peak (not measured): T sequential passes, each reading every "
              f"weight (5).",
              update_s_at[0.1] < measured_generation_s / 3),
     Question("TRL's `num_iterations` is which loop of DeepSeekMath's Algorithm 1?",
              ("the outer iterations I (π_ref reset)", "μ, the updates per sampled batch", "the steps M"), 1,
              "TRL's outer loop is `sync_ref_model` (6).", TRL_NAMES["mu"].startswith("num_iterations")),
     Question("The tutorial's settings with gradient checkpointing and micro-batches of 12: do they fit a 24 GB card?",
              ("yes", "no"), 0,
              f"The planner gives {plain.peak_gib:.1f} GiB per GPU, under 90% of 24 (5).", plain.fits(24)),
     Question("Several GPUs with DDP: what does each process hold?",
              ("a slice of the layers", "the whole model and whole groups of its own prompts", "one completion"), 1,
              "DDP replicates the model and averages the gradients in the backward pass (2).", True))

# %% [markdown]
# ## Next
#
# Check the memory plan of your GPUs (section 5), then run the Qwen preset with the commands of sections 1 and 3,
# with `--save-every` so that a lost machine costs minutes, not hours; compare its learning curves with notebook
# 05's tiny run. If you do, record the step time and peak memory with `scripts/gpu_smoke.py` first: no one has
# measured them yet. When you need vLLM, ZeRO or several machines, move to TRL with `python -m grpo_lib.trl.recipe`
# (section 6, docs/trl.md). docs/teaching.md lists discussion questions for this notebook.

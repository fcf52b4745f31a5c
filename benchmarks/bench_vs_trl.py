"""One GRPO step of grpo_lib's engine against one of TRL's GRPOTrainer, alternating, in one process.

Both train the tiny preset at matched settings (the same model, tokenizer, prompts step by step, reward
functions, N x G, max_completion_length, lr, beta, loss_type, threads): TRL's arguments are
`grpo_lib.trl.recipe.trl_args(cfg)`, the mapping of docs/trl.md. TRL's `trainer.train()` drives the run;
a TrainerCallback times each TRL step (on_step_begin -> on_step_end: generation, scoring, reference
log-probs, forward, backward, AdamW, TRL's logging) and then runs and times one step of ours (the body of
grpo_lib.train's loop: generate_completions, score_rollout, policy_update, scheduler step). So the two
alternate step by step, and a burst of load from other programs hits both about equally.

Reported: the median step time of each, the ratio TRL / ours per step pair (median, and the spread: the
25th-75th percentile and min-max of the per-pair ratios), the first step of each excluded (warm-up), and
the held-out greedy accuracy (grpo_lib.evaluation.evaluate) each model reaches after the same number of
steps, so a speed-up that costs learning shows.

Run:
    python benchmarks/bench_vs_trl.py                 # tiny preset, 40 steps, 300 held-out problems (~3-4 min quiet)
    python benchmarks/bench_vs_trl.py --quick         # N=4, G=4, 4 steps, 20 problems (seconds; tests/test_benchmarks.py)
    python benchmarks/bench_vs_trl.py --steps 20 --threads 2
    python benchmarks/bench_vs_trl.py --defaults      # each at its own default thread layout (see below)

--defaults: what a learner gets without choosing. Ours runs at the engine's default (grpo_lib.threads: the
usable cores, fewer while other programs hold cores, re-checked before each of our steps); TRL runs at
torch's default (torch.get_num_threads() at start: all the machine's cores), set again before each TRL step.
Without --defaults both run at --threads (default 1): the matched comparison.

Needs TRL (pip install -e ".[trl]").
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_lines, markdown_table  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/bench_vs_trl.py",
                                description="grpo_lib's GRPO step vs TRL's GRPOTrainer step on the tiny preset, "
                                            "alternating in one process; prints step times, their ratio and "
                                            "the held-out accuracy each reaches.")
    p.add_argument("--quick", action="store_true", help="N=4, G=4, 4 steps, 20 held-out problems (seconds)")
    p.add_argument("--steps", type=int, default=None, help="training steps for each trainer (default 40; quick 4)")
    p.add_argument("--eval-n", type=int, default=None, help="held-out problems (default 300; quick 20)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (both trainers; default 1)")
    p.add_argument("--defaults", action="store_true",
                   help="each trainer at its own default thread layout (ours: grpo_lib.threads; TRL: torch's default)")
    p.add_argument("--N", type=int, default=None, help="prompts per step (default: the preset's 16; quick 4)")
    p.add_argument("--G", type=int, default=None, help="completions per prompt (default 8; quick 4)")
    return p


def run(args: argparse.Namespace) -> dict:
    import torch

    from grpo_lib.trl.compare import INSTALL_HINT, trl_available

    if not trl_available():
        raise SystemExit(f"bench_vs_trl needs TRL. {INSTALL_HINT}")
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from grpo_lib.config import GRPOConfig
    from grpo_lib.data import build_prompt, load_problems, prompts_for_step
    from grpo_lib.evaluation import evaluate
    from grpo_lib.models import load_policy
    from grpo_lib.rollout import generate_completions, score_rollout
    from grpo_lib.rewards import reward_functions
    from grpo_lib.threads import ThreadGovernor
    from grpo_lib.train import make_optimizer, policy_update, sampling_seed
    from grpo_lib.trl.recipe import training_dataset, trl_args

    steps = args.steps if args.steps is not None else (4 if args.quick else 40)
    eval_n = args.eval_n if args.eval_n is not None else (20 if args.quick else 300)
    over = {k: v for k, v in {"N": args.N if args.N is not None else (4 if args.quick else None),
                              "G": args.G if args.G is not None else (4 if args.quick else None)}.items()
            if v is not None}
    if steps < 2:
        raise SystemExit(f"--steps must be >= 2 (the first step of each is a warm-up), got {steps}")
    threads = None if args.defaults else (1 if args.threads is None else args.threads)
    if threads is not None and threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {threads}")
    torch_default = torch.get_num_threads()          # TRL's default: whatever torch starts with (all cores)
    cfg = GRPOConfig.tiny(steps=steps, eval_n=eval_n, device="cpu", num_threads=threads, report_to="none",
                          progress=False, **over)
    governor = ThreadGovernor.for_run(threads, 1, "cpu")       # ours: fixed at --threads, or the engine's default
    torch.manual_seed(cfg.seed)
    train_problems = load_problems(cfg.task, "train")
    eval_problems = load_problems(cfg.task, "test", n=eval_n)
    reward_funcs = reward_functions(cfg.reward_funcs)

    # --- ours: the body of grpo_lib.train's loop, one step per call ---
    ours, tok = load_policy("tiny", device="cpu")
    ref = copy.deepcopy(ours).eval().requires_grad_(False) if cfg.beta > 0 else None
    optimizer, scheduler = make_optimizer(ours, cfg)

    def our_step(step: int) -> None:
        problems = prompts_for_step(train_problems, step, cfg.N, cfg.seed)
        prompts = [build_prompt(tok, p["question"], cfg.system_prompt) for p in problems]
        rollout = generate_completions(ours, tok, prompts, cfg.G, max_new_tokens=cfg.max_completion_length,
                                       temperature=cfg.temperature, seed=sampling_seed(cfg.seed, step, 0, 1))
        batch = score_rollout(rollout, [p["answer"] for p in problems], reward_funcs, policy=ours, ref_model=ref,
                              scale_rewards=cfg.scale_rewards, temperature=cfg.temperature, need_old=cfg.mu > 1,
                              chunk_size=cfg.micro_batch_size)
        for _ in range(cfg.mu):
            policy_update(ours, optimizer, batch, cfg)
            scheduler.step()

    # --- TRL: its own loop; the callback times its steps and interleaves ours ---
    theirs, tok_trl = load_policy("tiny", device="cpu")
    load_start = load_average()
    t_trl, t_ours = [], []

    class Alternate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            torch.set_num_threads(torch_default if threads is None else threads)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            t_trl.append(time.perf_counter() - self.t0)
            t0 = time.perf_counter()
            torch.set_num_threads(governor.update())             # as grpo_lib.train does before each step
            our_step(state.global_step - 1)
            t_ours.append(time.perf_counter() - t0)

    acc = {}
    for name, model in (("grpo_lib", ours), ("trl", theirs)):
        acc[name] = [evaluate(model, tok, eval_problems, max_new_tokens=cfg.max_completion_length,
                              batch_size=cfg.eval_batch_size, progress=False).strict_accuracy]
    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(model=theirs, reward_funcs=list(reward_funcs.values()), args=trl_args(cfg, out),
                              train_dataset=training_dataset(cfg, tok_trl, train_problems),
                              processing_class=tok_trl, callbacks=[Alternate()])
        trainer.train()
    for name, model in (("grpo_lib", ours), ("trl", theirs)):
        model.eval()
        acc[name].append(evaluate(model, tok, eval_problems, max_new_tokens=cfg.max_completion_length,
                                  batch_size=cfg.eval_batch_size, progress=False).strict_accuracy)
    return {"cfg": cfg, "t_trl": t_trl, "t_ours": t_ours, "acc": acc, "steps": steps, "eval_n": eval_n,
            "threads": (f"grpo_lib at its default ({governor.summary()['steps_at_num_threads']} steps at each count), "
                        f"TRL at torch's default ({torch_default})" if threads is None else str(threads)),
            "load_start": load_start, "load_end": load_average()}


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def report(r: dict) -> str:
    cfg = r["cfg"]
    t_trl, t_ours = r["t_trl"][1:], r["t_ours"][1:]                 # step 1 of each: warm-up
    ratios = [a / b for a, b in zip(t_trl, t_ours)]
    lines = [line if not line.startswith("# load average at start") else
             f"# load average at start (1/5/15 min): {r['load_start']}" for line in machine_lines(threads=r["threads"])]
    lines.append(f"# load average at end (1/5/15 min): {r['load_end']}")
    lines.append(f"# tiny preset: N = {cfg.N} x G = {cfg.G} = {cfg.B} completions per step, {cfg.max_completion_length} "
                 f"new tokens, lr {cfg.lr}, beta {cfg.beta}, loss_type {cfg.loss_type}, {r['steps']} steps each "
                 f"(alternating), held-out n = {r['eval_n']}")
    out = ["\n".join(lines), "",
           f"#### Step time, grpo_lib vs TRL (median of steps 2..{r['steps']})", "",
           markdown_table(["trainer", "median s/step", "min s", "max s", "held-out acc before", f"after {r['steps']} steps"],
                          [["grpo_lib", f"{statistics.median(t_ours):.3f}", f"{min(t_ours):.3f}", f"{max(t_ours):.3f}",
                            f"{r['acc']['grpo_lib'][0]:.1%}", f"{r['acc']['grpo_lib'][1]:.1%}"],
                           ["TRL", f"{statistics.median(t_trl):.3f}", f"{min(t_trl):.3f}", f"{max(t_trl):.3f}",
                            f"{r['acc']['trl'][0]:.1%}", f"{r['acc']['trl'][1]:.1%}"]]),
           "",
           "#### Speed-up: TRL step time / grpo_lib step time, per alternating pair", "",
           markdown_table(["pairs", "median ratio", "25th-75th percentile", "min-max", "ratio of medians"],
                          [[len(ratios), f"{statistics.median(ratios):.2f}",
                            f"{quantile(ratios, 0.25):.2f}-{quantile(ratios, 0.75):.2f}",
                            f"{min(ratios):.2f}-{max(ratios):.2f}",
                            f"{statistics.median(t_trl) / statistics.median(t_ours):.2f}"]])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "offline")
    args = build_parser().parse_args(argv)
    if args.defaults and args.threads is not None:     # before anything heavy is imported
        raise SystemExit("--defaults runs each trainer at its own default thread count: leave out --threads")
    print(report(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

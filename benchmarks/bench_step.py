"""One GRPO step of the tiny preset, split into its phases, for 1 process and for 2 (torchrun, DDP over gloo).

A step (grpo_lib/train.py, the body of its loop) is four phases, each timed here with grpo_lib's own
building blocks (nothing of the loop is copied beyond the order of the calls):

    generation   grpo_lib.rollout.generate_completions: G completions per prompt, KV cache, sampling
    scoring      grpo_lib.rollout.score_rollout: reward functions r, group advantages A
    log-probs    log π_ref (and log π_θold when μ > 1) under no_grad: grpo_lib.rollout.completion_logprobs
    update       grpo_lib.train.policy_update (forward with grad, grpo_loss, backward, clip, AdamW step)
                 and the scheduler step

Under torchrun every rank runs its N / K prompts; the ranks meet at a barrier after each phase, so a
phase's time is the slowest rank's (the max over ranks is reported) and the update includes DDP's gradient
all-reduce. Tokens are the completion tokens of the whole global batch (all ranks), up to and including
EOS; tokens/s = tokens / seconds.

Threads: on a machine with C cores, "P × T" means P processes with T torch threads each. The fair
comparison on 2 cores is 1 × 2 against 2 × 1 (both use both cores); 1 × 1 is the tiny preset's own
setting (num_threads = 1). Other programs running on the same cores slow every configuration: the load
average is printed before and after, so read the numbers as indicative.

Warm-up: one step (not timed), then the median of --steps steps.

Run:
    python benchmarks/bench_step.py                       # 1×1, 1×2 and 2×1 on CPU, ~30 s on a quiet machine
    python benchmarks/bench_step.py --quick               # small batch, one step; tests/test_benchmarks.py
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_step.py --threads 1   # one config, rank 0 prints
    python benchmarks/bench_step.py --device cuda --configs 1x1                     # one GPU

Taught in: notebooks/05_full_run.ipynb (the training loop and its timing metrics).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, machine_lines, markdown_table, resolve_device, usable_cores  # noqa: E402

PHASES = ("generation", "scoring", "logprobs", "update")
PHASE_TITLES = {"generation": "generation", "scoring": "scoring (rewards, A)",
                "logprobs": "ref/old log-probs", "update": "update (fwd+bwd+AdamW)"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench_step.py",
        description="Time one GRPO step of the tiny preset, phase by phase, for 1 and 2 processes.",
        epilog="Without torchrun the script launches every configuration of --configs itself (2-process "
               "ones through `python -m torch.distributed.run --standalone`). Under torchrun it measures "
               "that one configuration and rank 0 prints.")
    p.add_argument("--quick", action="store_true", help="N=4, G=4, one timed step (seconds; for the tests)")
    p.add_argument("--configs", default=None,
                   help="comma list of PROCESSESxTHREADS, e.g. 1x1,1x2,2x1 (default on CPU: 1x1,1x2,2x1 when "
                        "there are 2+ cores; quick: 1x1; on CUDA: 1x1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (torchrun mode; default: cores / processes)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--steps", type=int, default=None, help="timed steps after one warm-up step (default 5; quick: 1)")
    p.add_argument("--N", type=int, default=None, help="prompts per step over all ranks (tiny preset: 16; quick: 4)")
    p.add_argument("--G", type=int, default=None, help="completions per prompt (tiny preset: 8; quick: 4)")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds one configuration may run before it is stopped (a hang fails instead of blocking)")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    return p


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            procs, threads = (int(x) for x in part.split("x"))
        except ValueError:
            raise SystemExit(f"--configs: {part!r} is not PROCESSESxTHREADS (e.g. 2x1)") from None
        if procs < 1 or threads < 1:
            raise SystemExit(f"--configs: {part!r} needs at least 1 process and 1 thread")
        out.append((procs, threads))
    if not out:
        raise SystemExit("--configs is empty")
    return out


def overrides(args: argparse.Namespace) -> dict:
    o = {"N": args.N if args.N is not None else (4 if args.quick else None),
         "G": args.G if args.G is not None else (4 if args.quick else None)}
    o = {k: v for k, v in o.items() if v is not None}
    for k, v in o.items():
        if v < 1:
            raise SystemExit(f"--{k} must be >= 1, got {v}")
    return o


# --- one configuration: what every rank runs ------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict | None:
    import torch

    from grpo_lib import dist
    from grpo_lib.config import GRPOConfig
    from grpo_lib.data import build_prompt, load_problems, prompts_for_step
    from grpo_lib.models import load_policy
    from grpo_lib.rewards import reward_functions
    from grpo_lib.rollout import completion_logprobs, generate_completions, generation_mode, score_rollout
    from grpo_lib.train import make_optimizer, policy_update

    info = dist.init_distributed(resolve_device(args.device))
    rank, world = info.rank, info.world_size
    threads = args.threads or max(1, usable_cores() // world)
    torch.set_num_threads(threads)
    steps = args.steps if args.steps is not None else (1 if args.quick else 5)
    if steps < 1:
        raise SystemExit(f"--steps must be >= 1, got {steps}")
    cfg = GRPOConfig.tiny(**overrides(args), num_threads=threads, device=info.device, progress=False,
                          report_to="none")
    cfg.N_per_rank(world)                                   # a clear error if N does not divide by the ranks
    torch.manual_seed(cfg.seed)                             # same init on every rank
    model, tok = load_policy(cfg.model, device=info.device, dtype=cfg.dtype)
    problems = load_problems(cfg.task, "train", data_dir=cfg.data_dir)
    reward_funcs = reward_functions(cfg.reward_funcs)
    optimizer, scheduler = make_optimizer(model, cfg)
    policy = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [info.local_rank] if info.device.startswith("cuda") else None
        policy = DistributedDataParallel(model, device_ids=device_ids)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
    cuda = info.device.startswith("cuda")

    def phase_end(t0: float) -> float:
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        dist.barrier()                                      # next phase starts together on all ranks
        return seconds

    records = []
    for step in range(1 + steps):                          # step 0 is the warm-up
        batch_problems = prompts_for_step(problems, step, cfg.N, cfg.seed, rank, world)
        prompts = [build_prompt(tok, p["question"], cfg.system_prompt) for p in batch_problems]
        dist.barrier()
        t_step = time.perf_counter()
        sec = {}

        t0 = time.perf_counter()
        rollout = generate_completions(model, tok, prompts, cfg.G, max_new_tokens=cfg.max_completion_length,
                                       temperature=cfg.temperature,
                                       seed=cfg.seed * 1_000_003 + step * world + rank)
        sec["generation"] = phase_end(t0)

        t0 = time.perf_counter()
        batch = score_rollout(rollout, [p["answer"] for p in batch_problems], reward_funcs,
                              scale_rewards=cfg.scale_rewards, temperature=cfg.temperature)
        sec["scoring"] = phase_end(t0)

        t0 = time.perf_counter()
        if cfg.mu > 1:
            with generation_mode(model):
                batch.logp_old = completion_logprobs(model, rollout, cfg.temperature, cfg.micro_batch_size)
        if ref_model is not None:
            with torch.no_grad():
                batch.logp_ref = completion_logprobs(ref_model, rollout, cfg.temperature, cfg.micro_batch_size)
        sec["logprobs"] = phase_end(t0)

        t0 = time.perf_counter()
        for _ in range(cfg.mu):
            policy_update(policy, optimizer, batch, cfg)
            scheduler.step()
        sec["update"] = phase_end(t0)
        step_seconds = time.perf_counter() - t_step

        local = torch.tensor([sec[p] for p in PHASES] + [step_seconds], dtype=torch.float64)
        # positions one pass processes: each distinct prompt once (prefix sharing), then every completion token
        positions = float(rollout.prompt_mask[::rollout.G].sum() + rollout.completion_mask.sum())
        tokens = torch.tensor([float(rollout.completion_lengths.sum()), positions], dtype=torch.float64)
        if dist.is_initialized():
            torch.distributed.all_reduce(local, op=torch.distributed.ReduceOp.MAX)   # the slowest rank
            torch.distributed.all_reduce(tokens, op=torch.distributed.ReduceOp.SUM)  # the global batch
        records.append({**dict(zip(PHASES + ("step",), local.tolist())), "tokens": tokens[0].item(),
                        "positions": tokens[1].item()})

    timed = records[1:]
    # the compute floor: 2 FLOP per weight of every Linear (the LM head included) per position and forward
    # pass; a backward costs about two forwards. Attention's own matmuls (~4·d·context per position and
    # layer) are left out: at these lengths they are a few percent.
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    passes = {"generation": 1, "scoring": 0, "logprobs": (cfg.beta > 0) + (cfg.mu > 1), "update": 3 * cfg.mu}
    result = {"processes": world, "threads": threads, "device": info.device, "N": cfg.N, "G": cfg.G,
              "B": cfg.B, "max_completion_length": cfg.max_completion_length, "steps": steps,
              "median": {k: statistics.median(r[k] for r in timed) for k in PHASES + ("step", "tokens", "positions")},
              "flop_per_position_pass": 2.0 * linear, "passes": passes,
              "matmul_gflops": matmul_gflops(info.device), "records": records}
    # Free the DDP wrapper while the process group is still registered, then leave together: if the wrapper's
    # Reducer held the last reference to the gloo group after destroy_process_group, its destructor would join
    # gloo's threads while holding the GIL, and a thread still freeing a Python-owned tensor waits for the GIL
    # (a deadlock seen here with py-spy: ~Reducer -> ~ProcessGroupGloo -> std::thread::join).
    del policy
    dist.cleanup(barrier=True)
    return result if info.is_main else None


def matmul_gflops(device: str, n: int = 1024, repeats: int = 8) -> float:
    """What this process's threads do on one large fp32 matmul (GFLOP/s): the ceiling for the phases."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b                                                   # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def floor_table(results: list[dict]) -> str:
    """Per configuration and phase: passes, GFLOP, achieved GFLOP/s and its share of the matmul ceiling."""
    rows = []
    for r in results:
        m, name = r["median"], f"{r['processes']} × {r['threads']}"
        per_pass = r["flop_per_position_pass"] * m["positions"] / 1e9
        ceiling = r["matmul_gflops"] * r["processes"]       # every process's threads together
        total = 0.0
        for p in PHASES:
            gflop = per_pass * r["passes"][p]
            total += gflop
            rate = gflop / max(m[p], 1e-9)
            rows.append([name, PHASE_TITLES[p], f"{m[p] * 1000:.1f}", r["passes"][p], f"{gflop:.1f}",
                         f"{rate:.1f}" if gflop else "-", f"{rate / ceiling:.0%}" if gflop else "-"])
        rate = total / m["step"]
        rows.append([name, "**step**", f"{m['step'] * 1000:.1f}", sum(r["passes"].values()), f"{total:.1f}",
                     f"{rate:.1f}", f"{rate / ceiling:.0%}"])
    r0 = results[0]
    return "\n".join([
        "Where the time goes: the compute floor of each phase (2 FLOP per Linear weight per position and forward "
        f"pass, a backward = 2 forwards; {r0['flop_per_position_pass'] / 2e6:.2f} M Linear weights, "
        f"{r0['median']['positions']:.0f} positions per pass: each distinct prompt once + every completion "
        "token; attention's own matmuls left out). The ceiling is one 1024 × 1024 fp32 matmul at the same "
        "threads: " + ", ".join(f"{r['processes']} × {r['threads']}: {r['matmul_gflops']:.0f} GFLOP/s"
                                 for r in results) + " per process; the share is of P times that.",
        "",
        markdown_table(["processes × threads", "phase", "ms", "forward passes", "GFLOP", "GFLOP/s",
                        "share of the matmul ceiling"], rows)])


# --- the report -----------------------------------------------------------------------------------------
def report(results: list[dict]) -> str:
    r0 = results[0]
    base = next((r for r in results if (r["processes"], r["threads"]) == (1, 1)), r0)
    rows_s, rows_tps = [], []
    for r in results:
        m = r["median"]
        name = f"{r['processes']} × {r['threads']}"
        steps = [rec["step"] for rec in r["records"][1:]]
        rows_s.append([name] + [f"{m[p] * 1000:.1f}" for p in PHASES]
                      + [f"{m['step'] * 1000:.1f}", f"{max(steps) / min(steps):.2f}", f"{m['tokens']:.0f}",
                         f"{m['tokens'] / m['step']:.0f}", f"{base['median']['step'] / m['step']:.2f}×"])
        rows_tps.append([name] + [f"{m['tokens'] / max(m[p], 1e-9):.0f}" for p in PHASES])
    lines = [
        "## One GRPO step of the tiny preset, phase by phase",
        "",
        f"N = {r0['N']} prompts × G = {r0['G']} = B = {r0['B']} completions per step (over all processes), "
        f"≤ {r0['max_completion_length']} new tokens, on {r0['device']}; median of {r0['steps']} step(s) after "
        "one warm-up step. Each phase's time is the slowest rank's; spread = slowest / fastest timed step.",
        f"P × T = processes × torch threads per process; this machine has {usable_cores()} usable cores, so "
        "with 2 cores 1 × 2 and 2 × 1 use the same hardware (a fair comparison); the processes share them.",
        "",
        markdown_table(["processes × threads"] + [f"{PHASE_TITLES[p]} ms" for p in PHASES]
                       + ["step ms", "spread max/min", "tokens", "tokens/s",
                          f"step speed-up vs {base['processes']} × {base['threads']}"], rows_s),
        "",
        "Tokens per second of each phase (completion tokens of the step / the phase's seconds):",
        "",
        markdown_table(["processes × threads"] + [PHASE_TITLES[p] for p in PHASES], rows_tps),
        "",
        floor_table(results),
    ]
    return "\n".join(lines)


def launch(procs: int, threads: int, args: argparse.Namespace) -> dict:
    """Run one configuration in fresh processes; return rank 0's JSON result."""
    script = str(Path(__file__).resolve())
    extra = ["--_worker", "--threads", str(threads), "--device", args.device]
    for flag, value in (("--steps", args.steps), ("--N", args.N), ("--G", args.G)):
        if value is not None:
            extra += [flag, str(value)]
    if args.quick:
        extra.append("--quick")
    if procs == 1:
        cmd = [sys.executable, script] + extra
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               script] + extra
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired as err:
        raise SystemExit(f"{procs} × {threads} did not finish within --timeout {args.timeout:g} s: {' '.join(cmd)}\n"
                         f"{(err.stdout or b'')[-2000:]!r}\n{(err.stderr or b'')[-4000:]!r}") from None
    if proc.returncode != 0:
        raise SystemExit(f"{procs} × {threads} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{procs} × {threads}: no result line in the output:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    overrides(args)                                          # validate before starting anything
    if args.configs:
        parse_configs(args.configs)                          # (before grpo_lib and torch are imported)
    from grpo_lib.dist import launched_by_torchrun

    if args._worker or launched_by_torchrun():
        result = worker(args)
        if result is None:                                   # ranks other than 0 print nothing
            return 0
        if not args._worker:                                 # started by hand under torchrun: print the table
            print("\n".join(machine_lines(result["device"], threads=str(result["threads"]))))
            print(report([result]))
            print(f"# load average at end (1/5/15 min): {load_average()}")
        print(json.dumps(result))
        return 0

    device = resolve_device(args.device)
    default = "1x1" if args.quick or device.startswith("cuda") or usable_cores() < 2 else "1x1,1x2,2x1"
    configs = parse_configs(args.configs or default)
    if device.startswith("cuda") and any(p > 1 for p, _ in configs):
        import torch

        if torch.cuda.device_count() < max(p for p, _ in configs):
            raise SystemExit(f"--configs {args.configs}: {max(p for p, _ in configs)} processes need as many GPUs, "
                             f"this machine has {torch.cuda.device_count()}")
    print("\n".join(machine_lines(device, threads="as in the table (P × T)")))
    results = [launch(p, t, args) for p, t in configs]
    print(report(results))
    print(f"# load average at end (1/5/15 min): {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

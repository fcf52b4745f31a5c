"""DistributedDataParallel on CPU (gloo): the engine's multi-process path, proved without a GPU.

Two kinds of multi-process test:
- `torch.multiprocessing.spawn` workers that join a gloo process group over tcp://127.0.0.1 (the same
  environment variables torchrun sets, so `train()` takes its torchrun path). One spawn of 2 processes
  runs everything the module-scoped fixture `two_ranks` collects: a 3-step train() whose ranks start from
  DIFFERENT random weights, a resume from its checkpoint, and single DDP updates on given completions for
  each loss type. The tests then compare with one process doing the same work on the whole batch.
- real `torchrun --standalone --nproc_per_node=2 -m grpo_lib` runs of the tiny preset (marked slow:
  two fresh interpreters each): one that finishes, and one where rank 1 raises (test hook
  GRPO_LIB_FAULT="raise@2:rank1") and the whole job must exit non-zero, with the error, without hanging.

On a GPU machine the same code runs over nccl; these tests stay on CPU so CI can run them.
"""
import copy
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import Qwen2ForCausalLM

from grpo_lib.config import GRPOConfig
from grpo_lib.models import TINY_MODEL_DIR, tiny_qwen2_config
from grpo_lib.rollout import ScoredRollout, generate_completions, score_rollout
from grpo_lib.tokenizer import build_char_tokenizer

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
TIMING = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
          "wall_seconds"}
# name -> policy_update settings; "dapo_local_count" counts tokens per rank only (the bug TRL avoids)
UPDATE_CASES = {
    "grpo": dict(loss_type="grpo"),
    "dr_grpo": dict(loss_type="dr_grpo"),
    "dapo": dict(loss_type="dapo"),
    "bnpo": dict(loss_type="bnpo"),
    "dapo_micro_batches": dict(loss_type="dapo", micro_batch_size=3),        # DDP's no_sync path
    "grpo_checkpointing": dict(loss_type="grpo", micro_batch_size=3, gradient_checkpointing=True),
    "dapo_local_count": dict(loss_type="dapo"),
}


def time_scale() -> float:
    """How much to stretch this file's wall-clock limits: the run-queue length per core when above 1 (a busy
    machine), times GRPO_TEST_TIME_SCALE (default 1) for a machine that is slow rather than busy."""
    busy = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 1.0
    return max(1.0, busy) * float(os.environ.get("GRPO_TEST_TIME_SCALE", "1"))


def random_tiny(tok, seed=0):
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))




def rows(batch: ScoredRollout, start: int, stop: int) -> ScoredRollout:
    """Rows start..stop of a scored batch (whole groups), as one rank would hold them."""
    r, G = batch.rollout, batch.rollout.G
    assert start % G == 0 and stop % G == 0
    sub = dataclasses.replace(r, prompts=r.prompts[start // G:stop // G], prompt_ids=r.prompt_ids[start:stop],
                              prompt_mask=r.prompt_mask[start:stop], completion_ids=r.completion_ids[start:stop],
                              completion_mask=r.completion_mask[start:stop], texts=r.texts[start:stop])
    cut = lambda t: None if t is None else t[start:stop]                   # noqa: E731
    return dataclasses.replace(batch, rollout=sub, answers=batch.answers[start // G:stop // G],
                               rewards=cut(batch.rewards), rewards_per_func={k: cut(v) for k, v in
                                                                             batch.rewards_per_func.items()},
                               advantages=cut(batch.advantages), logp_old=cut(batch.logp_old),
                               logp_ref=cut(batch.logp_ref), correct=cut(batch.correct))


def make_batch():
    """16 completions (4 prompts x G = 4) with fixed, very unequal lengths: rank 0's rows are long, rank 1's short."""
    tok = build_char_tokenizer()
    base = random_tiny(tok)
    prompts = ["What is 1 + 2?\n", "What is 47 + 85?\n", "Hi\n", "What is 9 + 9?\n"]
    rollout = generate_completions(base, tok, prompts, G=4, max_new_tokens=10, seed=0)
    lengths = torch.tensor([10, 9, 10, 8, 10, 7, 10, 9,                   # rank 0: 73 tokens
                            1, 2, 1, 3, 2, 1, 4, 2]).clamp(max=rollout.T)   # rank 1: 16 tokens
    rollout.completion_mask = (torch.arange(rollout.T)[None, :] < lengths[:, None]).int()   # (B, T)
    ref = random_tiny(tok, seed=1)                                          # a different π_ref: KL > 0
    chars = {"chars": lambda completions, **kw: [float(sum(map(ord, c[0]["content"])) % 5) for c in completions]}
    batch = score_rollout(rollout, ["3", "132", "0", "18"], chars, policy=base, ref_model=ref, need_old=True)
    noise = torch.randn(batch.logp_old.shape, generator=torch.Generator().manual_seed(0))
    batch.logp_old = batch.logp_old + 0.3 * noise                           # as if π_θ had moved: ρ ≠ 1, clipping acts
    return base, batch


def update_cfg(**kw) -> GRPOConfig:
    return GRPOConfig.tiny(max_completion_length=10, max_grad_norm=1e6, **kw)   # no clipping: compare raw grads


def one_update(model, batch, cfg, wrap=None):
    """policy_update with SGD(lr=1) (so nothing rescales the gradient); returns (stats, flat gradient)."""
    from grpo_lib.rollout import set_gradient_checkpointing
    from grpo_lib.train import policy_update

    if cfg.gradient_checkpointing:
        set_gradient_checkpointing(model, True)
    policy = wrap(model) if wrap else model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                                # fast and steady on a busy 2-core box
    try:
        stats = policy_update(policy, torch.optim.SGD(model.parameters(), lr=1.0), batch, cfg)
    finally:
        torch.set_num_threads(threads)
    return stats, torch.cat([p.grad.flatten() for p in model.parameters()])


# --- the spawned workers --------------------------------------------------------------------------------------
def _worker(rank: int, port: int, tmp: str) -> None:
    # the test process holds the rendezvous store on `port` (see spawn); the ranks connect to it as clients,
    # as torchrun's ranks connect to its agent's store
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                      WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from torch.nn.parallel import DistributedDataParallel

    from grpo_lib import dist
    from grpo_lib.train import train

    out: dict = {}
    tok = build_char_tokenizer()
    # (1) train() on 2 ranks; each rank starts from DIFFERENT random weights: DDP must broadcast rank 0's
    cfg = GRPOConfig.tiny(steps=3, N=4, G=4, eval_n=4, max_completion_length=12, lr=1e-3, report_to="none",
                          progress=False, log_every=1, save_every=2, output_dir=f"{tmp}/run-rank{rank}")
    result = train(cfg, model=random_tiny(tok, seed=100 + rank), tokenizer=tok)
    out["history"] = result.history
    out["params"] = {k: v.clone() for k, v in result.model.state_dict().items()}
    # (2) resume both ranks from rank 0's checkpoint after step 2 (rank 1 restores its own RNG file). Step 2
    # lies in the first outer iteration, so π_ref (the starting model) was not saved: rank 0 passes the
    # starting model again, rank 1 another one (π_ref and π_θ come from rank 0 and the checkpoint)
    resumed = train(cfg.replace(resume=f"{tmp}/run-rank0/checkpoints/step-000002",
                                output_dir=f"{tmp}/resumed-rank{rank}"),
                    model=random_tiny(tok, seed=100 if rank == 0 else 200 + rank), tokenizer=tok)
    out["resumed_history"] = resumed.history
    out["resumed_params"] = {k: v.clone() for k, v in resumed.model.state_dict().items()}
    # (3) one DDP update on this rank's half of fixed completions, for each loss type
    data = torch.load(f"{tmp}/batch.pt", weights_only=False)            # written by the test itself
    half = data["batch"].rollout.B // WORLD
    mine = rows(data["batch"], rank * half, (rank + 1) * half)
    real_all_reduce_sum = dist.all_reduce_sum
    for name, kw in UPDATE_CASES.items():
        model = random_tiny(tok)
        model.load_state_dict(data["state"])
        if name == "dapo_local_count":
            dist.all_reduce_sum = lambda x: x                               # each rank sees only its own tokens
        try:
            out[name] = one_update(model, mine, update_cfg(**kw), wrap=DistributedDataParallel)
        finally:
            dist.all_reduce_sum = real_all_reduce_sum
    out["local_tokens"] = int(mine.mask.sum())
    # (4) the step's metrics over both ranks, from the "grpo" update on this rank's half
    from grpo_lib.run.runlog import step_metrics

    out["metrics"] = step_metrics(mine, [out["grpo"][0]], G=mine.rollout.G)
    # (5) resume where rank 1 cannot see the checkpoint: both ranks fail at once, naming rank 1 and the path
    from grpo_lib.run.checkpoint import CheckpointError, open_checkpoint_on_every_rank

    where = f"{tmp}/run-rank0/checkpoints/step-000002" if rank == 0 else f"{tmp}/not-on-this-machine"
    try:
        open_checkpoint_on_every_rank(where, cfg.to_dict(), WORLD)
        out["unseen_checkpoint"] = "no error"
    except CheckpointError as e:
        out["unseen_checkpoint"] = str(e)
    torch.save(out, f"{tmp}/rank{rank}.pt")
    dist.cleanup()


def spawn(fn, tmp: Path, timeout: float = 240.0) -> None:
    """Run fn(rank, port, tmp) in WORLD spawned processes; fail (never hang) after `timeout` seconds.

    The rendezvous store is created here on port 0 and kept open until the workers end, so the port is never
    free between being chosen and being used (a port found free and then released could be taken by another
    job on a busy machine before rank 0 binds it). `timeout` is stretched by `time_scale()`.
    """
    import torch.multiprocessing as mp
    from torch.distributed import TCPStore

    timeout *= time_scale()
    store = TCPStore("127.0.0.1", 0, WORLD, is_master=True, wait_for_workers=False)
    ctx = mp.start_processes(fn, args=(store.port, str(tmp)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"spawned workers still running after {timeout:.0f} s: a collective is hanging")
    del store


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    base, batch = make_batch()
    torch.save({"batch": batch, "state": base.state_dict()}, tmp / "batch.pt")
    spawn(_worker, tmp)
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return tmp, base, batch, ranks


# --- (1) training on 2 ranks -----------------------------------------------------------------------------------
def test_parameters_are_identical_on_every_rank_after_several_steps(two_ranks):
    _, _, _, (r0, r1) = two_ranks
    assert [rec["step"] for rec in r0["history"]] == [1, 2, 3]
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name                    # bit for bit, despite different inits
    # and they did train: rank 0's weights moved away from its own random init
    start = random_tiny(build_char_tokenizer(), seed=100).state_dict()
    assert any(not torch.equal(p, start[k]) for k, p in r0["params"].items())
    drop = lambda rec: {k: v for k, v in rec.items() if k not in TIMING}   # noqa: E731
    assert [drop(r) for r in r0["history"]] == [drop(r) for r in r1["history"]]   # metrics are all-reduced


def test_only_rank_0_writes_files(two_ranks):
    tmp = two_ranks[0]
    run0 = tmp / "run-rank0"
    assert {"metrics.jsonl", "evals.jsonl", "summary.json", "model", "checkpoints"} <= {p.name for p in run0.iterdir()}
    assert not (tmp / "run-rank1").exists() and not (tmp / "resumed-rank1").exists()
    summary = json.loads((run0 / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert [json.loads(line)["step"] for line in (run0 / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    ckpt = run0 / "checkpoints" / "step-000002"
    assert {"rng-rank0.pt", "rng-rank1.pt", "model", "manifest.json"} <= {p.name for p in ckpt.iterdir()}
    rng0, rng1 = (torch.load(ckpt / f"rng-rank{r}.pt", weights_only=True) for r in range(2))
    assert "torch" in rng0 and "python" in rng1                            # each rank's own state was gathered


def test_two_rank_resume_gives_the_same_metrics_and_weights(two_ranks):
    _, _, _, (r0, r1) = two_ranks
    for r in (r0, r1):
        assert [rec["step"] for rec in r["resumed_history"]] == [1, 2, 3]
        for a, b in zip(r0["history"], r["resumed_history"]):
            assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
        for name, p in r0["params"].items():
            assert torch.equal(p, r["resumed_params"][name]), name


# --- (3) given the same completions: 2 ranks x n prompts == 1 rank x 2n prompts ---------------------------------
@pytest.mark.parametrize("case", ["grpo", "dr_grpo", "dapo", "dapo_micro_batches", "grpo_checkpointing"])
def test_two_ranks_give_the_update_of_one_process_on_the_whole_batch(two_ranks, case):
    _, base, batch, ranks = two_ranks
    kw = UPDATE_CASES[case]
    stats, grad = one_update(copy.deepcopy(base), batch, update_cfg(**kw))
    assert grad.abs().max() > 1e-4                                          # a real gradient, not zeros
    for r in ranks:
        torch.testing.assert_close(r[case][1], grad, rtol=1e-4, atol=1e-7)  # DDP's averaged gradient, every rank
        assert r[case][0]["grad_norm"] == pytest.approx(stats["grad_norm"], rel=1e-4)
    # the metrics train() all-reduces: the mean over ranks of each rank's loss is the whole batch's loss
    mean_loss = sum(r[case][0]["loss"] for r in ranks) / len(ranks)
    assert mean_loss == pytest.approx(stats["loss"], rel=1e-4, abs=1e-7)


def test_gathered_metrics_of_two_ranks_equal_one_rank_on_the_whole_batch(two_ranks):
    """reward_std, kl, entropy, clip ratios, frac_reward_zero_std...: 2 ranks x 2 prompts == 1 rank x 4 prompts."""
    from grpo_lib.run.runlog import step_metrics

    _, base, batch, ranks = two_ranks
    stats, _ = one_update(copy.deepcopy(base), batch, update_cfg(loss_type="grpo"))
    whole = step_metrics(batch, [stats], G=batch.rollout.G)
    assert set(ranks[0]["metrics"]) == set(whole)
    assert {"reward_std", "kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
            "frac_reward_zero_std", "completions/mean_length", "completions/clipped_ratio"} <= set(whole)
    assert whole["kl"] > 0 and whole["entropy"] > 0 and whole["clip_ratio/region_mean"] > 0
    assert whole["clip_ratio/region_mean"] == pytest.approx(whole["clip_ratio/low_mean"] + whole["clip_ratio/high_mean"])
    for name, v in batch.rewards_per_func.items():                         # TRL's names; std unbiased (TRL's nanstd)
        assert whole[f"rewards/{name}/mean"] == pytest.approx(v.double().mean().item(), abs=1e-12)
        assert whole[f"rewards/{name}/std"] == pytest.approx(v.double().std().item(), abs=1e-12)
    for r in ranks:                                                         # every rank gets the global numbers
        for k, v in whole.items():
            assert r["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    # the two halves differ, so a per-rank mean of means would NOT give these numbers (the test can fail)
    half = batch.rollout.B // WORLD
    parts = [step_metrics(rows(batch, r * half, (r + 1) * half), [ranks[r]["grpo"][0]], G=batch.rollout.G)
             for r in range(WORLD)]
    assert (parts[0]["kl"] + parts[1]["kl"]) / 2 != pytest.approx(whole["kl"], rel=1e-3)
    assert (parts[0]["reward_std"] + parts[1]["reward_std"]) / 2 != pytest.approx(whole["reward_std"], rel=1e-3)


def test_a_rank_that_cannot_see_the_checkpoint_fails_every_rank_naming_it(two_ranks):
    _, _, _, ranks = two_ranks
    for r in ranks:                                                         # both ranks raised, with the same message
        msg = r["unseen_checkpoint"]
        assert msg.startswith("--resume: every rank must be able to read the checkpoint"), msg
        assert "rank 1 (host" in msg and "not-on-this-machine" in msg and "no such folder" in msg
        assert "rank 0 (host" not in msg
    assert ranks[0]["unseen_checkpoint"] == ranks[1]["unseen_checkpoint"]


def test_dapo_would_be_wrong_with_a_per_rank_token_count(two_ranks):
    _, base, batch, ranks = two_ranks
    assert [r["local_tokens"] for r in ranks] == [73, 16]                  # very unequal ranks
    _, grad = one_update(copy.deepcopy(base), batch, update_cfg(loss_type="dapo"))
    wrong = ranks[0]["dapo_local_count"][1]
    assert (wrong - grad).norm() > 0.3 * grad.norm()                        # far off: the all-reduce matters
    torch.testing.assert_close(ranks[0]["dapo"][1], grad, rtol=1e-4, atol=1e-7)


def test_bnpo_is_normalised_per_process_as_in_trl(two_ranks):
    """Ours (like TRL) divides each rank's sum by that rank's token count, then DDP averages."""
    _, base, batch, ranks = two_ranks
    half = batch.rollout.B // WORLD
    parts = [one_update(copy.deepcopy(base), rows(batch, r * half, (r + 1) * half), update_cfg(loss_type="bnpo"))[1]
             for r in range(WORLD)]
    torch.testing.assert_close(ranks[0]["bnpo"][1], (parts[0] + parts[1]) / 2, rtol=1e-4, atol=1e-7)
    _, whole = one_update(copy.deepcopy(base), batch, update_cfg(loss_type="bnpo"))
    assert (ranks[0]["bnpo"][1] - whole).norm() > 0.1 * whole.norm()       # not the 1-process token mean


# --- real torchrun runs --------------------------------------------------------------------------------------
def torchrun(tmp: Path, *args: str, env: dict | None = None, timeout: float = 240.0) -> subprocess.CompletedProcess:
    timeout *= time_scale()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "grpo_lib", "--preset", "tiny", "--N", "4", "--G", "4", "--eval-n", "8",
           "--eval-batch-size", "8", "--report-to", "none", "--num-threads", "1", "--progress", "false",
           "--output-dir", str(tmp / "run"), *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "1"}
    full_env.pop("GRPO_LIB_FAULT", None)
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=full_env, timeout=timeout)


needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                      reason=f"shipped tiny model not found at {TINY_MODEL_DIR}")


@pytest.mark.slow                                  # ~10 s alone, 30+ s on a busy 2-core machine (2 torch imports)
@needs_tiny_model
def test_torchrun_two_processes_finish_and_rank_0_writes_the_outputs(tmp_path):
    out = torchrun(tmp_path, "--steps", "2", "--save-every", "2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]                           # one line per step, not one per rank
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed" and summary["eval_n"] == 8
    assert (run / "model" / "model.safetensors").exists()
    ckpt = run / "checkpoints" / "step-000002"
    assert (ckpt / "rng-rank0.pt").exists() and (ckpt / "rng-rank1.pt").exists()
    assert out.stdout.count("global batch over 2 process(es): 4 prompts = 16 completions") == 1   # rank 0 only
    assert (summary["prompts_per_device"], summary["global_batch"]) == (2, 16)


@pytest.mark.slow
@needs_tiny_model
def test_a_rank_that_dies_fails_the_whole_job_without_hanging(tmp_path):
    t0 = time.monotonic()
    out = torchrun(tmp_path, "--steps", "3", "--save-every", "1", env={"GRPO_LIB_FAULT": "raise@2:rank1"})
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert "GRPO_LIB_FAULT: injected failure on rank 1 at step 2" in log
    assert time.monotonic() - t0 < 200 * time_scale()                        # well before any collective timeout
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step-000001"]                                          # the good checkpoint stays, nothing after


@pytest.mark.slow
@needs_tiny_model
def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step_and_rank_0_records_it(tmp_path):
    """How Slurm stops a job: SIGTERM to torchrun, which passes it to both ranks. They agree (one all-reduce
    per step) and stop after the same step; rank 0, which holds the folder's lock, writes "stopped"."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "grpo_lib", "--preset", "tiny", "--N", "4", "--G", "4", "--eval-n", "8",
           "--eval-batch-size", "8", "--report-to", "none", "--num-threads", "1", "--progress", "false",
           "--output-dir", str(tmp_path / "run"), "--steps", "4", "--save-every", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "GRPO_LIB_FAULT": "pause@2"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, paused = [], 0
    for line in proc.stdout:                                  # both ranks pause inside step 2
        seen.append(line)
        paused += "GRPO_LIB_FAULT: paused in step 2" in line
        if paused == WORLD:
            break
    assert paused == WORLD, "".join(seen[-30:])
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=240)
    log = "".join(seen) + rest
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_by"] == "SIGTERM", log[-3000:]
    assert summary["stopped_after_step"] == 2 and summary["world_size"] == 2
    assert summary["resume_command"] == (f"torchrun --standalone --nproc_per_node=2 -m grpo_lib --resume "
                                         f"{tmp_path / 'run'}")
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not (tmp_path / "run" / ".grpo-run.lock").exists()

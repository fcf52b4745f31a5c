"""Checkpoint and resume: exact continuation, atomic writes, safe loading, clear refusals.

The resume test compares a run stopped after 2 of 6 steps and resumed with a run never stopped: every
metric except wall-clock timings must be equal (==, deterministic CPU, one thread), and so must the final
weights. The run is stopped the hard way: it dies while writing its second checkpoint.
"""
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from grpo_lib.cli import parse_config
from grpo_lib.config import GRPOConfig
from grpo_lib.models import tiny_qwen2_config
from grpo_lib.run import checkpoint
from grpo_lib.run.checkpoint import (RESUME_MAY_DIFFER, Checkpoint, CheckpointError, config_differences,
                                     find_checkpoint, is_complete, latest_checkpoint, open_checkpoint, reference_at,
                                     rng_state, save_checkpoint, set_rng_state)
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import make_optimizer, train

from test_train import random_tiny, small_cfg

TIMING = {"generation_seconds", "scoring_seconds", "update_seconds", "step_seconds", "tokens_per_second",
          "wall_seconds"}
# 2 outer iterations of 3 steps, μ = 2 (π_old, AdamW moments), warm-up + cosine (the schedule's position),
# β > 0 (π_ref): every piece of state a resumed run needs
RESUME_KW = dict(steps=3, num_iterations=2, save_every=2, mu=2, lr_schedule="cosine", warmup_steps=1)


def without_timing(records):
    return [{k: v for k, v in rec.items() if k not in TIMING} for rec in records]


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- exact resume --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tok = build_char_tokenizer()
    return train(small_cfg(tmp_path_factory.mktemp("full"), **RESUME_KW), model=random_tiny(tok), tokenizer=tok)


def test_a_run_killed_while_checkpointing_resumes_exactly(uninterrupted, tmp_path, monkeypatch):
    full = uninterrupted
    assert [r["step"] for r in full.history] == [1, 2, 3, 4, 5, 6] and full.history[3]["kl"] > 0
    tok = build_char_tokenizer()
    cfg = small_cfg(tmp_path, **RESUME_KW)
    ckpts = tmp_path / "run" / "checkpoints"

    # the run dies while writing checkpoint 4: its model and optimizer are on disk, its manifest is not
    real_manifest = checkpoint._write_manifest

    class SimulatedKill(BaseException):       # like SIGKILL, no `except Exception` handler runs (no clean-up)
        pass

    def die_at_step_4(folder, step):
        if step == 4:
            raise SimulatedKill("simulated kill while writing a checkpoint")
        real_manifest(folder, step)

    monkeypatch.setattr(checkpoint, "_write_manifest", die_at_step_4)
    with pytest.raises(SimulatedKill, match="simulated kill"):
        train(cfg, model=random_tiny(tok), tokenizer=tok)
    monkeypatch.undo()
    names = sorted(p.name for p in ckpts.iterdir())                         # ".tmp-..." sorts first
    assert len(names) == 2 and names[0].startswith(".tmp-step-000004-") and names[1] == "step-000002"
    half = ckpts / names[0]
    assert (half / "model" / "model.safetensors").exists() and not is_complete(half)
    assert latest_checkpoint(tmp_path / "run") == ckpts / "step-000002"   # the half-written one is invisible
    with pytest.raises(CheckpointError, match=r"--resume .*not a complete checkpoint: no manifest\.json"):
        find_checkpoint(half)
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 4       # steps 3 and 4 ran after checkpoint 2

    # checkpoint 2 lies in the first outer iteration: π_ref is the starting model and was not saved, so a
    # resume must start from the same model (it rebuilds π_ref from it); another model is refused
    torch.manual_seed(123)
    other = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))   # not the starting weights
    with pytest.raises(CheckpointError, match=r"π_ref was not saved; but the model this run starts from is not"):
        train(cfg.replace(resume=str(tmp_path / "run")), model=other, tokenizer=tok)
    # resume from the output dir (= its latest complete checkpoint), from the starting model and with a
    # harmless option changed: the weights come from the checkpoint, the metrics continue exactly
    resumed = train(cfg.replace(resume=str(tmp_path / "run"), log_every=3), model=random_tiny(tok), tokenizer=tok)
    assert without_timing(resumed.history) == without_timing(full.history)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]             # continued, not duplicated
    assert without_timing(records) == without_timing(full.history)
    assert [e["step"] for e in read_jsonl(tmp_path / "run" / "evals.jsonl")] == [0, 6]
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.summary["accuracy_before"] == full.summary["accuracy_before"]
    assert resumed.summary["accuracy_after"] == full.summary["accuracy_after"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000002", "step-000004", "step-000006"]   # .tmp cleared


def test_checkpoint_contents_and_the_reference_model(uninterrupted):
    ckpts = uninterrupted.output_dir / "checkpoints"
    mid = ckpts / "step-000002"                     # inside iteration 1: π_ref is the starting model, NOT saved
    assert {p.name for p in mid.iterdir()} == {"model", "optimizer.pt", "scheduler.pt", "rng-rank0.pt",
                                               "trainer_state.json", "manifest.json"}
    assert json.loads((mid / "trainer_state.json").read_text())["reference"] == "initial"
    later = ckpts / "step-000004"                   # inside iteration 2: π_ref = π_θ after step 3, saved
    assert (later / "reference.safetensors").exists()
    assert json.loads((later / "trainer_state.json").read_text())["reference"] == "saved"
    assert not (ckpts / "step-000006" / "reference.safetensors").exists()  # iteration end: the next step resets π_ref
    # the model folder is a save_pretrained folder: transformers loads it (fp32 master weights by default)
    loaded = AutoModelForCausalLM.from_pretrained(mid / "model")
    assert loaded.dtype == torch.float32
    assert AutoTokenizer.from_pretrained(mid / "model").pad_token == "<pad>"
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= {p.name for p in (mid / "model").iterdir()}
    state = json.loads((mid / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["iteration"] == 1 and state["world_size"] == 1
    assert without_timing(state["history"]) == without_timing(uninterrupted.history[:2])
    manifest = json.loads((mid / "manifest.json").read_text())
    assert manifest["files"]["optimizer.pt"] == {"bytes": (mid / "optimizer.pt").stat().st_size,
                                                 "sha256": hashlib.sha256((mid / "optimizer.pt").read_bytes()).hexdigest()}
    opt = torch.load(mid / "optimizer.pt", weights_only=True)               # plain tensors: no pickled code
    assert opt["state"][0]["step"].item() == 4                              # 2 steps x μ = 2 AdamW updates
    assert torch.load(mid / "scheduler.pt", weights_only=True)["last_epoch"] == 4


def test_the_reference_rule_by_hand():
    """π_ref after s completed steps of M = 3 per outer iteration (choice 4): the one rule a save and a resume read."""
    assert [reference_at(s, 0.04, 3) for s in range(8)] == ["none", "initial", "initial", "none", "saved", "saved",
                                                            "none", "saved"]
    assert {reference_at(s, 0.0, 3) for s in range(8)} == {"none"}                  # β = 0: no π_ref at all
    state = {"step": 4, "reference": "saved"}
    assert Checkpoint(Path("step-000004"), state).reference_needed(0.04, 3) == "saved"
    assert Checkpoint(Path("step-000004"), state).reference_needed(0.04, 2) == "none"   # an iteration boundary
    assert Checkpoint(Path("step-000002"), {"step": 2, "reference": "initial"}).reference_needed(0.04, 3) == "initial"


# --- atomic writes and refusals, on a small stand-in model (no training needed) -------------------------------
def write_small_checkpoint(out, step, cfg=None, world_size=1):
    cfg = cfg or GRPOConfig.tiny()
    model = torch.nn.Linear(3, 2)
    opt, sched = make_optimizer(model, cfg)
    state = {"step": step, "iteration": 1, "world_size": world_size, "config": cfg.to_dict(), "history": [],
             "evals": [], "eval_before": {"n": 1, "n_strict": 0, "n_lenient": 0, "n_format": 0, "samples": []}}
    return save_checkpoint(out, step, model=model, optimizer=opt, scheduler=sched, reference=None, state=state)


def test_damaged_checkpoints_are_refused_and_the_previous_one_still_loads(tmp_path):
    good = write_small_checkpoint(tmp_path, 1)
    later = write_small_checkpoint(tmp_path, 2)
    assert latest_checkpoint(tmp_path) == later and find_checkpoint(tmp_path) == later
    (later / "optimizer.pt").write_bytes((later / "optimizer.pt").read_bytes()[:100])   # truncated
    with pytest.raises(CheckpointError, match=r"optimizer\.pt has 100 bytes, manifest\.json says"):
        find_checkpoint(later)
    assert latest_checkpoint(tmp_path) == good                              # falls back to the last good one
    (later / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError, match=r"optimizer\.pt is listed in manifest\.json but missing"):
        find_checkpoint(later)
    (later / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        find_checkpoint(later)
    assert find_checkpoint(tmp_path) == good


@pytest.mark.parametrize("where, message", [
    ("missing", r"--resume .*missing: no such folder"),
    ("empty", r"--resume .*empty: no complete checkpoint in .*checkpoints .*--save-every"),
])
def test_resume_from_a_missing_or_empty_folder_names_resume(tmp_path, where, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=message):
        find_checkpoint(tmp_path / where)
    tok = build_char_tokenizer()
    with pytest.raises(CheckpointError, match=message):                    # train() fails before any work
        train(small_cfg(tmp_path, resume=str(tmp_path / where)), model=random_tiny(tok), tokenizer=tok)
    assert not (tmp_path / "run").exists()


def test_cli_resume_errors_and_defaults(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        parse_config(["--resume", str(tmp_path / "nope")])
    assert err.value.code == 2 and "--resume" in capsys.readouterr().err
    cfg = GRPOConfig.tiny(lr=1e-3, G=4, N=2, output_dir=str(tmp_path / "run"))
    ckpt = write_small_checkpoint(tmp_path / "run", 3, cfg)
    resumed = parse_config(["--resume", str(tmp_path / "run")])            # --resume alone: the saved configuration
    assert resumed.replace(resume=None) == cfg and resumed.resume == str(tmp_path / "run")
    changed = parse_config(["--resume", str(ckpt), "--lr", "0.5", "--log-every", "1"])
    assert changed.lr == 0.5 and changed.log_every == 1                     # given options override; train() judges


def test_a_different_configuration_is_refused_listing_the_fields(tmp_path):
    cfg = GRPOConfig.tiny(output_dir=str(tmp_path / "run"))
    write_small_checkpoint(tmp_path / "run", 2, cfg)
    harmless = cfg.replace(output_dir="elsewhere", log_every=1, progress=False, report_to="none", num_threads=2,
                           eval_every=5, save_every=9, resume=str(tmp_path / "run"), dist_timeout_minutes=5.0)
    assert open_checkpoint(tmp_path / "run", harmless.to_dict(), 1).step == 2
    with pytest.raises(CheckpointError) as err:
        open_checkpoint(tmp_path / "run", cfg.replace(lr=1e-3, G=4).to_dict(), 1)
    msg = str(err.value)
    assert "--resume" in msg and "different configuration" in msg
    listed = [line.strip() for line in msg.splitlines() if line.startswith("  - ")]
    assert listed == ["- G: saved 8, now 4", "- lr: saved 5e-05, now 0.001"]   # only the fields that matter
    with pytest.raises(CheckpointError, match=r"written by 1 process\(es\), this run has 2.*--nproc_per_node=1"):
        open_checkpoint(tmp_path / "run", cfg.to_dict(), 2)
    assert config_differences(cfg.to_dict(), cfg.to_dict()) == []
    # a checkpoint written before the post-R1 options existed resumes with their defaults, not with others
    from grpo_lib.run.checkpoint import FIELDS_ADDED_LATER

    older = {k: v for k, v in cfg.to_dict().items() if k not in FIELDS_ADDED_LATER}
    assert config_differences(older, cfg.to_dict()) == []
    assert config_differences(older, cfg.replace(kl_estimator="k2").to_dict()) == ["kl_estimator: saved 'k3', now 'k2'"]
    assert all(getattr(GRPOConfig(), k) == v for k, v in FIELDS_ADDED_LATER.items())
    assert RESUME_MAY_DIFFER >= {"output_dir", "report_to", "log_every", "resume"}


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)                 # anything in between
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_the_next_save_clears_what_a_killed_write_left_behind(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-step-000001-12345"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path) is None                              # never loadable
    done = write_small_checkpoint(tmp_path, 1)
    assert is_complete(done) and latest_checkpoint(tmp_path) == done
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]


# --- rotation: --save-total-limit K -------------------------------------------------------------------------
def write_kept(out, step, keep, cfg=None):
    cfg = cfg or GRPOConfig.tiny()
    model = torch.nn.Linear(3, 2)
    opt, sched = make_optimizer(model, cfg)
    state = {"step": step, "iteration": 1, "world_size": 1, "config": cfg.to_dict(), "history": [], "evals": [],
             "eval_before": {"n": 1, "n_strict": 0, "n_lenient": 0, "n_format": 0, "samples": []}}
    return save_checkpoint(out, step, model=model, optimizer=opt, scheduler=sched, reference=None, state=state,
                           keep=keep)


def names(out):
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_save_total_limit_keeps_the_newest_complete_checkpoints(tmp_path):
    for step in (1, 2, 3):
        write_kept(tmp_path, step, keep=2)
    assert names(tmp_path) == ["step-000002", "step-000003"]
    write_kept(tmp_path, 4, keep=1)
    assert names(tmp_path) == ["step-000004"]


def test_rotation_deletes_nothing_until_the_new_checkpoint_is_complete(tmp_path, monkeypatch):
    write_kept(tmp_path, 1, keep=1)
    real = checkpoint._write_manifest

    def die(folder, step):
        raise OSError("killed while writing")

    monkeypatch.setattr(checkpoint, "_write_manifest", die)
    with pytest.raises(CheckpointError, match="killed while writing"):
        write_kept(tmp_path, 2, keep=1)
    monkeypatch.setattr(checkpoint, "_write_manifest", real)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-000001"   # the old one survives
    write_kept(tmp_path, 2, keep=1)
    assert names(tmp_path) == ["step-000002"]                                        # .tmp cleared, step 1 rotated


def test_rotation_never_touches_later_steps_or_incomplete_folders(tmp_path):
    for step in (1, 2, 9):
        write_kept(tmp_path, step, keep=None)
    (tmp_path / "checkpoints" / "step-000009" / "manifest.json").unlink()           # incomplete, later
    checkpoint.rotate_checkpoints(tmp_path, 1, current=tmp_path / "checkpoints" / "step-000002")
    assert names(tmp_path) == ["step-000002", "step-000009"]
    with pytest.raises(ValueError, match="--save-total-limit must be >= 1"):
        checkpoint.rotate_checkpoints(tmp_path, 0)


def test_a_trained_run_rotates_and_every_kept_checkpoint_loads_with_from_pretrained(tmp_path):
    tok = build_char_tokenizer()
    cfg = small_cfg(tmp_path, steps=3, save_every=1, save_total_limit=2)
    result = train(cfg, model=random_tiny(tok), tokenizer=tok)
    assert names(tmp_path / "run") == ["step-000002", "step-000003"]
    for folder in (tmp_path / "run" / "checkpoints").iterdir():
        m = AutoModelForCausalLM.from_pretrained(folder / "model")
        AutoTokenizer.from_pretrained(folder / "model")
        assert m.dtype == torch.float32
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    for (name, p), q in zip(result.model.state_dict().items(), final.state_dict().values()):
        assert torch.equal(p, q), name

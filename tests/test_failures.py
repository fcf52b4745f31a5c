"""Nothing lost, and every failure ends the same way (grpo_lib.run.failures, grpo_lib.run.rundir, the CLI, checkpoints).

One test (or more) per failure case, named after what it proves:
  1 --resume DIR writes into DIR            2 a run is never silently written over    3 weights that blow up
  4 disk full while saving                   5 bad GSM8K rows before the model loads  6 unusable output folders
  8 clear messages from the command line     11 damaged checkpoints named, fallback announced
(7, 9 and 10 are in tests/test_config.py, tests/test_loss.py, tests/test_advantages.py, tests/test_rewards.py.)
Most runs are in-process on a random 2-layer tiny Qwen2; the command-line ones use the shipped tiny model.
"""
import hashlib
import re
import json
import os
import shutil

import pytest
import torch

from grpo_lib import train as train_module
from grpo_lib.cli import main, parse_config
from grpo_lib.config import GRPOConfig
from grpo_lib.models import TINY_MODEL_DIR
from grpo_lib.run import checkpoint, lifecycle
from grpo_lib.run.checkpoint import Checkpoint, CheckpointError, find_checkpoint, open_checkpoint, resolve_checkpoint
from grpo_lib.run.failures import NonFiniteWeightsError, RunFailed, parameters_finite
from grpo_lib.run.rundir import OutputDirError
from grpo_lib.tokenizer import build_char_tokenizer
from grpo_lib.train import train

from test_checkpoint import write_small_checkpoint
from test_train import random_tiny, small_cfg

needs_tiny_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").exists(),
                                      reason=f"shipped tiny model not found at {TINY_MODEL_DIR}")
CLI_SMALL = ["--steps", "2", "--N", "2", "--G", "4", "--eval-n", "4", "--max-completion-length", "12",
             "--report-to", "none", "--progress", "false"]


def snapshot(folder):
    """relative path -> sha256 of every file under `folder`."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_summary(out):
    return json.loads((out / "summary.json").read_text())


def no_model_load(monkeypatch):
    """Make any model load fail loudly: the test proves an error came before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")
    monkeypatch.setattr(lifecycle, "load_policy", refuse)


# --- case 1: --resume DIR writes into DIR, not into the output folder recorded in the checkpoint --------------
def test_cli_resume_of_a_copy_writes_into_the_copy(tmp_path):
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    cfg = GRPOConfig.tiny(G=4, N=2, output_dir=str(orig))
    write_small_checkpoint(orig, 3, cfg)
    shutil.copytree(orig, copy)
    assert parse_config(["--resume", str(copy)]).output_dir == str(copy)
    assert parse_config(["--resume", str(copy / "checkpoints" / "step-000003")]).output_dir == str(copy)
    assert parse_config(["--resume", str(copy), "--output-dir", str(tmp_path / "fork")]).output_dir == str(tmp_path / "fork")


def test_cli_resume_of_a_checkpoint_outside_a_run_folder_asks_for_output_dir(tmp_path, capsys):
    write_small_checkpoint(tmp_path / "run", 3, GRPOConfig.tiny())
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step-000003", tmp_path / "alone" / "step-000003")
    with pytest.raises(SystemExit):
        parse_config(["--resume", str(tmp_path / "alone" / "step-000003")])
    assert "does not sit in a run folder (RUN/checkpoints/step-XXXXXX)" in capsys.readouterr().err


@needs_tiny_model
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")
def test_resuming_a_copied_run_leaves_the_original_untouched(tmp_path):
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    assert main([*CLI_SMALL, "--save-every", "1", "--output-dir", str(orig)]) == 0
    before = snapshot(orig)
    shutil.copytree(orig, copy)
    assert main(["--resume", str(copy / "checkpoints" / "step-000001")]) == 0
    assert snapshot(orig) == before                                        # not one byte of the original changed
    summary = read_summary(copy)
    assert summary["status"] == "completed" and summary["resumed_from"].startswith(str(copy))
    assert [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --- case 2: a fresh run never replaces a run; --overwrite clears it, checkpoints included ----------------------
def test_a_fresh_run_in_a_folder_holding_a_run_is_refused_and_overwrite_clears_it(tmp_path, monkeypatch):
    out = tmp_path / "run"
    write_small_checkpoint(out, 2, GRPOConfig.tiny())
    (out / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (out / "summary.json").write_text('{"status": "completed"}')
    before = snapshot(out)
    tok = build_char_tokenizer()
    no_model_load(monkeypatch)
    with pytest.raises(OutputDirError) as err:
        train(small_cfg(tmp_path), model=random_tiny(tok), tokenizer=tok)
    assert str(err.value) == (
        f"--output-dir {out} already holds a run (metrics.jsonl, summary.json, checkpoints): a new run would replace "
        f"its results. Continue it with --resume {out}, choose another --output-dir, or pass --overwrite to delete "
        "that run's outputs (checkpoints included) and start again.")
    assert snapshot(out) == before
    result = train(small_cfg(tmp_path, overwrite=True, save_every=1), model=random_tiny(tok), tokenizer=tok)
    assert result.summary["status"] == "completed"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    assert find_checkpoint(out) == out / "checkpoints" / "step-000002"
    assert json.loads(
        (out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["config"]["overwrite"] is True
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert len(json.loads((out / "metrics.jsonl").read_text().splitlines()[0])) > 2    # the new run's records


def test_overwrite_clears_the_old_checkpoints_even_when_the_new_run_writes_none(tmp_path):
    out = tmp_path / "run"
    write_small_checkpoint(out, 7, GRPOConfig.tiny())
    (out / "notes.txt").write_text("mine")                                  # not a run output: kept
    tok = build_char_tokenizer()
    train(small_cfg(tmp_path, overwrite=True), model=random_tiny(tok), tokenizer=tok)
    assert not (out / "checkpoints").exists() and (out / "notes.txt").read_text() == "mine"


def test_a_folder_left_by_a_run_that_failed_before_writing_anything_is_reused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"status": "failed", "error": "the run stopped before step 1"}')
    (out / "metrics.jsonl").write_text("")
    tok = build_char_tokenizer()
    assert train(small_cfg(tmp_path), model=random_tiny(tok), tokenizer=tok).summary["status"] == "completed"


@needs_tiny_model
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")
def test_cli_refuses_a_folder_holding_a_run_without_a_traceback(tmp_path, capsys):
    out = tmp_path / "run"
    write_small_checkpoint(out, 2, GRPOConfig.tiny())
    assert main([*CLI_SMALL, "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: --output-dir {out} already holds a run (checkpoints)" in err and "Traceback" not in err


# --- case 3: weights that blow up stop the run at that step, before any checkpoint or sampling ------------------
def test_a_learning_rate_of_1e10_stops_at_step_1_and_writes_no_checkpoint(tmp_path):
    tok = build_char_tokenizer()
    with pytest.raises(NonFiniteWeightsError) as err:
        train(small_cfg(tmp_path, steps=3, save_every=1, lr=1e10), model=random_tiny(tok), tokenizer=tok)
    assert str(err.value).startswith(
        "training stopped at step 1: the updated weights give NaN or inf logits (largest |w| = 1e+10), so the next "
        "sampling would fail and no checkpoint is written with them; no checkpoint was written before it")
    out = tmp_path / "run"
    assert not (out / "checkpoints").exists()
    summary = read_summary(out)
    assert summary["status"] == "failed" and summary["failed_step"] == 1 and summary["error"] == str(err.value)


def test_float16_weights_that_overflow_stop_the_run_naming_the_update(tmp_path, monkeypatch):
    # GRPOConfig refuses dtype float16 (no gradient scaler), and mixed precision would keep fp32 master weights:
    # force a pure-fp16 run here to reach the weights check through the real training loop
    from grpo_lib.precision import Precision

    monkeypatch.setattr(lifecycle, "resolve_precision",
                        lambda *a, **k: Precision("pure", torch.float16, torch.float16, "cpu"))
    tok = build_char_tokenizer()
    model = random_tiny(tok).to(torch.float16)
    with pytest.raises(NonFiniteWeightsError, match=r"^training stopped at step 1: the weights hold NaN or inf "
                                                    r"after update 1 of mu = 1.*--dtype float32"):
        train(small_cfg(tmp_path, save_every=1), model=model, tokenizer=tok)
    assert read_summary(tmp_path / "run")["status"] == "failed"
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_parameters_finite_finds_one_nan_or_inf_anywhere():
    params = [torch.zeros(3, 4), torch.ones(5, dtype=torch.bfloat16), torch.full((2,), 3e38)]
    assert parameters_finite(params)
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = [p.clone() for p in params]
        broken[1][4] = bad
        assert not parameters_finite(broken)


def test_an_exception_in_sampling_ends_like_every_failure(tmp_path, monkeypatch):
    real = train_module.generate_completions
    calls = []

    def fails_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "generate_completions", fails_at_step_2)
    tok = build_char_tokenizer()
    with pytest.raises(RunFailed) as err:
        train(small_cfg(tmp_path, steps=3, save_every=1), model=random_tiny(tok), tokenizer=tok)
    out = tmp_path / "run"
    assert str(err.value) == (
        "training stopped at step 2 (sampling): RuntimeError: probability tensor contains either `inf`, `nan` or "
        f"element < 0; the last good checkpoint is {out / 'checkpoints' / 'step-000001'} (resume with --resume "
        f"{out / 'checkpoints' / 'step-000001'}).")
    summary = read_summary(out)
    assert summary["status"] == "failed" and summary["failed_step"] == 2 and summary["failed_during"] == "sampling"
    assert summary["error"] == str(err.value)


# --- case 4: a full disk while saving: a clear error naming the step, no temporary folder left -----------------
def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save

    def disk_full_at_step_2(obj, f, *args, **kwargs):
        if "step-000002" in str(f):
            open(f, "wb").write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_2)
    tok = build_char_tokenizer()
    with pytest.raises(RunFailed) as err:
        train(small_cfg(tmp_path, steps=3, save_every=1), model=random_tiny(tok), tokenizer=tok)
    ckpts = tmp_path / "run" / "checkpoints"
    msg = str(err.value)
    assert msg.startswith(f"training stopped at step 2 (writing checkpoint step-000002): CheckpointError: could not "
                          f"write checkpoint step-000002 into {ckpts} (RuntimeError: [enforce fail at "
                          "inline_container.cc:672] . unexpected pos 64 vs 0); its partial folder .tmp-step-000002-")
    assert f"was removed; the last good checkpoint is {ckpts / 'step-000001'}" in msg
    assert "disk is full" not in msg.lower() and "?" not in msg   # plenty of space: not called (or guessed) full
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000001"]       # no .tmp-step-000002-* left behind
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed" and summary["failed_step"] == 2 and summary["error"] == msg
    assert not (tmp_path / "run" / "summary.json.tmp").exists()


def test_a_full_disk_while_saving_is_said_to_be_one(tmp_path, monkeypatch):
    """torch's zip writer says "unexpected pos" on a full disk: the free space left is what names the cause."""
    real_save, real_usage = torch.save, shutil.disk_usage

    def disk_full_at_step_1(obj, f, *args, **kwargs):
        if "step-000001" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_step_1)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=4096))
    tok = build_char_tokenizer()
    with pytest.raises(RunFailed) as err:
        train(small_cfg(tmp_path, steps=2, save_every=1), model=random_tiny(tok), tokenizer=tok)
    ckpts = tmp_path / "run" / "checkpoints"
    assert (f"was removed. The disk is full (4,096 bytes free on the file system of {ckpts}): free some space (or "
            "keep fewer checkpoints with --save-total-limit) and resume from the last checkpoint") in str(err.value)
    assert checkpoint.disk_full(OSError(28, "No space left on device"), tmp_path) == \
        f"no space left on the file system of {tmp_path}"


# --- case 5: a bad GSM8K row is named before the model loads -----------------------------------------------------
@pytest.mark.parametrize("row, message", [
    ({"question": "q"}, "row 2: field 'answer' is missing"),
    ({"question": "q", "answer": 72}, "row 2: field 'answer' must be a string, got int 72"),
    ({"question": ["q"], "answer": "#### 1"}, "row 2: field 'question' must be a string, got list ['q']"),
])
def test_a_bad_gsm8k_row_fails_before_the_model_loads(tmp_path, monkeypatch, row, message):
    data = tmp_path / "gsm8k"
    data.mkdir()
    good = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"})
    (data / "train.jsonl").write_text(good + "\n" + json.dumps(row) + "\n")
    (data / "test.jsonl").write_text(good + "\n")
    no_model_load(monkeypatch)
    with pytest.raises(ValueError) as err:
        train(small_cfg(tmp_path, task="gsm8k", data_dir=str(data), eval_n=1))
    assert str(err.value).startswith(f"{data / 'train.jsonl'}, {message}")
    assert read_summary(tmp_path / "run")["error"].startswith("the run stopped before step 1 (loading the data and "
                                                              f"the model): ValueError: {data / 'train.jsonl'}, {message}")


# --- case 6: an output folder that cannot be used is refused before the model loads ------------------------------
def test_an_output_folder_that_is_a_file_or_under_a_file_is_refused_first(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    no_model_load(monkeypatch)
    with pytest.raises(OutputDirError) as err:
        train(small_cfg(tmp_path, output_dir=str(tmp_path / "file")))
    assert str(err.value) == f"--output-dir {tmp_path / 'file'}: is a file, not a folder; choose another --output-dir"
    with pytest.raises(OutputDirError) as err:
        train(small_cfg(tmp_path, output_dir=str(tmp_path / "file" / "run")))
    assert str(err.value) == (f"--output-dir {tmp_path / 'file' / 'run'}: sits under {tmp_path / 'file'}, which is "
                              "a file, not a folder; choose another --output-dir")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_first(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    no_model_load(monkeypatch)
    try:
        with pytest.raises(OutputDirError, match=r"cannot create or write there \(Permission denied\)"):
            train(small_cfg(tmp_path, output_dir=str(ro / "run")))
    finally:
        ro.chmod(0o755)


# --- case 8: the command line turns known errors into one clear message, without a traceback ------------------
@needs_tiny_model
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")
@pytest.mark.parametrize("extra, message", [
    (["--model", "{tmp}/no-such-model"], "error: model folder not found: {tmp}/no-such-model"),
    (["--eval-n", "301"], "error: asked for n = 301 problems but the addition 'test' split has only 300"),
    (["--task", "gsm8k", "--data-dir", "{tmp}/missing"], "error: --data-dir '{tmp}/missing' (GRPOConfig.data_dir) is "
                                                         "not a folder"),
    (["--resume", "{tmp}/run"], "error: --resume {tmp}/run: no complete checkpoint in {tmp}/run/checkpoints"),
])
def test_cli_errors_are_one_message_without_a_traceback(tmp_path, capsys, extra, message):
    (tmp_path / "run").mkdir()
    argv = [*CLI_SMALL, "--output-dir", str(tmp_path / "out"), *(a.format(tmp=tmp_path) for a in extra)]
    if "--resume" in extra:
        with pytest.raises(SystemExit):                                      # argparse: before anything starts
            parse_config(argv)
        assert message.format(tmp=tmp_path).removeprefix("error: ") in capsys.readouterr().err
        return
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and "Traceback" not in err
    summary = read_summary(tmp_path / "out")                                 # the same end as every failure
    assert summary["status"] == "failed" and summary["error"].startswith(
        "the run stopped before step 1 (loading the data and the model): ")
    assert message.format(tmp=tmp_path).removeprefix("error: ") in summary["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.filterwarnings("ignore:Unable to enable fault handler")
def test_cli_device_cuda_without_cuda_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = [*CLI_SMALL, "--output-dir", str(tmp_path / "out"), "--device", "cuda"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: device='cuda:0' but CUDA is not available here" in err or "error: device='cuda' but CUDA" in err
    assert "Traceback" not in err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# --- case 11: checksums name a damaged file; falling back to an older checkpoint is announced -----------------
def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_same_size_corruption_is_named_and_the_fallback_is_listed(tmp_path):
    out = tmp_path / "run"
    cfg = GRPOConfig.tiny()
    write_small_checkpoint(out, 2, cfg)
    newest = write_small_checkpoint(out, 4, cfg)
    flip_last_byte(newest / "optimizer.pt")                                  # same size, changed bytes
    why = "optimizer.pt is damaged: its sha256 differs from the one in manifest.json (same size, changed bytes)"
    with pytest.raises(CheckpointError) as err:
        find_checkpoint(newest)
    assert str(err.value) == (f"--resume {newest}: not a complete checkpoint: {why}. Use an earlier checkpoint, or "
                              "the output dir to pick the latest complete one.")
    assert resolve_checkpoint(out) == (out / "checkpoints" / "step-000002", [f"step-000004: {why}"])
    assert open_checkpoint(out, cfg.to_dict(), 1).skipped == [f"step-000004: {why}"]


def test_a_damaged_safetensors_header_names_the_file(tmp_path):
    folder = write_small_checkpoint(tmp_path / "run", 2, GRPOConfig.tiny())
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff" * 8                                                 # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        Checkpoint(path=folder, state={}).load_model(torch.nn.Linear(3, 2))
    assert str(err.value).startswith(f"{path}: cannot be read (SafetensorError: ")
    assert str(err.value).endswith("this checkpoint file is damaged: resume from an earlier checkpoint")


def test_resume_announces_and_records_the_damaged_checkpoint_it_skipped(tmp_path, capsys):
    tok = build_char_tokenizer()
    cfg = small_cfg(tmp_path, steps=2, save_every=1)
    train(cfg, model=random_tiny(tok), tokenizer=tok)
    out = tmp_path / "run"
    flip_last_byte(out / "checkpoints" / "step-000002" / "model" / "model.safetensors")
    capsys.readouterr()
    result = train(cfg.replace(resume=str(out)), model=random_tiny(tok), tokenizer=tok)
    note = ("step-000002: model/model.safetensors is damaged: its sha256 differs from the one in manifest.json "
            "(same size, changed bytes)")
    assert f"warning: skipped damaged checkpoint {note}" in capsys.readouterr().out
    assert result.summary["skipped_checkpoints"] == [note]
    assert result.summary["resumed_from"] == str(out / "checkpoints" / "step-000001")
    assert read_summary(out)["skipped_checkpoints"] == [note]


def test_the_manifest_records_size_and_sha256_of_every_file(tmp_path):
    folder = write_small_checkpoint(tmp_path / "run", 2, GRPOConfig.tiny())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == checkpoint.FORMAT_VERSION == 2
    assert sorted(manifest["files"]) == sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# --- a checkpoint is exactly what its manifest lists ----------------------------------------------------------
def rewrite_manifest(folder, change):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_an_unlisted_weight_file_in_model_is_refused_by_name_and_the_run_falls_back(tmp_path, capsys):
    """The reported case: a zeroed extra model/*.safetensors was merged into the weights (0% accuracy after)."""
    from safetensors.torch import load_file, save_file

    tok = build_char_tokenizer()
    out = tmp_path / "run"
    train(small_cfg(tmp_path, steps=2, save_every=1), model=random_tiny(tok), tokenizer=tok)
    step2 = out / "checkpoints" / "step-000002"
    weights = load_file(str(step2 / "model" / "model.safetensors"))
    save_file({k: torch.zeros_like(v) for k, v in weights.items()}, str(step2 / "model" / "zeros.safetensors"))
    with pytest.raises(CheckpointError, match=r"model/zeros\.safetensors is not listed in manifest\.json \(added "
                                              r"after the checkpoint was written"):
        resolve_checkpoint(step2)
    folder, skipped = resolve_checkpoint(out)
    assert folder == out / "checkpoints" / "step-000001" and skipped[0].startswith("step-000002: model/zeros.safetensors")
    ckpt = open_checkpoint(folder, small_cfg(tmp_path, steps=2, save_every=1).to_dict(), 1)
    (folder / "model" / "model.safetensors").rename(folder / "model" / "renamed.safetensors")
    with pytest.raises(CheckpointError, match=r"model/model\.safetensors: cannot be read"):   # only listed files load
        ckpt.load_model(random_tiny(tok))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(files={}), "manifest.json lists no files, so nothing in this checkpoint can be verified"),
    (lambda m: m["files"].pop("optimizer.pt"), "manifest.json does not list optimizer.pt, which every checkpoint holds"),
    (lambda m: m["files"]["scheduler.pt"].pop("sha256"),
     "manifest.json (format 2) gives scheduler.pt without its size and sha256"),
])
def test_a_manifest_without_the_core_files_and_checksums_is_refused(tmp_path, change, message):
    folder = write_small_checkpoint(tmp_path / "run", 2, GRPOConfig.tiny())
    rewrite_manifest(folder, change)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        resolve_checkpoint(folder)
    assert not checkpoint.is_complete(folder)


def test_an_old_size_only_manifest_loads_with_a_warning(tmp_path, capsys):
    cfg = GRPOConfig.tiny()
    folder = write_small_checkpoint(tmp_path / "run", 2, cfg)

    def size_only(m):
        m["format"] = 1
        m["files"] = {name: entry["bytes"] for name, entry in m["files"].items()}
    rewrite_manifest(folder, size_only)
    ckpt = open_checkpoint(folder, cfg.to_dict(), 1)
    assert ckpt.step == 2
    assert ("warning: step-000002 has a format-1 manifest.json (file sizes only, no sha256), written before checksums "
            "were recorded: a file changed in place cannot be detected. Resuming anyway.") in capsys.readouterr().out


@pytest.mark.parametrize("state_change, message", [
    (lambda s: s.pop("config"), "trainer_state.json is damaged: it has no config; resume from another checkpoint"),
    (lambda s: s.update(config=[1]), "trainer_state.json is damaged: its config is not a mapping"),
])
def test_a_damaged_trainer_state_is_named(tmp_path, capsys, state_change, message):
    folder = write_small_checkpoint(tmp_path / "run", 2, GRPOConfig.tiny())
    state = json.loads((folder / "trainer_state.json").read_text())
    state_change(state)
    (folder / "trainer_state.json").write_text(json.dumps(state))
    checkpoint._write_manifest(folder, 2)               # checksums of the changed file: only the content is wrong
    with pytest.raises(CheckpointError, match=re.escape(message)):
        open_checkpoint(folder, GRPOConfig.tiny().to_dict(), 1)
    with pytest.raises(SystemExit):                     # the command line: argparse's message, no KeyError
        parse_config(["--resume", str(folder)])
    err = capsys.readouterr().err
    assert message in err and "KeyError" not in err and "Traceback" not in err

"""The Qwen preset's whole code path on CPU: Qwen2.5-1.5B's architecture at tiny sizes, Qwen's real tokenizer.

`python -m grpo_lib --preset qwen2.5-1.5b-gsm8k` with only the sizes and the budget changed: the
model folder goes through `load_policy` (pad token, attention choice), the prompts through Qwen's chat
template, the batch is per GPU, bf16 means mixed precision (fp32 master weights, bf16 autocast, here on
CPU), gradient checkpointing and micro-batches are on, checkpoints rotate, and every checkpoint's model
folder loads with `from_pretrained`. The tokenizer comes from scripts/fetch_qwen_tokenizer.py (npm).
Attention is the CPU stand-in for FlashAttention-2's input contract (tests/flash_standin.py), what the preset
picks on a GPU with flash-attn: a forward pass outside the bf16 autocast context would fail here as it fails there.
"""
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

import flash_standin
from flash_standin import STANDIN, use_flash_standin
from grpo_lib.models import QWEN2_5_1_5B_INSTRUCT, qwen2_5_1_5b_config
from grpo_lib.cli import parse_config
from grpo_lib.rewards import reward_functions
from grpo_lib.train import train

TINY_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


@pytest.fixture(scope="module")
def qwen_run(qwen_tokenizer_dir, gsm8k_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qwen")
    data = tmp / "gsm8k"
    data.mkdir()
    for split, n in (("train", 8), ("test", 2)):
        rows = (gsm8k_dir / f"{split}.jsonl").read_text().splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_5_1_5b_config(**TINY_SIZES))
    model.save_pretrained(tmp / "tiny-qwen2.5")
    AutoTokenizer.from_pretrained(qwen_tokenizer_dir).save_pretrained(tmp / "tiny-qwen2.5")
    out = tmp / "run"
    cfg = parse_config(["--preset", "qwen2.5-1.5b-gsm8k", "--model", str(tmp / "tiny-qwen2.5"), "--data-dir", str(data),
                 "--steps", "3", "--lr", "1e-3", "--prompts-per-device", "2", "--G", "2", "--max-completion-length", "6",
                 "--micro-batch-size", "3", "--eval-n", "2", "--eval-batch-size", "2", "--save-every", "1",
                 "--save-total-limit", "2", "--report-to", "none", "--no-progress", "--output-dir", str(out)])
    # --lr 1e-3: at the preset's 5e-6 the bf16 forward of a random tiny model does not change yet (the fp32
    # master weights move, their bf16 casts not), so KL would be exactly 0 at step 2 and prove nothing.
    # The preset's rewards plus an arbitrary text score, so that a random model's group rewards differ and
    # gradients flow (a random model never earns a GSM8K reward)
    funcs = {**reward_functions(cfg.reward_funcs),
             "chars": lambda completions, **kw: [float(sum(map(ord, c[0]["content"])) % 7) for c in completions]}
    prompts = []
    with pytest.MonkeyPatch.context() as mp:
        use_flash_standin(mp)                     # load_policy picks the flash-attn stand-in, as it picks FA2 on a GPU
        before = flash_standin.calls["n"]
        train(cfg, reward_funcs=funcs, callback=lambda rec, batch: prompts.extend(batch.rollout.prompts))
        assert flash_standin.calls["n"] > before
    return out, prompts


def test_the_tiny_body_keeps_qwen2_5_s_architecture():
    cfg = qwen2_5_1_5b_config(**TINY_SIZES)
    for key in ("vocab_size", "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings", "hidden_act",
                "max_position_embeddings", "bos_token_id", "eos_token_id"):
        assert getattr(cfg, key) == QWEN2_5_1_5B_INSTRUCT[key], key
    assert cfg.rope_parameters["rope_theta"] == 1e6 and cfg.hidden_size == 32
    full = qwen2_5_1_5b_config()
    assert (full.hidden_size, full.num_hidden_layers, full.num_attention_heads) == (1536, 28, 12)


def test_the_qwen_preset_runs_end_to_end_in_mixed_precision(qwen_run):
    qwen_run, prompts = qwen_run
    summary = json.loads((qwen_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["preset"] == "qwen2.5-1.5b-gsm8k"
    assert (summary["precision"], summary["param_dtype"], summary["compute_dtype"]) == ("mixed", "float32", "bfloat16")
    assert summary["attn_implementation"] == STANDIN and summary["world_size"] == 1
    assert (summary["prompts_per_device"], summary["global_prompts"], summary["global_batch"]) == (2, 2, 4)
    assert summary["config"]["gradient_checkpointing"] is True and summary["saved_dtype"] == "float32"
    records = [json.loads(line) for line in (qwen_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for rec in records:
        assert rec["grad_norm"] > 0 and rec["entropy"] > 0 and rec["learning_rate"] == 1e-3
    assert records[1]["kl"] > 0                                         # π_θ moved away from π_ref
    # Qwen's own chat template (system prompt, then the question, then the assistant turn)
    assert len(prompts) == 6 and all(p.startswith("<|im_start|>system\n") for p in prompts)
    assert all(p.endswith("<|im_end|>\n<|im_start|>assistant\n") for p in prompts)


def test_qwen_checkpoints_rotate_and_load_with_from_pretrained(qwen_run):
    qwen_run, _ = qwen_run
    ckpts = sorted(p.name for p in (qwen_run / "checkpoints").iterdir())
    assert ckpts == ["step-000002", "step-000003"]                      # --save-total-limit 2
    for name in ckpts:
        folder = qwen_run / "checkpoints" / name / "model"
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert model.dtype == torch.float32 and model.config.hidden_size == 32
        assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
        state = json.loads((qwen_run / "checkpoints" / name / "trainer_state.json").read_text())
        # step 2: inside the first iteration, π_ref is the starting model; step 3 ends it (the next step resets)
        assert state["reference"] == {"step-000002": "initial", "step-000003": "none"}[name]
        assert not (folder.parent / "reference.safetensors").exists()
    final = AutoModelForCausalLM.from_pretrained(qwen_run / "model")
    last = AutoModelForCausalLM.from_pretrained(qwen_run / "checkpoints" / "step-000003" / "model")
    for (name, p), q in zip(final.state_dict().items(), last.state_dict().values()):
        assert torch.equal(p, q), name                                  # the final model is the last step's

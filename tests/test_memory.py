"""grpo_lib.memory: parameter counts from a config, and the GRPO vs PPO memory table.

Counts are checked against an independent closed-form count of a Qwen2 decoder written here, and against
the published size of Qwen2.5-1.5B (1.54B parameters, 1.31B without the embedding).
"""
import pytest
from transformers import Qwen2Config

from grpo_lib.memory import (
    GIB,
    MemoryRow,
    MemoryTable,
    count_parameters_from_config,
    parameter_breakdown,
    qwen2_5_1_5b_instruct_config,
    training_memory_table,
)


def qwen2_params_by_hand(V, d, d_ff, L, n_heads, n_kv, tied):
    """Closed form for a Qwen2 decoder: biases on q, k, v only; two RMSNorms per layer plus a final one."""
    head_dim = d // n_heads
    kv = n_kv * head_dim
    attn = (d * d + d) + 2 * (d * kv + kv) + d * d          # q (+bias), k and v (+bias), o
    mlp = 3 * d * d_ff                                      # gate, up, down
    norms = 2 * d
    emb = V * d
    return emb + L * (attn + mlp + norms) + d + (0 if tied else V * d)


@pytest.fixture(scope="module")
def qwen_cfg():
    return qwen2_5_1_5b_instruct_config()


@pytest.fixture(scope="module")
def tiny_cfg():
    return Qwen2Config(vocab_size=50, hidden_size=16, intermediate_size=40, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


def test_qwen_config_has_published_values(qwen_cfg):
    assert (qwen_cfg.hidden_size, qwen_cfg.intermediate_size, qwen_cfg.num_hidden_layers) == (1536, 8960, 28)
    assert (qwen_cfg.num_attention_heads, qwen_cfg.num_key_value_heads, qwen_cfg.vocab_size) == (12, 2, 151936)
    assert qwen_cfg.tie_word_embeddings is True
    assert qwen_cfg.max_position_embeddings == 32768


def test_qwen_count_matches_closed_form_and_published_size(qwen_cfg):
    n = count_parameters_from_config(qwen_cfg)
    assert n == qwen2_params_by_hand(151936, 1536, 8960, 28, 12, 2, tied=True)
    assert n == 1_543_714_304                                  # "1.54B" on the model card
    non_embedding = n - 151936 * 1536
    assert round(non_embedding / 1e9, 2) == 1.31              # "1.31B non-embedding" on the model card


def test_untied_tiny_count_and_heads(tiny_cfg):
    n = count_parameters_from_config(tiny_cfg)
    assert n == qwen2_params_by_hand(50, 16, 40, 2, 4, 2, tied=False)
    backbone = count_parameters_from_config(tiny_cfg, head="none")
    assert n - backbone == 50 * 16                             # the untied LM head
    assert count_parameters_from_config(tiny_cfg, head="value") == backbone + 16   # scalar head, no bias


def test_breakdown_sums_and_groups(qwen_cfg, tiny_cfg):
    b = parameter_breakdown(qwen_cfg)
    assert sum(b.values()) == count_parameters_from_config(qwen_cfg)
    assert b["embedding"] == 151936 * 1536 and b["head"] == 0    # tied: the head adds nothing
    assert b["mlp"] == 28 * 3 * 1536 * 8960
    assert b["norm"] == 28 * 2 * 1536 + 1536
    assert parameter_breakdown(tiny_cfg)["head"] == 50 * 16


def test_bad_head_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="head must be"):
        count_parameters_from_config(tiny_cfg, head="critic")


def test_grpo_table_is_16_bytes_per_trained_param_plus_reference(qwen_cfg):
    psi = 1_543_714_304
    t = training_memory_table(qwen_cfg, dtype_bytes=2)
    assert t.bytes_of("policy") == 16 * psi                   # ZeRO: 2 + 2 + 12 bytes
    assert t.bytes_of("reference") == 2 * psi
    assert t.total_bytes == 18 * psi
    assert t.bytes_of("value") == 0
    assert abs(t.total_gib - 18 * psi / 2**30) < 1e-9
    assert [r.component for r in t.rows if r.model == "policy"] == [
        "weights", "gradients", "AdamW m and v", "fp32 master weights"]


def test_ppo_adds_a_trained_value_model(qwen_cfg):
    grpo = training_memory_table(qwen_cfg, dtype_bytes=2)
    ppo = training_memory_table(qwen_cfg, dtype_bytes=2, with_value_model=True)
    psi_v = 1_543_714_304 + 1536
    assert ppo.bytes_of("value") == 16 * psi_v
    assert ppo.total_bytes - grpo.total_bytes == 16 * psi_v
    assert ppo.total_gib > 45 and grpo.total_gib < 26          # 50.6 vs 25.9 GiB
    rm = training_memory_table(qwen_cfg, with_reward_model=True)
    assert rm.bytes_of("reward") == 2 * psi_v


def test_fp32_has_no_master_copy_and_pure_bf16_option(tiny_cfg):
    psi = count_parameters_from_config(tiny_cfg)
    fp32 = training_memory_table(tiny_cfg, dtype_bytes=4, with_reference=False)
    assert fp32.total_bytes == (4 + 4 + 8) * psi
    assert "fp32 master weights" not in [r.component for r in fp32.rows]
    pure = training_memory_table(tiny_cfg, dtype_bytes=2, master_weights=False, with_reference=False)
    assert pure.total_bytes == (2 + 2 + 4) * psi               # bf16 moments, no master copy
    sgd = training_memory_table(tiny_cfg, dtype_bytes=4, optimizer="sgd", with_reference=False)
    assert sgd.total_bytes == 8 * psi


def test_bad_arguments_name_the_problem(tiny_cfg):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        training_memory_table(tiny_cfg, optimizer="adam8bit")
    with pytest.raises(ValueError, match="dtype_bytes must be > 0"):
        training_memory_table(tiny_cfg, dtype_bytes=0)


def test_table_rows_extend_and_render():
    t = MemoryTable((MemoryRow("weights", "policy", 1000, 2),), title="toy")
    logits = MemoryRow("logits", "activations", 2 * 3 * 5, 4, "B·T·V fp32")
    t2 = t.with_rows(logits)
    assert t2.total_bytes == 2000 + 120 and t.total_bytes == 2000
    assert t2.bytes_of("activations") == 120
    md = t2._repr_markdown_()
    assert "| policy | weights | 1,000 | 2 |" in md and "**toy**" in md and "total" in md
    assert "logits" in str(t2)
    assert MemoryRow("x", "m", GIB, 1).gib == 1.0

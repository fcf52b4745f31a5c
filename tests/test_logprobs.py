"""Tests for grpo_lib.logprobs on a tiny random Qwen2ForCausalLM: the memory-efficient path equals the
tutorial's naive full-vocabulary path, left padding is harmless, temperature is applied, and the completion
mask keeps the first EOS."""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from grpo_lib.logprobs import (
    completion_mask,
    naive_token_logprobs,
    position_ids_from_mask,
    selective_log_softmax,
    token_logprobs,
)

V = 101
PAD = 0


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=V, max_position_embeddings=64)
    return Qwen2ForCausalLM(cfg).eval()


def left_padded_batch(seed=1, B=4, P=7, T=5):
    """Prompts of different lengths left-padded to P, then T completion tokens (no padding inside)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, V, (B, P + T), generator=g)                 # (B, P+T)
    attention_mask = torch.ones_like(input_ids)                              # (B, P+T)
    for i, n_pad in enumerate([0, 2, 4, 1][:B]):
        attention_mask[i, :n_pad] = 0
        input_ids[i, :n_pad] = PAD
    return input_ids, attention_mask, T


# ---------------------------------------------------------------- selective_log_softmax

def test_selective_log_softmax_matches_full_log_softmax_fp32():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, V) * 4                                        # (B, T, V)
    index = torch.randint(0, V, (3, 5))                                      # (B, T)
    expected = torch.log_softmax(logits, dim=-1).gather(-1, index[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, index)
    assert got.shape == (3, 5) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # 2-D (T, V) input is one row
    torch.testing.assert_close(selective_log_softmax(logits[0], index[0]), expected[0], atol=1e-5, rtol=0)


def test_selective_log_softmax_matches_full_log_softmax_bf16():
    torch.manual_seed(0)
    logits = (torch.randn(3, 5, V) * 4).to(torch.bfloat16)
    index = torch.randint(0, V, (3, 5))
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, index[..., None]).squeeze(-1)
    got = selective_log_softmax(logits, index)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.02)


def test_selective_log_softmax_gradient_equals_full_path():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, V, requires_grad=True)
    index = torch.randint(0, V, (2, 4))
    (g_sel,) = torch.autograd.grad(selective_log_softmax(logits, index).sum(), logits)
    full = torch.log_softmax(logits, dim=-1).gather(-1, index[..., None]).sum()
    (g_full,) = torch.autograd.grad(full, logits)
    torch.testing.assert_close(g_sel, g_full)


def test_selective_log_softmax_hand_value():
    # logits [0, ln 3] -> softmax [1/4, 3/4] -> log p(1) = ln 0.75
    logits = torch.tensor([[[0.0, torch.log(torch.tensor(3.0)).item()]]])
    assert selective_log_softmax(logits, torch.tensor([[1]])).item() == pytest.approx(-0.2876821, abs=1e-6)


def test_selective_log_softmax_bad_input():
    with pytest.raises(ValueError, match="shape"):
        selective_log_softmax(torch.zeros(2, 3, V), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, V\)"):
        selective_log_softmax(torch.zeros(1, 2, V), torch.tensor([[0, V]]))
    with pytest.raises(ValueError, match="integer"):
        selective_log_softmax(torch.zeros(1, 2, V), torch.zeros(1, 2))


# ---------------------------------------------------------------- token_logprobs

def test_token_logprobs_equals_naive_without_padding(model):
    torch.manual_seed(2)
    input_ids = torch.randint(2, V, (3, 10))
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        fast = token_logprobs(model, input_ids, attention_mask, 4)
        naive = naive_token_logprobs(model, input_ids, attention_mask, 4)
    assert fast.shape == (3, 4)
    assert (fast < 0).all()
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_token_logprobs_equals_naive_left_padded(model, temperature, chunk_size):
    input_ids, attention_mask, T = left_padded_batch()
    with torch.no_grad():
        fast = token_logprobs(model, input_ids, attention_mask, T, temperature=temperature, chunk_size=chunk_size)
        naive = naive_token_logprobs(model, input_ids, attention_mask, T, temperature=temperature)
    assert fast.shape == (4, T)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=0)


def test_temperature_changes_the_distribution(model):
    input_ids, attention_mask, T = left_padded_batch()
    with torch.no_grad():
        a = token_logprobs(model, input_ids, attention_mask, T, temperature=1.0)
        b = token_logprobs(model, input_ids, attention_mask, T, temperature=0.5)
    assert (a - b).abs().max() > 1e-3


def test_left_padded_row_equals_unpadded_row(model):
    input_ids, attention_mask, T = left_padded_batch()
    with torch.no_grad():
        batch = token_logprobs(model, input_ids, attention_mask, T)
        for i in range(input_ids.shape[0]):
            n_pad = int((attention_mask[i] == 0).sum())
            alone = token_logprobs(model, input_ids[i:i + 1, n_pad:], attention_mask[i:i + 1, n_pad:], T)
            torch.testing.assert_close(batch[i:i + 1], alone, atol=1e-5, rtol=0)


def test_rope_is_shift_invariant_so_the_tutorial_without_position_ids_agrees(model):
    # Teaching fact used in notebook 04: Qwen2's RoPE only sees relative positions.
    input_ids, attention_mask, T = left_padded_batch()
    with torch.no_grad():
        with_pos = naive_token_logprobs(model, input_ids, attention_mask, T)
        tutorial = naive_token_logprobs(model, input_ids, attention_mask, T, use_position_ids=False)
    torch.testing.assert_close(with_pos, tutorial, atol=1e-4, rtol=0)


def test_token_logprobs_matches_generate_scores(model):
    # Independent check: the sampler's own (temperature-scaled) scores give the same log-probs.
    torch.manual_seed(3)
    prompt_ids, prompt_mask, _ = left_padded_batch(seed=4, B=3, P=6, T=0)
    T, temperature = 6, 0.7
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=T,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=PAD,
                         eos_token_id=None)
    seq = out.sequences                                                      # (B, P+T)
    scores = torch.stack(out.scores, dim=1)                                  # (B, T, V) logits / temperature
    from_generate = torch.log_softmax(scores, -1).gather(-1, seq[:, -T:, None]).squeeze(-1)
    full_mask = torch.cat([prompt_mask, torch.ones(3, T, dtype=prompt_mask.dtype)], dim=1)
    with torch.no_grad():
        ours = token_logprobs(model, seq, full_mask, T, temperature=temperature)
    torch.testing.assert_close(ours, from_generate, atol=1e-5, rtol=0)


class SpyModel(torch.nn.Module):
    """Wraps the tiny model and records what token_logprobs passes to forward and the logits' shape."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        self.calls.append((kwargs, tuple(out.logits.shape)))
        return out


def test_only_completion_logits_are_computed_with_mask_positions(model):
    # RoPE is shift-invariant, so log-prob values cannot tell whether position_ids were passed: check
    # the call itself. Chunks of 3 rows over B = 4 -> two forwards.
    input_ids, attention_mask, T = left_padded_batch()
    spy = SpyModel(model)
    with torch.no_grad():
        token_logprobs(spy, input_ids, attention_mask, T, chunk_size=3)
    assert [shape for _, shape in spy.calls] == [(3, T + 1, V), (1, T + 1, V)]
    kwargs = spy.calls[0][0]
    assert kwargs["logits_to_keep"] == T + 1
    assert torch.equal(kwargs["position_ids"], position_ids_from_mask(attention_mask)[:3])
    assert kwargs["position_ids"][2].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]  # 4 pads, then 0..7


def test_gradients_flow_and_equal_naive_gradients(model):
    input_ids, attention_mask, T = left_padded_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    fast = token_logprobs(model, input_ids, attention_mask, T, chunk_size=2)
    assert fast.requires_grad
    g_fast = torch.autograd.grad(fast.sum(), params)
    naive = naive_token_logprobs(model, input_ids, attention_mask, T)
    g_naive = torch.autograd.grad(naive.sum(), params)
    assert sum(g.abs().sum() for g in g_fast) > 0
    for a, b in zip(g_fast, g_naive):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_token_logprobs_bad_input(model):
    ids = torch.randint(2, V, (2, 6))
    with pytest.raises(ValueError, match=r"\[0, L-1\]"):
        token_logprobs(model, ids, torch.ones_like(ids), 6)
    with pytest.raises(ValueError, match="attention_mask shape"):
        token_logprobs(model, ids, torch.ones(2, 5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(model, ids, None, 3, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(model, ids, None, 3, chunk_size=0)
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        token_logprobs(model, ids[0], None, 3)
    # T = 0 (no completion tokens) is a defined, empty answer
    with torch.no_grad():
        assert token_logprobs(model, ids, None, 0).shape == (2, 0)


def test_position_ids_from_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 1, 2, 2]])
    assert torch.equal(position_ids_from_mask(mask), expected)


# ---------------------------------------------------------------- completion_mask

EOS = 7


def test_completion_mask_hand_cases():
    ids = torch.tensor([
        [3, 4, EOS, 0, 0],        # EOS in the middle: kept, padding after it dropped
        [EOS, 0, 0, 0, 0],        # EOS first: only the EOS is trained
        [3, 4, 5, 6, 8],          # no EOS: truncated, all ones
        [3, EOS, 4, EOS, 0],      # two EOS: stop at the first
        [3, 4, 5, 6, EOS],        # EOS last
    ])
    expected = torch.tensor([
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ])
    mask = completion_mask(ids, EOS)
    assert mask.dtype == torch.int32
    assert torch.equal(mask, expected.int())
    assert mask.sum(-1).tolist() == [3, 1, 5, 2, 5]


def test_completion_mask_several_eos_ids():
    ids = torch.tensor([[3, 9, 7, 0], [3, 4, 7, 9], [3, 4, 5, 6]])
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.int32)
    assert torch.equal(completion_mask(ids, [7, 9]), expected)
    assert torch.equal(completion_mask(ids, (9, 7)), expected)
    assert torch.equal(completion_mask(ids, torch.tensor([7, 9])), expected)


def test_completion_mask_empty_and_bad_input():
    assert completion_mask(torch.zeros(2, 0, dtype=torch.long), EOS).shape == (2, 0)
    with pytest.raises(ValueError, match="eos_token_id"):
        completion_mask(torch.zeros(2, 3, dtype=torch.long), None)
    with pytest.raises(ValueError, match="eos_token_id"):
        completion_mask(torch.zeros(2, 3, dtype=torch.long), [])
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        completion_mask(torch.zeros(3, dtype=torch.long), EOS)

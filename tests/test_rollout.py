"""Rollouts: shapes, left padding, contiguous groups, EOS in the mask, the sampling distribution, scoring."""
import math

import pytest
import torch
from transformers import Qwen2ForCausalLM

from grpo_lib.logprobs import token_logprobs
from grpo_lib.models import tiny_qwen2_config
from grpo_lib.rewards import correctness_reward, format_reward
from grpo_lib.rollout import (
    Rollout,
    RewardFunctionError,
    generate_completions,
    generation_mode,
    gradient_checkpointing_on,
    score_completions,
    score_rollout,
    set_gradient_checkpointing,
)
from grpo_lib.tokenizer import build_char_tokenizer

EOS_BOOST = 3.0  # added to the EOS logit so that some completions stop early (e^3 / 263 ≈ 8% per step)


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=2))
    eos = tok.eos_token_id

    def boost_eos(module, inputs, output):
        output = output.clone()
        output[..., eos] += EOS_BOOST
        return output

    m.lm_head.register_forward_hook(boost_eos)
    m.eval()
    return m


PROMPTS = ["What is 1 + 2?\n", "What is 47 + 85?\n", "Hi\n"]  # different lengths: 15, 17 and 3 characters


@pytest.fixture(scope="module")
def rollout(model, tok):
    return generate_completions(model, tok, PROMPTS, G=4, max_new_tokens=30, temperature=1.0, seed=0)


def test_shapes_and_group_layout(rollout, tok):
    N, G = 3, 4
    assert rollout.N == N and rollout.G == G and rollout.B == N * G
    assert rollout.prompt_ids.shape == (N * G, 17)                # P = longest prompt, one id per character
    assert rollout.completion_ids.shape == rollout.completion_mask.shape == (N * G, rollout.T)
    assert rollout.T <= 30
    assert len(rollout.texts) == N * G
    assert rollout.input_ids.shape == (N * G, 17 + rollout.T)
    assert rollout.attention_mask.shape == rollout.input_ids.shape
    # group n is rows n*G .. n*G+G-1: all rows of a group carry prompt n
    for n, prompt in enumerate(PROMPTS):
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        for row in range(n * G, (n + 1) * G):
            real = rollout.prompt_ids[row][rollout.prompt_mask[row].bool()].tolist()
            assert real == ids
        assert rollout.group(n) == rollout.texts[n * G:(n + 1) * G]


def test_prompts_are_left_padded(rollout, tok):
    pad = tok.pad_token_id
    # "Hi\n" (3 tokens) gets 14 pads on the left, and its last real token sits in the last column
    for row in range(8, 12):
        assert rollout.prompt_mask[row].tolist() == [0] * 14 + [1] * 3
        assert rollout.prompt_ids[row, :14].tolist() == [pad] * 14
    assert rollout.prompt_mask[:, -1].all()                       # every prompt ends at column P - 1


def test_mask_includes_first_eos_and_nothing_after(rollout, tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids, mask = rollout.completion_ids, rollout.completion_mask
    n_with_eos = 0
    for i in range(rollout.B):
        row = ids[i].tolist()
        if eos in row:
            n_with_eos += 1
            k = row.index(eos)
            assert mask[i].tolist() == [1] * (k + 1) + [0] * (len(row) - k - 1)   # EOS itself is in the mask
            assert all(t == pad for t in row[k + 1:])                             # only padding after it
            assert not rollout.truncated[i]
            assert rollout.texts[i] == tok.decode(row[:k], skip_special_tokens=False)
        else:
            assert mask[i].all() and rollout.truncated[i]
            assert len(row) == 30                                                 # cut at max_new_tokens
    assert 0 < n_with_eos < rollout.B, "the EOS boost should make some, not all, completions stop"
    assert rollout.completion_lengths.tolist() == mask.sum(-1).tolist()


def test_same_seed_same_samples_other_seed_differs(model, tok, rollout):
    again = generate_completions(model, tok, PROMPTS, G=4, max_new_tokens=30, temperature=1.0, seed=0)
    assert torch.equal(again.completion_ids, rollout.completion_ids)
    other = generate_completions(model, tok, PROMPTS, G=4, max_new_tokens=30, temperature=1.0, seed=1)
    assert not torch.equal(other.completion_ids[:, :5], rollout.completion_ids[:, :5])
    # the G samples of one prompt differ from each other (sampling, not greedy)
    assert len(set(rollout.group(0))) > 1


def test_sampling_distribution_is_plain_softmax_over_temperature_scaled_logits(model, tok):
    """Rollouts must sample from softmax(logits / τ) even when the checkpoint asks for top-k / top-p /
    repetition penalty, so that the loss's log-probs describe the distribution that sampled. The rollout
    (grpo_lib.sampling's loop) gives the very tokens of `generate` with every processor switched off."""
    gc = model.generation_config
    saved = (gc.top_k, gc.top_p, gc.repetition_penalty)
    gc.top_k, gc.top_p, gc.repetition_penalty = 5, 0.5, 1.3        # what a Qwen-like checkpoint might ship
    try:
        r = generate_completions(model, tok, PROMPTS, G=2, max_new_tokens=12, temperature=0.7, seed=3)
        torch.manual_seed(3)
        with generation_mode(model):
            out = model.generate(input_ids=r.prompt_ids, attention_mask=r.prompt_mask, max_new_tokens=12,
                                 do_sample=True, temperature=0.7, top_k=0, top_p=1.0, repetition_penalty=1.0,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 output_scores=True, return_dict_in_generate=True)
    finally:
        gc.top_k, gc.top_p, gc.repetition_penalty = saved
    assert torch.equal(r.completion_ids, out.sequences[:, r.prompt_ids.shape[1]:])
    scores = torch.stack(out.scores, dim=1)                               # (B, T, V) processed logits
    from_generate = torch.log_softmax(scores.float(), -1).gather(-1, r.completion_ids[..., None]).squeeze(-1)
    with torch.no_grad():
        from_loss = token_logprobs(model, r.input_ids, r.attention_mask, r.T, temperature=0.7)  # (B, T)
    m = r.completion_mask.bool()
    assert torch.isfinite(from_generate[m]).all()                         # no top-k / top-p -inf on a sampled token
    torch.testing.assert_close(from_loss[m], from_generate[m], atol=1e-4, rtol=1e-4)


def test_generation_runs_in_eval_mode_without_checkpointing_and_restores_both(model, tok):
    model.train()
    set_gradient_checkpointing(model, True)
    seen = []

    def spy(module, args, kwargs):                       # every forward call of the decoding loop
        seen.append({"training": model.training, "checkpointing": gradient_checkpointing_on(model),
                     "grad": torch.is_grad_enabled(), "use_cache": kwargs.get("use_cache"),
                     "cache": kwargs.get("cache") is not None})

    handle = model.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        generate_completions(model, tok, PROMPTS[:1], G=2, max_new_tokens=4, seed=0)
    finally:
        handle.remove()
    assert len(seen) >= 1
    assert all(s == {"training": False, "checkpointing": False, "grad": False, "use_cache": True, "cache": True}
               for s in seen)
    assert model.training and gradient_checkpointing_on(model)           # restored for the update
    set_gradient_checkpointing(model, False)
    model.eval()
    with generation_mode(model):
        assert not model.training
    assert not model.training


def test_greedy_is_deterministic(model, tok):
    a = generate_completions(model, tok, PROMPTS, G=1, max_new_tokens=10, do_sample=False, seed=0)
    b = generate_completions(model, tok, PROMPTS, G=1, max_new_tokens=10, do_sample=False, seed=123)
    assert a.texts == b.texts and a.B == 3


def test_generate_bad_input(model, tok):
    with pytest.raises(ValueError, match="non-empty list"):
        generate_completions(model, tok, [], G=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="non-empty list"):
        generate_completions(model, tok, "What is 1 + 2?\n", G=2, max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        generate_completions(model, tok, PROMPTS, G=2, max_new_tokens=4, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_completions(model, tok, PROMPTS, G=2, max_new_tokens=0)
    no_pad = build_char_tokenizer()
    no_pad.pad_token = None
    with pytest.raises(ValueError, match="pad_token_id"):
        generate_completions(model, no_pad, PROMPTS, G=2, max_new_tokens=4)


# --- scoring ------------------------------------------------------------------------------------------
def hand_rollout(texts, G, prompts=None):
    B = len(texts)
    N = B // G
    return Rollout(prompts=prompts or [f"q{n}\n" for n in range(N)], prompt_ids=torch.ones(B, 2, dtype=torch.long),
                   prompt_mask=torch.ones(B, 2, dtype=torch.long), completion_ids=torch.ones(B, 3, dtype=torch.long),
                   completion_mask=torch.ones(B, 3, dtype=torch.int32), texts=list(texts), G=G, eos_token_id=1)


GOOD = "<reasoning>2+3=5</reasoning>\n<answer>5</answer>"


def test_score_completions_hand_values():
    texts = [GOOD, "<answer>5.0</answer>", "no tags 5", "<reasoning>x</reasoning>\n<answer>6</answer>"]
    r, per = score_completions(hand_rollout(texts, G=2), ["5", "6"],
                               {"correctness": correctness_reward, "format": format_reward})
    # prompt 0's gold "5" covers rows 0-1, prompt 1's gold "6" rows 2-3
    assert per["correctness"].tolist() == [2.0, 1.5, 0.0, 2.0]
    torch.testing.assert_close(per["format"], torch.tensor([0.8, 0.4, 0.0, 0.8]))
    torch.testing.assert_close(r, torch.tensor([2.8, 1.9, 0.0, 2.8]))


def test_reward_function_is_called_like_the_tutorial():
    calls = []

    def spy(prompts, completions, answer, **kw):
        calls.append((prompts, completions, answer))
        return [0.0] * len(completions)

    score_completions(hand_rollout(["a", "b", "c", "d"], G=2, prompts=["P0", "P1"]), ["g0", "g1"], {"spy": spy})
    prompts, completions, answer = calls[0]
    assert prompts == ["P0", "P0", "P1", "P1"]
    assert completions == [[{"content": "a"}], [{"content": "b"}], [{"content": "c"}], [{"content": "d"}]]
    assert answer == ["g0", "g0", "g1", "g1"]


def test_raising_reward_function_names_itself_and_shows_the_completion():
    def picky(prompts, completions, answer, **kw):
        out = []
        for c in completions:
            if "BOOM" in c[0]["content"]:
                raise ValueError("cannot parse this")
            out.append(1.0)
        return out

    texts = [GOOD, GOOD, "prefix BOOM <answer>7</answer>", GOOD]
    with pytest.raises(RewardFunctionError) as err:
        score_completions(hand_rollout(texts, G=2), ["5", "7"], {"format": format_reward, "picky": picky})
    msg = str(err.value)
    assert "'picky'" in msg and "ValueError: cannot parse this" in msg
    assert "completion 2" in msg and repr(texts[2]) in msg and "'7'" in msg


def test_reward_function_wrong_count_or_non_finite():
    rollout = hand_rollout(["a", "b"], G=2)
    with pytest.raises(RewardFunctionError, match=r"'short' must return 2 numbers.*got 1"):
        score_completions(rollout, ["1"], {"short": lambda **kw: [1.0]})
    with pytest.raises(RewardFunctionError, match=r"'nan'.*completion 1.*finite"):
        score_completions(rollout, ["1"], {"nan": lambda **kw: [1.0, math.nan]})
    with pytest.raises(RewardFunctionError, match="not a number"):
        score_completions(rollout, ["1"], {"text": lambda **kw: ["yes", "no"]})
    with pytest.raises(ValueError, match="2 gold answers for 1 prompts"):
        score_completions(rollout, ["1", "2"], {"f": format_reward})


def test_score_rollout_logprobs_and_correctness(model, tok, rollout):
    answers = ["3", "132", "0"]
    funcs = {"correctness": correctness_reward, "format": format_reward}
    on_policy = score_rollout(rollout, answers, funcs, policy=model, ref_model=None, need_old=False)
    assert on_policy.logp_old is None and on_policy.logp_ref is None           # μ = 1, β = 0: nothing to compute
    assert on_policy.advantages.shape == (12,) and on_policy.rewards.shape == (12,)
    assert on_policy.correct.dtype == torch.bool and on_policy.correct.shape == (12,)
    with torch.no_grad():
        expected = token_logprobs(model, rollout.input_ids, rollout.attention_mask, rollout.T)  # (B, T)
    full = score_rollout(rollout, answers, funcs, policy=model, ref_model=model, need_old=True, chunk_size=5)
    assert full.logp_old.shape == full.logp_ref.shape == (12, rollout.T)
    torch.testing.assert_close(full.logp_old, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(full.logp_ref, expected, atol=1e-5, rtol=1e-5)
    assert not full.logp_old.requires_grad
    with pytest.raises(ValueError, match="needs the policy"):
        score_rollout(rollout, answers, funcs, need_old=True)


def test_reward_values_must_be_numbers_not_numeric_strings():
    import numpy as np

    rollout = hand_rollout(["a", "b"], G=2)
    with pytest.raises(RewardFunctionError, match=r"'text' returned '1.0' \(str\) for completion 0 \(prompt 0\), which "
                                                  r"is not a number: rewards must be bool, int, float or a 0-d tensor"):
        score_completions(rollout, ["1"], {"text": lambda **kw: ["1.0", "0"]})      # trained as scores before
    with pytest.raises(RewardFunctionError, match=r"returned tensor\(\[1\., 2\.\]\) \(Tensor\) for completion 1"):
        score_completions(rollout, ["1"], {"rows": lambda **kw: [1.0, torch.tensor([1.0, 2.0])]})
    numbers = {"f": lambda **kw: [True, 2], "g": lambda **kw: [torch.tensor(0.5), np.float32(0.25)]}
    r, per_func = score_completions(rollout, ["1"], numbers)
    assert r.tolist() == [1.5, 2.25] and per_func["f"].tolist() == [1.0, 2.0]

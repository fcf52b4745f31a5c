"""grpo_lib.sampling.sample_tokens: the tokens of model.generate (same seed), each prompt prefilled once;
and grpo_lib.logprobs.grouped_token_logprobs: token_logprobs's numbers (and gradients) with each prompt run once."""
import copy

import pytest
import torch

from grpo_lib.data import build_prompt, load_problems, prompts_for_step
from grpo_lib.logprobs import grouped_token_logprobs, token_logprobs
from grpo_lib.models import load_policy
from grpo_lib.rollout import Rollout, completion_logprobs, generate_completions, generation_mode
from grpo_lib.sampling import sample_tokens


@pytest.fixture(scope="module")
def policy():
    return load_policy("tiny", device="cpu")


@pytest.fixture(scope="module")
def prompts(policy):
    _, tok = policy
    problems = prompts_for_step(load_problems("addition", "train"), 0, 6, seed=0)
    return [build_prompt(tok, p["question"]) for p in problems]


@pytest.mark.parametrize("seed, temperature, do_sample", [(0, 1.0, True), (1, 1.0, True), (2, 0.7, True),
                                                          (3, 1.3, True), (0, 1.0, False)])
def test_same_tokens_as_generate(policy, prompts, seed, temperature, do_sample):
    model, tok = policy
    G = 4
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]                            # (N, P)
    assert (mask == 0).any(), "prompts of different lengths: left padding is exercised"
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if do_sample \
        else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    with generation_mode(model):
        torch.manual_seed(seed)
        ref = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=mask.repeat_interleave(G, 0),
                             max_new_tokens=30, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             repetition_penalty=1.0, **sampling)[:, ids.shape[1]:]
        torch.manual_seed(seed)
        ours = sample_tokens(model, ids, mask, max_new_tokens=30, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, temperature=temperature, do_sample=do_sample, G=G)
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    if do_sample:
        groups = ours.view(len(prompts), G, -1)
        assert any(len({tuple(r) for r in g.tolist()}) > 1 for g in groups)   # sampling, not G copies


def test_stops_at_max_new_tokens_and_pads_after_eos(policy, prompts):
    model, tok = policy
    enc = tok(prompts[:2], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    with generation_mode(model):
        torch.manual_seed(0)
        short = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=3,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, G=2)
        full = sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=40,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, G=2)
    assert short.shape == (4, 3)
    for row in full.tolist():
        if tok.eos_token_id in row:
            k = row.index(tok.eos_token_id)
            assert all(t == tok.pad_token_id for t in row[k + 1:])
    assert (full == tok.eos_token_id).any(dim=1).all(), "the shipped model ends every addition"
    assert full.shape[1] < 40, "the loop stops once every row has emitted EOS"
    with pytest.raises(ValueError, match="G must be >= 1"):
        sample_tokens(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=3,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, G=0)


@pytest.fixture(scope="module")
def rollout(policy, prompts):
    model, tok = policy
    return generate_completions(model, tok, prompts, G=4, max_new_tokens=40, temperature=1.0, seed=5)


@pytest.mark.parametrize("temperature", [1.0, 0.8])
def test_grouped_logprobs_and_gradients_equal_the_plain_pass(policy, rollout, temperature):
    model, _ = policy
    plain, grouped = copy.deepcopy(model).train(), copy.deepcopy(model).train()
    r = rollout
    a = token_logprobs(plain, r.input_ids, r.attention_mask, r.T, temperature=temperature)
    b = grouped_token_logprobs(grouped, r.prompt_ids[::r.G], r.prompt_mask[::r.G], r.completion_ids,
                               r.completion_mask, r.G, temperature=temperature)
    m = r.completion_mask.bool()
    torch.testing.assert_close(b[m], a[m], atol=2e-5, rtol=1e-5)
    weights = torch.randn(r.B, r.T, generator=torch.Generator().manual_seed(0)) * m
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4 * p.grad.abs().max().item() + 1e-7, rtol=1e-4, msg=name)


def test_completion_logprobs_micro_batches_and_fallbacks(policy, rollout):
    model, _ = policy
    r = rollout
    with torch.no_grad():
        full = token_logprobs(model, r.input_ids, r.attention_mask, r.T)
        m = r.completion_mask.bool()
        for rows, chunk in [(None, None), (slice(4, 12), None), (None, 8), (slice(0, 6), None), (None, 6)]:
            got = completion_logprobs(model, r, rows=rows, chunk_size=chunk)       # grouped or plain: same numbers
            want = full if rows is None else full[rows]
            mm = m if rows is None else m[rows]
            torch.testing.assert_close(got[mm], want[mm], atol=2e-5, rtol=1e-5)


def test_grouped_logprobs_bad_shapes(policy, rollout):
    model, _ = policy
    r = rollout
    with pytest.raises(ValueError, match="expected N·G"):
        grouped_token_logprobs(model, r.prompt_ids[::r.G], r.prompt_mask[::r.G], r.completion_ids[:-1],
                               r.completion_mask[:-1], r.G)
    assert isinstance(r, Rollout)

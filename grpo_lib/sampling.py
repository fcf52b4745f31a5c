"""A lean KV-cache decoding loop: the same tokens as `model.generate`, without its per-step overhead.

`generate` is general (beam search, logits processors, stopping criteria, streamers, compiled caches,
assisted decoding); each decode step runs tens of Python calls around the model's forward. For the tiny
policy a decode step of B = 128 rows is ~0.25 GFLOP, a few milliseconds, so that overhead is a large
share of the generation time. `sample_tokens` is the loop `generate(do_sample=True, top_k=0, top_p=1.0)`
runs, written out, with one saving: GRPO samples G completions of each prompt, and `generate` runs the
prompt G times. Here each distinct prompt goes through the model once and its KV cache is repeated G
times (the prompt is about 40% of the tokens of the tiny task, so the prefill costs 1/G of what it did):

    prefill:  forward over the N distinct left-padded prompts with a fresh cache, logits of the last
              position only; cache and logits repeated G times (rows n·G .. n·G + G - 1 = prompt n)
    repeat:   scores = logits / τ;  next = multinomial(softmax(scores), 1)   (argmax when greedy)
              rows that already emitted EOS get the pad token instead;  stop when every row has EOS
              forward of the B new tokens, one position each, reading and extending the cache

Choices made here:
1. Same random stream: one `torch.multinomial` over all B rows per step, finished rows included, as
   `generate` does, so a seed gives the same completions token for token (tests/test_sampling.py compares
   with `generate` on several seeds, temperatures and greedy decoding).
2. Same positions and mask: position ids count the real tokens (cumsum of the attention mask - 1, pads at
   1, as `generate` builds them) and the 2-D attention mask grows by one column per step.
3. Logits in fp32 before the temperature and the softmax (as `generate` does), whatever the weights' dtype.
4. The loop stops as soon as every row has emitted EOS, so T is the longest completion, never more than
   max_new_tokens: no padding columns are generated beyond it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def sample_tokens(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, *, max_new_tokens: int,
                  eos_token_id: int, pad_token_id: int, temperature: float = 1.0, do_sample: bool = True,
                  G: int = 1) -> Tensor:
    """Sample (or greedily decode) up to max_new_tokens after each left-padded prompt, with a KV cache.

    Args:
        model: a transformers causal LM (e.g. Qwen2ForCausalLM), in eval mode.
        prompt_ids, prompt_mask: (N, P), left-padded, each prompt once.
        max_new_tokens: |o|_max.
        eos_token_id, pad_token_id: a row stops after EOS; later positions get pad.
        temperature: τ > 0 (ignored when do_sample=False).
        do_sample: False = greedy (argmax).
        G: completions per prompt; row n·G + g is completion g of prompt n (B = N·G rows).

    Returns:
        completion ids, (B, T) with T <= max_new_tokens: what `generate` returns after the prompts when
        given each prompt repeated G times (`prompt_ids.repeat_interleave(G, 0)`).
    """
    from transformers import DynamicCache

    if G < 1:
        raise ValueError(f"G must be >= 1, got {G}")
    B = prompt_ids.shape[0] * G
    mask = prompt_mask.long()                                                   # (N, P)
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)              # (N, P) as generate builds them
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=prompt_ids, attention_mask=mask, position_ids=position_ids, cache=cache,
                   use_cache=True, logits_to_keep=1).logits                     # (N, 1, V)
    if G > 1:                                                                   # N distinct prompts -> B rows
        cache.batch_repeat_interleave(G)
        logits = logits.repeat_interleave(G, dim=0)                             # (B, 1, V)
        mask = mask.repeat_interleave(G, dim=0)                                 # (B, P)
        position_ids = position_ids.repeat_interleave(G, dim=0)                 # (B, P)
    next_pos = position_ids[:, -1:] + 1                                         # (B, 1)
    unfinished = torch.ones(B, dtype=torch.long, device=prompt_ids.device)      # (B,) 1 until EOS
    ones = torch.ones(B, 1, dtype=mask.dtype, device=mask.device)
    out = []
    for t in range(max_new_tokens):
        scores = logits[:, -1].float()                                          # (B, V) fp32, as generate
        if do_sample:
            if temperature != 1.0:
                scores = scores / temperature
            nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)   # (B,)
        else:
            nxt = scores.argmax(dim=-1)                                         # (B,)
        nxt = nxt * unfinished + pad_token_id * (1 - unfinished)                # finished rows: pad
        out.append(nxt)
        unfinished = unfinished & (nxt != eos_token_id).long()
        if t + 1 == max_new_tokens or not bool(unfinished.any()):
            break
        mask = torch.cat([mask, ones], dim=1)                                   # (B, P + t + 1)
        logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos, cache=cache,
                       use_cache=True).logits                                   # (B, 1, V)
        next_pos = next_pos + 1
    return torch.stack(out, dim=1)                                              # (B, T)

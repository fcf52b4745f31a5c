"""Measure, on one CUDA GPU, the memory the planner (`grpo_lib.course.memory.plan_gpu_memory`) predicts.

    python scripts/measure_gpu_memory.py                 # Qwen2.5-1.5B shapes, random bf16 weights
    python scripts/measure_gpu_memory.py --json out.json

No weights are downloaded: the model is `Qwen2ForCausalLM(qwen2_5_1_5b_instruct_config())` with random
weights in bf16 (memory does not depend on the values). It reproduces the three phases of a grpo_lib step
the way `grpo_lib.train` runs them (pure-bf16 torch AdamW, a frozen reference copy, left-padded batches,
`token_logprobs` with `logits_to_keep`, micro-batches, non-reentrant gradient checkpointing):

1. persistent: weights + reference + gradients + AdamW state, after one warm-up update;
2. update: the peak of one micro-batch forward + backward + AdamW step, with and without checkpointing;
3. generation: the peak of `generate()` for all completions of the GPU, KV cache on, every completion
   forced to its full length.

and prints measured vs planned GiB for each (the planned peaks are `GPUMemoryPlan.first_micro_batch_peak_bytes`,
the update of one micro-batch with the gradients freed, which is what this script runs, and
`generation_peak_bytes`). The numbers recorded in notebooks/06_multi_gpu_qwen.ipynb come from this script, run on
one H100 80GB on 2026-11-26: update peak 17.33 GiB with checkpointing, 37.05 GiB without, generation peak
16.40 GiB (persistent 14.46 GiB). It needs a GPU with about 50 GiB free (the run without checkpointing is the big one).

Taught in: notebooks/06_multi_gpu_qwen.ipynb
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import transformers

from grpo_lib.logprobs import token_logprobs
from grpo_lib.course.memory import GIB, plan_gpu_memory, qwen2_5_1_5b_instruct_config
from grpo_lib.rollout import set_gradient_checkpointing


def left_padded_batch(rows: int, P: int, T: int, V: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, V, (rows, P + T), device=device)                      # (b, P+T)
    mask = torch.ones_like(ids)
    for i in range(rows):                                                        # prompts of unequal length
        mask[i, : (i * 7) % (P // 2)] = 0
    return ids, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--G", type=int, default=12)
    parser.add_argument("--N", type=int, default=7)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--completion-len", type=int, default=400)
    parser.add_argument("--micro-batch-size", type=int, default=12)
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this script measures GPU memory: it needs CUDA (torch.cuda.is_available() is False)")
    dev = "cuda"
    cfg = qwen2_5_1_5b_instruct_config()
    cfg._attn_implementation = "sdpa"
    P, T, b = args.prompt_len, args.completion_len, args.micro_batch_size
    per_gpu = args.N * args.G
    torch.manual_seed(0)
    with torch.device(dev):
        model = transformers.Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7)
    ids, mask = left_padded_batch(b, P, T, cfg.vocab_size, dev)
    A = torch.randn(b, device=dev)                                                # (b,)
    cmask = torch.ones(b, T, device=dev)                                          # (b, T)

    def update() -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        logp = token_logprobs(model, ids, mask, logits_to_keep=T)                 # (b, T)
        loss = -((logp.float() * A[:, None] * cmask).sum(-1) / T).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "transformers": transformers.__version__, "settings": vars(args)}
    update()                                                                      # creates grads and AdamW state
    torch.cuda.synchronize()
    persistent = torch.cuda.memory_allocated()
    results["persistent_gib"] = persistent / GIB
    for ckpt in (True, False):
        set_gradient_checkpointing(model, ckpt)
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        update()
        torch.cuda.synchronize()
        key = "update_ckpt" if ckpt else "update_no_ckpt"
        results[key + "_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        results[key + "_seconds"] = time.perf_counter() - t0
        plan = plan_gpu_memory(cfg, G=args.G, N=args.N, prompt_len=P, completion_len=T, master_weights=False,
                               gradient_checkpointing=ckpt, micro_batch_size=b)
        results[key + "_planned_gib"] = plan.first_micro_batch_peak_bytes / GIB    # one micro-batch, as measured
        results["persistent_planned_gib"] = plan.persistent_bytes / GIB
    set_gradient_checkpointing(model, False)
    if not args.skip_generation:
        model.eval()
        gids, gmask = left_padded_batch(per_gpu, P, 0, cfg.vocab_size, dev)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(input_ids=gids, attention_mask=gmask, max_new_tokens=T, min_new_tokens=T,
                           do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=0)
        torch.cuda.synchronize()
        results["generation_seconds"] = time.perf_counter() - t0
        results["generation_extra_gib"] = (torch.cuda.max_memory_allocated() - base) / GIB
        results["generation_peak_gib"] = torch.cuda.max_memory_allocated() / GIB
        results["generation_peak_planned_gib"] = plan.generation_peak_bytes / GIB
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

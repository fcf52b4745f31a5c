"""Problems and prompts: GSM8K (hub or local jsonl), the tiny addition task, and the prompt text q.

Every problem is a dict {"question": str, "answer": gold str}; `build_prompt` turns a question into the
prompt q the policy sees, and `prompts_for_step` picks the N questions of one training step.

Choices made here (shown in notebooks/05_full_run.ipynb; the chat template, 2, in notebooks/06_multi_gpu_qwen.ipynb):
1. GSM8K comes from the hub (`openai/gsm8k`, config `main`) by default, or from `{data_dir}/{split}.jsonl`
   (e.g. ../shared/data/gsm8k) through `datasets.load_dataset("json", ...)`. The gold answer is the text
   after "####" (`extract_answer_from_dataset`). Evaluation uses the *test* split (the tutorial
   evaluated 30 questions of the train split it trained on).
2. Prompts use the tokenizer's chat template when it has one (`apply_chat_template(...,
   add_generation_prompt=True)`): an instruct model then sees the turn structure it was tuned on and ends
   its turn with `<|im_end|>`, which is its EOS. The tutorial joined the system prompt and the question
   with "\\n" and no template, which is why Qwen kept writing "Human: ..." after `</answer>`. A tokenizer
   without a template (the tiny model) gets the plain format: system prompt, newline, question, newline.
3. The N prompts of step s are positions s·N .. s·N + N - 1 of an endless stream of seeded permutations
   of the training set (a new permutation each epoch). The choice depends only on (seed, step), not on
   any iterator state, so every rank agrees on the batch and a resumed run gets the same prompts.
   Rank k of K takes the k-th contiguous slice of N/K prompts: whole groups stay on one rank.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpo_lib.rewards import extract_answer_from_dataset
from grpo_lib.tasks import PLAIN_PROMPT, addition_problems

GSM8K_HUB = ("openai/gsm8k", "main")
"""hub name and config of GSM8K"""

GSM8K_SPLITS = ("train", "test")


def load_gsm8k(split: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """GSM8K problems of one split as [{"question", "answer" (gold after ####), "solution"}, ...].

    Args:
        split: "train" (7,473 problems) or "test" (1,319).
        data_dir: a folder holding `train.jsonl` and `test.jsonl` (GSM8K's own format, one
            {"question", "answer"} object per line); None loads `openai/gsm8k` from the hub (or its cache).

    Returns:
        list of dicts: question, answer (the gold string, e.g. "18"), solution (GSM8K's full answer text).

    Raises:
        FileNotFoundError: data_dir or its `{split}.jsonl` does not exist (names --data-dir).
        ValueError: unknown split, an empty split, or a bad row: not JSON, a missing, empty or non-string
            "question" / "answer", or no "####" gold; the message names the file, the 1-based row number
            (the line of the jsonl file) and the field. Every row is checked when the split is loaded.
        ConnectionError: the hub is unreachable and no data_dir was given (suggests --data-dir).

    Taught in: notebooks/03_reward_design.ipynb
    """
    if split not in GSM8K_SPLITS:
        raise ValueError(f"GSM8K split must be one of {GSM8K_SPLITS}, got {split!r}")
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        path = folder / f"{split}.jsonl"
        if not folder.is_dir():
            raise FileNotFoundError(
                f"--data-dir {str(data_dir)!r} (GRPOConfig.data_dir) is not a folder: it must hold "
                f"train.jsonl and test.jsonl (GSM8K's format), e.g. ../shared/data/gsm8k"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"GSM8K {split!r} split not found: {path} does not exist. --data-dir (GRPOConfig.data_dir) "
                "must be a folder holding train.jsonl and test.jsonl"
            )
        rows = _read_jsonl_rows(path)
        source = str(path)
    else:
        import datasets

        try:
            ds = datasets.load_dataset(*GSM8K_HUB, split=split)
        except Exception as e:  # offline, no cache, no network: say how to use a local copy
            raise ConnectionError(
                f"could not load {GSM8K_HUB[0]!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
                "Pass --data-dir DIR (GRPOConfig.data_dir) with a local train.jsonl / test.jsonl, "
                "e.g. --data-dir ../shared/data/gsm8k"
            ) from e
        rows = ((i, row) for i, row in enumerate(ds, start=1))
        source = f"{GSM8K_HUB[0]} ({split})"

    problems = [_gsm8k_problem(row, f"{source}, row {n}") for n, row in rows]
    if not problems:
        raise ValueError(f"{source}: the GSM8K {split!r} split is empty (no rows); a run needs at least one problem")
    return problems


def _read_jsonl_rows(path: Path) -> list[tuple[int, Any]]:
    """(1-based line number, parsed JSON value) for every non-blank line; a bad line names its number."""
    import json

    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((n, json.loads(line.rstrip("\r\n"))))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, row {n}: not valid JSON ({e.msg} at column {e.colno}): "
                                     f"{line.strip()[:80]!r}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return rows


def _gsm8k_problem(row: Any, where: str) -> dict[str, str]:
    """One GSM8K row checked field by field -> {"question", "answer" (gold), "solution"}; `where` names the row."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a GSM8K row must be a JSON object with 'question' and 'answer', "
                         f"got {type(row).__name__}")
    for name in ("question", "answer"):
        if name not in row:
            raise ValueError(f"{where}: field {name!r} is missing (a GSM8K row needs 'question' and 'answer')")
        value = row[name]
        if not isinstance(value, str):
            raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}")
        if not value.strip():
            raise ValueError(f"{where}: field {name!r} is empty")
    gold = extract_answer_from_dataset(row["answer"])
    if gold is None:
        raise ValueError(f"{where}: field 'answer' has no '#### <gold answer>' at its end: {row['answer'][-80:]!r}")
    return {"question": row["question"], "answer": gold, "solution": row["answer"]}


def load_problems(task: str, split: str, *, data_dir: str | os.PathLike | None = None, n: int | None = None,
                  ) -> list[dict[str, Any]]:
    """The problems of a task's split: {"question", "answer", ...} dicts.

    Args:
        task: "addition" (grpo_lib.tasks: 9,700 train / 300 test) or "gsm8k".
        split: "train" or "test".
        data_dir: GSM8K only, see `load_gsm8k`.
        n: keep the first n problems (a fixed subset, in the split's canonical order); None keeps all.

    Used by: `grpo_lib.run.lifecycle.Run`
    """
    if task == "addition":

        problems = addition_problems(split, seed=None)
    elif task == "gsm8k":
        problems = load_gsm8k(split, data_dir)
    else:
        raise ValueError(f"task must be 'addition' or 'gsm8k', got {task!r}")
    if n is not None:
        if n > len(problems):
            raise ValueError(f"asked for n = {n} problems but the {task} {split!r} split has only {len(problems)}")
        problems = problems[:n]
    if not problems:
        raise ValueError(f"the {task} {split!r} split is empty")
    return problems


def has_chat_template(tokenizer: Any) -> bool:
    """True when the tokenizer carries a chat template (Qwen2.5-Instruct does; the tiny one does not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def build_prompt(tokenizer: Any, question: str, system_prompt: str | None = None) -> str:
    """The prompt q for one question: the chat template if the tokenizer has one, else plain text.

    With a template:    apply_chat_template([system?, user], tokenize=False, add_generation_prompt=True)
    Without, no system: PLAIN_PROMPT = "{question}\\n"                         (the tiny task)
    Without, system:    system_prompt.strip() + "\\n" + question + "\\n"        (the tutorial's join)

    Args:
        tokenizer: a Hugging Face tokenizer.
        question: the question text.
        system_prompt: e.g. `grpo_lib.rewards.SYSTEM_PROMPT`; None or "" for none.

    Returns:
        the prompt string; the completion o is generated right after it.

    Taught in: notebooks/05_full_run.ipynb
    """

    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if has_chat_template(tokenizer):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    plain = PLAIN_PROMPT.format(question=question)
    return f"{system_prompt.strip()}\n{plain}" if system_prompt else plain


def max_context(model_config: Any) -> int | None:
    """The model's context length (max_position_embeddings), or None when the config does not say."""
    return getattr(model_config, "max_position_embeddings", None)


def check_prompts_fit(tokenizer: Any, prompts: Sequence[str], max_completion_length: int,
                      context: int | None, what: str = "prompt") -> int:
    """Fail early if a prompt plus max_completion_length new tokens exceeds the model's context.

    Args:
        tokenizer: the policy's tokenizer.
        prompts: prompt strings (all training and evaluation prompts, checked once at start).
        max_completion_length: |o|_max.
        context: max_position_embeddings of the model (None skips the check).
        what: word used in the message ("training prompt", "evaluation prompt").

    Returns:
        P_max, the longest prompt in tokens.

    Raises:
        ValueError: names max_completion_length, the model's max_position_embeddings and the prompt.

    Used by: `grpo_lib.run.lifecycle.Run` (before any training)
    """
    if not prompts:
        return 0
    lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    i = max(range(len(lengths)), key=lengths.__getitem__)
    P_max = lengths[i]
    if context is not None and P_max + max_completion_length > context:
        raise ValueError(
            f"the longest {what} is {P_max} tokens; with max_completion_length = {max_completion_length} a "
            f"sequence needs {P_max + max_completion_length} positions, but the model's max_position_embeddings "
            f"is {context}. Lower --max-completion-length to at most {max(context - P_max, 0)} or shorten the "
            f"prompt (system prompt / question). The {what}: {prompts[i][:200]!r}"
        )
    return P_max


def prompts_for_step(problems: Sequence[dict], step: int, N: int, seed: int = 0, rank: int = 0,
                     world_size: int = 1) -> list[dict]:
    """The problems rank `rank` trains on at step `step`: its slice of the step's N prompts.

    Position j of the global batch is item (step·N + j) of an endless stream made of seeded
    permutations of `problems` (epoch e uses random.Random(seed·1_000_003 + e)). The result depends only
    on its arguments, so all ranks agree and a resumed run continues exactly.

    Args:
        problems: the training problems.
        step: 0-based global step.
        N: prompts per step over all ranks; must divide by world_size.
        seed: GRPOConfig.seed.
        rank, world_size: this process's slice, N / world_size contiguous prompts.

    Returns:
        list of N / world_size problem dicts.

    Used by: `grpo_lib.run.lifecycle.Run`
    """
    if N % world_size:
        raise ValueError(f"N = {N} must be divisible by world_size = {world_size}")
    n_local = N // world_size
    size = len(problems)
    if size == 0:
        raise ValueError("no problems to sample from")
    perms: dict[int, list[int]] = {}

    def item(i: int) -> dict:
        epoch, pos = divmod(i, size)
        if epoch not in perms:
            order = list(range(size))
            random.Random(seed * 1_000_003 + epoch).shuffle(order)
            perms[epoch] = order
        return problems[perms[epoch][pos]]

    start = step * N + rank * n_local
    return [item(i) for i in range(start, start + n_local)]

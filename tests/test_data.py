"""Problems and prompts: GSM8K from local jsonl (and clear errors), chat template vs plain prompts, step batches."""
import json

import pytest

from grpo_lib.data import (
    build_prompt,
    check_prompts_fit,
    has_chat_template,
    load_gsm8k,
    load_problems,
    prompts_for_step,
)
from grpo_lib.rewards import SYSTEM_PROMPT
from grpo_lib.tasks import addition_problems
from grpo_lib.tokenizer import build_char_tokenizer

# Qwen2.5's turn markup, reduced to what matters: <|im_start|>role\ncontent<|im_end|>\n per message
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture()
def chat_tok():
    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_plain_prompt_without_chat_template():
    tok = build_char_tokenizer()
    assert not has_chat_template(tok)
    assert build_prompt(tok, "What is 47 + 85?") == "What is 47 + 85?\n"          # the tiny task's format
    assert build_prompt(tok, "What is 47 + 85?", "") == "What is 47 + 85?\n"
    expected = ("Respond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"
                "What is 47 + 85?\n")
    assert build_prompt(tok, "What is 47 + 85?", SYSTEM_PROMPT) == expected      # the tutorial's "\n".join


def test_chat_template_prompt(chat_tok):
    assert has_chat_template(chat_tok)
    got = build_prompt(chat_tok, "How many eggs?", "Answer in tags.")
    assert got == ("<|im_start|>system\nAnswer in tags.<|im_end|>\n"
                   "<|im_start|>user\nHow many eggs?<|im_end|>\n"
                   "<|im_start|>assistant\n")                                     # ends with the generation prompt
    assert build_prompt(chat_tok, "How many eggs?") == (
        "<|im_start|>user\nHow many eggs?<|im_end|>\n<|im_start|>assistant\n")      # no system message at all
    with pytest.raises(TypeError, match="question must be a str"):
        build_prompt(chat_tok, 42)


def test_load_gsm8k_local(gsm8k_dir):
    test = load_gsm8k("test", gsm8k_dir)
    assert len(test) == 1319
    assert test[0]["question"].startswith("Janet")
    assert test[0]["answer"] == "18"                                              # the text after ####
    assert test[0]["solution"].endswith("#### 18")
    assert len(load_gsm8k("train", gsm8k_dir)) == 7473
    assert load_problems("gsm8k", "test", data_dir=gsm8k_dir, n=5) == test[:5]


def test_gsm8k_missing_folder_or_split_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir") as err:
        load_gsm8k("train", tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "x #### 1"}) + "\n")
    assert load_gsm8k("train", tmp_path) == [{"question": "q", "answer": "1", "solution": "x #### 1"}]
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl does not exist.*--data-dir"):
        load_gsm8k("test", tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        load_gsm8k("validation", tmp_path)


GOOD_ROW = json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"})


@pytest.mark.parametrize("bad_line, message", [
    (json.dumps({"question": "q"}), "row 3: field 'answer' is missing"),
    (json.dumps({"question": "q", "answer": 72}), "row 3: field 'answer' must be a string, got int 72"),
    (json.dumps({"question": "q", "answer": None}), "row 3: field 'answer' must be a string, got NoneType None"),
    (json.dumps({"question": 5, "answer": "#### 5"}), "row 3: field 'question' must be a string, got int 5"),
    (json.dumps({"prompt": "q", "answer": "#### 1"}), "row 3: field 'question' is missing"),
    (json.dumps({"question": "  ", "answer": "#### 1"}), "row 3: field 'question' is empty"),
    (json.dumps({"question": "q", "answer": "no marker"}), "row 3: field 'answer' has no '#### <gold answer>'"),
    ('{"question": "q", "answer": "#### 1"', "row 3: not valid JSON (Expecting ',' delimiter at column 37)"),
    ("[1, 2]", "row 3: a GSM8K row must be a JSON object with 'question' and 'answer', got list"),
])
def test_gsm8k_bad_rows_are_named_by_file_row_and_field(tmp_path, bad_line, message):
    # rows 1 and 2 are good; row 3 (the third line of the file) is the bad one
    (tmp_path / "train.jsonl").write_text("\n".join([GOOD_ROW, GOOD_ROW, bad_line, GOOD_ROW]) + "\n")
    with pytest.raises(ValueError) as err:
        load_gsm8k("train", tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'train.jsonl'}, {message}")


def test_gsm8k_rows_count_lines_and_skip_blank_ones(tmp_path):
    (tmp_path / "test.jsonl").write_text(GOOD_ROW + "\n\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"test.jsonl, row 3: field 'answer' is missing"):   # line 3: blank line 2 counts
        load_gsm8k("test", tmp_path)
    (tmp_path / "test.jsonl").write_text(GOOD_ROW + "\n\n")
    assert load_gsm8k("test", tmp_path) == [{"question": "What is 1 + 1?", "answer": "2", "solution": "1 + 1 = 2\n#### 2"}]


def test_an_empty_gsm8k_split_is_refused(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ValueError) as err:
        load_gsm8k("train", tmp_path)
    assert str(err.value) == (f"{tmp_path / 'train.jsonl'}: the GSM8K 'train' split is empty (no rows); "
                              "a run needs at least one problem")


def test_gsm8k_hub_offline_suggests_data_dir(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"openai/gsm8k.*--data-dir"):
        load_gsm8k("train")


def test_load_problems_addition():
    test = load_problems("addition", "test")
    assert len(test) == 300 and test == addition_problems("test", seed=None)
    assert load_problems("addition", "test", n=7) == test[:7]
    assert len(load_problems("addition", "train")) == 9700
    with pytest.raises(ValueError, match="only 300"):
        load_problems("addition", "test", n=301)
    with pytest.raises(ValueError, match="task must be"):
        load_problems("sums", "test")


def test_check_prompts_fit():
    tok = build_char_tokenizer()
    prompts = ["What is 1 + 2?\n", "What is 47 + 85?\n"]                   # 15 and 17 tokens
    assert check_prompts_fit(tok, prompts, 40, context=128) == 17
    assert check_prompts_fit(tok, prompts, 111, context=128) == 17           # 17 + 111 = 128 fits exactly
    with pytest.raises(ValueError) as err:
        check_prompts_fit(tok, prompts, 112, context=128, what="training prompt")
    msg = str(err.value)
    assert "max_completion_length = 112" in msg and "max_position_embeddings is 128" in msg
    assert "at most 111" in msg and "What is 47 + 85?" in msg
    assert check_prompts_fit(tok, prompts, 10_000, context=None) == 17       # unknown context: no check


def test_prompts_for_step_is_a_pure_function_of_seed_and_step():
    problems = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    a = prompts_for_step(problems, step=3, N=4, seed=0)
    assert a == prompts_for_step(problems, step=3, N=4, seed=0)
    assert a != prompts_for_step(problems, step=3, N=4, seed=1)
    # one epoch = 10 problems: steps 0 and 1 with N = 5 visit every problem exactly once
    epoch = prompts_for_step(problems, 0, 5, seed=7) + prompts_for_step(problems, 1, 5, seed=7)
    assert sorted(p["question"] for p in epoch) == sorted(p["question"] for p in problems)
    # the ranks' contiguous slices put together are the single-process batch
    whole = prompts_for_step(problems, 2, N=4, seed=0)
    parts = [prompts_for_step(problems, 2, N=4, seed=0, rank=k, world_size=2) for k in range(2)]
    assert parts[0] + parts[1] == whole and len(parts[0]) == 2
    with pytest.raises(ValueError, match="divisible"):
        prompts_for_step(problems, 0, N=3, world_size=2)

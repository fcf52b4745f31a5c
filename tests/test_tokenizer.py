"""grpo_lib.tokenizer: ids by hand, and the save_pretrained -> AutoTokenizer.from_pretrained round trip."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer, Qwen2Config

from grpo_lib.tokenizer import TAG_TOKENS, build_char_tokenizer

TAGS = ["<reasoning>", "</reasoning>", "<answer>", "</answer>"]
EXAMPLES = [
    "What is 47 + 85?\n",
    "<reasoning>7+5=12,4+8+1=13</reasoning>\n<answer>132</answer>",
    "What is 0 + 0?\n<reasoning>0+0=0</reasoning>\n<answer>0</answer>",
    "  two  spaces, a tab\tand\n\nblank lines \n",
    "Punctuation: (a - b) * c / d; 'quote' \"dq\" ! ~ [x] {y} | ` ^ _ @ # $ % &",
    "a . b , c 's n't",  # the cases clean_up_tokenization_spaces would rewrite
]


def reference_ids(text: str) -> list[int]:
    """Independent encoder for ASCII text: tags are ids 2..5, a character c is id 6 + ord(c)."""
    ids, i = [], 0
    while i < len(text):
        for k, tag in enumerate(TAGS):
            if text.startswith(tag, i):
                ids.append(2 + k)
                i += len(tag)
                break
        else:
            ids.append(6 + ord(text[i]))
            i += 1
    return ids


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


@pytest.fixture(scope="module")
def reloaded(tok, tmp_path_factory):
    """Saved next to a qwen2 config.json, as in the shipped model folder, then loaded the usual way."""
    folder = tmp_path_factory.mktemp("tiny_tok")
    tok.save_pretrained(folder)
    Qwen2Config(vocab_size=len(tok)).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def test_special_ids_and_vocab_size(tok):
    assert len(tok) == 263
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert (tok.eos_token, tok.eos_token_id) == ("<eos>", 1)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", 262)
    assert tok.padding_side == "left"
    assert tok.chat_template is None
    assert tuple(TAGS) == TAG_TOKENS


def test_tags_are_single_tokens(tok):
    for k, tag in enumerate(TAGS):
        assert tok(tag)["input_ids"] == [2 + k]


def test_hand_ids(tok):
    # "7" is byte 55 -> id 61; space is byte 32 -> id 38 ("Ġ"); newline is byte 10 -> id 16 ("Ċ")
    assert tok("7 \n")["input_ids"] == [61, 38, 16]
    assert tok.convert_ids_to_tokens([61, 38, 16]) == ["7", "Ġ", "Ċ"]
    assert tok("<answer>132</answer>")["input_ids"] == [4, 55, 57, 56, 5]
    assert len(tok("What is 47 + 85?\n")["input_ids"]) == 17  # one id per character


@pytest.mark.parametrize("text", EXAMPLES)
def test_examples_match_reference_and_reload(tok, reloaded, text):
    ids = tok(text)["input_ids"]
    assert ids == reference_ids(text)
    assert reloaded(text)["input_ids"] == ids
    assert tok.decode(ids) == text
    assert reloaded.decode(ids) == text


def test_reload_is_qwen2_tokenizer_with_same_specials(reloaded):
    # the transformers 5.x pitfall: a qwen2 folder always loads as Qwen2Tokenizer; our vocab survives it
    assert type(reloaded).__name__ == "Qwen2Tokenizer"
    assert len(reloaded) == 263
    assert (reloaded.pad_token_id, reloaded.eos_token_id, reloaded.unk_token_id) == (0, 1, 262)
    assert reloaded.padding_side == "left"
    assert reloaded.chat_template is None
    assert reloaded.bos_token is None


def test_skip_special_tokens_keeps_tags(reloaded):
    ids = [0, 0] + reloaded("<answer>7</answer>")["input_ids"] + [1, 0]
    assert reloaded.decode(ids, skip_special_tokens=True) == "<answer>7</answer>"
    assert reloaded.decode(ids) == "<pad><pad><answer>7</answer><eos><pad>"


def test_left_padding(reloaded):
    batch = reloaded(["What is 5 + 3?\n", "What is 47 + 85?\n"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 17)
    assert ids[0, :2].tolist() == [0, 0] and mask[0].tolist() == [0, 0] + [1] * 15
    assert ids[0, 2:].tolist() == reference_ids("What is 5 + 3?\n")
    assert mask[1].sum() == 17


ascii_text = st.lists(
    st.one_of(st.sampled_from(TAGS), st.characters(min_codepoint=32, max_codepoint=126), st.just("\n")),
    max_size=30,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=ascii_text)
def test_ascii_round_trip_property(tok, reloaded, text):
    ids = tok(text)["input_ids"]
    assert ids == reference_ids(text)
    assert reloaded(text)["input_ids"] == ids
    assert reloaded.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=20))
def test_any_text_same_ids_on_both_paths(tok, reloaded, text):
    # every byte has an id, so nothing is unknown and nothing is dropped on either path
    ids = tok(text)["input_ids"]
    assert reloaded(text)["input_ids"] == ids
    assert tok.unk_token_id not in ids
    assert reloaded.decode(ids) == tok.decode(ids)


def test_shipped_tokenizer_equals_built_one(tok):
    from grpo_lib.models import TINY_MODEL_DIR

    shipped = AutoTokenizer.from_pretrained(TINY_MODEL_DIR)
    assert shipped.get_vocab() == tok.get_vocab()
    for text in EXAMPLES:
        assert shipped(text)["input_ids"] == tok(text)["input_ids"]

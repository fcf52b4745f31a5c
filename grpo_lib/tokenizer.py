"""A tiny character tokenizer for the CPU path, built so that Hugging Face loads it back unchanged.

One token per character (per UTF-8 byte, to be exact), plus six tokens with a meaning of their own:

| id      | token                      | why it is one token                                          |
| ------- | -------------------------- | ------------------------------------------------------------ |
| 0       | `<pad>`                    | fills the left of shorter prompts in a batch                 |
| 1       | `<eos>`                    | the model emits it to stop; the GRPO loss trains it          |
| 2 .. 5  | `<reasoning>` `</reasoning>` `<answer>` `</answer>` | the format tags cost one step each to write |
| 6 + b   | the byte `b` (0..255)      | `"7"` is byte 55, so id 61; a space is byte 32, so id 38     |
| 262     | `<unk>`                    | reserved; never produced, since every byte has an id         |

Choices made here (each shown in notebooks/05_full_run.ipynb):
1. It is a byte-level BPE with **zero merges**, not a WordLevel character table. In transformers 5.x,
   `AutoTokenizer.from_pretrained(folder)` on a folder whose `config.json` says `model_type: qwen2`
   always builds `Qwen2Tokenizer`, which rebuilds a byte-level BPE from `vocab.json`/`merges` and ignores
   the saved pre-tokenizer. A WordLevel table would be silently mangled (spaces and newlines vanish). A
   zero-merge byte-level BPE is exactly what `Qwen2Tokenizer` rebuilds, so both load paths agree.
2. The vocabulary stores the byte-level symbols of GPT-2/Qwen: printable ASCII maps to itself, a space is
   `Ġ`, a newline is `Ċ`. The pipeline (NFC normaliser, Qwen2's split regex, ByteLevel pre-tokenizer and
   decoder) copies `Qwen2Tokenizer`'s, so ids are identical for *any* text, not only ASCII.
3. All 256 bytes are in the vocabulary. `Qwen2Tokenizer` builds its BPE without an unknown token and
   would silently drop a character missing from the vocabulary; with every byte present nothing is
   ever unknown, so nothing is dropped on either path.
4. The four tags are added tokens that are *not* special: `decode(..., skip_special_tokens=True)` removes
   `<pad>` and `<eos>` but keeps the tags, so reward functions see `<answer>132</answer>`.
5. Padding is on the left, as generation needs: every prompt then ends at the same position and the
   first generated token of every row comes right after it.
6. No chat template: the tiny task's prompt is plain text (`grpo_lib.tasks.PLAIN_PROMPT`).
"""

from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"
UNK_TOKEN = "<unk>"
TAG_TOKENS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")
BYTE_OFFSET = 2 + len(TAG_TOKENS)  # id of byte 0; byte b has id BYTE_OFFSET + b
MODEL_MAX_LENGTH = 128  # = the tiny model's max_position_embeddings

# Qwen2Tokenizer's pre-tokenizer regex (transformers/models/qwen2/tokenization_qwen2.py). With zero merges
# the split cannot change any id; it is copied so that the saved pipeline equals the rebuilt one.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable symbol table: printable bytes map to themselves, the rest are shifted up.

    Byte 32 (space) becomes "Ġ" (U+0120) and byte 10 (newline) becomes "Ċ" (U+010A). A byte-level BPE
    stores these symbols in its vocabulary, so every string of bytes is a string of visible characters.

    Returns:
        dict with 256 entries, byte value -> one-character string.

    Used by: `char_vocab`
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = printable[:]
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            symbols.append(256 + shift)  # the first non-printable byte gets U+0100, the next U+0101, ...
            shift += 1
    return dict(zip(printable, (chr(s) for s in symbols)))


def char_vocab() -> dict[str, int]:
    """The vocabulary: token string -> id, 263 entries (see the table in the module docstring).

    Returns:
        dict mapping `<pad>`, `<eos>`, the four tags, the 256 byte symbols and `<unk>` to ids 0..262.

    Used by: `build_char_tokenizer`
    """
    byte_symbol = bytes_to_unicode()
    vocab = {PAD_TOKEN: 0, EOS_TOKEN: 1}
    for tag in TAG_TOKENS:
        vocab[tag] = len(vocab)
    for b in range(256):
        vocab[byte_symbol[b]] = BYTE_OFFSET + b
    vocab[UNK_TOKEN] = len(vocab)
    return vocab


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """Build the tiny tokenizer: a zero-merge byte-level BPE, one id per character (per byte).

    "What is 47 + 85?\\n" -> 17 ids, one per character; "<answer>" -> the single id 4.
    Saved with `save_pretrained(folder)` next to a qwen2 `config.json`, it loads back with
    `AutoTokenizer.from_pretrained(folder)` (as a `Qwen2Tokenizer`) and gives the same ids and the same
    decoded text.

    Returns:
        a `PreTrainedTokenizerFast` with pad_token `<pad>` (id 0), eos_token `<eos>` (id 1),
        unk_token `<unk>` (id 262), padding_side "left", model_max_length 128, no chat template.

    Taught in: notebooks/03_reward_design.ipynb, notebooks/04_the_loss.ipynb
    """
    vocab = char_vocab()
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN, fuse_unk=False, byte_fallback=False))
    # the same pipeline that transformers' Qwen2Tokenizer rebuilds on load (choice 2)
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # pad/eos/unk are special (skipped by decode(..., skip_special_tokens=True)); the tags are not (choice 4)
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)]
    )
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="left",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,  # decode must give back the exact text, spaces included
    )
    assert len(tokenizer) == len(vocab), (len(tokenizer), len(vocab))  # no token was added twice
    return tokenizer

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Reward design
#
# > GRPO learns whatever the reward pays for. This notebook reads the tutorial's rewards line by line on
# > real GSM8K rows, breaks them, and shows what its headline result actually measured.
#
# You will:
# - extract answers from completions and from GSM8K's `####` golds, and score real GSM8K rows and a table
#   of tricky completions (thousands separators, currency, several answer tags, an unclosed tag, text
#   after `</answer>`) with the correctness and format rewards;
# - hack the format reward with four empty tags, fix it with a strict format rule, and see why R1 uses
#   rules where DeepSeekMath used a learned reward model;
# - build the chat-template prompt the training engine uses and see, on a replay, what generation, the mask
#   and the rewards do when a completion stops at `<|im_end|>`;
#   then split the tutorial's 23% → 90% into format and maths, with confidence intervals.
#
# **Needs:** notebook 02 (advantages). **Runs in:** about 20 s on a laptop CPU.

# %%
# %matplotlib inline
import math
import os
import re
from pathlib import Path

import datasets
import torch
from transformers import LogitsProcessor, LogitsProcessorList, Qwen2ForCausalLM

from grpo_lib.course import plots
from grpo_lib.advantages import group_advantages, zero_std_fraction
from grpo_lib.course.exercises.checking import hint
from grpo_lib.course.exercises.ex03 import check_fisher, check_strict_format
from grpo_lib.data import build_prompt, load_gsm8k
from grpo_lib.course.evaluation import fisher_exact_2x2
from grpo_lib.evaluation import judge, wilson_interval
from grpo_lib.logprobs import completion_mask        # notebook 04 explains it; here we only use it
from grpo_lib.course.memory import count_parameters_from_config, qwen2_5_1_5b_instruct_config
from grpo_lib.models import tiny_qwen2_config
from grpo_lib.course.notebook import check, markdown_table
from grpo_lib.rewards import (SYSTEM_PROMPT, combined_reward, correctness_reward, extract_answer_from_dataset,
                              extract_answer_from_model_output, format_reward,
                              lenient_correct, parse_number, strict_correct, strict_format_reward)
from grpo_lib.rollout import decode_completions
from grpo_lib.tokenizer import build_char_tokenizer

torch.manual_seed(0)
torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## The one equation
#
# GRPO never sees a question's meaning, only a number per completion. The tutorial's reward for a
# completion $o_i$ (`o`) of question $q$ (`q`) with gold answer $a$ (`answer`) is a sum of two rules:
#
# $$r_i = r_{\text{correct}}(o_i, a) + r_{\text{format}}(o_i),\qquad
# r_{\text{correct}} \in \{0,\ 1.5,\ 2.0\},\quad r_{\text{format}} \in \{0, 0.2, 0.4, 0.6, 0.8\}$$
#
# $r_{\text{correct}}$ (`correctness_reward`) is 2.0 when the text inside the last `<answer>` tag equals
# the gold string, 1.5 when it is the same number written differently, else 0. $r_{\text{format}}$
# (`format_reward`) pays 0.2 for each of the four tags present. Every reward function takes the
# tutorial's (and TRL's) arguments, `prompts`, `completions` as `[[{"content": text}], ...]` and
# `answer` as one gold string per completion, and returns one float per completion. The rewards `r` of
# a batch are then shaped `(N, G)` for `group_advantages` (notebook 02).

# %% [markdown]
# ## 3.1 The format we ask for
#
# The system prompt asks for the reasoning and the answer in two tags. The tutorial's exact string,
# newlines included:

# %%
print(SYSTEM_PROMPT)

# %% [markdown]
# A completion that follows it, for GSM8K's first test question (gold 18), and what each rule pays:

# %%
good = "<reasoning>\n16 - 3 - 4 = 9 eggs are sold.\n9 * 2 = 18 dollars.\n</reasoning>\n<answer>\n18\n</answer>"
completions = [[{"content": good}]]                       # the tutorial's format: one list per completion
(correctness_reward(prompts=["q"], completions=completions, answer=["18"]),
 format_reward(completions), combined_reward(["q"], completions, ["18"]))

# %% [markdown]
# The exact gold inside the tags earns the full 2.0, the four tags 4 × 0.2 = 0.8, together 2.8: the most any
# completion can earn.

# %% jupyter={"source_hidden": true}
check("3.1 · the format we ask for",
      ("the system prompt is the tutorial's string, newlines included",
       SYSTEM_PROMPT == "\nRespond in the following format:\n<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n"),
      ("the well-formed completion: correctness 2.0", correctness_reward(["q"], completions, ["18"]) == [2.0]),
      ("the well-formed completion: format 0.8, together 2.8",
       format_reward(completions) == [0.8] and combined_reward(["q"], completions, ["18"]) == [2.8]))


# %% [markdown]
# ## 3.2 Extracting answers: from the model, and from GSM8K
#
# The tutorial takes the text between the *last* `<answer>` and the `</answer>` after it. Its code, as
# written in the source notebook:

# %%
def tutorial_extract_answer(text):              # the tutorial's extract_answer_from_model_output
    parts = text.split("<answer>")
    if len(parts) < 2:                          # no <answer> tag
        return None
    last_part = parts[-1]
    if "</answer>" not in last_part:            # the last tag was never closed
        return None
    answer = last_part.split("</answer>")[0].strip()
    return None if answer == "..." else answer

def tutorial_extract_gold(text):                # the tutorial's extract_answer_from_dataset
    return text.split("####")[1].strip() if "####" in text else None


# %% [markdown]
# The library's versions (`extract_answer_from_model_output`, `extract_answer_from_dataset`) agree with
# them on every case below except one: an empty tag is "no answer" (None), not the empty string.

# %%
cases = ["<answer>18</answer>", "<answer> 18 </answer> trailing text", "<answer>17</answer> <answer>18</answer>",
         "<answer>17</answer> <answer>18", "no tags at all: 18", "<answer>...</answer>", "<answer></answer>"]
rows = [[repr(c), repr(tutorial_extract_answer(c)), repr(extract_answer_from_model_output(c))] for c in cases]
markdown_table(["completion", "tutorial", "grpo_lib"], rows)

# %% [markdown]
# The *last* tag counts: "<answer>17</answer> <answer>18" has a closed tag holding 17, but its last tag was
# never closed, so there is no answer at all. A GSM8K gold is the text after `####`, for the tutorial and the
# library alike:

# %%
gold_text = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
tutorial_extract_gold(gold_text), extract_answer_from_dataset(gold_text)

# %% jupyter={"source_hidden": true}
check("3.2 · extracting answers",
      ("the library agrees with the tutorial on every case but the empty tag",
       all(tutorial_extract_answer(c) == extract_answer_from_model_output(c) for c in cases[:-1])),
      ("an empty tag: the tutorial returns \"\", the library None",
       tutorial_extract_answer("<answer></answer>") == "" and extract_answer_from_model_output("<answer></answer>") is None),
      ("the last tag counts: an unclosed last tag gives None",
       extract_answer_from_model_output("<answer>17</answer> <answer>18") is None),
      ("the gold after #### is \"18\" for both",
       tutorial_extract_gold(gold_text) == extract_answer_from_dataset(gold_text) == "18"))


# %% [markdown]
# ## 3.3 Real GSM8K rows
#
# GSM8K lives beside the project, in `shared/data/gsm8k/{train,test}.jsonl`, and is never copied into
# it. Find it (the `GSM8K_DIR` environment variable wins; otherwise walk up from this folder), read one
# split with `datasets.load_dataset("json", ...)` to see a raw row, then load both splits with
# `grpo_lib.data.load_gsm8k`, which does the same and extracts each gold. Without the files, the notebook
# falls back to three hand-written rows and says so.

# %%
def find_gsm8k_dir():
    if os.environ.get("GSM8K_DIR"):
        return Path(os.environ["GSM8K_DIR"])
    for folder in [Path.cwd(), *Path.cwd().parents]:
        if (folder / "shared" / "data" / "gsm8k" / "test.jsonl").is_file():
            return folder / "shared" / "data" / "gsm8k"
    return None

FALLBACK_ROWS = [   # GSM8K's first three test questions, typed in, in case the files are missing
    {"question": "Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
                 "muffins for her friends every day with four. She sells the remainder at the farmers' market "
                 "daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
                 "farmers' market?",
     "solution": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 "
                 "every day at the farmer’s market.\n#### 18"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total "
                 "does it take?",
     "solution": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is "
                 "2+1=<<2+1=3>>3 bolts of fabric\n#### 3"},
    {"question": "Josh decides to try flipping a house.  He buys a house for $80,000 and then puts in $50,000 "
                 "in repairs.  This increased the value of the house by 150%.  How much profit did he make?",
     "solution": "The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\n"
                 "He increased the value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\nSo the new "
                 "value of the house is 120,000+80,000=$<<120000+80000=200000>>200,000\nSo he made a profit "
                 "of 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000"},
]
for row in FALLBACK_ROWS:
    row["answer"] = extract_answer_from_dataset(row["solution"])

gsm8k_dir = find_gsm8k_dir()
GSM8K_FOUND = gsm8k_dir is not None and (gsm8k_dir / "test.jsonl").is_file()
if GSM8K_FOUND:
    raw = datasets.load_dataset("json", data_files=str(gsm8k_dir / "test.jsonl"), split="train")
    train, test = load_gsm8k("train", data_dir=gsm8k_dir), load_gsm8k("test", data_dir=gsm8k_dir)
    print(f"GSM8K from {os.path.relpath(gsm8k_dir)}: {len(train):,} train and {len(test):,} test problems")
else:
    raw = datasets.Dataset.from_list([{"question": r["question"], "answer": r["solution"]} for r in FALLBACK_ROWS])
    train = test = FALLBACK_ROWS
    print("GSM8K NOT FOUND: set GSM8K_DIR or place it at ../shared/data/gsm8k beside the project. "
          f"Using {len(FALLBACK_ROWS)} hand-written rows instead; the numbers below are for those rows.")
raw[0]

# %% [markdown]
# Every gold is a number, but not always a bare one: 93 golds (79 train, 14 test) are written with
# thousands separators, e.g. "2,125". A model that answers "2125" is right, and the string comparison
# alone would say it is wrong; `parse_number` reads both.

# %%
golds = [p["answer"] for p in train + test] if GSM8K_FOUND else [p["answer"] for p in test]
with_commas = [g for g in golds if "," in g]
unparsed = [g for g in golds if parse_number(g) is None]
len(golds), len(with_commas), with_commas[:5], unparsed


# %% [markdown]
# Now score real rows. For each of the first four test questions, write four completions from GSM8K's
# own worked solution (its `<<...>>` calculator notes removed): tagged with the exact gold, tagged with
# the gold written as money ("$70,000"), tagged with a wrong number, and GSM8K's raw text, which has the
# right number after `####` but no tags. Each question's four completions form one group ($G = 4$).

# %%
def completion_variants(problem):
    reasoning = re.sub(r"<<[^>]*>>", "", problem["solution"].split("####")[0]).strip()
    gold = int(parse_number(problem["answer"]))           # GSM8K golds are whole numbers
    tagged = "<reasoning>\n{}\n</reasoning>\n<answer>\n{}\n</answer>"
    return {"tagged, exact gold": tagged.format(reasoning, problem["answer"]),
            "tagged, as money": tagged.format(reasoning, f"${gold:,}"),
            "tagged, wrong": tagged.format(reasoning, gold + 1),
            "GSM8K text, no tags": problem["solution"]}

problems = (test * 2)[:4]                                  # four questions (the fallback has three)
texts, golds, labels = [], [], []
for p in problems:
    for label, text in completion_variants(p).items():
        texts.append(text)
        golds.append(p["answer"])
        labels.append(label)
completions = [[{"content": t}] for t in texts]            # B = N * G = 16 completions
r_correct = correctness_reward(prompts=[None] * len(texts), completions=completions, answer=golds)
r_format = format_reward(completions)
r = torch.tensor(combined_reward([None] * len(texts), completions, golds)).view(len(problems), 4)   # (B,) -> (N, G)
markdown_table(["question", "gold", "completion", "correct", "format", "total"],
               [[p["question"][:38] + "…", p["answer"], labels[i], r_correct[i], r_format[i], r_correct[i] + r_format[i]]
                for i, p in enumerate(q for q in problems for _ in range(4))], floatfmt=".1f")

# %% [markdown]
# The same pattern for every question: the exact gold earns 2.8, the same number as money 2.3, a wrong
# number in good format still 0.8, and GSM8K's own correct solution **0**, because it has no tags. Here
# are the groups and the advantages GRPO would compute from them:

# %%
A = group_advantages(r)                                     # (N, G)
print("A of each group (exact gold, as money, wrong, no tags):", [round(a, 3) for a in A[0].tolist()])
plots.reward_strips(r, A, labels=[f"test[{i}]" for i in range(len(problems))])

# %% [markdown]
# Every group has the same four rewards, so the same advantages. The exact gold is pushed up most; the right
# number written as money is pushed up too; the wrong answer in good format lands below average; and GSM8K's
# own correct solution, untagged, is pushed down hardest of all.

# %% jupyter={"source_hidden": true}
gsm8k_facts = [("GSM8K has 7,473 train and 1,319 test problems", (len(train), len(test)) == (7473, 1319)),
               ("93 golds carry thousands separators", len(with_commas) == 93)] if GSM8K_FOUND else []
check("3.3 · real GSM8K rows",
      ("a raw row has a question and an answer that ends in ####",
       set(raw.column_names) == {"question", "answer"} and "####" in raw[0]["answer"]),
      ("the first test question's gold is 18", test[0]["answer"] == extract_answer_from_dataset(raw[0]["answer"]) == "18"),
      *gsm8k_facts,
      ("every gold reads as a number", unparsed == []),
      ("parse_number reads \"2,125\" as 2125", parse_number("2,125") == parse_number("2125") == 2125.0),
      ("rewards (N, G) = (4, 4), every question alike: 2.8, 2.3, 0.8, 0",
       r.shape == (4, 4) and torch.allclose(r, torch.tensor([[2.8, 2.3, 0.8, 0.0]] * 4))),
      ("each group's advantages sum to 0", torch.allclose(A.sum(dim=-1), torch.zeros(4), atol=1e-5)),
      ("the exact gold is pushed up most, the untagged right answer down hardest",
       bool((A.argmax(dim=-1) == 0).all() and (A.argmin(dim=-1) == 3).all())),
      ("a wrong tagged answer is below average", bool((A[:, 2] < 0).all())))


# %% [markdown]
# ## 3.4 The tricky completions
#
# Real completions are messier. Each row below is one completion and its gold; the columns give what
# the library extracts, the correctness reward, the lenient format reward, and a strict format reward
# (section 3.5). The "tutorial" column is the tutorial's correctness reward: its code from the source
# notebook, with its `extract_single_number` re-created (one regular expression `-?\d*\.?\d+`; a number
# only if the text holds exactly one).

# %%
def tutorial_single_number(text):               # re-created: the tutorial's extract_single_number
    numbers = re.findall(r"-?\d*\.?\d+", text)
    return float(numbers[0]) if len(numbers) == 1 else None

def tutorial_correctness(text, gold):           # the tutorial's correctness_reward, one completion
    predicted = tutorial_extract_answer(text)
    if predicted == gold:
        return 2.0
    p, g = tutorial_single_number(str(predicted)), tutorial_single_number(str(gold))
    return 1.5 if p is not None and g is not None and p == g else 0.0


# %%
T = "<reasoning>\n16 - 3 - 4 = 9; 9 * 2 = 18\n</reasoning>\n<answer>\n{}\n</answer>"   # a well-formed completion
tricky = [  # (case, completion, gold)
    ("clean", T.format("18"), "18"),
    ("thousands separator in the answer", T.format("2,125"), "2125"),
    ("thousands separator in the gold", T.format("2125"), "2,125"),
    ("currency", T.format("$18"), "18"),
    ("currency and cents", T.format("$18.00"), "18"),
    ("unit words", T.format("18 dollars."), "18"),
    ("a sentence", T.format("She makes 18 dollars a day."), "18"),
    ("an equation", T.format("9 * 2 = 18"), "18"),
    ("negative", T.format("-3"), "-3"),
    ("percent", T.format("50%"), "50"),
    ("several answer tags", T.format("17") + "\n<answer>\n18\n</answer>", "18"),
    ("unclosed last tag", T.format("18") + "\n<answer>\n19", "18"),
    ("text after </answer>", T.format("18") + "\nHuman: what about 4 ducks?", "18"),
    ("run-on with a second answer", T.format("18") + "\nHuman: and at $3?\nAssistant: <answer>27</answer>", "18"),
    ("empty tags", "<reasoning></reasoning><answer></answer>", "18"),
    ("the placeholder", SYSTEM_PROMPT, "18"),
    ("no tags", "16 - 3 - 4 = 9 and 9 * 2 = 18, so 18.", "18"),
]
rows = []
for case, text, gold in tricky:
    c = [[{"content": text}]]
    rows.append([case, repr(extract_answer_from_model_output(text)), gold, tutorial_correctness(text, gold),
                 correctness_reward([None], c, [gold])[0], format_reward(c)[0], strict_format_reward(c)[0]])
markdown_table(["case", "extracted", "gold", "tutorial", "correct", "format", "strict format"], rows,
               floatfmt=".1f")

# %% [markdown]
# Reading the table from the top. With a thousands separator on either side the tutorial pays 0: its
# regular expression finds two numbers in "2,125" (2 and 125) and gives up; the library reads 2125 and pays 1.5,
# as it does for currency, cents, unit words, a sentence around the number and a percent sign: the same number,
# written differently. A negative answer is fine. With several answer tags the last one wins (2.0), but the
# strict format reward refuses two answers. An unclosed last tag is an unfinished final word: no answer, though
# the lenient format still pays 0.8. Text after `</answer>` costs nothing under the lenient format and
# everything under the strict one. The empty tags and the prompt's own placeholder earn the lenient 0.8 (the
# hack of section 3.5) and nothing strict, and a completion without tags earns nothing at all.
#
# Two rows deserve a second look. "An equation" is right but scores 0: the tagged text holds three
# numbers, and neither the tutorial nor the library guesses which one is meant (asking for *only* the
# number inside the tag is part of the format). And "run-on with a second answer" is right, then keeps
# writing an imaginary next turn whose answer tag is the last one: the rule reads 27 and pays 0.
# Section 3.7 shows where that run-on comes from.

# %% jupyter={"source_hidden": true}
table = {row[0]: row[3:] for row in rows}                   # case -> [tutorial, correct, format, strict]
check("3.4 · the tricky completions",
      ("clean: 2.0 from both, 0.8 from both formats", table["clean"] == [2.0, 2.0, 0.8, 0.8]),
      ("a thousands separator in the answer or the gold: tutorial 0, library 1.5",
       table["thousands separator in the answer"][:2] == [0.0, 1.5]
       and table["thousands separator in the gold"][:2] == [0.0, 1.5]),
      ("currency, cents, unit words, a sentence, a percent: 1.5",
       all(table[case][1] == 1.5 for case in ("currency", "currency and cents", "unit words", "a sentence", "percent"))),
      ("an equation: 0 (three numbers)", table["an equation"][1] == 0.0),
      ("a negative answer: 2.0", table["negative"][1] == 2.0),
      ("several answer tags: the last wins, strict refuses", table["several answer tags"][1:] == [2.0, 0.8, 0.0]),
      ("an unclosed last tag: no answer, lenient format 0.8", table["unclosed last tag"][1:3] == [0.0, 0.8]),
      ("text after </answer>: lenient pays, strict does not", table["text after </answer>"][1:] == [2.0, 0.8, 0.0]),
      ("a run-on with a second answer: the made-up turn's answer counts (0)",
       table["run-on with a second answer"][1] == 0.0),
      ("empty tags and the placeholder: 0.8 lenient, 0 strict",
       table["empty tags"][1:] == [0.0, 0.8, 0.0] and table["the placeholder"][1:] == [0.0, 0.8, 0.0]),
      ("no tags: nothing", table["no tags"][1:] == [0.0, 0.0, 0.0]))

# %% [markdown]
# ## 3.5 Reward hacking: four empty tags earn 0.8
#
# The format reward counts tags, so the cheapest completion that earns all of it is the four tags with
# nothing inside, in any order. A policy is not lazy or clever; it follows the advantage. Take an early
# group where nothing is right: an honest tagged attempt with a wrong answer, the empty tags, and two
# untagged answers, one of them *right*:

# %%
group = ["<reasoning>\n16 - 3 = 13, 13 * 2 = 26\n</reasoning>\n<answer>\n26\n</answer>",   # honest, wrong
         "<reasoning></reasoning><answer></answer>",                                        # the hack
         "</answer><answer></reasoning><reasoning>",                                        # the hack, any order
         "She sells 9 eggs at $2, so she makes 18 dollars."]                                # right, untagged
c = [[{"content": t}] for t in group]
r_lenient = torch.tensor(combined_reward([None] * 4, c, ["18"] * 4))
r_strict = torch.tensor(correctness_reward([None] * 4, c, ["18"] * 4)) + torch.tensor(strict_format_reward(c))
A_lenient = group_advantages(r_lenient.view(1, 4))[0]
A_strict = group_advantages(r_strict.view(1, 4))[0]
r_lenient, A_lenient, r_strict, A_strict

# %% [markdown]
# With the lenient reward the empty tags get exactly the same push up as the honest attempt, and the right
# but untagged answer is pushed down. With a strict one only the honest attempt gains. A
# **strict format reward** (`strict_format_reward`) pays 0.8 only for one well-formed
# `<reasoning>…</reasoning> <answer>…</answer>`: each tag once, in order, non-empty, not the prompt's
# "...", and nothing but whitespace around it (so a run-on "Human: …" earns nothing). It is the same idea
# as willccbb's strict regex and nano-aha-moment's format check, written without a regular expression.
#
# Regular expressions are where format rewards usually break (unsloth#1761, dllm#118): `.` does not
# match a newline, so a pattern without `re.DOTALL` fails every real, multi-line completion; one with
# `re.DOTALL` but without anchors happily matches the empty tags and the run-on; and the popular strict
# pattern from willccbb's GSM8K script (used in Unsloth's notebooks) demands a newline in exact places,
# including one at the very end:

# %%
naive = re.compile(r"<reasoning>.*</reasoning>\s*<answer>.*</answer>")
willccbb_strict = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n$")
samples = {"multi-line, well formed": good, "empty tags": group[1],
           "well formed + run-on": good + "\nHuman: thanks!",
           "one-line reasoning, final newline": "<reasoning>\n9 * 2 = 18\n</reasoning>\n<answer>\n18\n</answer>\n"}
rows = [[name, bool(naive.search(t)), bool(re.search(naive.pattern, t, re.DOTALL)), bool(willccbb_strict.match(t)),
         strict_format_reward([[{"content": t}]])[0] > 0] for name, t in samples.items()]
markdown_table(["completion", "regex", "regex + DOTALL", "willccbb strict", "strict_format_reward"], rows)

# %% [markdown]
# A real, multi-line completion passes only the `DOTALL` regex and `strict_format_reward`. The hack passes both
# loose regexes, the run-on the `DOTALL` one. willccbb's strict pattern accepts only the one shape it spells out,
# one-line reasoning and a final newline, and refuses the well-formed multi-line completion.

# %% jupyter={"source_hidden": true}
check("3.5 · reward hacking",
      ("lenient rewards: 0.8, 0.8, 0.8, 0", torch.allclose(r_lenient, torch.tensor([0.8, 0.8, 0.8, 0.0]))),
      ("the hack is pushed up exactly like honest work",
       bool(A_lenient[1] > 0 and torch.isclose(A_lenient[1], A_lenient[0]))),
      ("the right, untagged answer is pushed down", bool(A_lenient[3] < 0)),
      ("strict: 0.8 for the honest attempt only, and the hack is pushed down",
       torch.allclose(r_strict, torch.tensor([0.8, 0.0, 0.0, 0.0])) and bool(A_strict[1] < 0)),
      ("a real completion: only DOTALL and ours", rows[0][1:] == [False, True, False, True]),
      ("the hack: both loose regexes pay", rows[1][1:] == [True, True, False, False]),
      ("the run-on: DOTALL pays", rows[2][1:] == [False, True, False, False]),
      ("the one shape the willccbb regex accepts", rows[3][1:] == [False, True, True, True]))


# %% [markdown]
# ## 3.6 Rules, or a learned reward model?
#
# DeepSeekMath trained GRPO with a **learned** reward model: a 7B network, initialised from
# DeepSeekMath-Base, that reads a question and a completion and outputs a score. Within an iteration of
# its Algorithm 1 the reward model is frozen while the policy trains; between iterations it is trained
# further on the policy's new samples, with 10% replay of old data. DeepSeek-R1 went back to **rules**
# (accuracy and format), reasoning that a neural reward model "may suffer from reward hacking" at scale and
# costs resources to retrain. The tutorial, and this course, follow R1.
#
# Why a learned model can be hacked is easy to see in a cartoon. Fit a logistic regression on two
# surface features of a completion, the number of "=" signs and its length, to 80 labelled GSM8K
# completions in which the right ones happen to show their working and the wrong ones are short guesses.
# It scores what correlates with being right in its data, not being right:

# %%
def features(text):                                          # (3,): bias, "=" signs, length in tens of words
    return torch.tensor([1.0, text.count("="), len(text.split()) / 10])

train_texts, train_labels = [], []
for p in train[:40] if GSM8K_FOUND else train:
    gold = int(parse_number(p["answer"]))
    train_texts += [completion_variants(p)["tagged, exact gold"],
                    f"<reasoning>\nI think it is {gold + 7}.\n</reasoning>\n<answer>\n{gold + 7}\n</answer>"]
    train_labels += [1.0, 0.0]
X, y = torch.stack([features(t) for t in train_texts]), torch.tensor(train_labels)   # (M, 3), (M,)
w = torch.zeros(3, requires_grad=True)
opt = torch.optim.LBFGS([w], max_iter=200)
def closure():
    opt.zero_grad()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w, y) + 1e-3 * w.pow(2).sum()
    loss.backward()
    return loss
opt.step(closure)
def reward_model(text):                                      # a "learned" r(q, o) in (0, 1)
    return torch.sigmoid(features(text) @ w).item()
len(train_texts), w.detach()

# %%
probe = {"right, working shown": good,
         "right, terse": "<reasoning>\n9 eggs at $2\n</reasoning>\n<answer>\n18\n</answer>",
         "wrong, padded with '=' and words": "<reasoning>\n16 = 16\n3 = 3\n4 = 4\n2 = 2\n16 - 3 = 13\n"
             "13 * 2 = 26\nso the total amount of money made in dollars per day is = 26\n</reasoning>\n"
             "<answer>\n26\n</answer>"}
rows = [[name, reward_model(t), combined_reward([None], [[{"content": t}]], ["18"])[0]] for name, t in probe.items()]
markdown_table(["completion (gold 18)", "learned RM score", "rule reward"], rows, floatfmt=".2f")

# %% [markdown]
# The cartoon reward model scores the padded wrong answer above the terse right one: it prefers the look. The
# rule pays the terse right answer the full 2.8 and the padded wrong one only its format. GRPO would push the
# padded wrong answer *up* under that reward model, and the policy would learn to pad. A real reward model is far better than this cartoon, but the pressure is the same, and the policy
# searches much harder than we did. Rules cannot be fooled this way, but they only exist where an answer
# can be checked mechanically (GSM8K's numbers, MATH's boxed answers, unit tests for code), and they can
# be gamed in their own way (section 3.5). A learned reward model also costs memory on top of GRPO's
# policy and reference; for a reward model of the tutorial's size:

# %%
rm_params = count_parameters_from_config(qwen2_5_1_5b_instruct_config(), head="value")   # backbone + scalar head
rm_params, f"{2 * rm_params / 2**30:.2f} GiB of bf16 weights"

# %% [markdown]
# That is the policy's 1,543,714,304 parameters (notebook 02) plus a scalar head of 1,536.

# %% jupyter={"source_hidden": true}
rm = {name: score for name, score, _ in rows}
rule = {name: value for name, _, value in rows}
check("3.6 · rules or a learned reward model",
      ("the cartoon RM scores the padded wrong answer above the terse right one",
       rm["wrong, padded with '=' and words"] > rm["right, terse"]),
      ("the rule pays the terse right answer 2.8, the padded wrong one less",
       rule["wrong, padded with '=' and words"] < rule["right, terse"] == 2.8),
      ("a reward model of the tutorial's size: 1,543,714,304 + 1,536 parameters", rm_params == 1_543_714_304 + 1536))

# %% [markdown]
# ## 3.7 The stopping problem and the chat template
#
# The tutorial's `build_prompt` joins the system prompt and the question with a newline. Qwen2.5-Instruct
# was tuned on conversations in ChatML, where every turn is wrapped in `<|im_start|>role\n … <|im_end|>`
# and the assistant ends its turn with `<|im_end|>`, its end-of-sequence token. Given plain text, the
# model sees no assistant turn to end; the tutorial's saved outputs show correct answers followed by
# invented "Human: …" turns (theLMbook#16). The training engine builds prompts with
# `grpo_lib.data.build_prompt`, which applies the tokenizer's chat template.
#
# We cannot download Qwen's tokenizer here, so attach Qwen2.5-Instruct's chat template (from its
# `tokenizer_config.json`, written out below) to the course's tiny character tokenizer, with
# `<|im_start|>` and `<|im_end|>` as special tokens and `<|im_end|>` as EOS, as in Qwen's tokenizer:

# %%
QWEN25_CHAT_TEMPLATE = r'''{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
'''

tok = build_char_tokenizer()                                 # one token per character, plus the tags
tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
tok.eos_token = "<|im_end|>"                                 # Qwen2.5-Instruct's EOS
tok.chat_template = QWEN25_CHAT_TEMPLATE
tok.model_max_length = 1024
len(tok), tok.eos_token, tok.eos_token_id

# %% [markdown]
# The two prompts for GSM8K's first test question. The tutorial's:

# %%
question = test[0]["question"]
messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]
tutorial_prompt = "\n".join([msg["content"].strip() for msg in messages])   # the tutorial's build_prompt
print(tutorial_prompt)

# %% [markdown]
# And the one the training engine uses, `build_prompt(tokenizer, question, SYSTEM_PROMPT)`:

# %%
chat_prompt = build_prompt(tok, question, SYSTEM_PROMPT)
print(chat_prompt)


# %% [markdown]
# `build_prompt` is exactly the tokenizer's `apply_chat_template(messages, add_generation_prompt=True)`: a
# system turn holding the tutorial's system prompt, a user turn holding the question, and an open assistant
# turn, so the model speaks next. `<|im_start|>` and `<|im_end|>` are single tokens, and the tutorial's prompt
# has neither.

# %% [markdown]
# **The mechanics of stopping (an illustration, not evidence).** The engine calls
# `model.generate(..., eos_token_id=tokenizer.eos_token_id)`, which stops a
# row as soon as it emits `<|im_end|>`, and `completion_mask` keeps every token up to and including that
# EOS (the EOS is trained, so the model learns to stop). A tiny random Qwen2 model cannot write sensible
# text, so a logits processor makes it replay a given text, one token per step; everything else is the
# real `generate` loop. Replay what Qwen2.5-Instruct writes after a chat prompt (its answer, then
# `<|im_end|>`), and what the tutorial's model wrote after its plain prompt (the answer, then a made-up
# next turn, until the token budget runs out):

# %%
class Replay(LogitsProcessor):
    "Force the next token to be the next token of `script` (a stand-in for a trained model)."
    def __init__(self, script_ids, prompt_len):
        self.script_ids, self.prompt_len = script_ids, prompt_len
    def __call__(self, input_ids, scores):                  # scores: (B, V)
        t = min(input_ids.shape[1] - self.prompt_len, len(self.script_ids) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.script_ids[t]] = 0.0
        return forced

model = Qwen2ForCausalLM(tiny_qwen2_config(len(tok), num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                           max_position_embeddings=1024)).eval()

def generate_replaying(prompt, script, max_new_tokens=200):
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    P = enc["input_ids"].shape[1]
    script_ids = tok(script, add_special_tokens=False)["input_ids"]
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         logits_processor=LogitsProcessorList([Replay(script_ids, P)]),
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    o_ids = out[:, P:]                                       # (1, T) completion ids
    mask = completion_mask(o_ids, tok.eos_token_id)          # (1, T) 1 up to and including the first EOS
    return o_ids, mask, decode_completions(tok, o_ids, mask, tok.eos_token_id)[0]

answer_turn = good                                           # section 3.1's well-formed completion
run_on = ("\nHuman: And if she sold them for $3 each?\nAssistant: <reasoning>\n9 * 3 = 27\n</reasoning>\n"
          "<answer>\n27\n</answer>\nHuman: Thank you! Now, how many eggs does she eat in a week?\n"
          "Assistant: She eats 3 eggs every morning, so 3 * 7 = 21 eggs a week.\nHuman: ")
o_chat, m_chat, text_chat = generate_replaying(chat_prompt, answer_turn + "<|im_end|>" + run_on)
o_plain, m_plain, text_plain = generate_replaying(tutorial_prompt, answer_turn + run_on)
print(f"chat prompt:  {o_chat.shape[1]} tokens generated, mask keeps {int(m_chat.sum())}\n{text_chat}\n")
print(f"plain prompt: {o_plain.shape[1]} tokens generated (the budget), mask keeps {int(m_plain.sum())}\n{text_plain}")

# %% [markdown]
# After the chat prompt, generation stopped at `<|im_end|>`: the last generated token is the EOS, the mask
# keeps every token including it, and the decoded text is section 3.1's completion without the EOS. After the
# plain prompt no EOS came and generation ran to the 200-token budget, every token kept.
#
# Same answer, different rewards. The stopped completion is exactly what was asked for. The run-on one
# still earns the full *lenient* format reward, but its last answer tag now belongs to the imaginary
# turn, so correctness reads 27, and the strict format reward refuses it:

# %%
both = [[{"content": text_chat}], [{"content": text_plain}]]
(extract_answer_from_model_output(text_chat), extract_answer_from_model_output(text_plain),
 correctness_reward([None] * 2, both, ["18"] * 2), format_reward(both), strict_format_reward(both))

# %% [markdown]
# Both texts were written by us and replayed: the logits processor put `<|im_end|>` there itself, so this
# shows what `generate`, the mask and the rewards *do* with a stop and with a run-on, and proves nothing about
# what a real model writes. The evidence that the prompt matters is elsewhere: Qwen2.5-Instruct was tuned on
# ChatML turns that end in `<|im_end|>`, the tutorial's plain prompt is not such a turn, and its saved outputs
# run on into invented "Human: …" turns (theLMbook#16). We did not run Qwen here. The tutorial blamed the
# missing stop on its reward, which had no term for stopping; the prompt is the more likely cause. The strict
# format reward then adds a direct penalty for anything written after `</answer>`.

# %% jupyter={"source_hidden": true}
ids = tok(chat_prompt, add_special_tokens=False)["input_ids"]
check("3.7 · the stopping problem and the chat template",
      ("build_prompt is the tokenizer's chat template with the generation prompt",
       chat_prompt == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)),
      ("it opens with the system turn, then the user turn",
       chat_prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n")),
      ("it ends with an open assistant turn: the model speaks next",
       chat_prompt.endswith(question + "<|im_end|>\n<|im_start|>assistant\n")),
      ("the tutorial's prompt has no chat markers", "<|im_start|>" not in tutorial_prompt),
      ("<|im_start|> and <|im_end|> are single tokens",
       ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and tok.eos_token_id in ids),
      ("chat prompt: stopped at <|im_end|>, the mask keeps every token",
       o_chat[0, -1].item() == tok.eos_token_id and int(m_chat.sum()) == o_chat.shape[1]),
      ("the EOS is not part of the text", text_chat == good),
      ("plain prompt: ran to max_new_tokens = 200, all kept", o_plain.shape[1] == 200 and int(m_plain.sum()) == 200),
      ("plain prompt: no EOS anywhere", tok.eos_token_id not in o_plain[0].tolist()),
      ("correctness: 2.0 for the stopped text, 0 for the run-on",
       correctness_reward([None] * 2, both, ["18"] * 2) == [2.0, 0.0]),
      ("lenient format 0.8 for both, strict 0.8 and 0",
       format_reward(both) == [0.8, 0.8] and strict_format_reward(both) == [0.8, 0.0]))

# %% [markdown]
# ## 3.8 Strict vs lenient accuracy: what 23% → 90% measured
#
# Two ways to grade a completion: **strict** (`strict_correct`: the answer inside the last closed
# `<answer>` tag is right) and **lenient** (`lenient_correct`: the last number anywhere in the text is
# right, tags or not). `grpo_lib.evaluation.judge` reports both, plus whether the format is strict:

# %%
graded = {"tagged, right": good,
          "untagged, right": "She sells 16 - 3 - 4 = 9 eggs at $2 each, so she makes 18 dollars.",
          "tagged, wrong": group[0],
          "right, then a run-on": text_plain}
rows = [[name, *judge(text, "18").values()] for name, text in graded.items()]
markdown_table(["completion (gold 18)", "strict", "lenient", "format"], rows)

# %% [markdown]
# The untagged right answer has the right maths and gets no credit from strict grading; the run-on is strictly
# wrong, because strict grading reads the made-up turn's 27.
#
# The tutorial graded strictly (its accuracy counted a completion only when its tagged answer matched).
# Reading its saved outputs (grpo-anchors, key finding 1): **before** training, 21 of the 30 evaluation
# answers had no extractable `<answer>` tag; of the 9 that had one, 7 were right. **After** training, all
# 30 were tagged and 27 were right. Split the strict accuracy into "tagged at all" × "right when tagged":

# %%
before = {"n": 30, "tagged": 9, "right": 7}
after = {"n": 30, "tagged": 30, "right": 27}
rows = []
for name, run in (("before", before), ("after", after)):
    rows.append([name, run["right"] / run["n"], run["tagged"] / run["n"], run["right"] / run["tagged"]])
markdown_table(["run", "strict accuracy", "tagged rate", "accuracy when tagged"], rows, floatfmt=".3f")

# %% [markdown]
# Strict accuracy is the tagged rate times the accuracy when tagged. Tagging everything alone would take the
# "before" run from 23.3% to 77.8%; the rest, 77.8% → 90.0%, is answering better:

# %%
split = {name: rest for name, *rest in rows}                 # run -> [strict, tagged rate, when tagged]
format_gain = split["before"][2] - split["before"][0]          # 23.3% -> 77.8% by tagging everything
maths_gain = split["after"][2] - split["before"][2]            # 77.8% -> 90.0% when tagged
print(f"format: {format_gain:+.1%}   maths: {maths_gain:+.1%}")


# %% [markdown]
# If the model had tagged every answer before training and been right as often as it was on the tagged
# ones, it would have scored about 78%, not 23%. So roughly 54 of the 67 points of "improvement" are the
# model learning the tag format, and about 12 are maths (assuming the untagged answers were right as
# often as the tagged ones; we cannot grade them leniently, since the tutorial did not keep that
# information). And 30 questions are few. The 95% Wilson interval
# $\frac{\hat p + z^2/2n \pm z\sqrt{\hat p(1-\hat p)/n + z^2/4n^2}}{1 + z^2/n}$ with $z = 1.96$, written
# inline and checked against `grpo_lib.evaluation.wilson_interval`:

# %%
def wilson(k, n, z=1.96):
    p = k / n
    centre, half = p + z**2 / (2 * n), z * (p * (1 - p) / n + z**2 / (4 * n**2)) ** 0.5
    return (centre - half) / (1 + z**2 / n), (centre + half) / (1 + z**2 / n)

bars = {"before: strict\n(7 of 30)": (7, 30), "before: when tagged\n(7 of 9)": (7, 9),
        "after: strict\n(27 of 30)": (27, 30)}
intervals = {name: wilson(k, n) for name, (k, n) in bars.items()}
{name.split("\n")[0]: (round(lo, 3), round(hi, 3)) for name, (lo, hi) in intervals.items()}

# %%
plots.accuracy_with_ci(list(bars), [k for k, _ in bars.values()], [n for _, n in bars.values()],
                       [lo for lo, _ in intervals.values()], [hi for _, hi in intervals.values()])

# %% [markdown]
# The jump in strict accuracy is real (the intervals of 7/30 and 27/30 do not overlap). Is the maths part real
# too: is 27 of 30 after better than 7 of 9 tagged answers before? 0.90 sits near the top of the 7-of-9
# interval [0.453, 0.937], and an interval around one proportion is not a test of two anyway. A test asks how
# surprising the data would be if both had the same accuracy. Fisher's exact test fixes the totals (34 right
# answers among 39) and counts how likely each split of them between the 9 and the 30 would be; the p-value
# adds up every split no more likely than the one observed (exercise 3.2 asks you to write it):

# %%
p_fisher = fisher_exact_2x2(7, 9, 27, 30)
print(f"Fisher's exact test, 7/9 vs 27/30: p = {p_fisher:.3f}")

# %% [markdown]
# No evidence either way: on this few questions a maths gain of 12 points cannot be told from chance. How many
# questions would it take? The half-width of an interval shrinks like $1/\sqrt n$:

# %%
rows = [[n, *[(wilson_interval(round(p * n), n)[1] - wilson_interval(round(p * n), n)[0]) / 2 for p in (0.5, 0.9)]]
        for n in (30, 100, 300, 1319)]
markdown_table(["questions n", "± at 50% accuracy", "± at 90% accuracy"], rows, floatfmt=".3f")

# %% [markdown]
# At 50% accuracy, 30 questions give ±17 points; GSM8K's 1,319 test questions ±2.7. A GSM8K run should
# therefore evaluate on the *test* split (the tutorial's 30 questions came from the train split) and report
# strict and lenient accuracy and the format rate separately, each with its interval. Notebook 05 evaluates
# the tiny model on 300 held-out addition problems (the row n = 300 above: ±5.6 points at 50% accuracy).

# %% jupyter={"source_hidden": true}
verdicts = {name: list(judge(text, "18").values()) for name, text in graded.items()}
check("3.8 · strict vs lenient accuracy",
      ("tagged and right: strict, lenient, format", verdicts["tagged, right"] == [True, True, True]),
      ("untagged and right: lenient only", verdicts["untagged, right"] == [False, True, False]),
      ("tagged and wrong: format only", verdicts["tagged, wrong"] == [False, False, True]),
      ("right, then a run-on: strictly wrong", verdicts["right, then a run-on"][0] is False),
      ("judge agrees with strict_correct and lenient_correct",
       all(judge(t, "18")["strict"] == strict_correct(t, "18") and judge(t, "18")["lenient"] == lenient_correct(t, "18")
           for t in graded.values())),
      ("strict = tagged rate × accuracy when tagged",
       abs(split["before"][0] - split["before"][1] * split["before"][2]) < 1e-12),
      ("strict accuracy 23.33% before, 90% after",
       round(split["before"][0] * 100, 2) == 23.33 and split["after"][0] == 0.9),
      ("the format gain is over 4x the maths gain (54.4 vs 12.2 points)", format_gain > 4 * maths_gain),
      ("the inline Wilson interval is the library's",
       all(all(abs(a - b) < 1e-4 for a, b in zip(intervals[name], wilson_interval(k, n)))
           for name, (k, n) in bars.items())),
      ("27 of 30: [0.744, 0.965]", tuple(round(x, 3) for x in wilson_interval(27, 30)) == (0.744, 0.965)),
      ("7 of 9: [0.453, 0.937], 0.90 near its top", tuple(round(x, 3) for x in wilson_interval(7, 9)) == (0.453, 0.937)),
      ("Fisher: p = 0.572, no evidence either way", abs(p_fisher - 0.5716) < 1e-4),
      ("the test is symmetric in the two samples", abs(fisher_exact_2x2(27, 30, 7, 9) - p_fisher) < 1e-12),
      ("30 questions: over ±16 points; 1,319: under ±3", rows[0][1] > 0.16 and rows[-1][1] < 0.03),
      ("notebook 05's 300 held-out problems: ±5.6 points at 50% accuracy", rows[2][0] == 300 and round(rows[2][1] * 100, 1) == 5.6))

# %% [markdown]
# ## 3.9 Reward distributions per group
#
# What do a batch's rewards look like early in training? Simulate an early policy on eight GSM8K
# questions with the tutorial's $G = 12$: each completion is tagged with probability 0.3 (the tutorial's
# 9 of 30), and right with a probability that depends on the question, from 10% to 90%. The completions
# are real texts, scored by the real reward functions:

# %%
gen = torch.Generator().manual_seed(0)
N, G = 8, 12
questions = (test * 8)[:N]
p_right = torch.linspace(0.1, 0.9, N)                        # how hard each question is for the policy
texts, golds = [], []
for n, p in enumerate(questions):
    v = completion_variants(p)
    for i in range(G):
        tagged = torch.rand(1, generator=gen).item() < 0.3
        right = torch.rand(1, generator=gen).item() < p_right[n].item()
        if tagged:
            texts.append(v["tagged, exact gold"] if right else v["tagged, wrong"])
        else:                                                # untagged: GSM8K's text, or a wrong version
            texts.append(v["GSM8K text, no tags"] if right else v["GSM8K text, no tags"] + "1")
        golds.append(p["answer"])
c = [[{"content": t}] for t in texts]
r_combined = torch.tensor(combined_reward([None] * len(c), c, golds), dtype=torch.float64).view(N, G)    # (N, G)
r_correct = torch.tensor(correctness_reward([None] * len(c), c, golds), dtype=torch.float64).view(N, G)  # (N, G)
print(f"reward values: {sorted(set(r_combined.unique().tolist()))}; mean of the p(right) = 0.90 group: "
      f"{r_combined[-1].mean():.2f} ({int((r_combined[-1] > 0).sum())} of {G} tagged)")
plots.reward_strips(r_combined, group_advantages(r_combined),
                    labels=[f"p(right) = {p:.2f}" for p in p_right.tolist()])

# %% [markdown]
# Three kinds of reward appear: 0 (untagged, right or wrong), 0.8 (tagged but wrong) and 2.8 (tagged and
# right). The labels are the chance of being right, but only tagged answers can earn it: with 30% tagged even
# the group labelled 0.90 averages only 0.70 here (3 of 12 tagged; 0.3 × (0.9 × 2.8 + 0.1 × 0.8) = 0.78 expected),
# against 2.8 for a group that is tagged and right throughout. Because most completions are untagged, the biggest differences inside a group are about the
# format; the push towards tagging comes from every group, the push towards the right number only from
# the tagged right ones. That is the dynamic behind 23% → 90%, seen in the rewards themselves. Compare the
# share of groups that teach nothing with and without the format reward:

# %%
zero_std_fraction(r_correct), zero_std_fraction(r_combined)

# %% [markdown]
# The format reward never adds flat groups here. Each combined value (0, 0.8 or 2.8) fixes both of its parts,
# so a group that is flat in the combined reward is flat in correctness too; the reverse fails whenever a group
# with no tagged right answer mixes tagged and untagged completions.

# %% jupyter={"source_hidden": true}
check("3.9 · reward distributions per group",
      ("rewards (N, G) = (8, 12)", r_combined.shape == (N, G)),
      ("three values only: 0, 0.8, 2.8", set(r_combined.unique().tolist()) <= {0.0, 0.8, 2.8}),
      ("each group's advantages sum to 0",
       torch.allclose(group_advantages(r_combined).sum(dim=-1), torch.zeros(N, dtype=torch.float64), atol=1e-9)),
      ("the p(right) = 0.90 group averages under 1.0 (most answers untagged)", bool(r_combined[-1].mean() < 1.0 < 2.8)),
      ("flat groups: combined ≤ correctness alone",
       0 <= zero_std_fraction(r_combined) <= zero_std_fraction(r_correct) <= 1))


# %% [markdown]
# ## Summary
#
# The tutorial's reward is two rules: 2.0 / 1.5 / 0 for the answer in the last `<answer>` tag against
# GSM8K's `####` gold, plus 0.2 per tag present. On real rows the rules work for clean answers and the
# library extends them to what GSM8K golds and models really write (93 golds carry thousands separators),
# but a right answer without tags earns nothing, and four empty tags earn the full 0.8, an advantage a
# policy will follow; a strict format rule closes that hole and also penalises text after `</answer>`.
# Rules replace DeepSeekMath's learned reward model, which can be fooled by surface features. The missing
# stop is most likely a prompt problem: Qwen-Instruct was tuned on ChatML turns that end at `<|im_end|>`, and
# `generate` stops there and trains that stop; this notebook showed the mechanics on a replay, and no Qwen run
# here measured that the template makes Qwen stop (that is expected, not measured). Finally, the
# tutorial's 23% → 90% is mostly the tag format (7 of 9 tagged answers were already right), and on 30
# questions its 95% intervals are ±11 to ±17 points wide (±11 at 90% accuracy, ±17 at 50%).
#
# ## What this notebook added to grpo_lib
#
# - `grpo_lib.course.plots.reward_strips`: the rewards and advantages of each group as strips of dots (3.3, 3.9).
# - `grpo_lib.course.plots.accuracy_with_ci`: accuracy bars with their 95% intervals (3.8). Both tested in
#   `tests/test_course_plots.py`.
# - `grpo_lib.course.exercises.ex03.check_strict_format`, `check_fisher`: the exercise checkers below, tested in
#   `tests/test_course_exercises_ex03.py` and `tests/test_course_exercises_hints.py`.
#
# The rewards themselves (`grpo_lib.rewards`), prompt building (`grpo_lib.data.build_prompt`) and the
# Wilson interval (`grpo_lib.evaluation.wilson_interval`) belong to the foundation and the engine; this
# notebook uses them and checks them against the tutorial's code.
#
# ## Exercises
#
# **3.1 · A strict format rule (fill in).** Write `my_strict_format(text)` that returns True exactly when
# the completion is one `<reasoning>…</reasoning>` followed by one `<answer>…</answer>`, both non-empty
# and not "...", with nothing but whitespace around them. Use a regular expression or `str.find`; mind
# newlines. Compare with `grpo_lib.rewards.strict_format_reward` when done.

# %% tags=["solution"]
def my_strict_format(text):      # text: str -> bool
    ### BEGIN SOLUTION
    m = re.fullmatch(r"\s*<reasoning>(.*?)</reasoning>\s*<answer>(.*?)</answer>\s*", text, re.DOTALL)
    return (m is not None
            and all(text.count(tag) == 1 for tag in ("<reasoning>", "</reasoning>", "<answer>", "</answer>"))
            and all(part.strip() not in ("", "...") for part in m.groups()))
    ### END SOLUTION

check_strict_format(my_strict_format);


# %% [markdown]
# **3.2 · Is 7 of 9 different from 27 of 30? (fill in).** Write `my_fisher_p(k1, n1, k2, n2)`, the
# two-sided p-value of Fisher's exact test of section 3.8, from the idea there (fixed totals, how likely each
# split is). Use `math.comb`; no statistics library. Then: what does p = 0.57 say about "the maths improved from
# 78% to 90%"? Compare with `grpo_lib.course.evaluation.fisher_exact_2x2` when done. Stuck? `hint("3.2")`.

# %% tags=["solution"]
def my_fisher_p(k1, n1, k2, n2):     # ints -> the two-sided p-value
    ### BEGIN SOLUTION
    K, N = k1 + k2, n1 + n2
    P = {x: math.comb(n1, x) * math.comb(n2, K - x) / math.comb(N, K) for x in range(max(0, K - n2), min(n1, K) + 1)}
    return sum(p for p in P.values() if p <= P[k1] * (1 + 1e-9))   # every split no more likely than the one seen
    ### END SOLUTION

check_fisher(my_fisher_p);

# %% [markdown]
# **3.3 · Partial credit.** Replace the format reward by `strict_format_reward` in section 3.9's
# simulation. How do the reward strips change, and what happens to `zero_std_fraction`? Why might a
# strict-only reward stall a base model that never writes the tags?
#
# **3.4 · A reward for stopping.** The run-on completion in 3.7 earns the full lenient format reward.
# Design a reward term that penalises text after `</answer>` *in proportion to its length*, score
# `text_chat` and `text_plain` with it, and argue whether it is better or worse than `strict_format_reward`'s
# all-or-nothing rule.
#
# **3.5 · Hack the cartoon.** Find a completion with a *wrong* answer that the cartoon reward model of
# 3.6 scores above 0.99. What would DeepSeekMath's Algorithm 1 do next with such completions?

# %% [markdown]
# ## Quiz: check yourself
#
# Choose an answer to each question *before* you open it. Every answer is a number this notebook printed.

# %%
from grpo_lib.course.quiz import Question, quiz

empty_tags = [[{"content": "<reasoning></reasoning><answer></answer>"}]]
half_width = lambda n: (wilson_interval(round(n / 2), n)[1] - wilson_interval(round(n / 2), n)[0]) / 2   # noqa: E731
quiz("Quiz · notebook 03",
     Question("What does the tutorial's format reward pay for four empty tags?",
              ("0", "0.2", "0.8, the full format reward"), 2,
              f"format_reward gives {format_reward(empty_tags)[0]}; strict_format_reward gives "
              f"{strict_format_reward(empty_tags)[0]} (3.4, 3.5).",
              format_reward(empty_tags)[0] == 0.8 and strict_format_reward(empty_tags)[0] == 0.0),
     Question("The tutorial went from 23% to 90% strict accuracy. Mostly by ...",
              ("better maths", "writing the tags", "a larger model"), 1,
              f"The format gain is {format_gain:.1%}, the maths gain {maths_gain:.1%} (3.8).",
              bool(format_gain > 4 * maths_gain)),
     Question("7 of 9 tagged answers right before, 27 of 30 after: is that a real improvement?",
              ("yes, 78% → 90%", "no evidence either way", "it got worse"), 1,
              f"Fisher's exact test: p = {p_fisher:.3f} (3.8).", abs(p_fisher - 0.5716) < 1e-4),
     Question("At 50% accuracy, how wide is the 95% interval of an evaluation on 30 questions?",
              (f"±{half_width(30) * 100:.0f} points", f"±{half_width(300) * 100:.1f} points",
               f"±{half_width(1319) * 100:.1f} points"), 0,
              f"Wilson interval: ±{half_width(30) * 100:.0f} points at n = 30, ±{half_width(1319) * 100:.1f} on "
              f"GSM8K's 1,319 test questions (3.8).",
              half_width(30) > 0.16 and half_width(1319) < 0.03),
     Question("Why should the Qwen run's prompt go through the chat template?",
              ("it is shorter", "Qwen-Instruct ends a ChatML turn with <|im_end|>, its EOS: it is expected to stop "
               "after </answer>", "the reward needs it"), 1,
              "Expected from how the model was tuned, shown here on a replay; no Qwen run measured it (3.7).",
              chat_prompt.endswith("<|im_start|>assistant\n")))

# %% [markdown]
# ## Next
#
# [04_the_loss.ipynb](04_the_loss.ipynb): from advantages to the GRPO loss: per-token log-probabilities,
# the clipped ratio with $\epsilon$, the KL term with $\beta$, and why the loss reads 0 at the first step.

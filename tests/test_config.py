"""GRPOConfig: presets, validation messages that name the option, derived values, docs and the markdown table."""
import dataclasses
import json
import math

import pytest

from grpo_lib.config import PRESETS, GRPOConfig, field_docs
from grpo_lib.rewards import SYSTEM_PROMPT


def test_default_is_the_tiny_preset():
    assert GRPOConfig() == GRPOConfig.from_preset("tiny") == GRPOConfig.tiny()
    cfg = GRPOConfig()
    # the values tiny-model-notes.md measured as working
    assert (cfg.G, cfg.N, cfg.lr, cfg.beta, cfg.epsilon, cfg.temperature, cfg.mu) == (8, 16, 5e-5, 0.04, 0.2, 1.0, 1)
    assert (cfg.adam_beta1, cfg.adam_beta2, cfg.model, cfg.task, cfg.system_prompt) == (0.9, 0.99, "tiny", "addition", None)


def test_qwen_preset_has_the_tutorials_hyperparameters():
    cfg = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k")
    assert cfg == GRPOConfig.full()
    assert cfg.preset == "qwen2.5-1.5b-gsm8k" and cfg.model == "Qwen/Qwen2.5-1.5B-Instruct"
    assert (cfg.N, cfg.prompts_per_device, cfg.G, cfg.max_completion_length, cfg.beta, cfg.lr) == (
        None, 7, 12, 400, 0.04, 5e-6)                                    # 7 prompts PER GPU
    assert (cfg.dtype, cfg.precision, cfg.save_every, cfg.save_total_limit) == ("bfloat16", "mixed", 50, 2)
    assert (cfg.epsilon, cfg.mu, cfg.max_grad_norm, cfg.temperature, cfg.steps) == (0.1, 1, 0.1, 1.0, 500)
    assert (cfg.num_iterations, cfg.lr_schedule, cfg.warmup_steps) == (1, "constant", 0)   # no schedule
    assert (cfg.task, cfg.data_dir, cfg.dtype, cfg.system_prompt) == ("gsm8k", None, "bfloat16", SYSTEM_PROMPT)
    assert cfg.eval_n is None                                           # the whole test split
    assert cfg.global_B(1) == 84 and cfg.global_B(8) == 672 and cfg.total_steps == 500
    assert cfg.N_per_rank(8) == 7 and cfg.global_N(8) == 56       # the batch grows with the GPUs
    with pytest.raises(ValueError, match="global_B"):
        cfg.B


def test_overrides_and_replace():
    cfg = GRPOConfig.from_preset("qwen2.5-1.5b-gsm8k", data_dir="../shared/data/gsm8k", N=8)
    assert cfg.data_dir == "../shared/data/gsm8k" and cfg.N == 8 and cfg.preset == "qwen2.5-1.5b-gsm8k"
    assert cfg.prompts_per_device is None and cfg.global_N(8) == 8      # N replaces the per-GPU count
    per_gpu = GRPOConfig.tiny().replace(prompts_per_device=2)
    assert per_gpu.N is None and per_gpu.global_N(2) == 4 and per_gpu.replace(N=6).prompts_per_device is None
    tiny = GRPOConfig.tiny(steps=5)
    assert tiny.replace(beta=0.0).beta == 0.0 and tiny.replace(beta=0.0).steps == 5
    with pytest.raises(ValueError, match="beta"):
        tiny.replace(beta=-1.0)                                          # replace validates again
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.G = 4


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError) as err:
        GRPOConfig.from_preset("qwen")
    msg = str(err.value)
    assert "unknown preset 'qwen'" in msg and "tiny" in msg and "qwen2.5-1.5b-gsm8k" in msg
    assert set(PRESETS) == {"tiny", "qwen2.5-1.5b-gsm8k"}


def test_unknown_option_suggests_the_closest():
    with pytest.raises(TypeError, match=r"no option 'num_generations'"):
        GRPOConfig.from_preset("tiny", num_generations=4)
    with pytest.raises(TypeError, match=r"Did you mean 'epsilon'"):
        GRPOConfig.tiny().replace(epsilom=0.1)


@pytest.mark.parametrize("override, message", [
    (dict(G=1), "G must be >= 2"),
    (dict(N=0), "N (prompts per step) must be >= 1"),
    (dict(N=None), "give exactly one of N"),
    (dict(prompts_per_device=0), "prompts_per_device must be >= 1"),
    (dict(dtype="float16"), "fp16 needs a gradient scaler"),
    (dict(precision="half"), "precision must be one of"),
    (dict(save_total_limit=0), "save_total_limit must be >= 1"),
    (dict(save_dtype="int8"), "save_dtype must be None or one of"),
    (dict(epsilon=0.0), "epsilon (ε, the clip range) must satisfy 0 < ε < 1"),
    (dict(epsilon=1.0), "epsilon (ε, the clip range)"),
    (dict(epsilon_high=0.1), "epsilon_high"),
    (dict(beta=-0.01), "beta (β, the KL coefficient) must be >= 0"),
    (dict(mu=0), "mu (μ, updates per sampled batch) must be >= 1"),
    (dict(num_iterations=0), "num_iterations (I, outer iterations)"),
    (dict(steps=0), "steps (M"),
    (dict(loss_type="ppo"), "loss_type must be one of ('grpo', 'bnpo', 'dr_grpo', 'dapo', 'cispo'), got 'ppo'"),
    (dict(importance_sampling_level="sequence_token"), "importance_sampling_level must be one of ('token', 'sequence')"),
    (dict(importance_sampling_level="sequence", loss_type="dapo"),
     "importance_sampling_level='sequence' (GSPO) needs loss_type='grpo', got loss_type='dapo'"),
    (dict(importance_sampling_level="sequence", loss_type="cispo", epsilon_high=5.0), "needs loss_type='grpo'"),
    (dict(loss_type="cispo"), "loss_type='cispo' caps the importance weight at epsilon_high itself"),
    (dict(loss_type="cispo", epsilon_high=0.28), "epsilon_high must be given and >= 1, got epsilon_high=0.28"),
    (dict(kl_estimator="k4"), "kl_estimator must be one of ('k1', 'k2', 'k3')"),
    (dict(multi_objective_aggregation="mean"), "multi_objective_aggregation must be one of"),
    (dict(multi_objective_aggregation="normalize_then_sum", scale_rewards="none"),
     "scale_rewards='none' would be ignored"),
    (dict(vllm_importance_sampling_mode="token"), "vllm_importance_sampling_mode must be one of"),
    (dict(vllm_importance_sampling_clip_min=3.0), "vllm_importance_sampling_clip_min (3.0) must be less than"),
    (dict(vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=None),
     "must be set for the truncate mode 'token_truncate'"),
    (dict(vllm_importance_sampling_correction=True), "with sampler_perturbation='none' the policy samples"),
    (dict(scale_rewards="rank"), "scale_rewards must be one of"),
    (dict(temperature=0.0), "temperature (τ) must be in [0.001, 1000], a range float32 carries"),
    (dict(temperature=1e-45), "temperature (τ) must be in [0.001, 1000], a range float32 carries"),
    (dict(temperature=1e4), "temperature (τ) must be in [0.001, 1000]"),
    (dict(reward_funcs="correctness"), "reward_funcs must be a list of names, got the single string 'correctness'; "
                                       "write [correctness] (in a YAML recipe: reward_funcs: [correctness]"),
    (dict(reward_funcs=("correctness", "length")), "unknown reward function 'length'"),
    (dict(reward_funcs=()), "at least one reward function"),
    (dict(max_completion_length=0), "max_completion_length must be >= 1"),
    (dict(lr=0.0), "lr (η) must be a finite number in (0, 1e+10], a range float32 carries"),
    (dict(lr=1e38), "lr (η) must be a finite number in (0, 1e+10], a range float32 carries (AdamW's first update"),
    (dict(lr=float("inf")), "lr must be a finite number, got inf"),
    (dict(save_every=-1), "save_every must be >= 0"),
    (dict(resume=" "), "resume must be None or a checkpoint"),
    (dict(dist_timeout_minutes=0.0), "dist_timeout_minutes must be > 0"),
    (dict(adam_beta2=1.0), "adam_beta2"),
    (dict(max_grad_norm=0.0), "max_grad_norm"),
    (dict(lr_schedule="linear"), "lr_schedule must be one of"),
    (dict(dtype="fp8"), "dtype must be one of"),
    (dict(task="math"), "task must be one of"),
    (dict(data_dir="../shared/data/gsm8k"), "data_dir is only used with task='gsm8k'"),
    (dict(eval_n=0), "eval_n must be None"),
    (dict(eval_every=-1), "eval_every"),
    (dict(device="gpu"), "device must be"),
    (dict(report_to="tensorboard"), "report_to must be one of ('wandb', 'none')"),
    (dict(G=2.5), "G must be an int"),
    (dict(G=True), "G must be an int"),
    (dict(lr="fast"), "lr must be a float"),
    (dict(model=""), "model must be"),
])
def test_bad_values_fail_naming_the_option(override, message):
    with pytest.raises(ValueError) as err:
        GRPOConfig.tiny(**override)
    assert message in str(err.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(ValueError) as err:
        GRPOConfig(G=1, beta=-1.0, loss_type="x")
    msg = str(err.value)
    assert "G must be >= 2" in msg and "beta" in msg and "loss_type" in msg


def test_ints_are_accepted_for_floats_and_lists_for_tuples():
    cfg = GRPOConfig(lr=1, reward_funcs=["format"])
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.reward_funcs == ("format",)
    assert hash(cfg)                                                      # frozen and hashable


def test_derived_values():
    cfg = GRPOConfig.tiny(N=16, G=8, steps=10, num_iterations=3, mu=2)
    assert cfg.B == 128 and cfg.total_steps == 30 and cfg.total_updates == 60
    assert cfg.N_per_rank(1) == 16 and cfg.N_per_rank(4) == 4
    with pytest.raises(ValueError) as err:
        cfg.N_per_rank(3)
    assert "N = 16" in str(err.value) and "divisible" in str(err.value) and "--N 15" in str(err.value)
    with pytest.raises(ValueError):
        cfg.N_per_rank(0)


def test_every_field_has_a_docstring_and_the_clashing_names_are_explained():
    docs = field_docs()
    names = [f.name for f in dataclasses.fields(GRPOConfig)]
    assert sorted(docs) == sorted(names)
    assert all(len(docs[n]) > 15 for n in names)
    assert "TRL calls this num_iterations" in docs["mu"]
    assert "π_ref ← π_θ" in docs["num_iterations"] and "TRL has no such loop" in docs["num_iterations"]
    assert "num_generations" in docs["G"] and "batch_size" in docs["N"]
    assert "ε" in docs["epsilon"] and "β" in docs["beta"] and "μ" in docs["mu"]


def test_markdown_table():
    md = GRPOConfig.tiny()._repr_markdown_()
    lines = md.splitlines()
    assert lines[0] == "| option | symbol | value | meaning |"
    assert len(lines) == 2 + len(dataclasses.fields(GRPOConfig)) + 2        # header, one row per field, B, total_steps
    assert "| `epsilon` | ε | `0.2` |" in md and "| `beta` | β | `0.04` |" in md and "| `mu` | μ | `1` |" in md
    assert "| *(derived)* `B` | B = N·G | `128` |" in md
    full = GRPOConfig.full()._repr_markdown_()
    assert "\n<reasoning>" not in full                                    # multi-line system prompt stays on its row
    assert len(full.splitlines()) == len(lines)


def test_to_dict_is_json_ready():
    d = GRPOConfig.full().to_dict()
    assert json.loads(json.dumps(d))["G"] == 12
    assert d["reward_funcs"] == ("correctness", "format")


@pytest.mark.parametrize("field", ["temperature", "beta", "epsilon", "epsilon_high", "lr", "weight_decay",
                                   "adam_beta1", "adam_beta2", "max_grad_norm", "dist_timeout_minutes"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_option_must_be_finite(field, value):
    with pytest.raises(ValueError) as err:
        GRPOConfig.tiny(**{field: value})
    assert str(err.value) == f"invalid GRPOConfig:\n  - {field} must be a finite number, got {value}"


def test_cli_refuses_inf_temperature_and_beta_before_any_work(capsys):
    from grpo_lib.cli import parse_config

    for option in ("--temperature", "--beta"):
        with pytest.raises(SystemExit):
            parse_config([option, "inf"])
        assert f"{option[2:]} must be a finite number, got inf" in capsys.readouterr().err

"""Tests for grpo_lib.advantages: hand-computed values (the 2+3 example), properties, and bad input."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grpo_lib.advantages import batch_std, compute_advantages, gdpo_advantages, group_advantages, zero_std_fraction


def test_two_plus_three_example_sample_std():
    # r = [1, 0, 2]: mean 1, deviations [0, -1, 1], sample var (0 + 1 + 1) / (3 - 1) = 1, std 1
    # A = [0, -1, 1] / (1 + 1e-4) = [0, -0.9999, 0.9999]
    A = group_advantages(torch.tensor([[1.0, 0.0, 2.0]]))
    assert A.shape == (1, 3)
    torch.testing.assert_close(A, torch.tensor([[0.0, -1.0, 1.0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(A, torch.tensor([[0.0, -1.0, 1.0]]) / (1 + 1e-4))


def test_two_plus_three_example_population_std():
    # population var (0 + 1 + 1) / 3 = 2/3, std = sqrt(2/3) = 0.8165, A = ±1 / 0.8165 = ±1.2247
    A = group_advantages([[1.0, 0.0, 2.0]], ddof=0)
    torch.testing.assert_close(A, torch.tensor([[0.0, -1.2247, 1.2247]]), atol=1e-3, rtol=0)


def test_style_guide_example_g4():
    # r = [1, 0, 0, 0]: mean .25, squared deviations .5625 + 3 * .0625 = .75
    # sample std sqrt(.75/3) = .5 -> A_1 = .75/.5 = 1.5; population std sqrt(.75/4) = .433 -> A_1 = 1.732
    r = [[1.0, 0.0, 0.0, 0.0]]
    assert group_advantages(r)[0, 0].item() == pytest.approx(1.5, abs=1e-3)
    assert group_advantages(r, ddof=0)[0, 0].item() == pytest.approx(math.sqrt(3), abs=1e-3)


def test_all_equal_group_is_exactly_zero_in_every_mode():
    # 0.1 * 3 / 3 is not exactly 0.1 in float: the zero must come from the all-equal rule, not rounding
    r = torch.tensor([[0.1, 0.1, 0.1], [2.0, 2.0, 2.0], [1.0, 0.0, 2.0]])
    for scale in ("group", "batch", "none"):
        A = group_advantages(r, scale=scale)
        assert torch.isfinite(A).all()
        assert (A[:2] == 0).all(), (scale, A)
        assert (A[2] != 0).any()
    # even with no floor at all: 0/0 must not appear
    A = group_advantages(torch.full((2, 4), 3.0), std_floor=0.0)
    assert (A == 0).all()


def test_batch_scale_hand_values():
    # r = [[1, 0, 2], [0, 0, 3]]; group means 1 and 1; centred [[0, -1, 1], [-1, -1, 2]]
    # all six rewards: mean 1, squared deviations 0+1+1+1+1+4 = 8, sample var 8/5 = 1.6, std 1.26491
    r = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    A = group_advantages(r, scale="batch")
    expected = torch.tensor([[0.0, -1.0, 1.0], [-1.0, -1.0, 2.0]]) / (math.sqrt(1.6) + 1e-4)
    torch.testing.assert_close(A, expected)
    # differs from per-group scaling: group 2 has its own std sqrt(3) -> A = [-1, -1, 2] / 1.732
    A_group = group_advantages(r)
    torch.testing.assert_close(A_group[1], torch.tensor([-1.0, -1.0, 2.0]) / (math.sqrt(3) + 1e-4))


def test_none_scale_only_centres():
    r = torch.tensor([[1.0, 0.0, 2.0, 5.0], [0.5, 0.5, 0.5, 2.5]])
    # means 2.0 and 1.0
    torch.testing.assert_close(group_advantages(r, scale="none"),
                               torch.tensor([[-1.0, -2.0, 0.0, 3.0], [-0.5, -0.5, -0.5, 1.5]]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(2, 8), st.sampled_from(["group", "batch", "none"]), st.data())
def test_advantages_sum_to_zero_per_group(N, G, scale, data):
    values = data.draw(st.lists(st.lists(st.floats(-10, 10, allow_nan=False), min_size=G, max_size=G),
                                min_size=N, max_size=N))
    r = torch.tensor(values, dtype=torch.float64)
    A = group_advantages(r, scale=scale)
    assert A.shape == (N, G)
    assert torch.isfinite(A).all()
    torch.testing.assert_close(A.sum(dim=1), torch.zeros(N, dtype=torch.float64), atol=1e-6, rtol=0)
    # the order of completions inside a group is preserved: higher reward -> advantage not lower (rounding is monotone)
    for i in range(N):
        for j in range(G):
            for k in range(G):
                if r[i, j] > r[i, k]:
                    assert A[i, j] >= A[i, k]


def test_group_scale_has_unit_sample_std():
    torch.manual_seed(0)
    r = torch.randn(6, 8) * 3 + 1
    A = group_advantages(r, std_floor=0.0)
    torch.testing.assert_close(A.std(dim=1), torch.ones(6))
    A0 = group_advantages(r, std_floor=0.0, ddof=0)
    torch.testing.assert_close(A0.std(dim=1, correction=0), torch.ones(6))


def test_accepts_numpy_int_lists_and_keeps_device_dtype():
    A_np = group_advantages(np.array([[1, 0, 2]]))
    A_list = group_advantages([[1, 0, 2]])
    assert A_np.dtype == torch.float32 and A_list.dtype == torch.float32
    torch.testing.assert_close(A_np, A_list)
    A64 = group_advantages(torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64))
    assert A64.dtype == torch.float64


def test_rejects_one_completion_per_prompt():
    with pytest.raises(ValueError, match="G must be >= 2"):
        group_advantages(torch.tensor([[1.0], [0.0]]))
    with pytest.raises(ValueError, match="nothing to compare"):
        zero_std_fraction([[1.0], [0.0]])


def test_rejects_flat_vector_with_reshape_hint():
    with pytest.raises(ValueError, match=r"\(N, G\).*view"):
        group_advantages(torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        group_advantages(torch.zeros(2, 3, 4))


def test_rejects_unknown_scale_listing_options():
    with pytest.raises(ValueError, match="'group', 'batch', 'none'"):
        group_advantages([[1.0, 0.0]], scale="global")


def test_rejects_nan_rewards_and_bad_ddof():
    with pytest.raises(ValueError, match="NaN"):
        group_advantages([[1.0, float("nan")]])
    with pytest.raises(ValueError, match="ddof"):
        group_advantages([[1.0, 0.0]], ddof=2)


def test_zero_std_fraction():
    r = torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [0.2, 0.2, 2.2]])
    assert zero_std_fraction(r) == pytest.approx(0.5)
    assert zero_std_fraction([[0.0, 1.0]]) == 0.0
    assert zero_std_fraction([[3.0, 3.0]]) == 1.0


def test_compute_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 2.0, 0.0, 0.0, 0.0])              # two groups of G = 3
    A = compute_advantages(r, G=3)
    # group 0: mean 1, sample std 1 -> [0, -1, 1] (up to the 1e-4 floor); group 1 is flat -> zeros
    torch.testing.assert_close(A, torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0, 0.0]), atol=2e-4, rtol=0)
    assert A[3:].tolist() == [0.0, 0.0, 0.0]
    torch.testing.assert_close(compute_advantages(r, G=3, scale="none"), torch.tensor([0.0, -1.0, 1.0, 0, 0, 0]))
    with pytest.raises(ValueError, match="multiple of G"):
        compute_advantages(torch.ones(5), G=2)


def test_batch_std_in_one_process_is_the_sample_std():
    g = torch.Generator().manual_seed(3)
    r = torch.randint(0, 3, (24,), generator=g).float()
    assert batch_std(r) == pytest.approx(r.std().item(), rel=1e-6)
    assert batch_std(torch.tensor([1.0, 0.0, 2.0])) == pytest.approx(1.0)        # the 2+3 group: sample std 1
    # scale="batch" in one process: the same as group_advantages with the batch std
    torch.testing.assert_close(compute_advantages(r, G=4, scale="batch"), group_advantages(r.view(6, 4), scale="batch").reshape(-1))


# --- huge and complex rewards ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["group", "batch"])
@pytest.mark.parametrize("unit", [1e300, 1e200, 1e-100])
def test_huge_rewards_give_the_advantages_of_the_same_rewards_in_other_units(scale, unit):
    # A is unit-free: rewards near 1e300 (whose squares overflow float64) give the A of the same rewards / 1e300
    base = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, -1.0, 0.5]], dtype=torch.float64)
    A = group_advantages(base * unit, scale=scale, std_floor=0.0)
    assert torch.isfinite(A).all()
    assert torch.allclose(A, group_advantages(base, scale=scale, std_floor=0.0), rtol=1e-12, atol=1e-12)
    assert A[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5]) if scale == "group" else True


def test_rewards_near_1e300_are_not_all_zeros():
    A = group_advantages(torch.tensor([[1e300, 0.0, 0.0, 0.0]], dtype=torch.float64))
    assert A[0].tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5], rel=1e-12)   # std floor 1e-4 is 1e-304 there


def test_complex_rewards_are_refused():
    with pytest.raises(ValueError, match=r"rewards must be real numbers, got a complex tensor \(torch.complex64\)"):
        group_advantages(torch.tensor([[1 + 1j, 0j]]))


@pytest.mark.parametrize("floor", [math.nan, math.inf, -1e-4, "1e-4"])
def test_std_floor_must_be_finite_and_non_negative(floor):
    # the reported cases: NaN gave NaN advantages, inf gave all zeros
    with pytest.raises(ValueError, match="std_floor must be a finite number >= 0"):
        group_advantages([[1.0, 0.0, 0.0, 1.0]], std_floor=floor)
    assert group_advantages([[1.0, 0.0, 0.0, 1.0]], std_floor=0).abs().sum() > 0


# ---------------------------------------------------------------- GDPO (choice 6), by hand
def test_gdpo_by_hand_keeps_reward_combinations_apart():
    """G = 4, correctness r_1 = [1, 0, 0, 0], format r_2 = [0, 1, 1, 0]: totals [1, 1, 1, 0], so summing first gives
    completions 0, 1, 2 the same advantage. GDPO: r_1 has mean 1/4, sample std 1/2 -> [0.75, -0.25, -0.25, -0.25] /
    0.5001; r_2 has mean 1/2, std 0.5773503 -> [-0.5, 0.5, 0.5, -0.5] / 0.5774503. s = [0.6338240, 0.3659760,
    0.3659760, -1.3657760] (mean 0), sample std 0.9192308, A = s / 0.9193308 = [0.6894448, 0.3980899, 0.3980899,
    -1.4856246]: the correct completion ranks above the two that only have the format."""
    r = torch.tensor([[[1.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 1.0, 0.0]]])          # (K, N, G) = (2, 1, 4)
    A = gdpo_advantages(r)
    torch.testing.assert_close(A, torch.tensor([[0.6894448, 0.3980899, 0.3980899, -1.4856246]]), atol=1e-5, rtol=0)
    A_sum = group_advantages(r.sum(0))
    assert A_sum[0, 0] == A_sum[0, 1] == A_sum[0, 2]


def test_gdpo_weights_flat_groups_and_bad_input():
    r1 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    r2 = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    A = gdpo_advantages([r1, r2])
    assert (A[1] == 0).all()                                   # flat in every function: exactly 0
    # weight 0 on the format reward: GDPO of correctness alone, then batch-normalised
    A_w = gdpo_advantages([r1, r2], weights=[1.0, 0.0])
    s = group_advantages(r1)                                   # group-normalised correctness, flat row 0
    expected = (s - s.mean()) / (s.std() + 1e-4)
    expected[1] = 0.0
    torch.testing.assert_close(A_w, expected)
    with pytest.raises(ValueError, match="weights"):
        gdpo_advantages([r1, r2], weights=[1.0])
    with pytest.raises(ValueError, match="same shape"):
        gdpo_advantages([r1, r2[:1]])

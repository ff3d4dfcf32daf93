"""ConditioningZeroOut / Concat / Average against the torch operations they stand for."""

from __future__ import annotations

import pytest
import torch

from nodes.conditioning import ConditioningAverage, ConditioningConcat, ConditioningZeroOut


def cond(tokens: int, seed: int, pooled: bool = True, width: int = 8) -> list:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, tokens, width, generator=g)
    extra = {"pooled_output": torch.randn(1, 4, generator=g) if pooled else None, "width": 64}
    return [[hidden, extra]]


def test_zero_out_zeros_everything_and_keeps_the_rest():
    c = cond(77, 1) + cond(154, 2, pooled=False)
    before = [t.clone() for t, _ in c]
    (out,) = ConditioningZeroOut().run(c)
    assert [t.shape for t, _ in out] == [(1, 77, 8), (1, 154, 8)]
    assert all(torch.count_nonzero(t) == 0 for t, _ in out)
    assert torch.count_nonzero(out[0][1]["pooled_output"]) == 0 and out[1][1]["pooled_output"] is None
    assert out[0][1]["width"] == 64
    assert all(torch.equal(t, b) for (t, _), b in zip(c, before, strict=True))  # input untouched


def test_concat_is_torch_cat_of_the_first_from_entry():
    to = cond(77, 1) + cond(77, 2)
    frm = cond(154, 3) + cond(77, 4)
    (out,) = ConditioningConcat().run(to, frm)
    for (t, d), (t_to, d_to) in zip(out, to, strict=True):
        assert torch.equal(t, torch.cat([t_to, frm[0][0]], dim=1))
        assert d == d_to and d is not d_to
    with pytest.raises(ValueError, match="same text encoder"):
        ConditioningConcat().run(to, cond(77, 5, width=16))


@pytest.mark.parametrize(("to_tokens", "from_tokens"), [(77, 77), (154, 77), (77, 154)])
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0])
def test_average_is_a_weighted_sum(to_tokens, from_tokens, strength):
    to, frm = cond(to_tokens, 1), cond(from_tokens, 2)
    (out,) = ConditioningAverage().run(to, frm, strength)
    t_to, t_from = to[0][0], frm[0][0]
    if from_tokens >= to_tokens:
        other = t_from[:, :to_tokens]
    else:
        other = torch.cat([t_from, torch.zeros(1, to_tokens - from_tokens, 8)], dim=1)
    torch.testing.assert_close(out[0][0], t_to * strength + other * (1 - strength))
    torch.testing.assert_close(
        out[0][1]["pooled_output"],
        to[0][1]["pooled_output"] * strength + frm[0][1]["pooled_output"] * (1 - strength),
    )


def test_average_pooled_outputs_when_one_side_has_none():
    (out,) = ConditioningAverage().run(cond(77, 1, pooled=False), cond(77, 2), 0.5)
    assert torch.equal(out[0][1]["pooled_output"], cond(77, 2)[0][1]["pooled_output"])
    (out,) = ConditioningAverage().run(cond(77, 1), cond(77, 2, pooled=False), 0.5)
    assert torch.equal(out[0][1]["pooled_output"], cond(77, 1)[0][1]["pooled_output"])


def test_empty_from_is_a_clear_error():
    with pytest.raises(ValueError, match="conditioning_from is empty"):
        ConditioningAverage().run(cond(77, 1), [], 0.5)

"""minclip.attention against nn.MultiheadAttention, F.scaled_dot_product_attention, gradcheck and its own promises."""

import doctest

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minclip import attention
from minclip.attention import MultiheadSelfAttention, causal_mask, scaled_dot_product_attention

B, T, D, H = 3, 7, 16, 4
IMPLS = ["manual", "sdpa"]


def make_pair(impl="manual", seed=0):
    """Our module and nn.MultiheadAttention (batch_first) holding the same random weights."""
    torch.manual_seed(seed)
    ours = MultiheadSelfAttention(D, H, impl=impl)
    with torch.no_grad():  # non-zero biases, so that a mixed-up bias would show
        for p in ours.parameters():
            p.normal_(0, 0.3)
    ref = nn.MultiheadAttention(D, H, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # the same key names: this is the interop contract
    return ours, ref


def random_masks(seed=1):
    g = torch.Generator().manual_seed(seed)
    bool_mask = torch.rand(T, T, generator=g) < 0.3
    bool_mask.fill_diagonal_(False)  # every query keeps one key, so nn.MultiheadAttention stays NaN-free
    float_mask = torch.randn(T, T, generator=g)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[0, -2:] = True
    padding[2, -4:] = True
    return bool_mask, float_mask, padding


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("masks", ["none", "bool", "float", "causal", "padding", "bool+padding", "float+padding"])
def test_equals_torch_multihead_attention(impl, masks):
    ours, ref = make_pair(impl)
    x = torch.randn(B, T, D)
    bool_mask, float_mask, padding = random_masks()
    attn_mask = {"bool": bool_mask, "float": float_mask, "causal": causal_mask(T)}.get(masks.split("+")[0])
    key_padding_mask = padding if "padding" in masks else None
    if masks == "float+padding":  # float with float: nn.MultiheadAttention deprecates mixing mask types
        key_padding_mask = attention.to_additive_mask(padding, torch.float32)

    out, weights = ours(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=True)
    out_fast, none = ours(x, attn_mask=attn_mask, key_padding_mask=key_padding_mask)
    ref_out, ref_weights = ref(
        x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=True,
        average_attn_weights=False,
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out_fast, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-6, atol=1e-6)
    assert none is None


def test_is_causal_equals_explicit_causal_mask():
    for impl in IMPLS:
        ours, _ = make_pair(impl)
        x = torch.randn(B, T, D)
        torch.testing.assert_close(ours(x, is_causal=True)[0], ours(x, attn_mask=causal_mask(T))[0])


@pytest.mark.parametrize("with_mask", [False, True])
def test_core_equals_torch_sdpa(with_mask):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, B, H, T, D // H).unbind(0)
    mask = torch.randn(B, H, T, T) if with_mask else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, H, T))


def test_core_is_causal_equals_an_explicit_causal_mask():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, B, H, T, D // H).unbind(0)
    out, weights = scaled_dot_product_attention(q, k, v, is_causal=True)
    expected_out, expected_weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(weights, expected_weights)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-6, atol=1e-6)
    # with a mask that blocks key 0 for every query, causality leaves query 0 nothing: its weights are zeros
    blocks_key_0 = torch.zeros(T, T).index_fill_(1, torch.tensor([0]), float("-inf"))
    _, weights = scaled_dot_product_attention(q, k, v, blocks_key_0, is_causal=True)
    assert (weights[:, :, 0] == 0).all() and torch.allclose(weights[:, :, 1:].sum(-1), torch.ones(B, H, T - 1))


def test_boolean_convention_is_true_means_blocked():
    """Our bool masks block where True; F.scaled_dot_product_attention's allow where True: the same result needs ~."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 1, 1, T, 8).unbind(0)
    blocked = causal_mask(T).isinf()  # True above the diagonal
    ours, _ = scaled_dot_product_attention(q, k, v, attention.to_additive_mask(blocked, q.dtype))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=~blocked))
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("impl", IMPLS)
def test_manual_and_sdpa_paths_agree_with_per_head_and_per_batch_masks(impl):
    ours, _ = make_pair("manual")
    fast = MultiheadSelfAttention(D, H, impl="sdpa")
    fast.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, D)
    for mask in [torch.randn(B, H, T, T), torch.randn(B, 1, T, T), torch.rand(B, T, T) < 0.3, torch.randn(B, T, T)]:
        torch.testing.assert_close(fast(x, attn_mask=mask)[0], ours(x, attn_mask=mask)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_float64(impl):
    torch.manual_seed(0)
    module = MultiheadSelfAttention(8, 2, impl=impl).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    padding = torch.tensor([[False, False, False, True], [False, False, False, False]])
    mask = torch.randn(4, 4, dtype=torch.float64)

    def f(x, w_in, b_in, w_out):
        out, weights = torch.func.functional_call(
            module,
            {"in_proj_weight": w_in, "in_proj_bias": b_in, "out_proj.weight": w_out,
             "out_proj.bias": module.out_proj.bias},
            (x,),
            {"attn_mask": mask, "key_padding_mask": padding, "is_causal": True},
        )
        return out

    params = [p.detach().clone().requires_grad_()
              for p in (module.in_proj_weight, module.in_proj_bias, module.out_proj.weight)]
    assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("impl", IMPLS)
def test_fully_masked_rows_give_zero_weights_and_no_nan(impl):
    ours, _ = make_pair(impl)
    x = torch.randn(B, T, D, requires_grad=True)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1] = True  # every key of sample 1 is padding
    attn_mask = torch.zeros(T, T, dtype=torch.bool)
    attn_mask[2] = True  # query 2 may look at nothing, in every sample

    out, _ = ours(x, attn_mask=attn_mask, key_padding_mask=padding)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    bias = ours.out_proj.bias.detach()
    torch.testing.assert_close(out[1].detach(), bias.expand(T, D))  # heads give zeros -> output is the bias alone
    torch.testing.assert_close(out[:, 2].detach(), bias.expand(B, D))
    _, weights = ours(x, attn_mask=attn_mask, key_padding_mask=padding, need_weights=True)
    assert (weights[1] == 0).all() and (weights[:, :, 2] == 0).all()
    # every other row is still a probability distribution
    live = torch.ones(B, T, dtype=torch.bool)
    live[1] = False
    live[:, 2] = False
    torch.testing.assert_close(weights.sum(-1).permute(0, 2, 1)[live], torch.ones(int(live.sum()), H))


def test_causal_mask_values():
    mask = causal_mask(4)
    assert mask.shape == (4, 4)
    assert torch.isneginf(mask).equal(torch.ones(4, 4, dtype=torch.bool).triu(1))
    assert (mask[~torch.isneginf(mask)] == 0).all()


def test_permutation_equivariance_without_mask():
    ours, _ = make_pair()
    x = torch.randn(B, T, D)
    perm = torch.randperm(T)
    torch.testing.assert_close(ours(x[:, perm])[0], ours(x)[0][:, perm])


def test_docstring_examples_run():
    assert doctest.testmod(attention).failed == 0


def test_parameter_names_follow_torch_and_openai():
    names = dict(MultiheadSelfAttention(D, H).named_parameters())
    assert {n: tuple(p.shape) for n, p in names.items()} == {
        "in_proj_weight": (3 * D, D), "in_proj_bias": (3 * D,), "out_proj.weight": (D, D), "out_proj.bias": (D,)
    }


def test_errors():
    with pytest.raises(ValueError, match="positive multiple of heads"):
        MultiheadSelfAttention(10, 4)
    with pytest.raises(ValueError, match="impl must be one of"):
        MultiheadSelfAttention(D, H, impl="flash")
    module = MultiheadSelfAttention(D, H)
    with pytest.raises(ValueError, match=r"x must be \(B, T, D\) with D = width = 16, got \(7, 16\)"):
        module(torch.randn(T, D))
    with pytest.raises(ValueError, match=r"got \(3, 7, 8\)"):
        module(torch.randn(B, T, 8))
    with pytest.raises(TypeError, match="floating-point"):
        module(torch.zeros(B, T, D, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attn_mask must have shape .* got \(7, 6\)"):
        module(torch.randn(B, T, D), attn_mask=torch.zeros(T, T - 1))
    with pytest.raises(TypeError, match="attn_mask must be a bool tensor"):
        module(torch.randn(B, T, D), attn_mask=torch.zeros(T, T, dtype=torch.long))
    with pytest.raises(ValueError, match=r"key_padding_mask must be \(B, T\) = \(3, 7\)"):
        module(torch.randn(B, T, D), key_padding_mask=torch.zeros(T, B, dtype=torch.bool))

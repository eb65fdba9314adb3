"""minclip.transformer against OpenAI's reference blocks, plus causality and permutation equivariance."""

import doctest

import pytest
import torch

from tests import helpers
import torch.nn.functional as F

from minclip import transformer
from minclip.attention import causal_mask
from minclip.transformer import MLP, QuickGELU, ResidualAttentionBlock, Transformer, make_activation
from tests.references import openai_clip_model

B, T, D, H, L = 2, 6, 32, 4, 2


def randomize_(module, seed=0):
    return helpers.randomize_(module, D, seed)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("causal", [False, True])
def test_equals_openai_transformer(impl, causal):
    ours = randomize_(Transformer(D, L, H, activation="quick_gelu", attn_impl=impl))
    reference = openai_clip_model().Transformer(D, L, H, attn_mask=causal_mask(T) if causal else None)
    reference.load_state_dict(ours.state_dict())  # identical key names and shapes
    x = torch.randn(B, T, D)
    expected = reference(x.transpose(0, 1)).transpose(0, 1)  # OpenAI's blocks are sequence-first (T, B, D)
    torch.testing.assert_close(ours(x, is_causal=causal), expected, rtol=1e-5, atol=1e-5)


def test_block_is_pre_ln_residual():
    block = randomize_(ResidualAttentionBlock(D, H, activation="gelu"))
    x = torch.randn(B, T, D)
    h = x + block.attn(F.layer_norm(x, (D,), block.ln_1.weight, block.ln_1.bias))[0]
    fc = block.mlp.c_fc(F.layer_norm(h, (D,), block.ln_2.weight, block.ln_2.bias))
    expected = h + block.mlp.c_proj(F.gelu(fc))
    torch.testing.assert_close(block(x)[0], expected)
    assert block.mlp.c_fc.out_features == 4 * D


def test_activations():
    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))
    torch.testing.assert_close(make_activation("gelu")(x), F.gelu(x))
    assert (QuickGELU()(x) - F.gelu(x)).abs().max() < 0.03  # an approximation of GELU, not something else
    with pytest.raises(ValueError, match="activation must be one of"):
        MLP(D, activation="relu")


@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_mlp_is_c_proj_of_the_activation_of_c_fc_and_runs_its_activation_module(activation):
    """The MLP is the formula as written, and it calls its `gelu` module: a forward hook on it fires and sees the
    (B, T, 4D) hidden layer."""
    mlp = randomize_(MLP(D, activation))
    x = torch.randn(B, T, D)
    seen = []
    hook = mlp.gelu.register_forward_hook(lambda module, inputs, output: seen.append(output))
    out = mlp(x)
    hook.remove()
    hidden = mlp.c_fc(x)  # (B, T, 4D)
    act = hidden * torch.sigmoid(1.702 * hidden) if activation == "quick_gelu" else F.gelu(hidden)
    torch.testing.assert_close(out, mlp.c_proj(act))
    assert len(seen) == 1 and seen[0].shape == (B, T, 4 * D)
    torch.testing.assert_close(seen[0], act)


def test_attention_maps_per_layer():
    stack = randomize_(Transformer(D, L, H))
    x = torch.randn(B, T, D)
    y, maps = stack(x, is_causal=True, return_attention=True)
    torch.testing.assert_close(y, stack(x, is_causal=True))
    assert len(maps) == L and all(m.shape == (B, H, T, T) for m in maps)
    h = x
    for block, m in zip(stack.resblocks, maps):  # each map is what that layer's attention saw
        _, expected = block.attn(block.ln_1(h), is_causal=True, need_weights=True)
        torch.testing.assert_close(m, expected)
        h = block(h, is_causal=True)[0]
    assert (maps[0].triu(1) == 0).all()  # causal: nothing above the diagonal


def test_causality():
    stack = randomize_(Transformer(D, L, H))
    x = torch.randn(B, T, D)
    x2 = x.clone()
    x2[:, 3:] = torch.randn(B, T - 3, D)  # change the later tokens only
    y, y2 = stack(x, is_causal=True), stack(x2, is_causal=True)
    torch.testing.assert_close(y[:, :3], y2[:, :3])
    assert not torch.allclose(y[:, 3:], y2[:, 3:])


def test_permutation_equivariance_without_positions_or_mask():
    stack = randomize_(Transformer(D, L, H))
    x = torch.randn(B, T, D)
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(stack(x[:, perm]), stack(x)[:, perm])


def test_openai_init_standard_deviations():
    torch.manual_seed(0)
    width, layers = 256, 3
    stack = Transformer(width, layers, heads=4)
    stack.init_openai_()
    block = stack.resblocks[0]
    stds = {
        "in_proj": (block.attn.in_proj_weight, width**-0.5),
        "out_proj": (block.attn.out_proj.weight, width**-0.5 * (2 * layers) ** -0.5),
        "c_fc": (block.mlp.c_fc.weight, (2 * width) ** -0.5),
        "c_proj": (block.mlp.c_proj.weight, width**-0.5 * (2 * layers) ** -0.5),
    }
    for name, (weight, std) in stds.items():
        assert abs(weight.std().item() / std - 1) < 0.02, name
    assert (block.mlp.c_fc.bias == 0).all() and (block.ln_1.weight == 1).all()


def test_docstring_examples_run():
    assert doctest.testmod(transformer).failed == 0

"""minclip.transformer against OpenAI's reference blocks, plus causality and permutation equivariance."""

import doctest

import pytest
import torch
import torch.nn.functional as F

from minclip import transformer
from minclip.attention import causal_mask
from minclip.transformer import MLP, QuickGELU, ResidualAttentionBlock, Transformer, make_activation
from tests.references import openai_clip_model

B, T, D, H, L = 2, 6, 32, 4, 2


def randomize_(module, seed=0):
    """Random values everywhere (LayerNorm gains and biases too), so that no parameter can be silently ignored."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2).add_(1.0 if p.dim() == 1 and p.shape[0] == D else 0.0)
    return module


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


def test_mlp_folds_quick_gelu_into_its_weights():
    """MLP's folded QuickGELU (SiLU between rescaled linear layers) is the literal c_proj(x * sigmoid(1.702 x)) of
    c_fc: the same output and the same gradients for input and parameters (float64, first and second order), and the
    parameters are left as they were (OpenAI's, not rescaled)."""
    torch.manual_seed(0)
    mlp = randomize_(MLP(D)).double()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)

    def literal(x):
        hidden = mlp.c_fc(x)
        return mlp.c_proj(hidden * torch.sigmoid(1.702 * hidden))

    grad = torch.randn(B, T, D, dtype=torch.float64)
    inputs = (x, *mlp.parameters())
    ours = torch.autograd.grad(mlp(x), inputs, grad)
    expected = torch.autograd.grad(literal(x), inputs, grad)
    torch.testing.assert_close(mlp(x), literal(x), rtol=1e-12, atol=1e-12)
    for g, e in zip(ours, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(mlp, (x[:1, :3],))
    for k, v in mlp.state_dict().items():
        assert torch.equal(v, before[k]), k
    # float32: equal to rounding
    mlp32, x32 = mlp.float(), x.detach().float()
    torch.testing.assert_close(mlp32(x32), literal(x32))


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


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_read_positions_equal_the_full_pass_at_those_positions(layers, causal):
    stack = randomize_(Transformer(D, layers, H))
    x = torch.randn(B, T, D, requires_grad=True)
    positions = torch.tensor([T - 1, 2])
    full = stack(x, is_causal=causal)[torch.arange(B), positions]  # (B, D)
    read = stack(x, is_causal=causal, read_positions=positions)
    assert read.shape == (B, D)
    torch.testing.assert_close(read, full, rtol=1e-5, atol=1e-5)
    grad_full = torch.autograd.grad(full.sum(), [x, *stack.parameters()])
    grad_read = torch.autograd.grad(read.sum(), [x, *stack.parameters()])
    for a, b in zip(grad_read, grad_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    _, maps = stack(x, is_causal=causal, return_attention=True, read_positions=positions)
    assert maps[-1].shape == (B, H, 1, T) and all(m.shape == (B, H, T, T) for m in maps[:-1])


def test_read_positions_with_no_blocks_pick_the_tokens():
    x = torch.randn(B, T, D)
    torch.testing.assert_close(Transformer(D, 0, H)(x, read_positions=torch.tensor([1, 4])), x[[0, 1], [1, 4]])

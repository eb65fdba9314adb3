"""minclip.speedups: training's shortcuts give the plain towers' numbers (forward and gradients), and only with
CLIPConfig.fast_path; the plain path stays the one hooks and attention maps see."""

import dataclasses

import pytest
import torch

from tests import helpers

from minclip.attention import MultiheadSelfAttention
from minclip.model import CLIP, CLIPConfig
from minclip.speedups import (FastTextTransformer, FastVisionTransformer, attention_at, mlp_fused,
                              transformer_at)
from minclip.text import TextTransformer
from minclip.transformer import MLP, Transformer
from minclip.vision import VisionTransformer

B, T, D, H = 3, 7, 16, 4


def randomize_(module, seed=0):
    return helpers.randomize_(module, D, seed)


def assert_same_gradients(ours, expected, inputs, rtol=1e-4, atol=1e-5):
    """`ours` and `expected` (outputs of the same shape) have the same gradients for every tensor of `inputs`."""
    grad = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(ours, inputs, grad), torch.autograd.grad(expected, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def test_fused_quick_gelu_is_the_plain_mlp_and_leaves_the_weights_alone():
    """float64, so that only the algebra is compared: silu(a h) / a = h sigmoid(a h), the constants moved through the
    linear layers. Output and gradients (first and second order) match; the parameters are not rescaled in place."""
    mlp = randomize_(MLP(D)).double()
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(mlp_fused(mlp, x), mlp(x), rtol=1e-12, atol=1e-12)
    assert_same_gradients(mlp_fused(mlp, x), mlp(x), (x, *mlp.parameters()), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda x: mlp_fused(mlp, x), (x[:1, :3],))
    for k, v in mlp.state_dict().items():
        assert torch.equal(v, before[k]), k
    mlp32, x32 = mlp.float(), x.detach().float()
    torch.testing.assert_close(mlp_fused(mlp32, x32), mlp32(x32))  # float32: equal to rounding


def test_fused_mlp_runs_other_activations_as_written():
    mlp = randomize_(MLP(D, activation="gelu"))
    x = torch.randn(B, T, D)
    torch.testing.assert_close(mlp_fused(mlp, x), mlp(x), rtol=0, atol=0)




def mask_arguments(name):
    padding = torch.arange(T) > torch.tensor([T - 1, 2, 4])[:, None]  # (B, T): keys after position 6, 2, 4
    return {"none": {}, "causal": {"is_causal": True}, "padding": {"key_padding_mask": padding},
            "padding+causal": {"key_padding_mask": padding, "is_causal": True}}[name]


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("masks", ["none", "causal", "padding", "padding+causal"])
def test_attention_at_one_position_equals_the_full_rows(impl, masks):
    attn = randomize_(MultiheadSelfAttention(D, H, impl=impl))
    kwargs = mask_arguments(masks)
    positions, rows = torch.tensor([T - 1, 0, 3]), torch.arange(B)
    x = torch.randn(B, T, D, requires_grad=True)
    full = attn(x, **kwargs)[0][rows, positions]  # (B, D)
    at = attention_at(attn, x, positions, **kwargs)
    torch.testing.assert_close(at, full, rtol=1e-5, atol=1e-6)
    assert_same_gradients(at, full, (x, *attn.parameters()))


@pytest.mark.parametrize("layers", [0, 1, 3])
@pytest.mark.parametrize("masks", ["none", "causal", "padding"])
def test_transformer_at_equals_the_full_pass_at_those_positions(layers, masks):
    stack = randomize_(Transformer(D, layers, H))
    kwargs = mask_arguments(masks)
    positions, rows = torch.tensor([T - 1, 2, 0]), torch.arange(B)
    x = torch.randn(B, T, D, requires_grad=True)
    full = stack(x, **kwargs)[rows, positions]  # (B, D)
    at = transformer_at(stack, x, positions, **kwargs)
    assert at.shape == (B, D)
    torch.testing.assert_close(at, full, rtol=1e-5, atol=1e-5)
    assert_same_gradients(at, full, (x, *stack.parameters()))


def nano_batch(config, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.zeros(batch, 9, dtype=torch.long)  # shorter than the context, as trimmed batches are
    for row in range(batch):
        n = 1 + row * 2
        tokens[row, 0] = config.sot_token_id
        tokens[row, 1:n + 1] = torch.randint(1, config.vocab_size - 2, (n,), generator=g)
        tokens[row, n + 1] = config.eot_token_id
    return images, tokens


def plain_and_fast(**overrides):
    config = CLIPConfig.preset("nano", **overrides)
    plain = CLIP(config)
    randomize_(plain, seed=3)
    with torch.no_grad():
        plain.logit_scale.fill_(1.0)  # a moderate scale, so the logits compare at the features' precision
    fast = CLIP(dataclasses.replace(config, fast_path=True))
    fast.load_state_dict(plain.state_dict())
    return plain, fast


@pytest.mark.parametrize("overrides", [{}, {"text_pooling": "first"}, {"activation": "gelu", "attn_impl": "sdpa"}])
def test_the_fast_path_gives_the_plain_models_logits_and_gradients(overrides):
    plain, fast = plain_and_fast(**overrides)
    assert type(fast.visual) is FastVisionTransformer and type(fast.text) is FastTextTransformer
    assert type(plain.visual) is VisionTransformer and type(plain.text) is TextTransformer
    images, tokens = nano_batch(plain.config)
    expected, ours = plain(images, tokens)[0], fast(images, tokens)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(expected)
    for (name, a), b in zip(fast.named_parameters(), torch.autograd.grad(expected, list(plain.parameters()), grad)):
        torch.testing.assert_close(torch.autograd.grad(ours, a, grad, retain_graph=True)[0], b, rtol=1e-4,
                                   atol=1e-5, msg=name)


def test_fast_path_is_off_by_default_and_not_part_of_the_architecture():
    config = CLIPConfig.preset("nano")
    assert config.fast_path is False
    fast = dataclasses.replace(config, fast_path=True)
    assert fast == config  # how the model runs, not what it is: a checkpoint fits either
    assert CLIP(fast).state_dict().keys() == CLIP(config).state_dict().keys()
    assert CLIPConfig(**fast.to_dict()).fast_path is True


def test_hooks_fire_on_the_plain_path_and_attention_maps_come_from_it():
    plain, fast = plain_and_fast()
    images, tokens = nano_batch(plain.config)
    for model in (plain, fast):
        fired = []
        hooks = [block.mlp.gelu.register_forward_hook(lambda *args: fired.append(1))
                 for tower in (model.visual, model.text) for block in tower.transformer.resblocks]
        model(images, tokens)
        for hook in hooks:
            hook.remove()
        assert len(fired) == (len(hooks) if model is plain else 0)  # the fused SiLU never calls the module
    for tower, plain_tower, inputs in ((fast.visual, plain.visual, images), (fast.text, plain.text, tokens)):
        features, maps = tower(inputs, return_attention=True)
        expected, expected_maps = plain_tower(inputs, return_attention=True)
        torch.testing.assert_close(features, expected)
        assert [m.shape for m in maps] == [m.shape for m in expected_maps]  # complete (B, H, T, T) maps


def test_the_fast_towers_check_their_inputs():
    _, fast = plain_and_fast()
    with pytest.raises(ValueError, match=r"must be 16x16 \(the configured image_size\)"):
        fast.encode_image(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="have no end-of-text token"):
        fast.encode_text(torch.ones(2, 5, dtype=torch.long))


def test_transformer_at_traces_into_one_graph_under_torch_compile():
    """Nothing in the shortcut reads a tensor's values, so a compiled tower stays one graph."""
    stack = Transformer(D, 2, H)
    x, positions = torch.randn(B, T, D), torch.tensor([0, 3, T - 1])
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(transformer_at)(stack, x, positions, is_causal=True)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

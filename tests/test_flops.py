"""minclip.flops: the analytic matmul count against PyTorch's FlopCounterMode and a hand count; the peak probe."""

import doctest

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from minclip import flops
from minclip.flops import matmul_flops, matmul_peak
from minclip.model import CLIP, CLIPConfig
from tests import helpers
from minclip.train import train_step

# The manual attention path: FlopCounterMode has no formula for the CPU's fused attention kernel (it counts 0).
SMALL = dict(embed_dim=24, image_size=12, patch_size=4, vision_width=16, vision_layers=1, vision_heads=2,
             vocab_size=50, context_length=7, text_width=8, text_layers=2, text_heads=2, attn_impl="manual",
             fast_path=True)


batch = helpers.random_batch


def test_matmul_flops_by_hand():
    """One config counted term by term: B=2, 9 patches of 3*4*4 values, 10 image tokens of width 16 (1 block), 7 text
    tokens of width 8 (2 blocks), embedding 24. A tower's last block computes only its pooled token (1 query)."""
    config, B = CLIPConfig(**SMALL), 2
    patches = 2 * B * 9 * 48 * 16
    # q of 1 token, k and v of 10, scores and weighted sum of 1 query, output projection and MLP of 1 token
    image_last = 2 * B * 16 * 16 + 2 * B * 10 * 16 * 32 + 2 * 2 * B * 10 * 16 + 2 * B * 16 * 16 + 2 * 2 * B * 16 * 64
    text_block = 2 * B * 7 * 8 * 24 + 2 * 2 * B * 7 * 7 * 8 + 2 * B * 7 * 8 * 8 + 2 * 2 * B * 7 * 8 * 32
    text_last = 2 * B * 8 * 8 + 2 * B * 7 * 8 * 16 + 2 * 2 * B * 7 * 8 + 2 * B * 8 * 8 + 2 * 2 * B * 8 * 32
    heads_and_logits = 2 * B * 16 * 24 + 2 * B * 8 * 24 + 2 * B * B * 24
    forward = patches + image_last + text_block + text_last + heads_and_logits
    assert matmul_flops(config, B, training=False) == forward == 93_376
    assert matmul_flops(config, B) == 3 * forward - patches  # the images need no gradient


@pytest.mark.parametrize("overrides, length", [({}, 7), ({}, 3), ({"vision_layers": 2, "text_heads": 1}, 5),
                                               ({"fast_path": False}, 7)])
def test_matmul_flops_equal_flop_counter_on_a_forward_pass(overrides, length):
    config = CLIPConfig(**{**SMALL, **overrides})
    model = CLIP(config)
    images, tokens = batch(config, 5, length)
    with FlopCounterMode(display=False) as counter:
        model(images, tokens)
    assert matmul_flops(config, 5, training=False, text_length=length) == counter.get_total_flops()


def test_matmul_flops_equal_flop_counter_on_a_training_step():
    config = CLIPConfig.preset("nano", attn_impl="manual")
    model = CLIP(config)
    optimizer = torch.optim.AdamW(model.parameters())
    images, tokens = batch(config, 6, 9)
    with FlopCounterMode(display=False) as counter:
        train_step(model, images, tokens, optimizer, grad_clip=1.0)
    assert matmul_flops(config, 6, training=True, text_length=9) == counter.get_total_flops()


def test_matmul_flops_errors():
    with pytest.raises(ValueError, match="counts ViT models"):
        matmul_flops(CLIPConfig.preset("nano", image_encoder="resnet"), 4)
    with pytest.raises(ValueError, match=r"text_length must be in 1..context_length=32, got 33"):
        matmul_flops(CLIPConfig.preset("nano"), 4, text_length=33)


def test_matmul_peak_reuses_its_operands():
    cpu = torch.device("cpu")
    assert matmul_peak(cpu, size=64, repeats=1) > 0
    assert flops._probe_operands(cpu, torch.float32, 64)[0] is flops._probe_operands(cpu, torch.float32, 64)[0]


def test_docstring_examples():
    assert doctest.testmod(flops).failed == 0

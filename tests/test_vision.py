"""minclip.vision: patchify three ways, the ViT against OpenAI's, permutation invariance, the ResNet, input checks."""

import doctest

import pytest
import torch
import torch.nn.functional as F

from minclip import vision
from minclip.vision import BasicBlock, ResNetEncoder, VisionTransformer, check_images, patch_embed_unfold, patchify
from tests.references import openai_clip_model

IMAGE, PATCH, WIDTH, EMBED = 16, 4, 32, 8


def make_vit(heads=4, impl="manual", seed=0):
    torch.manual_seed(seed)
    vit = VisionTransformer(IMAGE, PATCH, WIDTH, layers=2, heads=heads, embed_dim=EMBED, attn_impl=impl)
    with torch.no_grad():  # LayerNorms away from the identity, so a missing one would show
        for norm in (vit.ln_pre, vit.ln_post):
            norm.weight.normal_(1, 0.2)
            norm.bias.normal_(0, 0.2)
    return vit


def test_patchify_equals_unfold_and_conv():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 12, 8)
    conv = torch.nn.Conv2d(3, 5, kernel_size=4, stride=4, bias=False)
    torch.testing.assert_close(patchify(images, 4), F.unfold(images, kernel_size=4, stride=4).transpose(1, 2))
    expected = conv(images).flatten(2).transpose(1, 2)  # (B, D, 3, 2) -> (B, 6, D)
    torch.testing.assert_close(patch_embed_unfold(images, conv.weight), expected)
    assert torch.equal(patchify(images, 4)[0, 1], images[0, :, 0:4, 4:8].flatten())  # row-major: 2nd patch is top-right


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
@pytest.mark.parametrize("heads", [1, 4])
def test_equals_openai_vision_transformer(impl, heads):
    ours = make_vit(heads, impl)
    reference = openai_clip_model().VisionTransformer(IMAGE, PATCH, WIDTH, layers=2, heads=heads, output_dim=EMBED)
    reference.load_state_dict(ours.state_dict())  # the same names: conv1, class_embedding, ..., proj
    images = torch.randn(3, 3, IMAGE, IMAGE)
    torch.testing.assert_close(ours(images), reference(images), rtol=1e-5, atol=1e-6)


def test_without_positions_the_class_token_ignores_patch_order():
    vit = make_vit()
    images = torch.randn(2, 3, IMAGE, IMAGE)
    grid = IMAGE // PATCH
    cells = images.reshape(2, 3, grid, PATCH, grid, PATCH)  # (B, C, rows, P, cols, P)
    shuffled = cells.flip(2).transpose(2, 4).reshape(2, 3, IMAGE, IMAGE)  # move whole patches, keep their content
    assert not torch.allclose(vit(shuffled), vit(images), atol=1e-4)  # positions make order matter ...
    with torch.no_grad():
        vit.positional_embedding.zero_()
    torch.testing.assert_close(vit(shuffled), vit(images))  # ... without them the patches are an unordered set


def test_attention_maps_include_the_class_token():
    vit = make_vit()
    images = torch.randn(2, 3, IMAGE, IMAGE)
    features, maps = vit(images, return_attention=True)
    tokens = (IMAGE // PATCH) ** 2 + 1
    assert features.shape == (2, EMBED) and len(maps) == 2 and maps[0].shape == (2, 4, tokens, tokens)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, tokens))
    # with maps, the last block runs for every token; without, for the class token alone: the same features
    torch.testing.assert_close(vit(images), features, rtol=1e-5, atol=1e-6)


def test_half_precision_input_is_cast_to_the_weights_dtype():
    vit = make_vit()
    images = torch.randn(2, 3, IMAGE, IMAGE)
    torch.testing.assert_close(vit(images.half()), vit(images.half().float()))


def test_basic_block_starts_as_identity_and_downsamples():
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(BasicBlock(8, 8)(x), F.relu(x))  # zero-initialised bn2 gain: branch adds nothing
    assert BasicBlock(8, 16, stride=2)(x).shape == (2, 16, 3, 3)


def test_resnet_encoder_shapes_gradients_and_batch_independence_in_eval():
    torch.manual_seed(0)
    encoder = ResNetEncoder(IMAGE, width=8, layers=(1, 2, 1), embed_dim=EMBED)
    images = torch.randn(4, 3, IMAGE, IMAGE)
    features = encoder(images)
    assert features.shape == (4, EMBED)
    features.square().sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    assert encoder.stages[2][0].conv1.stride == (2, 2) and encoder.proj.shape == (32, EMBED)
    encoder.eval()  # running statistics: a sample's features no longer depend on the rest of the batch
    torch.testing.assert_close(encoder(images[:1]), encoder(images)[:1])


def test_image_errors():
    with pytest.raises(TypeError, match="images must be a float tensor"):
        check_images([[0.0]], 16)
    with pytest.raises(TypeError, match=r"floating point.*got dtype torch.uint8.*to_model_input"):
        check_images(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), 16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with 3 colour channels, got \(2, 1, 16, 16\)"):
        check_images(torch.zeros(2, 1, 16, 16), 16)
    with pytest.raises(ValueError, match=r"got \(2, 16, 16, 3\); channels-last input\? use images.permute"):
        check_images(torch.zeros(2, 16, 16, 3), 16)
    with pytest.raises(ValueError, match=r"got \(3, 16, 16\); for a single image use images\[None\]"):
        check_images(torch.zeros(3, 16, 16), 16)
    with pytest.raises(ValueError, match=r"must be 16x16 \(the configured image_size\), got \(2, 3, 32, 32\)"):
        check_images(torch.zeros(2, 3, 32, 32), 16)
    with pytest.raises(ValueError, match="must be 16x16"):
        ResNetEncoder(16, 8, (1,), EMBED)(torch.zeros(1, 3, 8, 8))


def test_docstring_examples_run():
    assert doctest.testmod(vision).failed == 0

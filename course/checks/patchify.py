"""Checks for course/exercises/patchify.py against minclip/vision.py."""

import torch

from minclip.vision import VisionTransformer, patch_embed_unfold, patchify

from .base import Exercise, Wrong, call, expect_close, expect_gradients_flow, function, generator

EXERCISE = Exercise(
    name="patchify",
    title="The ViT's input: cut images into patches, embed them, prepend the class token, add positions",
    lesson="04_vision_transformer",
    reference="minclip/vision.py",
    functions=("patchify", "patch_embed", "vit_tokens"),
)

ORDER_HINT = ("reshape (B, C, H, W) -> (B, C, H/P, P, W/P, P), permute to (B, H/P, W/P, C, P, P), reshape to "
              "(B, N, C*P*P): patches row by row, and inside a patch channel, then row, then column")


@EXERCISE.check(ORDER_HINT)
def patchify_worked_example(learner):
    """the 4x4 image 0..15 in 2x2 patches gives [[0,1,4,5], [2,3,6,7], [8,9,12,13], [10,11,14,15]]"""
    image = torch.arange(16.0).view(1, 1, 4, 4)
    expect_close(call(function(learner, "patchify"), image, 2), patchify(image, 2), "patchify(arange(16) as 4x4, 2)")


@EXERCISE.check(ORDER_HINT + ". Keep the channels of one patch together: permuting C after the grid dims is what "
                "makes a patch's values follow conv1.weight's (C, P, P) order")
def patchify_rgb_batch(learner):
    """RGB batch (2, 3, 8, 8) in 4x4 patches equals minclip's patchify"""
    images = torch.randn(2, 3, 8, 8, generator=generator(0))
    expect_close(call(function(learner, "patchify"), images, 4), patchify(images, 4), "patchify (2, 3, 8, 8), P=4")


@EXERCISE.check("H and W differ here: the grid has H/P rows and W/P columns, and patches are listed row by row. "
                "Take H and W from images.shape, never assume a square")
def patchify_non_square(learner):
    """a non-square image (1, 3, 8, 12) in 4x4 patches: 2 rows of 3 patches"""
    images = torch.randn(1, 3, 8, 12, generator=generator(1))
    answer = call(function(learner, "patchify"), images, 4)
    if isinstance(answer, torch.Tensor) and answer.shape == (1, 6, 48):
        transposed = patchify(images.transpose(2, 3), 4)  # the patches listed column by column
        if torch.equal(answer, transposed.view_as(answer)):
            raise Wrong("your patches are listed column by column (or H and W are swapped)")
    expect_close(answer, patchify(images, 4), "patchify (1, 3, 8, 12), P=4")


@EXERCISE.check("patchify only rearranges values, so use reshape/permute/unfold: no loops that copy numbers, no "
                ".detach() or .numpy()")
def patchify_gradients_float64(learner):
    """in float64, the gradient flows back through patchify to the pixels unchanged in value"""
    images = torch.randn(2, 1, 6, 4, generator=generator(2), dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 6, 4, generator=generator(3), dtype=torch.float64)
    out = call(function(learner, "patchify"), images, 2)
    expect_close(out, patchify(images.detach(), 2), "patchify (float64)")
    (out * upstream).sum().backward()
    expect_gradients_flow({"images": images}, "patchify")
    reference = images.detach().clone().requires_grad_()
    (patchify(reference, 2) * upstream).sum().backward()
    expect_close(images.grad, reference.grad, "the gradient with respect to the images")


@EXERCISE.check("flatten the weight (D, C, P, P) -> (D, C*P*P) and multiply: patchify(images, P) @ W.T. P is "
                "conv_weight.shape[-1]")
def patch_embed_equals_convolution(learner):
    """patch_embed equals the ViT's conv1 (kernel = stride = P) on (2, 3, 6, 4) images, D=5, P=2"""
    images = torch.randn(2, 3, 6, 4, generator=generator(4))
    weight = torch.randn(5, 3, 2, 2, generator=generator(5))
    expected = patch_embed_unfold(images, weight)  # (2, 6, 5); minclip's tests show it equals conv1
    expect_close(call(function(learner, "patch_embed"), images, weight), expected, "patch_embed",
                 rtol=1e-4, atol=1e-5)


def _vit_and_tokens(seed, images):
    """A small random ViT, its (conv1 weight, class embedding, positions) and the tokens it feeds to ln_pre."""
    torch.manual_seed(seed)  # inside the grader's fork_rng: the learner's global seed is untouched
    vit = VisionTransformer(image_size=8, patch_size=4, width=6, layers=1, heads=2, embed_dim=4)
    captured = []
    hook = vit.ln_pre.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            vit(images)
    finally:
        hook.remove()
    parameters = [vit.conv1.weight.detach(), vit.class_embedding.detach(), vit.positional_embedding.detach()]
    return parameters, captured[0]  # captured: (B, 1 + N, D)


@EXERCISE.check("embed the patches, put the class embedding in front of them as token 0 (expand it to (B, 1, D) and "
                "torch.cat along dim 1), then add the (1 + N, D) positional embedding to every image")
def vit_tokens_match_minclip(learner):
    """vit_tokens equals the tokens minclip's VisionTransformer feeds to ln_pre (class token first, positions added)"""
    images = torch.randn(3, 3, 8, 8, generator=generator(7))
    parameters, expected = _vit_and_tokens(6, images)
    answer = call(function(learner, "vit_tokens"), images, *parameters)
    if isinstance(answer, torch.Tensor) and answer.shape == expected.shape:
        _, class_embedding, positions = parameters
        is_class = torch.isclose(answer - positions, class_embedding, atol=1e-5).all(dim=-1).all(dim=0)  # (1 + N,)
        if not is_class[0] and is_class.any():
            raise Wrong(f"your class token is token {is_class.nonzero()[0].item()}; CLIP puts it first (index 0), "
                        "where ln_post reads it")
    expect_close(answer, expected, "vit_tokens (3 images, 2x2 patches, width 6)", rtol=1e-4, atol=1e-5)


@EXERCISE.check("with one image the class embedding must still become (1, 1, D): use .expand(B, 1, -1) with B taken "
                "from the images, not a fixed size")
def vit_tokens_batch_of_one(learner):
    """vit_tokens with a single image (1, 3, 8, 8)"""
    images = torch.randn(1, 3, 8, 8, generator=generator(9))
    parameters, expected = _vit_and_tokens(8, images)
    answer = call(function(learner, "vit_tokens"), images, *parameters)
    expect_close(answer, expected, "vit_tokens (1 image)", rtol=1e-4, atol=1e-5)

"""Checks for course/exercises/attention.py against minclip/attention.py."""

import torch

from minclip.attention import MultiheadSelfAttention, causal_mask, scaled_dot_product_attention

from .base import Exercise, Wrong, call, expect_close, expect_gradients_flow, function, generator

EXERCISE = Exercise(
    name="attention",
    title="Multi-head self-attention by hand: scaled dot products, masks, splitting and merging heads",
    lesson="01_attention",
    reference="minclip/attention.py",
    functions=("scaled_dot_product_attention", "split_heads", "merge_heads", "multi_head_self_attention"),
)

SDPA_HINT = ("scores = q @ k.transpose(-2, -1) / sqrt(d) with d = q.shape[-1]; add the mask; softmax over the last "
             "dim (the keys); out = weights @ v; return (out, weights)")


def _qkv(seed, B, H, Tq, Tk, d, dtype=torch.float32):
    g = generator(seed)
    return (torch.randn(B, H, Tq, d, generator=g, dtype=dtype), torch.randn(B, H, Tk, d, generator=g, dtype=dtype),
            torch.randn(B, H, Tk, d, generator=g, dtype=dtype))


def _attend(learner, q, k, v, mask):
    """The learner's ``(out, weights)``, after checking that a pair came back."""
    answer = call(function(learner, "scaled_dot_product_attention"), q, k, v, mask)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise Wrong(f"scaled_dot_product_attention should return a pair (out, weights), got "
                    f"{type(answer).__name__}", "end with `return out, weights`")
    return answer


def _expect_attention(learner, q, k, v, mask, case: str):
    expected_out, expected_weights = scaled_dot_product_attention(q, k, v, mask)
    out, weights = _attend(learner, q, k, v, mask)
    expect_close(weights, expected_weights, f"weights ({case})")
    expect_close(out, expected_out, f"out ({case})")


@EXERCISE.check(SDPA_HINT)
def sdpa_no_mask(learner):
    """scaled_dot_product_attention equals minclip's on random (B=2, H=3, T=5, d=4) inputs without a mask"""
    q, k, v = _qkv(0, 2, 3, 5, 5, 4)
    expected_out, expected_weights = scaled_dot_product_attention(q, k, v)
    out, weights = _attend(learner, q, k, v, None)
    if isinstance(weights, torch.Tensor) and weights.shape == expected_weights.shape:
        unscaled = torch.softmax(q @ k.transpose(-2, -1), dim=-1)
        if torch.allclose(weights, unscaled, atol=1e-6):
            raise Wrong("your weights are softmax(q @ k.T) without the 1 / sqrt(d) scaling",
                        "divide the scores by sqrt(d) before the softmax (d = q.shape[-1], the head size): it keeps "
                        "their variance near 1 so the softmax does not saturate")
        over_queries = torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-2)
        if torch.allclose(weights, over_queries, atol=1e-6):
            raise Wrong("your softmax normalises over the queries (dim=-2): each column sums to 1, not each row",
                        "softmax over dim=-1: every query distributes its attention over the keys")
    expect_close(weights, expected_weights, "weights")
    expect_close(out, expected_out, "out")


@EXERCISE.check("the scores are (..., T_queries, T_keys): transpose only the last two dims of k "
                "(k.transpose(-2, -1), not k.T), and take the softmax over the keys (dim=-1)")
def sdpa_more_keys_than_queries(learner):
    """non-square scores: 3 queries attend over 6 keys (batch of 1, one head)"""
    q, k, v = _qkv(1, 1, 1, 3, 6, 8)
    _expect_attention(learner, q, k, v, None, "3 queries, 6 keys")


@EXERCISE.check("add the mask to the scores *before* the softmax: exp(-inf) = 0 gives blocked keys zero weight; "
                "the (T, T) mask broadcasts over batch and heads")
def sdpa_causal_mask(learner):
    """with minclip's causal mask (T, T): no query sees a later key"""
    q, k, v = _qkv(2, 2, 2, 6, 6, 4)
    _expect_attention(learner, q, k, v, causal_mask(6), "causal mask")


@EXERCISE.check("a key-padding mask (B, 1, 1, T) blocks different keys in each batch row; it broadcasts like any "
                "other additive mask")
def sdpa_padding_mask(learner):
    """with a per-row padding mask (B, 1, 1, T): the last keys of some rows are blocked"""
    q, k, v = _qkv(3, 3, 2, 5, 5, 4)
    mask = torch.zeros(3, 1, 1, 5)
    mask[0, ..., 3:] = float("-inf")  # row 0: the last two keys are padding
    mask[2, ..., 1:] = float("-inf")  # row 2: only key 0 is real
    _expect_attention(learner, q, k, v, mask, "padding mask")


@EXERCISE.check("softmax over a row where every score is -inf is 0 / 0 = NaN. Find such rows with "
                "torch.isneginf(mask).all(dim=-1, keepdim=True), give them finite scores before the softmax, then "
                "set their weights to 0 with masked_fill")
def sdpa_fully_masked_row(learner):
    """a query whose keys are all blocked gets all-zero weights and output, not NaN"""
    q, k, v = _qkv(4, 2, 1, 4, 4, 4)
    mask = causal_mask(4).expand(2, 1, 4, 4).clone()
    mask[1, 0, 2, :] = float("-inf")  # batch row 1, query 2: nothing to attend to
    _expect_attention(learner, q, k, v, mask, "one query with every key blocked")


@EXERCISE.check("use only differentiable torch operations: no .detach(), .item(), .numpy() or in-place writes into "
                "tensors that need gradients")
def sdpa_gradients_float64(learner):
    """in float64, gradients with respect to q, k and v equal minclip's"""
    inputs = [t.requires_grad_() for t in _qkv(5, 2, 2, 4, 5, 3, dtype=torch.float64)]
    mask = torch.zeros(4, 5, dtype=torch.float64)
    mask[0, 3:] = float("-inf")
    upstream = torch.randn(2, 2, 4, 3, generator=generator(6), dtype=torch.float64)
    expected_out, _ = scaled_dot_product_attention(*inputs, mask)
    expected = torch.autograd.grad((expected_out * upstream).sum(), inputs)
    out, _ = _attend(learner, *inputs, mask)
    expect_close(out, expected_out, "out (float64)")
    (out * upstream).sum().backward()
    expect_gradients_flow(dict(zip(("q", "k", "v"), inputs)), "scaled_dot_product_attention")
    for name, tensor, grad in zip(("q", "k", "v"), inputs, expected):
        expect_close(tensor.grad, grad, f"the gradient with respect to {name}")


def _split_reference(x, heads):
    """Head h owns channels [h * d, (h + 1) * d) of every token."""
    return torch.stack(x.chunk(heads, dim=-1), dim=1)  # (B, H, T, d)


@EXERCISE.check("view (B, T, D) as (B, T, H, d), then swap the T and H dims: head h gets channels h*d .. (h+1)*d - 1 "
                "of every token. A plain .view(B, H, T, d) mixes tokens into heads")
def split_heads_layout(learner):
    """split_heads: (B=2, T=5, D=12) with 3 heads -> (2, 3, 5, 4), head h holding channels 4h .. 4h+3"""
    x = torch.randn(2, 5, 12, generator=generator(7))
    expect_close(call(function(learner, "split_heads"), x, 3), _split_reference(x, 3), "split_heads(x, 3)")


@EXERCISE.check("undo split_heads: swap H and T back, then reshape (B, T, H, d) -> (B, T, H * d). After a transpose "
                "the tensor is not contiguous, so use .reshape (or .contiguous().view)")
def merge_heads_inverts_split(learner):
    """merge_heads: (B=1, H=4, T=3, d=2) -> (1, 3, 8), the exact inverse of splitting"""
    x = torch.randn(1, 3, 8, generator=generator(8))
    expect_close(call(function(learner, "merge_heads"), _split_reference(x, 4)), x, "merge_heads(split x)")


def _module_and_weights(seed, width, heads, dtype=torch.float32):
    torch.manual_seed(seed)  # inside the grader's fork_rng: the learner's global seed is untouched
    module = MultiheadSelfAttention(width, heads).to(dtype)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)  # non-zero biases, so a mixed-up bias shows
    weights = dict(in_proj_weight=module.in_proj_weight.detach().clone(),
                   in_proj_bias=module.in_proj_bias.detach().clone(),
                   out_proj_weight=module.out_proj.weight.detach().clone(),
                   out_proj_bias=module.out_proj.bias.detach().clone())
    return module, weights


MHA_HINT = ("qkv = x @ in_proj_weight.T + in_proj_bias is (B, T, 3D); its three D-wide slices are q, k and v in that "
            "order. Split each into heads, attend, merge, then out = merged @ out_proj_weight.T + out_proj_bias")


@EXERCISE.check(MHA_HINT)
def multi_head_matches_minclip(learner):
    """multi_head_self_attention equals minclip's MultiheadSelfAttention (causal mask, B=2, T=7, D=16, 4 heads)"""
    module, weights = _module_and_weights(9, 16, 4)
    x = torch.randn(2, 7, 16, generator=generator(10))
    mask = causal_mask(7)
    with torch.no_grad():
        expected, _ = module(x, attn_mask=mask)
    out = call(function(learner, "multi_head_self_attention"), x, heads=4, mask=mask, **weights)
    expect_close(out, expected, "multi_head_self_attention(x, causal mask)")


@EXERCISE.check(MHA_HINT + ". With mask=None there is nothing to add")
def multi_head_batch_of_one_no_mask(learner):
    """batch of 1, no mask, one head (the head is the whole width)"""
    module, weights = _module_and_weights(11, 6, 1)
    x = torch.randn(1, 4, 6, generator=generator(12))
    with torch.no_grad():
        expected, _ = module(x)
    out = call(function(learner, "multi_head_self_attention"), x, heads=1, mask=None, **weights)
    expect_close(out, expected, "multi_head_self_attention(x) with B=1, one head")


@EXERCISE.check("use only differentiable torch operations on x and on the weights; slice q, k, v out of the "
                "projection with indexing or .chunk(3, dim=-1), never by copying numbers")
def multi_head_gradients_float64(learner):
    """in float64, gradients with respect to x and to every weight equal minclip's"""
    module, weights = _module_and_weights(13, 8, 2, torch.float64)
    x = torch.randn(2, 5, 8, generator=generator(14), dtype=torch.float64)
    upstream = torch.randn(2, 5, 8, generator=generator(15), dtype=torch.float64)
    expected_x = x.clone().requires_grad_()
    expected_out, _ = module(expected_x, attn_mask=causal_mask(5, dtype=torch.float64))
    (expected_out * upstream).sum().backward()
    expected = {"x": expected_x.grad, "in_proj_weight": module.in_proj_weight.grad,
                "in_proj_bias": module.in_proj_bias.grad, "out_proj_weight": module.out_proj.weight.grad,
                "out_proj_bias": module.out_proj.bias.grad}
    x.requires_grad_()
    for tensor in weights.values():
        tensor.requires_grad_()
    out = call(function(learner, "multi_head_self_attention"), x, heads=2, mask=causal_mask(5, dtype=torch.float64),
               **weights)
    expect_close(out, expected_out, "multi_head_self_attention (float64)")
    (out * upstream).sum().backward()
    inputs = {"x": x, **weights}
    expect_gradients_flow(inputs, "multi_head_self_attention")
    for name, tensor in inputs.items():
        expect_close(tensor.grad, expected[name], f"the gradient with respect to {name}")

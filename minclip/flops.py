"""Counting a CLIP's arithmetic and measuring the machine's: the matrix-product FLOPs of a ViT CLIP's forward pass or
training step (:func:`matmul_flops`), and the GFLOP/s of one large square product (:func:`matmul_peak`), the ceiling
a model's products aim at. Lesson 11 uses both to ask how much of the machine a training step uses.

How it fits: beside the model (it reads a :class:`minclip.model.CLIPConfig`); the benchmark
(``benchmarks/bench.py``) builds its pairs/s and share-of-peak figures on these two.
"""

from __future__ import annotations

import functools
import time

import torch

from .model import CLIPConfig


def matmul_flops(config: CLIPConfig, batch: int, training: bool = True, text_length: int | None = None) -> int:
    """Floating-point operations of the matrix products in one forward pass (or one training step) of a ViT CLIP.

    A product ``(m, k) @ (k, n)`` costs ``2 m k n`` (a multiply and an add per term). With ``B`` pairs, ``N`` image
    patches of ``P x P`` pixels, ``T`` tokens in a tower of width ``D`` (``T = N + 1`` in the image tower, with the
    class token; ``T = text_length`` in the text tower) and embedding size ``E``, a forward pass costs::

        patch embedding   2 B N (3 P^2) D         conv1 is one matrix product per patch
        per block         2 B T D (3D)            q, k and v
                          2 B T T D  (twice)      scores q k^T and weights @ v: H heads of D/H channels each
                          2 B T D D               output projection
                          2 B T D (4D)  (twice)   the MLP, D -> 4D -> D
        last block        the same with 1 query   with ``config.fast_path`` (``minclip/speedups.py``, what training
                          (T' = 1) except k, v    runs): q, scores, weighted sum, output projection and MLP for
                                                  the pooled token alone
        projections       2 B D E  (per tower)    the pooled token only (class token, end-of-text token)
        logits            2 B B E                 every image against every text

    A training step adds the backward pass: two products per forward product (the gradient of its input and that of
    its weight), except the patch embedding, whose input (the images) needs no gradient. Element-wise work
    (LayerNorm, softmax, the activation, the optimiser) is left out: the count measures how busy the matrix units
    are. ``text_length`` defaults to ``config.context_length``; training trims batches to their longest caption.

        >>> config = CLIPConfig.preset("tiny", fast_path=True)   # as training builds it
        >>> round(matmul_flops(config, batch=128) / 1e9, 1)    # GFLOP, training step, batch 128, 32 text tokens
        25.3
        >>> round(matmul_flops(config, batch=128, text_length=20) / 1e9, 1)   # a batch trimmed to 20 tokens
        19.2
    """
    if config.image_encoder != "vit":
        raise ValueError("matmul_flops counts ViT models; this config's image_encoder is "
                         f"{config.image_encoder!r}")
    T_text = config.context_length if text_length is None else text_length
    if not 1 <= T_text <= config.context_length:
        raise ValueError(f"text_length must be in 1..context_length={config.context_length}, got {text_length}")

    def block(queries: int, tokens: int, width: int) -> int:  # `queries` of the `tokens` positions are computed
        return (2 * queries * width * width + 2 * tokens * width * (2 * width)  # q; k and v
                + 2 * (2 * queries * tokens * width)  # scores and weighted sum
                + 2 * queries * width * width + 2 * (2 * queries * width * 4 * width))  # out projection; MLP

    def tower(tokens: int, width: int, layers: int) -> int:  # fast_path: the last block computes the read token only
        read = 1 if config.fast_path else tokens
        return batch * ((layers - 1) * block(tokens, tokens, width) + block(read, tokens, width)) if layers else 0

    patches = (config.image_size // config.patch_size) ** 2
    patch_embedding = 2 * batch * patches * (3 * config.patch_size**2) * config.vision_width
    forward_rest = (tower(patches + 1, config.vision_width, config.vision_layers)
                    + tower(T_text, config.text_width, config.text_layers)
                    + 2 * batch * (config.vision_width + config.text_width) * config.embed_dim
                    + 2 * batch * batch * config.embed_dim)
    if not training:
        return patch_embedding + forward_rest
    return 2 * patch_embedding + 3 * forward_rest


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None,
                repeats: int = 5, clock=time.perf_counter) -> float:
    """GFLOP/s of one large square matrix product (best of ``repeats``): the ceiling the model's products aim at.

    The operands and the output are made once per (device, dtype, size) and kept, so probing between training steps
    allocates nothing (and adds nothing to the peak memory measured around those steps)."""
    size = size or (2048 if device.type == "cpu" else 8192)  # large enough to keep a CPU's matrix units busy
    a, b, out = _probe_operands(device, dtype, size)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        torch.matmul(a, b, out=out)
        synchronize(device)
        best = min(best, clock() - start)
    return 2 * size**3 / best / 1e9


@functools.lru_cache(maxsize=2)
def _probe_operands(device: torch.device, dtype: torch.dtype, size: int) -> tuple[torch.Tensor, ...]:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = a @ b  # warm-up: thread pools, GPU clocks, cuBLAS heuristics
    return a, b, out




def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it includes that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

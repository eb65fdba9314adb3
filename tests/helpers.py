"""Small helpers shared by the model tests."""

import torch


def randomize_(module, width: int, seed: int = 0):
    """Random values everywhere, LayerNorm gains (the 1-d parameters of size `width`) near 1 and biases too, so that
    no parameter can be silently ignored by a test."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2).add_(1.0 if p.dim() == 1 and p.shape[0] == width else 0.0)
    return module

"""Small helpers shared by the model, FLOP-count and benchmark tests."""

import torch


def randomize_(module, width: int, seed: int = 0):
    """Random values everywhere, LayerNorm gains (the 1-d parameters of size `width`) near 1 and biases too, so that
    no parameter can be silently ignored by a test."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2).add_(1.0 if p.dim() == 1 and p.shape[0] == width else 0.0)
    return module


def random_batch(config, size: int, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images ``(size, 3, S, S)`` and tokens ``(size, length)`` for `config`, each row ending at end-of-text."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.randint(1, config.vocab_size - 2, (size, length), generator=g)
    tokens[:, -1] = config.eot_token_id
    return images, tokens

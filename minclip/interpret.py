"""Looking inside a trained CLIP: attention rollout, principal components, and an order-blind text baseline.

Three tools for notebook 09, each small enough to check by hand:

* :func:`attention_rollout` (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers"). One layer's
  attention map says which tokens a token read *in that layer*, but after the first layer a token is already a mix of
  others, so single maps say little about the input. Rollout follows the mixing through the stack: average the heads,
  add the residual connection as an identity (``0.5 * A + 0.5 * I``: half the signal skips the attention), renormalise
  the rows, and multiply the layers, ``R = A_L @ ... @ A_2 @ A_1``. Row ``i`` of ``R`` is a distribution over the
  input tokens: how much of token ``i``'s final state traces back to each of them. For a ViT, row 0 (the class token,
  whose state becomes the image feature) over the patch columns is the familiar heatmap. It is an attribution
  *heuristic*: it ignores the values, the MLPs and the LayerNorms, and it tells which patches were read, not why.
* :func:`pca`: principal component analysis by the singular value decomposition of the centred data (Pearson, 1901;
  Hotelling, 1933). ``X - mean = U S V^T``; the rows of ``V^T`` are the principal directions, ``U S`` the coordinates,
  and ``S^2 / sum(S^2)`` the share of the total variance each direction explains. Used to draw CLIP's embedding space
  in two dimensions, e.g. to look for a gap between image and text features (Liang et al., 2022, "Mind the Gap").
* :class:`BagOfWordsText`: a text encoder that sees only *which* tokens a caption has and how often, never their order:
  the mean of the token embeddings, a residual MLP, a projection (the text tower with positions and attention
  removed). A caption and its word-swapped foil ("a red circle above a blue square" / "a blue circle above a red
  square") have the same tokens, so they get the same features, bit for bit, and the binding test of
  ``minclip.shapes`` cannot be passed by such a model (Yuksekgonul et al., 2023, "When and why vision-language models
  behave like bags-of-words"). :func:`with_bag_of_words_text` puts one into a copy of a CLIP model.

How it fits: everything here reads what the towers already expose (``return_attention=True`` in ``minclip.vision``
and ``minclip.text`` returns one ``(B, H, T, T)`` map per layer) or features from ``minclip.evaluate``; nothing else
in the package imports this file. Torch only (and minclip's model, text and transformer modules).
"""

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .model import CLIP
from .text import first_eot_index
from .transformer import MLP

HEAD_FUSIONS = ("mean", "max")


# ---------------------------------------------------------------------------------------------------------------------
# Attention rollout


def _check_maps(maps) -> list[torch.Tensor]:
    if isinstance(maps, torch.Tensor):
        raise TypeError("maps must be a list with one (B, H, T, T) tensor per layer, got a single tensor; pass "
                        "[attention] for one layer, or the list returned with return_attention=True")
    if not isinstance(maps, Sequence) or len(maps) == 0:
        raise ValueError(f"maps must be a non-empty list of (B, H, T, T) attention maps, one per layer, got {maps!r}")
    for layer, attention in enumerate(maps):
        if not isinstance(attention, torch.Tensor):
            raise TypeError(f"maps[{layer}] is {type(attention).__name__}, not a tensor; get the maps with "
                            "model.visual(images, return_attention=True) or model.text(tokens, return_attention=True)")
        if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
            raise ValueError(f"each attention map must be (B, H, T, T) (batch, heads, queries, keys), got "
                             f"{tuple(attention.shape)} at layer {layer}")
        if attention.shape != maps[0].shape:
            raise ValueError(f"every layer's map must have the same shape, got {tuple(maps[0].shape)} at layer 0 and "
                             f"{tuple(attention.shape)} at layer {layer}")
        if not attention.is_floating_point():
            raise TypeError(f"attention maps must be floating point, got dtype {attention.dtype} at layer {layer}")
    return list(maps)


def attention_rollout(maps: Sequence[torch.Tensor], add_residual: bool = True, head_fusion: str = "mean"
                      ) -> torch.Tensor:
    """Attention rollout through a stack of layers: ``(B, T, T)``; row ``i``: where token ``i``'s final state came from.

    Args:
        maps: one ``(B, H, T, T)`` attention map per layer, first layer first (rows: queries, columns: keys), as
            returned by ``model.visual(images, return_attention=True)`` or
            ``model.text(tokens, return_attention=True)``.
        add_residual: model the residual connection as ``0.5 * A + 0.5 * I`` and renormalise the rows (Abnar &
            Zuidema's rollout); ``False`` multiplies the raw maps (attention flow through attention alone).
        head_fusion: how one layer's heads become one map: ``"mean"`` (the paper) or ``"max"`` (the strongest head
            per entry, then renormalised; sharper maps, a popular variant).

    Returns:
        ``R = A_L @ ... @ A_1`` of shape ``(B, T, T)``. With ``add_residual`` every row sums to 1 (a query whose keys
        were all masked, an all-zero row, becomes an identity row: only its residual passes).

    Example:
        >>> identity = torch.eye(3).expand(1, 2, 3, 3)                 # (B=1, H=2, T=3, T=3): each token reads itself
        >>> torch.equal(attention_rollout([identity, identity])[0], torch.eye(3))
        True
        >>> uniform = torch.full((1, 1, 2, 2), 0.5)                     # every token reads both tokens equally
        >>> attention_rollout([uniform])                                # 0.5 * uniform + 0.5 * I
        tensor([[[0.7500, 0.2500],
                 [0.2500, 0.7500]]])
    """
    maps = _check_maps(maps)
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")
    T = maps[0].shape[-1]
    identity = torch.eye(T, dtype=maps[0].dtype, device=maps[0].device)  # (T, T)
    rollout = None
    for attention in maps:
        if head_fusion == "mean":
            fused = attention.mean(dim=1)  # (B, H, T, T) -> (B, T, T)
        else:
            fused = attention.amax(dim=1)  # (B, T, T); rows no longer sum to 1
            fused = fused / fused.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(fused.dtype).tiny)
        if add_residual:
            fused = 0.5 * fused + 0.5 * identity  # x + attn(x): half of each token's state is itself
            fused = fused / fused.sum(dim=-1, keepdim=True)  # rows sum to 1 again
        rollout = fused if rollout is None else fused @ rollout  # (B, T, T) @ (B, T, T): this layer after the earlier
    return rollout


def class_token_heatmap(rollout: torch.Tensor) -> torch.Tensor:
    """The class token's row of a ViT rollout over the patches, as an image: ``(B, 1 + N, 1 + N) -> (B, g, g)``.

    ``N = g * g`` patches, listed row by row (as ``minclip.vision.patchify``). Each map is rescaled to sum to 1 over
    the patches (the class token's share of itself is dropped).
    """
    if not isinstance(rollout, torch.Tensor) or rollout.dim() != 3 or rollout.shape[1] != rollout.shape[2]:
        shape = tuple(rollout.shape) if isinstance(rollout, torch.Tensor) else type(rollout).__name__
        raise ValueError(f"rollout must be (B, 1 + N, 1 + N), the output of attention_rollout, got {shape}")
    patches = rollout.shape[-1] - 1
    grid = round(patches**0.5)
    if grid * grid != patches or patches == 0:
        raise ValueError(f"a ViT rollout has 1 + g*g tokens (class token + a g x g grid of patches), got "
                         f"{rollout.shape[-1]} tokens")
    heat = rollout[:, 0, 1:]  # (B, N): class token's row, patch columns
    heat = heat / heat.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(heat.dtype).tiny)
    return heat.reshape(len(heat), grid, grid)  # (B, N) -> (B, g, g), row by row


# ---------------------------------------------------------------------------------------------------------------------
# Principal components


class PCA(NamedTuple):
    """The result of :func:`pca`; ``project`` maps other points (e.g. text features) into the same coordinates."""

    coordinates: torch.Tensor  # (N, k) the data in the principal directions
    explained_variance_ratio: torch.Tensor  # (k,) share of the total variance along each direction, descending
    components: torch.Tensor  # (k, D) unit principal directions, one per row
    mean: torch.Tensor  # (D,) the mean that was subtracted

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """``(M, D) -> (M, k)``: centre with the fitted mean, then take the components."""
        if not isinstance(points, torch.Tensor) or points.dim() != 2 or points.shape[1] != self.mean.shape[0]:
            shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
            raise ValueError(f"points must be (M, D) with D = {self.mean.shape[0]}, got {shape}")
        return (points.to(self.mean) - self.mean) @ self.components.T  # (M, D) @ (D, k) -> (M, k)


def pca(features: torch.Tensor, k: int = 2) -> PCA:
    """Principal component analysis of ``features`` ``(N, D)`` through ``torch.linalg.svd``; see the module docstring.

    Signs are made deterministic: each direction points so that its largest-magnitude entry is positive (SVD
    alone may flip any direction). Computed in float64 and returned in the input's dtype.

    Returns:
        :class:`PCA` with ``coordinates`` ``(N, k)``, ``explained_variance_ratio`` ``(k,)`` (descending; their sum is
        at most 1, and exactly 1 when ``k`` reaches the rank), ``components`` ``(k, D)`` and ``mean`` ``(D,)``.

    Example:
        >>> points = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, 1.0]])   # spread 2 along x, 1 along y
        >>> result = pca(points, k=2)
        >>> result.components, result.explained_variance_ratio
        (tensor([[1., 0.],
                [0., 1.]]), tensor([0.8000, 0.2000]))
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a 2-D tensor (N, D), one point per row, got {shape}")
    if not features.is_floating_point():
        raise TypeError(f"features must be floating point, got dtype {features.dtype}")
    N, D = features.shape
    if N < 2:
        raise ValueError(f"pca needs at least 2 points to measure a spread, got {N}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(N, D):
        raise ValueError(f"k must be an int in [1, min(N, D) = {min(N, D)}] for features of shape {(N, D)}, got {k!r}")
    if not torch.isfinite(features).all():
        raise ValueError("features contain NaN or infinity: the model's features are broken")
    x = features.double()
    mean = x.mean(dim=0)  # (D,)
    centred = x - mean  # (N, D)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)  # (min,), (min, D): rows = directions
    components = vh[:k]  # (k, D)
    biggest = components.abs().argmax(dim=1)  # (k,) index of each direction's largest entry
    signs = components[torch.arange(k), biggest].sign()  # (k,)
    components = components * signs[:, None]
    variance = singular**2  # (min,) proportional to the variance along each direction
    ratio = variance[:k] / variance.sum().clamp_min(torch.finfo(variance.dtype).tiny)
    coordinates = centred @ components.T  # (N, D) @ (D, k) -> (N, k), = U S up to the signs
    dtype = features.dtype
    return PCA(coordinates.to(dtype), ratio.to(dtype), components.to(dtype), mean.to(dtype))


# ---------------------------------------------------------------------------------------------------------------------
# A bag-of-words text encoder


def token_counts(tokens: torch.Tensor, vocab_size: int, eot_token_id: int) -> torch.Tensor:
    """How often each token id occurs in each text: ``(B, T)`` ids -> ``(B, vocab_size)`` float counts.

    Counted: every position up to and including the first ``eot_token_id`` (start token, words, end token); the
    padding after it is not. Two texts with the same tokens in any order have equal rows.

    >>> token_counts(torch.tensor([[5, 1, 2, 1, 9, 0, 0]]), vocab_size=10, eot_token_id=9)
    tensor([[0., 2., 1., 0., 0., 1., 0., 0., 0., 1.]])
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int32) or tokens.dim() != 2:
        what = f"{tuple(tokens.shape)} {tokens.dtype}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a (B, T) integer tensor of token ids (tokenizer.tokenize), got {what}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in [0, vocab_size={vocab_size}), got values from {tokens.min().item()} "
                         f"to {tokens.max().item()}")
    ends = first_eot_index(tokens, eot_token_id)  # (B,)
    missing = (ends == tokens.shape[1]).nonzero().flatten()
    if len(missing):
        raise ValueError(f"rows {missing.tolist()} of tokens have no end-of-text token (eot_token_id={eot_token_id}); "
                         "tokenize(..., truncate=True) always ends a row with one")
    counted = torch.arange(tokens.shape[1], device=tokens.device) <= ends[:, None]  # (B, T): not padding
    counts = torch.zeros(len(tokens), vocab_size, device=tokens.device)  # (B, V)
    return counts.scatter_add_(1, tokens.long(), counted.float())  # one +1 per counted position


class BagOfWordsText(nn.Module):
    """An order-blind text encoder: ``(B, T)`` token ids -> ``(B, embed_dim)``, a function of the token counts only.

    ``x = mean of the token embeddings`` (written as counts @ embedding / length, so the order of the tokens never
    enters the arithmetic and word-swapped texts in the same batch layout give bit-identical features; a batch of one
    may take another matrix kernel, which can change the last bits), then one residual MLP (as in a
    Transformer block, so that the encoder can combine words non-linearly), ``ln_final`` and ``text_projection``.
    It is :class:`minclip.text.TextTransformer` without positions and without attention: tokens cannot look at each
    other, so the encoder cannot know which adjective belongs to which noun.

    Example:
        >>> encoder = BagOfWordsText(vocab_size=10, width=8, embed_dim=4, eot_token_id=9)
        >>> caption, swapped = torch.tensor([[8, 1, 2, 3, 4, 9]]), torch.tensor([[8, 3, 2, 1, 4, 9]])
        >>> torch.equal(encoder(caption), encoder(swapped))
        True
    """

    def __init__(self, vocab_size: int, width: int, embed_dim: int, eot_token_id: int, activation: str = "quick_gelu"):
        super().__init__()
        if not 0 <= eot_token_id < vocab_size:
            raise ValueError(f"eot_token_id must be in [0, vocab_size={vocab_size}), got {eot_token_id}")
        self.vocab_size, self.eot_token_id = vocab_size, eot_token_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width, activation)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # the text tower's initialisation
        nn.init.normal_(self.text_projection, std=width**-0.5)
        nn.init.zeros_(self.mlp.c_proj.weight)  # the block starts as the identity
        nn.init.zeros_(self.mlp.c_proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        counts = token_counts(tokens, self.vocab_size, self.eot_token_id)  # (B, V)
        counts = counts.to(self.token_embedding.weight.dtype)
        x = counts @ self.token_embedding.weight / counts.sum(dim=1, keepdim=True)  # (B, V) @ (V, D) -> (B, D): mean
        x = x + self.mlp(self.ln_1(x))  # (B, D)
        return self.ln_final(x) @ self.text_projection  # (B, D) @ (D, embed_dim) -> (B, embed_dim)


def with_bag_of_words_text(model: CLIP, width: int | None = None) -> CLIP:
    """A copy of ``model`` whose text tower is a fresh :class:`BagOfWordsText` (the image tower and temperature are
    copied as they are; ``model`` is left untouched).

    The copy keeps ``model.config`` (vocabulary, context length, embedding size), so ``minclip.evaluate`` and
    ``minclip.train.train_step`` use it like any CLIP; its ``config`` no longer describes the text tower, so save its
    ``state_dict`` yourself rather than through the training checkpoints. ``width`` defaults to ``text_width``.
    """
    if not isinstance(model, CLIP):
        raise TypeError(f"model must be a minclip CLIP, got {type(model).__name__}")
    config = model.config
    text = BagOfWordsText(config.vocab_size, width or config.text_width, config.embed_dim, config.eot_token_id,
                          config.activation)
    original_text = model.text
    model.text = None  # deep-copy everything but the text tower
    try:
        bag = copy.deepcopy(model)
    finally:
        model.text = original_text
    bag.text = text.to(device=model.logit_scale.device, dtype=model.logit_scale.dtype)
    return bag

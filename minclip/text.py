"""CLIP's text tower: token ids in, one feature vector per text out.

    tokens (B, T) ─ token_embedding + positional_embedding ─> (B, T, D)
                  ─ Transformer (causal) ─ ln_final ─> (B, T, D)
                  ─ pick the end-of-text position ─> (B, D) ─ @ text_projection ─> (B, embed_dim)

Token tensors look like ``clip.tokenize``'s: ``[sot, ids..., eot, 0, 0, ...]``, one row per text.

Two choices, both selectable with ``pooling``:

* ``"eot"`` (CLIP): attention is *causal* (a GPT-style language model: each position sees only the positions before
  it), so the end-of-text position is the first one that has read the whole text; its hidden state becomes the text's
  feature. We find it as the **first occurrence of an explicit** ``eot_token_id``. OpenAI's code takes ``argmax`` of
  the ids instead, which works only because EOT happens to be the largest id of their vocabulary; a trained
  vocabulary with another layout, or a text containing the EOT id twice, would silently pool the wrong token.
  Because attention is causal, whatever follows EOT (the padding) cannot change the feature.
* ``"first"`` (BERT's [CLS]; how the Korean CLIP review minclip grew from describes CLIP): attention is
  bidirectional and the feature is read at position 0 (the start-of-text token). The padding after EOT is hidden from
  attention with a key-padding mask, so it cannot change the feature either.

The projection is a bare ``(D, embed_dim)`` matrix used as ``x @ text_projection`` (no bias), as in OpenAI's weights.

References: Radford et al. (2021), CLIP, section 2.4 ("the [EOS] token ... is treated as the feature representation
of the text"); Devlin et al. (2019), BERT, for the [CLS] variant.
"""

import torch
from torch import nn

if __package__:  # inside a package (minclip, or a folder the model files were copied into)
    from .transformer import Transformer
else:  # copied as loose files side by side
    from transformer import Transformer

POOLINGS = ("eot", "first")


def first_eot_index(tokens: torch.Tensor, eot_token_id: int) -> torch.Tensor:
    """Position of the first ``eot_token_id`` in each row of ``tokens`` ``(B, T)``; ``T`` where a row has none.

    >>> first_eot_index(torch.tensor([[5, 1, 2, 9, 0], [5, 9, 9, 0, 0], [5, 1, 1, 1, 1]]), eot_token_id=9)
    tensor([3, 1, 5])
    """
    T = tokens.shape[1]
    positions = torch.arange(T, device=tokens.device).expand_as(tokens)  # (B, T)
    return torch.where(tokens == eot_token_id, positions, T).min(dim=1).values  # (B,)


def trim_padding(tokens: torch.Tensor, eot_token_id: int) -> torch.Tensor:
    """Drop the columns after the last end-of-text token of the batch: ``(B, T)`` -> ``(B, T')``, ``T' <= T``.

    Exact, not an approximation: with the causal mask no position attends to a later one, and the pooled feature
    is read at the end-of-text token, so the padding after it never influences the output (with first-token
    pooling the padding is masked out as keys). Short captions in a long context are mostly padding, so this skips
    work whose result the model throws away.

    >>> trim_padding(torch.tensor([[5, 1, 9, 0, 0], [5, 9, 0, 0, 0]]), eot_token_id=9)
    tensor([[5, 1, 9],
            [5, 9, 0]])
    """
    longest = int(first_eot_index(tokens, eot_token_id).max()) + 1 if len(tokens) else 0
    return tokens[:, : min(longest, tokens.shape[1])]  # (B, T'): rows without eot keep every column


class TextTransformer(nn.Module):
    """The text encoder: ``(B, T)`` token ids -> ``(B, embed_dim)`` unnormalised features; see the module docstring.

    Args:
        vocab_size: number of token ids; valid ids are ``0 .. vocab_size - 1``.
        context_length: most positions a text may have (rows of ``tokens`` may be shorter).
        width, layers, heads: the Transformer's size.
        embed_dim: size of the joint image-text space.
        eot_token_id: id of the end-of-text token, pooled at (``"eot"``) or marking where padding starts.
        pooling: ``"eot"`` (causal, CLIP) or ``"first"`` (bidirectional, [CLS]-style).
        activation, attn_impl: see :class:`minclip.transformer.Transformer`.

    Parameter names (``token_embedding``, ``positional_embedding``, ``transformer.resblocks.N...``, ``ln_final``,
    ``text_projection``) are those of OpenAI's checkpoints.
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        width: int,
        layers: int,
        heads: int,
        embed_dim: int,
        eot_token_id: int,
        pooling: str = "eot",
        activation: str = "quick_gelu",
        attn_impl: str = "manual",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not 0 <= eot_token_id < vocab_size:
            raise ValueError(f"eot_token_id must be in [0, vocab_size={vocab_size}), got {eot_token_id}")
        self.vocab_size, self.context_length, self.eot_token_id, self.pooling = (
            vocab_size, context_length, eot_token_id, pooling
        )
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, activation, attn_impl)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.init_openai_()

    def init_openai_(self) -> None:
        """OpenAI's initialisation: token embeddings ``N(0, 0.02)``, positions ``N(0, 0.01)``, projection
        ``N(0, width^-0.5)``, the blocks as :meth:`Transformer.init_openai_`, ``ln_final`` the identity."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_openai_()
        nn.init.ones_(self.ln_final.weight)
        nn.init.zeros_(self.ln_final.bias)
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)

    def check_tokens(self, tokens) -> None:
        """Raise a clear ``TypeError``/``ValueError`` unless ``tokens`` is a valid ``(B, T)`` batch of token ids."""
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"tokens must be a torch.LongTensor (B, T) of token ids, got {type(tokens).__name__}; "
                            "make one with tokenizer.tokenize(texts)")
        if tokens.dtype not in (torch.long, torch.int32):
            raise TypeError(f"tokens must hold integer token ids (torch.long), got dtype {tokens.dtype}; "
                            "make them with tokenizer.tokenize(texts)")
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be (B, T) with T >= 1, got shape {tuple(tokens.shape)}; "
                             "for a single text use tokens[None]")
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"tokens have T={tokens.shape[1]} positions but context_length is {self.context_length}; "
                             f"tokenize with context_length={self.context_length} (truncate=True cuts long texts)")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, vocab_size={self.vocab_size}), got values from "
                             f"{tokens.min().item()} to {tokens.max().item()}; was the tokenizer trained with "
                             "another vocabulary than this model's?")
        if self.pooling == "eot":
            missing = (first_eot_index(tokens, self.eot_token_id) == tokens.shape[1]).nonzero().flatten()
            if len(missing):
                raise ValueError(f"rows {missing.tolist()} of tokens have no end-of-text token "
                                 f"(eot_token_id={self.eot_token_id}) to pool at; tokenize(..., truncate=True) "
                                 "always ends a row with one")

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embedding plus position embedding: ``(B, T)`` ids -> ``(B, T, width)``, the Transformer's input."""
        return self.token_embedding(tokens) + self.positional_embedding[: tokens.shape[1]]  # (B, T, D)

    def attention_masks(self, tokens: torch.Tensor) -> dict:
        """Which keys each position may attend to, as keyword arguments of :meth:`Transformer.forward`.

        ``"eot"``: causal (``is_causal=True``). ``"first"``: every key except the padding after the first end-of-text
        token (``key_padding_mask`` ``(B, T)``, True = padding).
        """
        if self.pooling == "eot":
            return {"is_causal": True}
        T = tokens.shape[1]
        padding = torch.arange(T, device=tokens.device) > first_eot_index(tokens, self.eot_token_id)[:, None]  # (B, T)
        return {"key_padding_mask": padding}

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position read in each row, ``(B,)``: the first end-of-text token (``"eot"``) or 0 (``"first"``)."""
        if self.pooling == "eot":
            return first_eot_index(tokens, self.eot_token_id)
        return torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)

    def token_features(self, tokens: torch.Tensor, return_attention: bool = False):
        """Per-position hidden states after ``ln_final``: ``(B, T)`` ids -> ``(B, T, width)`` (before pooling).

        With ``return_attention=True`` returns ``(features, maps)``, ``maps`` one ``(B, H, T, T)`` tensor per layer.
        """
        self.check_tokens(tokens)
        out = self.transformer(self.embed(tokens), return_attention=return_attention, **self.attention_masks(tokens))
        x, maps = out if return_attention else (out, None)
        x = self.ln_final(x)  # (B, T, D)
        return (x, maps) if return_attention else x

    def forward(self, tokens: torch.Tensor, return_attention: bool = False):
        """``(B, T)`` token ids -> ``(B, embed_dim)`` features (``(features, maps)`` with ``return_attention``)."""
        out = self.token_features(tokens, return_attention)
        x, maps = out if return_attention else (out, None)  # x: (B, T, D)
        pooled = x[torch.arange(len(x), device=x.device), self.pooled_positions(tokens)]  # (B, D): one per row
        features = pooled @ self.text_projection  # (B, D) @ (D, embed_dim) -> (B, embed_dim)
        return (features, maps) if return_attention else features

"""Drawn diagrams of CLIP's architecture, for the notebooks: the two towers and the B x B similarity matrix, the
Vision Transformer's patch -> token -> class-token pipeline, the pre-LN residual block, and the causal mask.

Each function draws one diagram with matplotlib patches and arrows (no data, no model, no randomness: the same call
gives the same picture) and returns the figure, at ``DPI`` dots per inch with every text at least ``SMALL`` points,
so it stays legible in a notebook. The diagrams follow OpenAI's ``clip/model.py`` (Radford et al., 2021) as minclip
implements it: ``text.py`` and ``vision.py`` for the towers, ``transformer.py`` for the block, ``attention.py`` for
the mask, ``loss.py`` for the matrix.

How it fits: the notebooks call these where an idea is taught (00 the overview, 03 the block and the mask, 04 the
ViT). The module imports matplotlib and numpy only, never the model, training or data code.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

DPI = 110  # every figure's resolution (the notebooks' default of 72 blurs 9-point text)
SMALL, NORMAL, LARGE = 9, 10, 12  # font sizes in points: nothing smaller than SMALL

# Colours that carry meaning, the same in every diagram.
IMAGE_COLOUR = "#dbe9f6"  # the image side
TEXT_COLOUR = "#fde4cf"  # the text side
POSITIVE_COLOUR = "#a6dba0"  # true pairs / allowed attention
NEGATIVE_COLOUR = "#e8e8e8"  # mismatched pairs / blocked attention
CLASS_COLOUR = "#f4a261"  # the class token / the read-out position
ATTENTION_COLOUR = "#c6dbef"
MLP_COLOUR = "#fdd0a2"
NORM_COLOUR = "#e5e5e5"


def _canvas(width: float, height: float, xlim: tuple[float, float], ylim: tuple[float, float]):
    """A figure with one borderless axes whose data coordinates are (xlim, ylim), one unit the same size both ways."""
    figure = plt.figure(figsize=(width, height), dpi=DPI)
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(*xlim)
    axis.set_ylim(*ylim)
    axis.set_aspect("equal")
    axis.axis("off")
    return figure, axis


def _box(axis, x: float, y: float, width: float, height: float, text: str = "", colour: str = "white",
         fontsize: float = NORMAL, **text_options):
    """A rounded box with its lower-left corner at (x, y) and centred text; returns the box's centre."""
    axis.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.12",
                                  facecolor=colour, edgecolor="0.25", linewidth=1.0))
    centre = (x + width / 2, y + height / 2)
    if text:
        axis.text(*centre, text, ha="center", va="center", fontsize=fontsize, **text_options)
    return centre


def _arrow(axis, start: tuple[float, float], end: tuple[float, float], colour: str = "0.25", style: str = "-|>",
           **options):
    axis.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=colour, linewidth=1.2,
                                   shrinkA=0, shrinkB=0, **options))


def clip_overview(batch_size: int = 4):
    """CLIP in one picture: B images and B captions go through their own towers and meet only in the (B, B) matrix
    of cosines, whose diagonal holds the true pairs (the positives) and everything else the negatives.

    ``batch_size``: how many pairs to draw (2 to 5). Returns the figure.
    """
    if not 2 <= batch_size <= 5:
        raise ValueError(f"batch_size must be between 2 and 5 to stay legible, got {batch_size}")
    B = batch_size
    figure, axis = _canvas(11.0, 5.4, (0, 22), (0, 10.8))
    axis.text(11, 10.35, f"CLIP: two towers that meet only in a {B} × {B} matrix of cosines", ha="center",
              fontsize=LARGE, weight="bold")

    # The two towers, one row each: input -> encoder -> normalised features.
    rows = {"text": (6.4, TEXT_COLOUR, f"{B} captions\n(B, T) token ids", "text tower\nTransformer (lesson 03)",
                     "text features $T$\n(B, E), unit length"),
            "image": (1.4, IMAGE_COLOUR, f"{B} images\n(B, 3, H, W)", "image tower\nViT (lesson 04)",
                      "image features $I$\n(B, E), unit length")}
    for y, colour, inputs, tower, features in rows.values():
        _box(axis, 0.2, y, 2.9, 1.6, inputs, colour, fontsize=SMALL)
        _box(axis, 3.9, y, 3.4, 1.6, tower, colour)
        _box(axis, 8.1, y, 3.2, 1.6, features, colour, fontsize=SMALL)
        _arrow(axis, (3.1, y + 0.8), (3.9, y + 0.8))
        _arrow(axis, (7.3, y + 0.8), (8.1, y + 0.8))
    axis.text(5.6, 4.95, "no attention between the towers:\nan image never sees a caption, nor a caption an image",
              ha="center", va="center", fontsize=SMALL, style="italic", color="0.3")

    # The matrix: rows are images, columns captions; cell (i, j) = cos(image i, caption j).
    cell = 5.0 / B  # the matrix is 5 units square whatever B
    left, top = 14.2, 8.2
    for i in range(B):
        for j in range(B):
            colour = POSITIVE_COLOUR if i == j else NEGATIVE_COLOUR
            axis.add_patch(Rectangle((left + j * cell, top - (i + 1) * cell), cell, cell, facecolor=colour,
                                     edgecolor="white", linewidth=2))
            axis.text(left + (j + 0.5) * cell, top - (i + 0.5) * cell, f"$I_{i + 1}\\cdot T_{j + 1}$",
                      ha="center", va="center", fontsize=SMALL)
        axis.text(left - 0.15, top - (i + 0.5) * cell, f"$I_{i + 1}$", ha="right", va="center", fontsize=NORMAL)
        axis.text(left + (i + 0.5) * cell, top + 0.15, f"$T_{i + 1}$", ha="center", va="bottom", fontsize=NORMAL)
    bottom = top - B * cell
    middle = left + cell * B / 2
    axis.plot([9.7, 9.7, middle], [8.0, 9.45, 9.45], color="0.25", lw=1.2)  # captions: along the top, columns
    _arrow(axis, (middle, 9.45), (middle, top + 0.7))
    _arrow(axis, (11.3, 2.2), (left - 0.7, top - cell * B / 2))  # images: from the left, rows
    axis.text((9.7 + middle) / 2, 9.6, "one column per caption", ha="center", fontsize=SMALL)
    axis.text(11.9, 3.3, "one row\nper image", ha="right", va="bottom", fontsize=SMALL)
    axis.text(left + cell * B / 2, bottom - 0.3, "logits = s · $I\\,T^{\\top}$    (s: learned, 1/0.07 at the start)",
              ha="center", va="top", fontsize=SMALL)
    axis.add_patch(Rectangle((left - 0.1, bottom - 1.55), 0.5, 0.45, facecolor=POSITIVE_COLOUR, edgecolor="0.5"))
    axis.text(left + 0.55, bottom - 1.33, f"diagonal: the {B} true pairs (positives)", va="center", fontsize=SMALL)
    axis.add_patch(Rectangle((left - 0.1, bottom - 2.2), 0.5, 0.45, facecolor=NEGATIVE_COLOUR, edgecolor="0.5"))
    axis.text(left + 0.55, bottom - 1.98, f"the other {B * B - B}: negatives, free with the batch", va="center",
              fontsize=SMALL)
    axis.text(left + cell * B / 2, bottom - 2.55, "loss: cross-entropy of every row (image → its caption)\n"
              "and every column (caption → its image), averaged", ha="center", va="top", fontsize=SMALL)
    return figure


def _demo_image(size: int = 64) -> np.ndarray:
    """A fixed (size, size, 3) uint8 picture (a sun over a hill) for when no image is given."""
    y, x = np.mgrid[0:size, 0:size] / size
    picture = np.stack([0.55 + 0.3 * y, 0.75 + 0.15 * y, np.full_like(x, 0.95)], axis=-1)  # sky
    sun = (x - 0.7) ** 2 + (y - 0.3) ** 2 < 0.03
    picture[sun] = (0.98, 0.8, 0.2)
    hill = y > 0.72 - 0.25 * np.sin(np.pi * x)
    picture[hill] = (0.35, 0.65, 0.3)
    return (picture * 255).astype(np.uint8)


def vit_pipeline(image: np.ndarray | None = None, patch_size: int = 16):
    """The Vision Transformer's input: an image cut into P x P patches, read like a page; each patch flattened and
    mapped by one linear layer (``conv1``) to a token; a learned class token prepended; a learned position added to
    every token; then the blocks, and the class token's output read out as the image's feature.

    ``image``: a ``(H, W, 3)`` uint8 array (a fixed picture when None), ``H = W`` a multiple of ``patch_size``, at
    most 16 patches. Returns the figure.
    """
    image = _demo_image() if image is None else np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be a square (H, W, 3) array, got shape {tuple(image.shape)}")
    size = image.shape[0]
    if size % patch_size or (size // patch_size) ** 2 > 16:
        raise ValueError(f"patch_size must divide the image side ({size}) into at most 4 x 4 patches, got {patch_size}")
    side = size // patch_size
    count = side * side
    figure, axis = _canvas(11.0, 5.2, (-6.2, 19.2), (-0.4, 11.6))

    # The image with its patch grid and reading order.
    axis.imshow(image, extent=(-6.0, -1.0, 5.0, 10.0), interpolation="nearest")
    for k in range(1, side):
        axis.plot([-6.0 + 5 * k / side] * 2, [5.0, 10.0], color="white", lw=1.2)
        axis.plot([-6.0, -1.0], [5.0 + 5 * k / side] * 2, color="white", lw=1.2)
    for n in range(count):
        row, column = divmod(n, side)
        axis.text(-6.0 + 5 * (column + 0.08) / side, 10.0 - 5 * (row + 0.08) / side, str(n), color="black",
                  fontsize=SMALL, va="top", ha="left", bbox=dict(facecolor="white", alpha=0.7, pad=0.5, lw=0))
    axis.text(-3.5, 4.6, f"image (3, {size}, {size}),\n{side} × {side} patches of {patch_size} × {patch_size}",
              ha="center", va="top", fontsize=SMALL)

    # 1. the patches, in reading order
    width = 1.0  # one token's column
    first = 1.2  # x of token 0, the class token; patch n sits above token n + 1
    axis.text(first, 10.9, "1. patches in reading order, each flattened to 3·P·P numbers: (B, N, 3P²)", fontsize=NORMAL)
    for n in range(count):
        row, column = divmod(n, side)
        patch = image[row * patch_size:(row + 1) * patch_size, column * patch_size:(column + 1) * patch_size]
        x = first + (n + 1) * width
        axis.imshow(patch, extent=(x + 0.08, x + width - 0.08, 9.0, 10.4), interpolation="nearest")
        axis.text(x + width / 2, 8.9, str(n), ha="center", va="top", fontsize=SMALL)
    _arrow(axis, (-0.8, 7.5), (first + width - 0.1, 9.6), connectionstyle="arc3,rad=-0.2")

    # 2. one linear map per patch, and the class token (columns line up: patch n becomes token n + 1)
    axis.text(first, 7.95, "2. one linear map for all patches (conv1, stride P) → tokens (B, N, D); the learned class",
              fontsize=NORMAL)
    axis.text(first, 7.45, "    token is prepended → (B, 1 + N, D)", fontsize=NORMAL)
    for n in range(count + 1):
        x = first + n * width
        colour = CLASS_COLOUR if n == 0 else IMAGE_COLOUR
        axis.add_patch(Rectangle((x + 0.12, 5.1), width - 0.24, 1.8, facecolor=colour, edgecolor="0.3"))
    axis.text(first + width / 2, 6.0, "class", rotation=90, ha="center", va="center", fontsize=SMALL)

    # 3. positions
    axis.text(first, 4.55, "3. + a learned position vector per token (row 0: the class token's)", fontsize=NORMAL)
    for n in range(count + 1):
        x = first + n * width
        axis.add_patch(Rectangle((x + 0.12, 3.35), width - 0.24, 0.75, facecolor="white", edgecolor="0.3"))
        axis.text(x + width / 2, 3.72, str(n), ha="center", va="center", fontsize=SMALL)

    # 4. the blocks, and the read-out
    end = first + (count + 1) * width
    _box(axis, first, 1.3, end - first, 1.2, "4. ln_pre, then Transformer blocks without a mask: every token "
         "attends to every token", ATTENTION_COLOUR, fontsize=NORMAL)
    _arrow(axis, ((first + end) / 2, 3.3), ((first + end) / 2, 2.55))
    _arrow(axis, (first + width / 2, 1.25), (first + width / 2, 0.35), colour=CLASS_COLOUR)
    axis.text(first + width + 0.1, 0.5, "only the class token's output is read: ln_post, then @ proj → the image "
              "feature (B, E)", va="center", fontsize=NORMAL)
    return figure


def pre_ln_block():
    """One pre-LN residual block, as both of CLIP's towers stack it: ``x = x + attn(ln_1(x))`` then
    ``x = x + mlp(ln_2(x))``. The residual stream runs straight through; each sub-layer reads a normalised copy and
    adds its result back. Returns the figure.
    """
    figure, axis = _canvas(8.8, 7.2, (0, 13.2), (0, 10.8))
    stream_x, branch_x = 3.0, 5.6
    axis.text(6.6, 10.35, "A pre-LN residual block (GPT-2, CLIP)", ha="center", fontsize=LARGE, weight="bold")

    # The residual stream, bottom to top, with its two additions.
    axis.text(stream_x, 0.3, "x: (B, T, D) in", ha="center", va="center", fontsize=NORMAL)
    axis.text(stream_x, 9.75, "x: (B, T, D) out", ha="center", va="center", fontsize=NORMAL)
    adds = (4.35, 8.5)
    _arrow(axis, (stream_x, 0.6), (stream_x, adds[0] - 0.3))
    _arrow(axis, (stream_x, adds[0] + 0.3), (stream_x, adds[1] - 0.3))
    _arrow(axis, (stream_x, adds[1] + 0.3), (stream_x, 9.5))
    for y in adds:
        axis.add_patch(plt.Circle((stream_x, y), 0.3, facecolor="white", edgecolor="0.25", linewidth=1.2))
        axis.text(stream_x, y, "+", ha="center", va="center", fontsize=LARGE)

    # Two branches: LayerNorm -> sub-layer -> back into the stream.
    branches = [(1.1, "ln_1: LayerNorm", "multi-head attention\n(causal mask in the text tower,\nnone in the ViT)",
                 ATTENTION_COLOUR, adds[0], "x = x + attn(ln_1(x))\ntokens exchange information"),
                (5.25, "ln_2: LayerNorm", "MLP: Linear D → 4D,\nQuickGELU, Linear 4D → D",
                 MLP_COLOUR, adds[1], "x = x + mlp(ln_2(x))\neach token on its own")]
    for y, norm, layer, colour, add_y, formula in branches:
        fork = y - 0.35
        axis.plot([stream_x, branch_x + 1.6], [fork, fork], color="0.25", lw=1.2)
        axis.plot([stream_x], [fork], "o", color="0.25", ms=4)
        _arrow(axis, (branch_x + 1.6, fork), (branch_x + 1.6, y + 0.05))
        _box(axis, branch_x, y + 0.05, 3.2, 0.8, norm, NORM_COLOUR)
        _arrow(axis, (branch_x + 1.6, y + 0.85), (branch_x + 1.6, y + 1.2))
        _box(axis, branch_x - 0.4, y + 1.2, 4.0, 1.5, layer, colour, fontsize=SMALL)
        axis.plot([branch_x + 1.6, branch_x + 1.6], [y + 2.7, add_y], color="0.25", lw=1.2)
        _arrow(axis, (branch_x + 1.6, add_y), (stream_x + 0.32, add_y))
        axis.text(branch_x + 3.8, y + 1.95, formula, va="center", fontsize=SMALL, family="monospace")
    axis.text(0.15, 6.5, "the residual stream:\nnever normalised, only\nadded to, so gradients\nhave a straight path\n"
              "through every block", va="center", fontsize=SMALL, color="0.3", style="italic")
    return figure


def causal_mask_diagram(tokens: Sequence[str] = ("SOT", "a", "cat", "is", "on", "a", "tree", "EOT")):
    """The causal mask over a caption's tokens: query t (a row) may attend to keys 0..t (columns); the additive mask
    holds 0 there and -inf above the diagonal. The first row (the start token) sees only itself; the end-of-text row
    sees the whole caption, which is why CLIP reads the text's feature there.

    ``tokens``: the labels of the positions (4 to 12). Returns the figure.
    """
    T = len(tokens)
    if not 4 <= T <= 12:
        raise ValueError(f"tokens must hold 4 to 12 labels to stay legible, got {T}")
    figure = plt.figure(figsize=(8.0, 1.9 + 0.42 * T), dpi=DPI)
    axis = figure.add_axes((0.16, 0.1, 0.5, 0.72))
    for query in range(T):
        for key in range(T):
            allowed = key <= query
            axis.add_patch(Rectangle((key, query), 1, 1, facecolor=POSITIVE_COLOUR if allowed else NEGATIVE_COLOUR,
                                     edgecolor="white", linewidth=1.5))
            axis.text(key + 0.5, query + 0.5, "0" if allowed else "−∞", ha="center", va="center", fontsize=SMALL,
                      color="black" if allowed else "0.45")
    axis.add_patch(Rectangle((0, T - 1), T, 1, fill=False, edgecolor=CLASS_COLOUR, linewidth=2.5))
    axis.set_xlim(0, T)
    axis.set_ylim(T, 0)  # query 0 on top, as a matrix is printed
    axis.set_xticks([k + 0.5 for k in range(T)], tokens, rotation=45, ha="right", fontsize=NORMAL)
    axis.set_yticks([k + 0.5 for k in range(T)], tokens, fontsize=NORMAL)
    axis.xaxis.tick_top()
    axis.set_xticks([k + 0.5 for k in range(T)], tokens, rotation=45, ha="left", fontsize=NORMAL)
    axis.set_xlabel("key: the token looked at", fontsize=NORMAL)
    axis.set_ylabel("query: the token that looks", fontsize=NORMAL)
    axis.tick_params(length=0)
    for spine in axis.spines.values():
        spine.set_visible(False)
    notes = [(0.5, f"← {tokens[0]!r} sees only itself:\n   the same vector for every caption"),
             (T / 2, "green (0): allowed\ngrey (−∞): blocked, weight\nexactly 0 after the softmax"),
             (T - 0.5, f"← {tokens[-1]!r} (outlined) sees every\n   token: CLIP reads the\n   caption's feature here")]
    for row, note in notes:
        axis.text(T + 0.3, row, note, va="center", fontsize=SMALL, clip_on=False)
    figure.suptitle("The causal mask: query t sees keys 0 … t", fontsize=LARGE, weight="bold", x=0.41, y=0.98)
    return figure

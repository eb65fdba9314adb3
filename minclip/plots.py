"""Figures of a training run (loss, validation recall and temperature curves), a similarity matrix, a retrieval
gallery, a row of images, an image gallery with captions (Korean included: `caption_fonts` adds the shipped Hangul
font).

Used by `python -m minclip train` (which saves them as PNG next to the checkpoint), by `search`, and by the notebooks.
Every function draws into a new matplotlib figure and returns it; `save(figure, path)` writes a small PNG.
`use_style()` sets the one look every notebook figure shares (100 dpi, no text under 9 pt): the notebooks' setup cells
call it once, so no figure sets its own resolution or font sizes.

How it fits: plots only read numbers and images (from train.py's history, evaluate.py's encoders, data.py's
images); nothing here trains or evaluates.
"""

from __future__ import annotations

import functools
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib falls back to its Agg backend by itself
import numpy as np
import torch

from .data import FONT_KO, REBUILD_HINT, from_model_input


DPI = 100  # figures on screen and in PNGs: sharp enough to read, small enough to keep notebooks light
STYLE = {  # matplotlib rcParams: the smallest text (ticks, legends) stays at 9 pt
    "figure.dpi": DPI, "savefig.dpi": DPI, "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
    "figure.titlesize": 11,
}


def use_style() -> None:
    """Apply `STYLE` to every figure drawn from now on (the notebooks call this once, in their setup cell)."""
    plt.rcParams.update(STYLE)


def save(figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write `figure` as a PNG at a modest resolution and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


RECALL_CURVES = (  # history["val"] key, label, line style: R@1 solid, R@5 dashed; one colour per direction
    ("text_to_image_R@1", "text → image R@1", dict(color="tab:green", ls="-", marker="o")),
    ("image_to_text_R@1", "image → text R@1", dict(color="tab:purple", ls="-", marker="s")),
    ("text_to_image_R@5", "text → image R@5", dict(color="tab:green", ls="--", marker="o", alpha=0.6)),
    ("image_to_text_R@5", "image → text R@5", dict(color="tab:purple", ls="--", marker="s", alpha=0.6)),
)


def training_curves(history: dict, title: str = ""):
    """Loss per step, validation recall per evaluation, and the learned temperature T = 1 / exp(logit_scale).

    `history` is `TrainResult.history`: lists `step`, `loss`, `temperature` (one value per step) and `val`, a list of
    `{"step": s, "text_to_image_R@1": r, ...}`, one per evaluation. The recall panel is drawn only when `val` holds
    an evaluation (your own data without a held-out part has none), so the figure has 3 panels or 2.
    """
    evaluations = history.get("val") or []
    panels = 3 if evaluations else 2
    figure, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6))
    loss_axis, temperature_axis = axes[0], axes[-1]
    loss_axis.plot(history["step"], history["loss"], lw=0.8, color="tab:blue")
    loss_axis.set(xlabel="step", ylabel="contrastive loss", title="training loss (chance: ln batch size)")
    if evaluations:
        recall_axis = axes[1]
        steps = [evaluation["step"] for evaluation in evaluations]
        for key, label, style in RECALL_CURVES:
            if all(key in evaluation for evaluation in evaluations):
                recall_axis.plot(steps, [evaluation[key] for evaluation in evaluations], label=label, lw=1.2,
                                 markersize=4, **style)
        recall_axis.set(xlabel="step", ylabel="recall", ylim=(0, 1), xlim=(0, max(history["step"] or steps)),
                        title="validation recall per evaluation")
        recall_axis.legend(loc="lower right")
    temperature_axis.plot(history["step"], history["temperature"], lw=1.2, color="tab:red")
    temperature_axis.axhline(0.01, ls="--", lw=0.8, color="grey")
    temperature_axis.set(xlabel="step", ylabel="T = 1 / exp(logit_scale)", yscale="log",
                         title="temperature (CLIP's floor 0.01 dashed)")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_similarity_matrix(similarity: torch.Tensor, images: torch.Tensor, captions: Sequence[str], title: str = ""):
    """The (captions x images) cosine-similarity matrix with the images along the top and captions on the left."""
    n_captions, n_images = similarity.shape
    figure, axis = plt.subplots(figsize=(1.0 + 0.6 * n_images, 0.8 + 0.42 * n_captions))
    shown = axis.imshow(similarity.numpy(), cmap="viridis", vmin=similarity.min().item(), vmax=similarity.max().item(),
                        extent=(0, n_images, n_captions, 0), aspect="auto")
    for row in range(n_captions):
        for column in range(n_images):
            axis.text(column + 0.5, row + 0.5, f"{similarity[row, column]:.2f}", ha="center", va="center",
                      fontsize=9, color="white")
    axis.set_yticks([i + 0.5 for i in range(n_captions)], captions, fontsize=9, fontfamily=caption_fonts())
    axis.set_xticks([])
    for column in range(n_images):  # thumbnails above the columns
        axis.imshow(images[column].numpy(), extent=(column + 0.05, column + 0.95, -0.05, -0.95), clip_on=False,
                    aspect="auto")
    axis.set_xlim(0, n_images)  # each imshow resets the limits to its own extent: restore the whole matrix
    axis.set_ylim(n_captions, -1)
    figure.colorbar(shown, ax=axis, fraction=0.03, label="cosine similarity")
    if title:
        axis.set_title(title, pad=4)
    return figure


def retrieval_gallery(queries: Sequence[str], ranked_images: Sequence[torch.Tensor], scores: Sequence[Sequence[float]],
                      correct: Sequence[Sequence[bool]] | None = None, title: str = ""):
    """One row per text query: its top-ranked images with their cosine scores; green frames mark correct images.

    Args:
        queries: Q query captions.
        ranked_images: per query, uint8 (K, S, S, 3) images in ranked order.
        scores: per query, K similarities.
        correct: per query, K booleans (optional).
    """
    k = max(len(images) for images in ranked_images)
    figure, axes = plt.subplots(len(queries), k, figsize=(1.3 * k + 2.4, 1.45 * len(queries)), squeeze=False)
    for row, query in enumerate(queries):
        for column in range(k):
            axis = axes[row, column]
            axis.set_xticks([]), axis.set_yticks([])
            if column >= len(ranked_images[row]):
                axis.axis("off")
                continue
            axis.imshow(ranked_images[row][column].numpy())
            axis.set_xlabel(f"{scores[row][column]:.2f}", fontsize=9, labelpad=1)
            if correct is not None:
                colour = "tab:green" if correct[row][column] else "lightgrey"
                for spine in axis.spines.values():
                    spine.set_edgecolor(colour), spine.set_linewidth(3 if correct[row][column] else 1)
        axes[row, 0].set_ylabel(query, rotation=0, ha="right", va="center", fontsize=9, fontfamily=caption_fonts())
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def image_row(images: Sequence[torch.Tensor], labels: Sequence[str], title: str = ""):
    """uint8 images (S, S, 3) side by side, each with a label under it (e.g. the frames of CLIP-guided drawing)."""
    figure, axes = plt.subplots(1, len(images), figsize=(1.45 * len(images), 2.0), squeeze=False)
    for axis, image, label in zip(axes[0], images, labels):
        axis.imshow(image.numpy())
        axis.set_xticks([]), axis.set_yticks([])
        axis.set_xlabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10, fontfamily=caption_fonts())
    figure.tight_layout()
    return figure


def report_figures(model, tokenizer, data: str, lang: str, count: int = 8, top: int = 6, seed: int = 0) -> dict:
    """The figures `python -m minclip train` saves: a similarity matrix and a retrieval gallery on held-out pairs.

    Takes `count` test pairs (spread evenly over the test split) and ranks every shipped image of the data set for
    each test caption, so the gallery shows what image search returns for captions the model never trained on.
    """
    from .evaluate import encode_images, encode_texts, heldout_pairs

    lang = "en" if lang == "both" else lang
    pairs = heldout_pairs(data, lang, model.config.image_size, seed=seed)
    pick = torch.linspace(0, len(pairs.test_indices) - 1, count).round().long().tolist()
    rows = [pairs.test_indices[i] for i in pick]  # indices into pairs.images
    captions = [pairs.test_captions[i] for i in pick]
    image_features = encode_images(model, pairs.model_input)  # (N, E)
    text_features = encode_texts(model, tokenizer, captions)  # (count, E)
    similarity = text_features @ image_features.T  # (count, N)
    figures = {"similarity_matrix": plot_similarity_matrix(similarity[:, rows], pairs.images[rows], captions,
                                                      title="held-out captions x their images")}
    ranked = similarity.topk(top, dim=1)
    figures["retrieval_gallery"] = retrieval_gallery(
        captions, [pairs.images[indices] for indices in ranked.indices], ranked.values.tolist(),
        correct=[[index == row for index in indices.tolist()] for indices, row in zip(ranked.indices, rows)],
        title="image search with held-out captions (green: the right image)")
    return figures


# ------------------------------------------------------------------------------------------------------- galleries
@functools.lru_cache(maxsize=1)
def caption_fonts() -> tuple[str, ...]:
    """Font families for captions: matplotlib's DejaVu Sans, then the shipped Hangul font as a fallback."""
    from matplotlib import font_manager

    if not FONT_KO.is_file():
        warnings.warn(f"{FONT_KO} is missing, Korean captions will show as boxes: {REBUILD_HINT}", stacklevel=3)
        return ("DejaVu Sans",)
    font_manager.fontManager.addfont(str(FONT_KO))
    return ("DejaVu Sans", font_manager.FontProperties(fname=str(FONT_KO)).get_name())


def show_gallery(images, captions: Sequence[str] | None = None, ncols: int = 8, scale: float = 1.4,
                 colors: Sequence[str] | None = None, title: str | None = None, wrap: int = 16):
    """Show images in a grid with their captions below; returns the matplotlib Figure.

    Args:
        images: uint8 (N, H, W, 3) (tensor or array), or model input float (N, 3, H, W) (un-normalised with
            `from_model_input`).
        captions: one string per image, English or Korean (or None).
        ncols: images per row; scale: inches per image; wrap: characters per caption line.
        colors: optional caption colour per image, e.g. "green"/"red" for right/wrong retrievals.
    """
    images = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if images.is_floating_point() and images.ndim == 4 and images.shape[1] == 3:
        images = from_model_input(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3) uint8 or (N, 3, H, W) model input, got {tuple(images.shape)}")
    n = len(images)
    if captions is not None and len(captions) != n:
        raise ValueError(f"got {n} images but {len(captions)} captions")
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    lines = max((len(textwrap.wrap(c, wrap)) for c in captions), default=0) if captions else 0
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * scale, nrows * scale * (1 + 0.18 * lines)),
                             squeeze=False)
    family = list(caption_fonts())
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(images[k].cpu().numpy(), interpolation="nearest")
        if captions is not None:
            ax.set_title("\n".join(textwrap.wrap(captions[k], wrap)), fontsize=9, family=family,
                         color=colors[k] if colors is not None else "black")
    if title:
        fig.suptitle(title, family=family)
    fig.tight_layout()
    return fig

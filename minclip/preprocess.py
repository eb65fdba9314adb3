"""The image preprocessing of OpenAI's released CLIP models: what ``clip.load`` returns as ``preprocess``.

    PIL image (any size) ─ resize: shorter side to S, bicubic ─ centre crop S x S ─ RGB ─ 0..1 ─ (x - mean) / std
                         ─> float32 (3, S, S)

A model only ever sees the square it was trained on (S = 224 for OpenAI's base models), so a photo is scaled until
its shorter side fits and the middle of its longer side is kept: the aspect ratio is preserved and the borders of a
wide photo are lost. The mean and standard deviation are CLIP's, per channel, measured on its training images
(``minclip.model.CLIP_MEAN``/``CLIP_STD``, which minclip's own data pipeline uses too).

Written with PIL and torch only (no torchvision): the tests check that it equals OpenAI's torchvision transform
exactly, pixel for pixel. minclip's own checkpoints keep their own ``preprocess`` (``minclip.load``): they were
trained on square emoji resized as a whole.

Reference: openai/CLIP ``clip/clip.py`` (``_transform``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .data import to_model_input
from .model import CLIP_MEAN, CLIP_STD


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale ``image`` so that its shorter side is ``size`` (bicubic), then cut the central ``size x size`` square.

    The longer side becomes ``int(size * long / short)`` and the crop starts at ``round((side - size) / 2)``, the
    rounding torchvision's ``Resize`` and ``CenterCrop`` use, so the result is theirs.

    >>> resize_and_crop(Image.new("RGB", (640, 480)), 224).size
    (224, 224)
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), Image.BICUBIC)
    top, left = int(round((new_height - size) / 2.0)), int(round((new_width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


class CLIPPreprocess:
    """OpenAI's ``preprocess`` for a model with ``image_size`` inputs (see the module docstring).

    Call it with one PIL image (-> ``(3, S, S)``, as OpenAI's: ``preprocess(image).unsqueeze(0)``), a list of PIL
    images (-> ``(N, 3, S, S)``), or uint8 pictures ``(N, H, W, 3)`` (a tensor or numpy array; -> ``(N, 3, S, S)``).

    >>> preprocess = CLIPPreprocess(224)
    >>> preprocess(Image.new("RGB", (640, 480))).shape
    torch.Size([3, 224, 224])
    """

    def __init__(self, image_size: int):
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.image_size = image_size

    def __repr__(self) -> str:
        return f"CLIPPreprocess(image_size={self.image_size})"

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One PIL image as the uint8 ``(S, S, 3)`` picture the model sees, before scaling and normalising."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        return np.asarray(resize_and_crop(image, self.image_size).convert("RGB"))

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, Image.Image):
            return self([images])[0]  # (3, S, S)
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("images is empty: give at least one PIL image")
            return to_model_input(torch.from_numpy(np.stack([self.pixels(image) for image in images])))
        pictures = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a copy
        if pictures.dtype != torch.uint8 or pictures.ndim != 4 or pictures.shape[-1] != 3:
            raise ValueError(f"images must be a PIL image, a list of them, or uint8 (N, H, W, 3); got "
                             f"{tuple(pictures.shape)} {pictures.dtype}")
        if pictures.shape[1:3] != (self.image_size, self.image_size):  # resize each picture as a PIL image
            pictures = torch.from_numpy(np.stack([self.pixels(Image.fromarray(picture.numpy()))
                                                  for picture in pictures]))
        return to_model_input(pictures)  # (N, 3, S, S)


__all__ = ["CLIPPreprocess", "resize_and_crop", "CLIP_MEAN", "CLIP_STD"]

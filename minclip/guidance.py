"""Guiding generation with CLIP: rerank a generator's samples, steer a differentiable renderer, and see why guidance
needs a prior.

CLIP cannot draw, but it can judge: for a caption and an image it returns a score. Three ways to turn that judge into
a generator, in order of how much they ask of it:

1. Reranking (best-of-N). A generator proposes N images, CLIP keeps the one it scores highest. DALL·E drew 512
   samples per caption and let CLIP pick (Ramesh et al., 2021, "Zero-Shot Text-to-Image Generation"). CLIP only has
   to *rank* here, which is what it was trained for; the generator must already put some of its samples near the
   caption, since reranking can only choose.
2. Gradient guidance through a differentiable renderer. The image is drawn from parameters (positions, sizes,
   colours, shapes) by a renderer that torch can differentiate; gradient ascent on CLIP's similarity moves the
   parameters. CLIPDraw does this with vector strokes (Frans et al., 2021, "CLIPDraw: Exploring Text-to-Drawing
   Synthesis through Language-Image Encoders"), VQGAN+CLIP with the latent code of an image generator (Crowson et
   al., 2022, "VQGAN-CLIP: Open Domain Image Generation and Editing with Natural Language Guidance"). Both score
   several randomly shifted and cropped copies ("views") of the image per step: a change that raises the score of
   every view is a change in what the image shows, not in a few pixels.
3. Raw pixels. With nothing between the pixels and CLIP, gradient ascent finds a pattern that raises CLIP's score
   without drawing anything: an adversarial example (Szegedy et al., 2014, "Intriguing properties of neural
   networks"; Goodfellow et al., 2015, "Explaining and Harnessing Adversarial Examples"). A second CLIP trained with
   another seed shares the illusion only in part. The renderer of (2) is a *prior*: it can only draw shapes.

The shapes set (minclip/shapes.py) makes each of these exactly measurable: every rendered scene knows its true
description, so "does the generated image show the caption?" has a yes-or-no answer.

How the pieces fit:
    describe(scene), parse_caption(text)  -> Key       # what a scene shows / a caption says, comparable with ==
    word_swap_scenes(key, n, seed)        -> [Scene]   # a generator that knows the caption's words, not their roles
    clip_scores(model, tokenizer, caption, images)     # (N,) cosine similarities; rerank = argmax
    best_of_n_success, rerank_curve                    # how often best-of-N picks a scene that shows the caption
    SceneParams, encode(scene), decode(params)         # a scene as differentiable tensors and back
    render(params, image_size, edge, hard, temperature)  # soft shapes in torch; edge=1, hard=True is minclip.shapes
    straight_through_one_hot(logits)                   # draw the arg-max, learn through the softmax
    row_params(batch, objects, axis), keep_in_row      # start in a row on the caption's axis, and keep it one
    snap(params), choose_categories(score, params)     # discrete scenes, then the best value of each attribute
    shifted_views(canvas, max_shift), readout_scores   # CLIP's score over 8 fixed shifts: steadier than one render
    guide(model, tokenizer, caption, ...)              # all of it: ascent through render, snap, search, readout
    optimise_image(model, text_features, ...)          # the same ascent on raw or low-resolution pixels
    prior_experiment(...)                              # both, scored by the model and by a second one

Notebook 12_guiding_generation derives and measures all three; `python -m minclip generate` runs `guide`;
scripts/guidance_eval.py reproduces the notebook's figures.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .model import CLIP_MEAN, CLIP_STD
from .shapes import _GAP, _HEART_H, _HEART_Y, _STAR, _TRIANGLE, BACKGROUND, COLOURS, SHAPES, SIZES, Polygon, Scene, \
    SceneObject

_COLOUR_NAMES = tuple(COLOURS)
_SIZE_NAMES = tuple(SIZES)
_PALETTE = torch.tensor([COLOURS[c] for c in _COLOUR_NAMES], dtype=torch.float32)  # (6, 3) RGB, 0..255
_RADII = torch.tensor([SIZES[s] for s in _SIZE_NAMES])  # (2,) the radius of each size, a fraction of the side
_AXIS_OF = {"left of": "horizontal", "right of": "horizontal", "above": "vertical", "below": "vertical",
            "left to right": "horizontal", "top to bottom": "vertical"}

# ---------------------------------------------------------------------------------------------------------------------
# 1. What a scene shows and what a caption says, as one comparable value.
#
# A Key is (axis, objects): axis None / "horizontal" / "vertical", objects a tuple of (size, colour, shape) in reading
# order (left to right, or top to bottom). "a red circle to the left of a blue square" and "a blue square to the right
# of a red circle" have the same key: they say the same thing.

Key = tuple  # (axis: str | None, objects: tuple[tuple[str, str, str], ...])


def describe(scene: Scene) -> Key:
    """The key of a scene: its axis and its objects' (size, colour, shape) in reading order.

        >>> red = SceneObject("circle", "red", "small", 0.7, 0.5)
        >>> blue = SceneObject("square", "blue", "large", 0.25, 0.5)
        >>> describe(Scene((red, blue), "right of"))
        ('horizontal', (('large', 'blue', 'square'), ('small', 'red', 'circle')))
    """
    return scene.axis, tuple((obj.size, obj.colour, obj.shape) for obj in scene.ordered())


_OBJECT = r"a (\w+) (\w+) (\w+)"
_PATTERNS = [  # (regular expression, relation); English captions exactly as Scene.caption writes them
    (re.compile(f"^{_OBJECT}$"), None),
    *[(re.compile(f"^{_OBJECT} {words} {_OBJECT}$"), relation)
      for relation, words in (("left of", "to the left of"), ("right of", "to the right of"), ("above", "above"),
                              ("below", "below"))],
    *[(re.compile(f"^{_OBJECT}, {_OBJECT} and {_OBJECT} from {relation}$"), relation)
      for relation in ("left to right", "top to bottom")],
]


def parse_caption(caption: str) -> Key:
    """The key of an English shapes caption (the inverse of Scene.caption('en'), up to positions).

        >>> parse_caption("a small red circle to the left of a large blue square")
        ('horizontal', (('small', 'red', 'circle'), ('large', 'blue', 'square')))

    Raises ValueError for any other text, naming the forms that are understood.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    text = " ".join(caption.lower().strip().rstrip(".").split())
    for pattern, relation in _PATTERNS:
        match = pattern.match(text)
        if match is None:
            continue
        words = match.groups()
        objects = [tuple(words[i:i + 3]) for i in range(0, len(words), 3)]  # (size, colour, shape) each
        for size, colour, shape in objects:
            for name, value, allowed in (("size", size, _SIZE_NAMES), ("colour", colour, _COLOUR_NAMES),
                                         ("shape", shape, SHAPES)):
                if value not in allowed:
                    raise ValueError(f"unknown {name} {value!r} in {caption!r}; the shapes set knows {allowed}")
        if relation in ("right of", "below"):
            objects = objects[::-1]  # reading order: left/top object first
        return (_AXIS_OF[relation] if relation else None), tuple(objects)
    raise ValueError(f"cannot read {caption!r} as a shapes caption; write e.g. 'a small red circle', 'a large blue "
                     "square above a small green star' or 'a small red circle, a small blue heart and a small green "
                     "star from left to right' (sizes: small, large)")


# ---------------------------------------------------------------------------------------------------------------------
# 2. Reranking: a generator proposes, CLIP picks.

def word_swap_scenes(key: Key, n: int, seed: int = 0) -> list[Scene]:
    """n scenes drawn by a generator that knows the caption's words but not which word goes with which object.

    Each sample gives the caption's colours, shapes and sizes to its objects in a random order (each attribute
    shuffled on its own) and lays them out at random along the caption's axis; the result is the caption itself or
    one of its word-swapped foils (minclip.shapes.Scene.foils), in a fresh layout. A model that reads captions as bags
    of words cannot tell the samples apart; choosing among them is exactly the binding test of notebook 09.

        >>> scenes = word_swap_scenes(parse_caption("a small red circle above a large blue square"), 4, seed=0)
        >>> sorted({obj.colour for scene in scenes for obj in scene.objects})
        ['blue', 'red']
    """
    from .shapes import _layout  # the shapes set's own layout sampler

    axis, objects = _check_key(key)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    relation = {2: {"horizontal": "left of", "vertical": "above"},  # objects are laid out in reading order
                3: {"horizontal": "left to right", "vertical": "top to bottom"}}.get(len(objects), {None: None})
    scenes = []
    for _ in range(n):
        sizes, colours, shapes = ([objects[i][a] for i in rng.permutation(len(objects))] for a in range(3))
        centres = _layout(rng, [SIZES[s] for s in sizes], axis or "horizontal")
        parts = tuple(SceneObject(shape, colour, size, x, y)
                      for shape, colour, size, (x, y) in zip(shapes, colours, sizes, centres))
        scenes.append(Scene(parts, relation[axis]))
    return scenes


def clip_scores(model, tokenizer, caption: str, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Cosine similarity of each image with the caption: uint8 images (N, S, S, 3) -> float (N,)."""
    from .data import to_model_input
    from .evaluate import encode_images, encode_texts

    text = encode_texts(model, tokenizer, [caption])  # (1, E) unit length
    return (encode_images(model, images, batch_size, preprocess=to_model_input) @ text.T)[:, 0]  # (N,)


def rerank(scores: torch.Tensor) -> int:
    """Best-of-N: the index of the highest score (the first one on ties). scores: (N,) float."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"scores must be a non-empty 1-D tensor, got {getattr(scores, 'shape', type(scores))}")
    return int(scores.argmax())


def best_of_n_success(scores: torch.Tensor, correct: torch.Tensor, n: int) -> float:
    """Expected success of best-of-n, from one long run of samples split into groups of n.

    scores: (M,) the scorer's score of each sample; correct: (M,) bool, whether the sample shows the caption. The M
    samples are cut into M // n disjoint groups (the tail is dropped); the result is the share of groups whose
    highest-scoring sample is correct. Ties count as the first of the group (give a tied scorer random scores).

        >>> best_of_n_success(torch.tensor([0.1, 0.9, 0.5, 0.2]), torch.tensor([False, True, True, False]), 2)
        1.0
    """
    scores, correct = torch.as_tensor(scores), torch.as_tensor(correct, dtype=torch.bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ValueError(f"scores and correct must be 1-D of the same length, got {tuple(scores.shape)} and "
                         f"{tuple(correct.shape)}")
    if not isinstance(n, int) or not 1 <= n <= len(scores):
        raise ValueError(f"n must be an int from 1 to the number of samples ({len(scores)}), got {n!r}")
    groups = len(scores) // n
    picked = scores[: groups * n].view(groups, n).argmax(dim=1)  # (groups,) best sample of each group
    return correct[: groups * n].view(groups, n).gather(1, picked[:, None]).float().mean().item()



def rerank_curve(model, tokenizer, captions: list[str], ns: tuple[int, ...] = (1, 4, 16, 64, 256),
                 samples: int = 256, seed: int = 0) -> dict:
    """Best-of-N success of word_swap_scenes reranked by CLIP, for each N in `ns`, averaged over `captions`.

    Per caption, `samples` scenes are drawn once and cut into groups of N (best_of_n_success). Also returned:
    "chance" (a random pick: the share of samples that match), "oracle" (some sample of the group matches: the
    ceiling of any scorer) and "bag_of_words" (a scorer that counts the caption's words in each sample's true
    description, ties broken at random: every sample holds the same words, so it is chance by construction).
    "clip_objects" is CLIP's success when only the objects must be right, not their order (which is left).
    Returns {"n": ns, "clip": [...], "clip_objects": [...], "oracle": [...], "bag_of_words": [...], "chance": float,
    "captions": int}.
    """
    from .shapes import render_scenes

    if max(ns) > samples:
        raise ValueError(f"every N must be at most samples={samples}, got {max(ns)}")
    generator = torch.Generator().manual_seed(seed)
    sums = {name: [0.0] * len(ns) for name in ("clip", "clip_objects", "oracle", "bag_of_words")}
    chance = 0.0
    for i, caption in enumerate(captions):
        key = parse_caption(caption)
        scenes = word_swap_scenes(key, samples, seed=seed * 100_003 + i)
        images = torch.from_numpy(render_scenes(scenes, model.config.image_size))  # (samples, S, S, 3)
        correct = torch.tensor([describe(scene) == key for scene in scenes])  # (samples,)
        scorers = {"clip": clip_scores(model, tokenizer, caption, images),
                   "oracle": correct.float(),
                   "bag_of_words": _word_overlap(caption, scenes) + 1e-3 * torch.rand(samples, generator=generator)}
        same_objects = torch.tensor([sorted(describe(scene)[1]) == sorted(key[1]) for scene in scenes])
        chance += correct.float().mean().item() / len(captions)
        for name, scores, right in (*((name, scores, correct) for name, scores in scorers.items()),
                                    ("clip_objects", scorers["clip"], same_objects)):
            for j, n in enumerate(ns):
                sums[name][j] += best_of_n_success(scores, right, n) / len(captions)
    return {"n": list(ns), **sums, "chance": chance, "captions": len(captions)}


def _word_overlap(caption: str, scenes: list[Scene]) -> torch.Tensor:
    """(N,) how many of the caption's words each scene's caption contains (a multiset overlap)."""
    from collections import Counter

    words = Counter(caption.split())
    return torch.tensor([float(sum((Counter(s.caption().split()) & words).values())) for s in scenes])


# ---------------------------------------------------------------------------------------------------------------------
# 3. A differentiable renderer. The same signed distances as minclip.shapes, written in torch, so gradients flow from
# the pixels to the positions (the distances move with the centre) and sizes (they scale with the radius). Colours and
# shapes are categorical; the renderer draws a softmax-weighted mixture of them (the colour is a mixture of the
# palette, the signed distance a mixture of the shapes' distances), which `hard=True` replaces by the arg-max.

def _root(squared: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at 0: sqrt's derivative is infinite there, and inf * 0 is NaN in the chain rule
    (a pixel centre exactly on an outline, or on a circle's centre, would poison every parameter)."""
    return torch.sqrt(squared.clamp(min=1e-12))


def circle_sdf(x: torch.Tensor, y: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    return _root(x * x + y * y) - radius


def box_sdf(x: torch.Tensor, y: torch.Tensor, half_width: float = 1.0) -> torch.Tensor:
    qx, qy = x.abs() - half_width, y.abs() - half_width  # per-axis distance past the sides
    outside = _root(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0)


def polygon_sdf(x: torch.Tensor, y: torch.Tensor, polygon: Polygon) -> torch.Tensor:
    """Distance to the nearest edge, negative inside by the even-odd rule (as minclip.shapes.polygon_sdf)."""
    shape = (-1,) + (1,) * max(x.ndim, y.ndim)  # (V, 1, ..., 1): one slice per edge
    ax, ay, ex, ey, inv = (torch.as_tensor(v).view(shape) for v in
                           (polygon.ax, polygon.ay, polygon.ex, polygon.ey, polygon.inverse_length2))
    px, py = x - ax, y - ay  # (V, ...) the point relative to each edge's start
    t = ((px * ex + py * ey) * inv).clamp(0, 1)  # position of the closest point along the edge
    dx, dy = px - t * ex, py - t * ey
    distance = _root((dx * dx + dy * dy).amin(dim=0))
    crossings = ((py < 0) != (py < ey)) & ((px * ey < py * ex) == (ey > 0))  # edges crossed by a ray towards +x
    inside = crossings.sum(dim=0) % 2 == 1
    return torch.where(inside, -distance, distance)


def heart_sdf(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    y = y + _HEART_Y
    diamond = box_sdf((x + y) * math.sqrt(0.5), (y - x) * math.sqrt(0.5), _HEART_H * math.sqrt(0.5))
    lobes = circle_sdf(x.abs() - _HEART_H / 2, y + _HEART_H / 2, _HEART_H * math.sqrt(0.5))
    return torch.minimum(diamond, lobes)


SHAPE_SDF = {  # the shapes of minclip.shapes.SHAPE_SDF, in torch; in box half-widths, y down
    "circle": circle_sdf,
    "square": lambda x, y: box_sdf(x, y, 0.85),
    "triangle": lambda x, y: polygon_sdf(x, y, _TRIANGLE),
    "star": lambda x, y: polygon_sdf(x, y, _STAR),
    "heart": heart_sdf,
}
RADIUS_RANGE = (0.08, 0.19)  # the radii guidance may use: around small (0.10) and large (0.17)
_LOGIT = 12.0  # encode's one-hot logits: softmax gives the chosen category all but e^-12 of the weight


@dataclass
class SceneParams:
    """A batch of B scenes of K objects each, as tensors a renderer can differentiate.

    centre: (B, K, 2) x, y as fractions of the image side (y down); radius: (B, K) half-width of each object's box,
    a fraction of the side; colour_logits: (B, K, 6) over minclip.shapes.COLOURS; shape_logits: (B, K, 5) over
    SHAPES. Objects are drawn in order, later ones over earlier ones.
    """

    centre: torch.Tensor
    radius: torch.Tensor
    colour_logits: torch.Tensor
    shape_logits: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [self.centre, self.radius, self.colour_logits, self.shape_logits]

    def detach(self) -> "SceneParams":
        return SceneParams(*(t.detach().clone() for t in self.tensors()))


def encode(scenes: Scene | list[Scene]) -> SceneParams:
    """Scenes with the same number of objects -> SceneParams (one-hot logits of height 12, exact positions)."""
    scenes = [scenes] if isinstance(scenes, Scene) else list(scenes)
    if not scenes or len({len(s.objects) for s in scenes}) != 1:
        raise ValueError("encode needs at least one scene, all with the same number of objects")
    centre = torch.tensor([[(o.x, o.y) for o in s.objects] for s in scenes], dtype=torch.float32)  # (B, K, 2)
    radius = torch.tensor([[o.radius for o in s.objects] for s in scenes], dtype=torch.float32)  # (B, K)
    colours = torch.tensor([[_COLOUR_NAMES.index(o.colour) for o in s.objects] for s in scenes])  # (B, K)
    shapes = torch.tensor([[SHAPES.index(o.shape) for o in s.objects] for s in scenes])
    return SceneParams(centre, radius, _LOGIT * F.one_hot(colours, len(_COLOUR_NAMES)).float(),
                       _LOGIT * F.one_hot(shapes, len(SHAPES)).float())


def decode(params: SceneParams) -> list[Scene | None]:
    """Read each scene back: arg-max colour and shape, the nearer of the two sizes, the relation from the layout.

    Two or three objects must stand in a row as minclip.shapes defines it: their boxes (of the *decoded* sizes)
    strictly ordered along one axis, which the centres differ along more than across. A layout that is neither a
    row nor a column gives None: no caption describes it.
    """
    scenes = []
    for b in range(len(params.centre)):
        objects = []
        for k in range(params.centre.shape[1]):
            radius = float(params.radius[b, k])
            size = min(_SIZE_NAMES, key=lambda s: abs(SIZES[s] - radius))
            x, y = (float(v) for v in params.centre[b, k])
            objects.append(SceneObject(SHAPES[int(params.shape_logits[b, k].argmax())],
                                       _COLOUR_NAMES[int(params.colour_logits[b, k].argmax())], size, x, y))
        scenes.append(_scene_from_layout(objects))
    return scenes


def _scene_from_layout(objects: list[SceneObject]) -> Scene | None:
    if len(objects) == 1:
        return Scene(tuple(objects))
    for axis, (i, j) in (("horizontal", (0, 1)), ("vertical", (1, 0))):  # (coordinate along, across)
        along = lambda o: (o.x, o.y)[i]  # noqa: E731
        ordered = sorted(objects, key=along)
        in_row = all(along(a) + a.radius < along(b) - b.radius for a, b in zip(ordered, ordered[1:]))
        spread_along = along(ordered[-1]) - along(ordered[0])
        spread_across = max((o.x, o.y)[j] for o in objects) - min((o.x, o.y)[j] for o in objects)
        if in_row and spread_along > spread_across:
            if len(objects) == 2:
                return Scene(tuple(ordered), "left of" if axis == "horizontal" else "above")
            return Scene(tuple(ordered), "left to right" if axis == "horizontal" else "top to bottom")
    return None


def straight_through_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """One-hot of the arg-max along the last axis in the forward pass; the softmax's gradient in the backward pass.

    (..., C) -> (..., C). The value is exactly one-hot (hard + soft - soft, where soft - soft.detach() is 0 but
    carries soft's gradient), so the renderer draws a real colour and shape while the logits still learn.

        >>> straight_through_one_hot(torch.tensor([0.1, 2.0, -1.0]))
        tensor([0., 1., 0.])
    """
    soft = logits.softmax(-1)
    hard = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard + soft - soft.detach()


def render(params: SceneParams, image_size: int, edge: float = 1.0, hard: bool = False,
           straight_through: bool = False, temperature: float = 1.0) -> torch.Tensor:
    """Draw SceneParams: float (B, 3, S, S) in 0..255, white background, differentiable in every parameter.

    Each pixel whose centre lies d pixels outside an object's outline (d < 0 inside) gets coverage
    clamp(0.5 - d / edge, 0, 1). edge=1 is minclip.shapes' one-pixel antialiased edge; a wider edge blurs the
    outline, so pixels further away feel a change of position or size (gradients reach further). hard=True draws the
    arg-max colour and shape instead of the softmax mixtures: with edge=1 that is minclip.shapes.render_scenes
    (before its rounding to uint8). straight_through=True draws the arg-max too, but lets the gradients pass to
    the logits as if the mixtures had been drawn (the straight-through estimator, Bengio et al., 2013): the image
    the model scores is then always one that decode describes. `temperature` divides the logits before the softmax:
    below 1 the mixtures sharpen towards the arg-max, and as it nears 0 the soft render becomes the hard one.
    """
    if not edge > 0:
        raise ValueError(f"edge must be a positive width in pixels, got {edge!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    centre, radius = params.centre, params.radius
    B, K, _ = centre.shape
    logits = (params.colour_logits / temperature, params.shape_logits / temperature)  # (B, K, 6), (B, K, 5)
    if hard:
        colour_weights, shape_weights = (F.one_hot(w.argmax(-1), w.shape[-1]).float() for w in logits)
    elif straight_through:
        colour_weights, shape_weights = (straight_through_one_hot(w) for w in logits)
    else:
        colour_weights, shape_weights = (w.softmax(-1) for w in logits)
    colours = colour_weights @ _PALETTE  # (B, K, 3)
    pixels = torch.arange(image_size, dtype=torch.float32) + 0.5  # pixel centres, in pixels
    canvas = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1).expand(B, 3, image_size, image_size)
    for k in range(K):
        r = radius[:, k].view(B, 1, 1) * image_size  # (B, 1, 1) box half-width in pixels
        x = (pixels.view(1, 1, -1) - centre[:, k, 0].view(B, 1, 1) * image_size) / r  # (B, 1, S) in box units
        y = (pixels.view(1, -1, 1) - centre[:, k, 1].view(B, 1, 1) * image_size) / r  # (B, S, 1)
        distance = 0.0
        for s, name in enumerate(SHAPES):
            weight = shape_weights[:, k, s].view(B, 1, 1)
            if hard and not bool(weight.any()):
                continue  # hard mode: skip shapes that no scene of the batch draws here
            distance = distance + weight * SHAPE_SDF[name](x, y)  # (B, S, S) in box units
        coverage = (0.5 - distance * r / edge).clamp(0, 1).unsqueeze(1)  # (B, 1, S, S)
        canvas = canvas + coverage * (colours[:, k].view(B, 3, 1, 1) - canvas)  # alpha-blend, as minclip.shapes
    return canvas


def to_uint8(canvas: torch.Tensor) -> torch.Tensor:
    """float (B, 3, S, S) in 0..255 -> uint8 (B, S, S, 3), rounded as minclip.shapes rounds."""
    return canvas.detach().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def normalise(canvas: torch.Tensor) -> torch.Tensor:
    """float (B, 3, S, S) in 0..255 -> the model's input: scaled to 0..1 and normalised, as data.to_model_input."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (canvas / 255 - mean) / std


# ---------------------------------------------------------------------------------------------------------------------
# 4. Gradient guidance: ascend CLIP's similarity through the renderer, over several shifted views per step, then
# settle the discrete choices by search.
#
# Four things turn the bare ascent into one that draws the caption:
# - a softmax relaxation whose temperature falls over the steps: early steps draw mixtures of colours and shapes
#   (every category gets a gradient), late steps draw nearly one-hot ones (what CLIP scores is what we decode);
# - a start in a row on the caption's axis, and a prior that keeps it a row after every step (keep_in_row): CLIP's
#   gradient hardly moves the layout the right way, so the layout is taken from the caption, as reranking does;
# - snap, then search one object at a time (choose_categories): its discrete choices are settled by trying every
#   combination of colour, shape and size and keeping CLIP's favourite, which needs no gradient at all;
# - a readout over fixed shifted views (readout_scores): one render's score is noisy, the mean of 8 is steadier.

RELAXATIONS = ("softmax", "straight-through")  # how guide draws colours and shapes while it ascends
STARTS = ("row", "random")  # where guide's restarts begin: a row on the caption's axis, or anywhere
ROW_JITTER = 0.03  # how far (a fraction of the side) row_params moves each object off its even spot, per restart
ROW_GAP = _GAP  # the free space keep_in_row leaves between neighbouring boxes, as minclip.shapes' rows have


def random_views(canvas: torch.Tensor, views: int, max_shift: int, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """views shifted copies of each image: (B, 3, S, S) -> (B * views, 3, S, S), differentiable.

    Each copy is cut from the image padded by max_shift repeated border pixels, at a random offset in
    [0, 2 max_shift]^2 (a shift of up to max_shift pixels each way), as data.augment shifts training images.
    """
    B, C, S, _ = canvas.shape
    if max_shift == 0:
        return canvas.repeat_interleave(views, dim=0)
    padded = F.pad(canvas, (max_shift,) * 4, mode="replicate")  # (B, 3, S + 2m, S + 2m)
    offsets = torch.randint(0, 2 * max_shift + 1, (B * views, 2), generator=generator).tolist()
    crops = [padded[i // views, :, dy:dy + S, dx:dx + S] for i, (dy, dx) in enumerate(offsets)]
    return torch.stack(crops)  # (B * views, 3, S, S)


def shifted_views(canvas: torch.Tensor, max_shift: int) -> torch.Tensor:
    """The 8 copies of each image shifted by max_shift pixels towards its 8 neighbours: (B, 3, S, S) ->
    (B * 8, 3, S, S), the 8 views of image b at rows 8b .. 8b + 7. The same shifts every call (random_views draws
    new ones), so a score averaged over them is a fixed function of the image. max_shift=0: the images themselves.
    """
    if max_shift == 0:
        return canvas
    B, C, S, _ = canvas.shape
    m = max_shift
    padded = F.pad(canvas, (m,) * 4, mode="replicate")  # (B, 3, S + 2m, S + 2m)
    offsets = [(dy, dx) for dy in (0, m, 2 * m) for dx in (0, m, 2 * m) if (dy, dx) != (m, m)]  # not the centre
    crops = [padded[:, :, dy:dy + S, dx:dx + S] for dy, dx in offsets]  # 8 x (B, 3, S, S)
    return torch.stack(crops, dim=1).reshape(B * len(offsets), C, S, S)  # (B, 8, 3, S, S) -> (B * 8, 3, S, S)


def image_text_similarity(model, canvas: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of images (B, 3, S, S) in 0..255 with unit text features (E,) -> (B,), differentiable."""
    features = F.normalize(model.encode_image(normalise(canvas)), dim=-1)  # (B, E)
    return features @ text_features


def readout_scores(model, params: SceneParams, text_features: torch.Tensor, max_shift: int = 4) -> torch.Tensor:
    """CLIP's score of each scene drawn hard (what decode reads), averaged over its shifted_views: (B,), no grad."""
    with torch.no_grad():
        canvas = render(params, model.config.image_size, hard=True)  # (B, 3, S, S)
        scores = image_text_similarity(model, shifted_views(canvas, max_shift), text_features)  # (B * views,)
    return scores.view(len(canvas), -1).mean(dim=1)  # (B, views) -> (B,)


def random_params(batch: int, objects: int, generator: torch.Generator | None = None) -> SceneParams:
    """Starting points for guidance: random centres, the middle radius, near-uniform colours and shapes."""
    lo, hi = RADIUS_RANGE
    return SceneParams(0.2 + 0.6 * torch.rand(batch, objects, 2, generator=generator),
                       torch.full((batch, objects), (lo + hi) / 2),
                       0.1 * torch.randn(batch, objects, len(_COLOUR_NAMES), generator=generator),
                       0.1 * torch.randn(batch, objects, len(SHAPES), generator=generator))


def row_params(batch: int, objects: int, axis: str | None, generator: torch.Generator | None = None) -> SceneParams:
    """Starting points in a row: objects evenly spaced along `axis`, in the middle across it, each moved by up to
    ROW_JITTER at random; the middle radius, near-uniform colours and shapes. axis None: one object, in the centre.

        >>> decode(row_params(1, 2, "vertical"))[0].relation
        'above'
    """
    if axis not in (None, "horizontal", "vertical") or (axis is None) != (objects == 1):
        raise ValueError(f"axis must be 'horizontal' or 'vertical' for 2 or 3 objects and None for one, got "
                         f"axis={axis!r} with {objects} objects")
    lo, hi = RADIUS_RANGE
    along = (torch.arange(objects, dtype=torch.float32) + 0.5) / objects  # (K,) e.g. 1/4, 3/4 for two objects
    even = torch.stack([along, torch.full((objects,), 0.5)], dim=-1)  # (K, 2) as (along, across)
    if axis == "vertical":
        even = even.flip(-1)  # (K, 2) as (x, y): the row runs down the image
    jitter = ROW_JITTER * (2 * torch.rand(batch, objects, 2, generator=generator) - 1)  # (B, K, 2)
    return SceneParams(even + jitter,
                       torch.full((batch, objects), (lo + hi) / 2),
                       0.1 * torch.randn(batch, objects, len(_COLOUR_NAMES), generator=generator),
                       0.1 * torch.randn(batch, objects, len(SHAPES), generator=generator))


def keep_in_row(params: SceneParams, axis: str | None) -> SceneParams:
    """Project scenes back into valid rows along `axis`, in place (no gradient), and return them.

    Radii go into RADIUS_RANGE (and shrink together if the row would not fit across the image). Across the axis,
    every object moves to the objects' mean line. Along it, object k stays k-th: a forward sweep pushes each box at
    least ROW_GAP past the one before, a backward sweep pulls the row back inside the image. decode then reads the
    objects in index order on `axis` (for radii equal to the decoded sizes, as snap makes them). axis None: only
    radii and centres are kept inside the image, objects may go anywhere.
    """
    with torch.no_grad():
        params.radius.clamp_(*RADIUS_RANGE)
        K = params.centre.shape[1]
        if axis is None or K == 1:
            params.centre.copy_(params.centre.clamp(0, 1).clamp(min=params.radius[..., None])
                                .minimum(1 - params.radius[..., None]))
            return params
        if axis not in ("horizontal", "vertical"):
            raise ValueError(f"axis must be None, 'horizontal' or 'vertical', got {axis!r}")
        room = 1 - ROW_GAP * (K - 1)  # what the boxes may fill, side by side
        scale = (room / (2 * params.radius.sum(dim=1))).clamp(max=1)  # (B,) 1 where the row fits
        params.radius.mul_(scale[:, None])
        r = params.radius  # (B, K)
        i, j = (0, 1) if axis == "horizontal" else (1, 0)  # the coordinate along the row, and across it
        along = params.centre[..., i].clone()  # (B, K)
        along[:, 0] = along[:, 0].clamp(min=r[:, 0])
        for k in range(1, K):  # forward: each box starts ROW_GAP after the previous one ends
            along[:, k] = torch.maximum(along[:, k], along[:, k - 1] + r[:, k - 1] + ROW_GAP + r[:, k])
        along[:, -1] = along[:, -1].minimum(1 - r[:, -1])
        for k in range(K - 2, -1, -1):  # backward: each box ends ROW_GAP before the next one starts
            along[:, k] = torch.minimum(along[:, k], along[:, k + 1] - r[:, k + 1] - ROW_GAP - r[:, k])
        largest = r.max(dim=1).values  # (B,)
        line = params.centre[..., j].mean(dim=1).clamp(min=largest).minimum(1 - largest)  # (B,)
        params.centre[..., i] = along
        params.centre[..., j] = line[:, None]
    return params


def snap(params: SceneParams, axis: str | None = None) -> SceneParams:
    """A discrete scene from each relaxed one: one-hot logits (height 12, as encode) at the arg-max colour and shape,
    each radius the nearest of minclip.shapes.SIZES, positions kept. With an axis, keep_in_row then re-spaces the row
    for the snapped sizes. Returns new SceneParams; render(..., hard=True) of them is what decode describes."""
    colours, shapes = params.colour_logits.argmax(-1), params.shape_logits.argmax(-1)  # (B, K) each
    nearest = (params.radius.detach()[..., None] - _RADII).abs().argmin(-1)  # (B, K) index of the nearest size
    snapped = SceneParams(params.centre.detach().clone(), _RADII[nearest],
                          _LOGIT * F.one_hot(colours, len(_COLOUR_NAMES)).float(),
                          _LOGIT * F.one_hot(shapes, len(SHAPES)).float())
    return snapped if axis is None else _keep_sizes_in_row(snapped, axis)


def _keep_sizes_in_row(params: SceneParams, axis: str) -> SceneParams:
    """keep_in_row without touching the radii (the snapped sizes lie inside RADIUS_RANGE already)."""
    radius = params.radius.clone()
    keep_in_row(params, axis)
    params.radius.copy_(radius)  # a row that cannot fit (three large objects) overlaps: decode reads None
    return params


SEARCH_STEPS = {  # what choose_categories changes together in one step, in order, for each object
    "one": (("colour",), ("shape",), ("size",)),  # one attribute at a time: 6, 5, 2 candidates
    "pairs": (("colour", "shape"), ("size",)),  # colour and shape together (30 candidates), then size
    "all": (("colour", "shape", "size"),),  # every combination of one object's attributes at once: 60 candidates
}


def choose_categories(score, params: SceneParams, axis: str | None = None, rounds: int = 2,
                      steps: str = "all") -> SceneParams:
    """Coordinate search over the discrete choices of snapped scenes: returns better scenes, never worse ones.

    score: a function from SceneParams (N scenes) to (N,) scores, higher is better (e.g. readout_scores with the
    model and the caption bound). For each object, each step of SEARCH_STEPS[steps] tries every combination of its
    attributes' values at once (a batch of B x combinations scenes), and each scene keeps its best; `rounds` passes
    over all objects. The current values are among the candidates, so no step lowers the score. Changing attributes
    together escapes a trap of one-at-a-time search: a yellow star may beat both a red star and a yellow circle while
    a red circle beats them all. With an axis, a size change re-spaces the row.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds!r}")
    if steps not in SEARCH_STEPS:
        raise ValueError(f"steps must be one of {tuple(SEARCH_STEPS)}, got {steps!r}")
    params = params.detach()
    B, K = params.radius.shape
    counts = {"colour": len(_COLOUR_NAMES), "shape": len(SHAPES), "size": len(_RADII)}
    for _ in range(rounds):
        for k in range(K):
            for attributes in SEARCH_STEPS[steps]:
                values = torch.cartesian_prod(*(torch.arange(counts[a]) for a in attributes))  # (C,) or (C, 2)
                values = values.view(len(values), len(attributes))  # (C, A): one row per combination
                C = len(values)
                candidates = SceneParams(*(t.repeat_interleave(C, dim=0) for t in params.tensors()))  # B * C scenes
                chosen = values.repeat(B, 1)  # (B * C, A) candidate c of scene b at row b * C + c
                for a, attribute in enumerate(attributes):
                    if attribute == "colour":
                        candidates.colour_logits[:, k] = _LOGIT * F.one_hot(chosen[:, a], counts[attribute]).float()
                    elif attribute == "shape":
                        candidates.shape_logits[:, k] = _LOGIT * F.one_hot(chosen[:, a], counts[attribute]).float()
                    else:
                        candidates.radius[:, k] = _RADII[chosen[:, a]]
                        if axis is not None:
                            _keep_sizes_in_row(candidates, axis)
                scores = score(candidates).view(B, C)  # (B * C,) -> (B, C)
                rows = torch.arange(B) * C + scores.argmax(dim=1)  # (B,) each scene's best candidate
                params = SceneParams(*(t[rows] for t in candidates.tensors()))
    return params


@dataclass
class Guided:
    """What guide returns. params: (R, K, ...) every restart's final scene, snapped (one-hot logits, the two legal
    radii), so render(params, S, hard=True)[best] draws `scene` exactly; scores: (R,) readout_scores of each restart
    (CLIP's mean score over 8 fixed shifted views of its hard render); best: the restart kept; scene: its decoded Scene
    (None: not a row); frames: uint8 (F, S, S, 3) the kept restart's relaxed render at evenly spaced gradient steps;
    history: (steps, R) mean score of the random views at each gradient step."""

    params: SceneParams
    scores: torch.Tensor
    best: int
    scene: Scene | None
    frames: torch.Tensor
    history: torch.Tensor = field(repr=False)


def guide(model, tokenizer, caption: str, steps: int = 150, restarts: int = 4, views: int = 8, max_shift: int = 4,
          lr: float = 0.02, edge: tuple[float, float] = (8.0, 1.0), relaxation: str = "softmax",
          temperature: tuple[float, float] = (1.0, 0.1), start: str = "row", prior: bool = True,
          search: str | None = "all",
          frames: int = 8, seed: int = 0, objects: int | None = None, init: SceneParams | None = None) -> Guided:
    """Draw `caption` by gradient ascent of CLIP's similarity through `render`, then a search over discrete choices.

    1. Start. The caption's axis and number of objects are read off it (parse_caption). start="row": `restarts`
       rows on that axis (row_params, each jittered differently); "random": objects anywhere (random_params).
       `init` (SceneParams with R scenes) replaces both. A caption that is no shapes caption (e.g. an emoji's name)
       needs `objects`, and its objects start in a horizontal row.
    2. Ascent. Each step renders every restart with an edge width falling geometrically from edge[0] to edge[1]
       pixels (coarse to fine) and colours and shapes relaxed: relaxation="softmax" draws softmax(logits / T)
       mixtures with T falling geometrically from temperature[0] to temperature[1]; "straight-through" draws the
       arg-max and learns through the softmax. It scores `views` randomly shifted copies of each restart and takes
       an Adam step up their mean. prior=True then projects every restart back into a row on the axis
       (keep_in_row); prior=False only keeps objects inside the image.
    3. Snap and search. Each restart becomes a discrete scene (snap); search="all" then tries every colour, shape
       and size combination of each object in turn and keeps CLIP's favourite (choose_categories, 2 rounds); "pairs"
       and "one" change fewer attributes per step (SEARCH_STEPS); None skips the search.
    4. Readout. Each restart's score is the mean over 8 fixed shifted views of its hard render (readout_scores); the
       best is decoded. So restarts > 1 is reranking on top of guidance.
    """
    try:
        axis, words = parse_caption(caption)
        count = len(words)
    except ValueError:
        if objects is None:
            raise  # the message names the captions that are understood
        axis, count = (None if objects == 1 else "horizontal"), objects
    objects = count if objects is None else objects
    if objects != count:
        raise ValueError(f"objects={objects} disagrees with the caption, which names {count}")
    if objects not in (1, 2, 3):
        raise ValueError(f"objects must be 1, 2 or 3, got {objects!r}")
    if steps < 1 or restarts < 1 or views < 1 or max_shift < 0 or frames < 1:
        raise ValueError(f"steps, restarts, views and frames must be >= 1 and max_shift >= 0, got steps={steps}, "
                         f"restarts={restarts}, views={views}, max_shift={max_shift}, frames={frames}")
    if relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {RELAXATIONS}, got {relaxation!r}")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if search is not None and search not in SEARCH_STEPS:
        raise ValueError(f"search must be one of {tuple(SEARCH_STEPS)} or None, got {search!r}")
    if len(temperature) != 2 or not all(t > 0 for t in temperature):
        raise ValueError(f"temperature must be two positive numbers (first step, last step), got {temperature!r}")
    from .evaluate import encode_texts

    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    text = encode_texts(model, tokenizer, [caption])[0]  # (E,) unit length
    if init is not None:
        if init.centre.shape[1] != objects:
            raise ValueError(f"init has {init.centre.shape[1]} objects per scene, the caption {objects}")
        params = init.detach()
    elif start == "row":
        params = row_params(restarts, objects, axis, generator)
    else:
        params = random_params(restarts, objects, generator)
    restarts = len(params.centre)
    layout = axis if prior else None  # what keep_in_row holds the objects to: a row on the axis, or just the image
    keep_in_row(params, layout)
    for tensor in params.tensors():
        tensor.requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [params.centre, params.radius], "lr": lr},
                                  {"params": [params.colour_logits, params.shape_logits], "lr": 10 * lr}])
    keep = set(np.linspace(0, steps - 1, frames).round().astype(int).tolist())
    history, snapshots = [], []
    was_training = model.training
    model.eval()
    model.requires_grad_(False)
    try:
        for step in range(steps):
            progress = step / max(1, steps - 1)  # 0 at the first step, 1 at the last
            width = edge[0] * (edge[1] / edge[0]) ** progress  # geometric: edge[0] -> edge[1]
            heat = temperature[0] * (temperature[1] / temperature[0]) ** progress  # geometric, as the edge
            canvas = render(params, size, edge=width, straight_through=relaxation == "straight-through",
                            temperature=heat)  # (R, 3, S, S)
            if step in keep:
                snapshots.append(to_uint8(canvas))
            scores = image_text_similarity(model, random_views(canvas, views, max_shift, generator), text)
            scores = scores.view(restarts, views).mean(dim=1)  # (R,)
            history.append(scores.detach())
            optimizer.zero_grad()
            (-scores.sum()).backward()  # restarts are independent: the sum's gradient is each one's own
            optimizer.step()
            keep_in_row(params, layout)
        params = snap(params, layout)
        if search is not None:
            params = choose_categories(lambda p: readout_scores(model, p, text, max_shift), params, layout,
                                       steps=search)
        final = readout_scores(model, params, text, max_shift)  # (R,)
    finally:
        model.requires_grad_(True)
        model.train(was_training)
    best = int(final.argmax())
    return Guided(params, final, best, decode(params)[best], torch.stack([s[best] for s in snapshots]),
                  torch.stack(history))


def matches(scene: Scene | None, caption: str) -> bool:
    """Whether a (decoded) scene shows exactly what the caption says: same objects, same order, same axis."""
    return scene is not None and describe(scene) == parse_caption(caption)


# ---------------------------------------------------------------------------------------------------------------------
# 5. Pixels: the same ascent with no renderer in between. `parametrisation` says what is optimised:
#    "pixels": every pixel of the S x S image; "lowres": an image of side S // factor, upsampled bilinearly.

def optimise_image(model, text_features: torch.Tensor, start: torch.Tensor, steps: int = 100, lr: float = 0.05,
                   parametrisation: str = "pixels", factor: int = 8, views: int = 1, max_shift: int = 0,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascend `model`'s similarity to `text_features` (E,) from the uint8 image `start` (S, S, 3).

    The image lives in logit space (pixel = 255 sigmoid(z)), so it always stays a valid image. Returns the final
    uint8 image (S, S, 3) and the per-step mean score of the views (steps,). views > 1 with max_shift > 0 scores
    shifted copies, as guide does.
    """
    if parametrisation not in ("pixels", "lowres"):
        raise ValueError(f"parametrisation must be 'pixels' or 'lowres', got {parametrisation!r}")
    if not isinstance(start, torch.Tensor) or start.dtype != torch.uint8 or start.ndim != 3 or start.shape[-1] != 3:
        raise ValueError(f"start must be a uint8 image (S, S, 3), got {getattr(start, 'shape', type(start))}")
    S = start.shape[0]
    if parametrisation == "lowres" and S % factor:
        raise ValueError(f"factor must divide the image side {S}, got {factor}")
    generator = torch.Generator().manual_seed(seed)
    x = start.permute(2, 0, 1)[None].float().div(255).clamp(1 / 512, 1 - 1 / 512)  # (1, 3, S, S) in (0, 1)
    if parametrisation == "lowres":
        x = F.interpolate(x, size=(S // factor, S // factor), mode="area")  # (1, 3, S/f, S/f)
    z = torch.logit(x).requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)

    def image() -> torch.Tensor:  # (1, 3, S, S) in 0..255
        pixels = torch.sigmoid(z)
        if parametrisation == "lowres":
            pixels = F.interpolate(pixels, size=(S, S), mode="bilinear", align_corners=False)
        return 255 * pixels

    history = []
    was_training = model.training
    model.eval()
    model.requires_grad_(False)
    try:
        for _ in range(steps):
            score = image_text_similarity(model, random_views(image(), views, max_shift, generator), text_features)
            history.append(score.mean().detach())
            optimizer.zero_grad()
            (-score.mean()).backward()
            optimizer.step()
    finally:
        model.requires_grad_(True)
        model.train(was_training)
    return to_uint8(image())[0], torch.stack(history)


PARAMETRISATIONS = ("pixels", "pixels + views", "low-res + views", "renderer + views")


def prior_experiment(model, tokenizer, other, other_tokenizer, caption: str, real: torch.Tensor, steps: int = 150,
                     views: int = 8, max_shift: int = 4, seed: int = 0) -> dict:
    """Optimise an image towards `caption` with `model` four ways, and score every result with both models.

    From a mid-grey image: raw pixels (one view per step), raw pixels scored over `views` shifted copies, an 8 x 8
    image upsampled to the model's size (with views), and the shapes renderer with one object (with views, 2
    restarts). `other` is a second model (e.g. trained with another seed) that took no part in the optimisation.
    Returns {"images": {name: uint8 (S, S, 3)}, "score": {name: cosine under model}, "other": {name: cosine under
    other}} for "real" (the caption's real image), "start" and each of PARAMETRISATIONS.
    """
    from .evaluate import encode_texts

    size = model.config.image_size
    text = encode_texts(model, tokenizer, [caption])[0]  # (E,)
    start = torch.full((size, size, 3), 128, dtype=torch.uint8)
    shifted = {"views": views, "max_shift": max_shift, "seed": seed}
    images = {"real": real, "start": start,
              "pixels": optimise_image(model, text, start, steps, lr=0.1, seed=seed)[0],
              "pixels + views": optimise_image(model, text, start, steps, lr=0.1, **shifted)[0],
              "low-res + views": optimise_image(model, text, start, steps, lr=0.1, parametrisation="lowres",
                                                factor=8, **shifted)[0]}
    drawn = guide(model, tokenizer, caption, steps=steps, restarts=2, objects=1, frames=1, **shifted)
    images["renderer + views"] = to_uint8(render(drawn.params, size, hard=True))[drawn.best]
    stack = torch.stack(list(images.values()))  # (6, S, S, 3)
    return {"images": images,
            "score": dict(zip(images, clip_scores(model, tokenizer, caption, stack).tolist())),
            "other": dict(zip(images, clip_scores(other, other_tokenizer, caption, stack).tolist()))}

def _check_key(key: Key) -> Key:
    if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], tuple) and 1 <= len(key[1]) <= 3
            and (key[0] is None) == (len(key[1]) == 1)):
        raise ValueError(f"key must be (axis, objects) as parse_caption returns, got {key!r}")
    return key

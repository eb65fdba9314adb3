"""Shapes: a procedural image–caption set that tests whether a model binds words to the right objects.

Every image holds one to three coloured shapes on white; its caption names their sizes, colours, shapes and where
they are: "a small red circle above a large blue square" / "큰 파란 사각형 위에 작은 빨간 원". Scenes come from a
seed, so the set needs no files and no download, and a CPU renders thousands of images a second.

Why it exists. A contrastive model can reach high retrieval scores while treating a caption as a bag of words
(Yuksekgonul et al., 2023, "When and why vision-language models behave like bags-of-words, and what to do about
it?"). "a red circle to the left of a blue square" and "a blue circle to the left of a red square" contain the same
words, so only a model that binds "red" to "circle" and both to "left" can tell them apart (the idea of Winoground,
Thrush et al., 2022). Following CLEVR's CoGenT split (Johnson et al., 2017), some colour × shape × relation
combinations never appear in training; the test split holds exactly those, and gives every test image its true
caption and word-swapped *foils*. Binding accuracy = P(score(image, true caption) > score(image, foil)): a
bag-of-words model scores both equally and cannot beat chance (50%).

How the pieces fit:
    generate_scene(split, seed, index) -> Scene       # random attributes and layout; pure function of its arguments
    render_scene(scene, image_size)    -> (S, S, 3)   # numpy drawing with signed distances, antialiased
    Scene.caption(lang), Scene.foils(lang)            # English / Korean text from the same scene
    ShapesDataset(split, lang, image_size, ...)       # torch Dataset: item i = (uint8 image (S, S, 3), caption)

Drawing. Each shape is a signed distance function (SDF): negative inside, positive outside. The pixel whose centre
lies d pixels from the outline gets coverage clip(0.5 - d, 0, 1), a one-pixel-wide antialiased edge without
supersampling. Three SDFs draw everything: circle, box (the square) and polygon (triangle, star); the heart is the
union of a turned box and two circles, and the SDF of a union is the minimum of the parts' SDFs.

Geometry and captions. Every object lives in a square box of half-width `SIZES[size]` (a fraction of the image
side); boxes never overlap and stay inside the image. "A above B" means A's box lies entirely above B's box (and the
two are offset more vertically than horizontally); "from left to right" lists objects whose boxes are strictly
ordered along x. Captions that say left/right are contradicted by a horizontal flip (and above/below by a vertical
one): augmentation must not flip these images, or must swap the words too (see minclip/data.py).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import torch

from .data import CAPTION_LANGS, LANGS, SPLITS

# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary: attribute names (English keys) with their Korean words and RGB colours.

SHAPES = ("circle", "square", "triangle", "star", "heart")
COLOURS = {  # saturated colours that stay distinct from each other and from the white background
    "red": (220, 38, 38),
    "orange": (245, 130, 20),
    "yellow": (230, 185, 0),
    "green": (30, 150, 60),
    "blue": (35, 95, 230),
    "purple": (135, 60, 190),
}
SIZES = {"small": 0.10, "large": 0.17}  # half-width of an object's box, as a fraction of the image side
BACKGROUND = (255, 255, 255)

# Korean: adjectives precede the noun as in English ("작은 빨간 원" = small red circle). Colour words use the
# attributive forms people say (빨간, 노란, 파란; 주황색, 초록색, 보라색). The relation goes after the reference
# object with the locative particle 에, which, unlike 이/가 or 와/과, does not change with the final consonant.
KOREAN = {
    "circle": "원", "square": "사각형", "triangle": "삼각형", "star": "별", "heart": "하트",
    "red": "빨간", "orange": "주황색", "yellow": "노란", "green": "초록색", "blue": "파란", "purple": "보라색",
    "small": "작은", "large": "큰",
}

# Relations between objects[0] and objects[1] (two objects), or the order objects are listed in (three objects).
PAIR_RELATIONS = ("left of", "right of", "above", "below")
LIST_RELATIONS = ("left to right", "top to bottom")
_RELATION_EN = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
_RELATION_KO = {"left of": "왼쪽에", "right of": "오른쪽에", "above": "위에", "below": "아래에"}  # "B 위에 A": A above B
_LIST_KO = {"left to right": "왼쪽부터 차례로", "top to bottom": "위에서부터 차례로"}

DEFAULT_NUM_IMAGES = {"train": 10_000, "val": 1_000, "test": 1_000}
MIN_IMAGE_SIZE = 24  # below this a small shape is under 5 pixels wide and no longer recognisable

_MARGIN = 0.03  # free border around the image, fraction of its side
_GAP = 0.04  # minimum gap between the boxes of neighbouring objects
_JITTER = 0.08  # how far objects in a row may stray from a common line (keeps "left of" clearly horizontal)
_NUM_OBJECTS_CDF = (0.2, 0.7)  # P(one object) = 0.2, P(two) = 0.5, P(three) = 0.3 in train/val scenes
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


# ---------------------------------------------------------------------------------------------------------------------
# Scenes: what is in the picture. Captions and foils are pure functions of a Scene.

@dataclass(frozen=True)
class SceneObject:
    """One shape. `x`, `y`: centre as a fraction of the image side (y grows downwards, as in image rows)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    def __post_init__(self):
        for name, value, allowed in (("shape", self.shape, SHAPES), ("colour", self.colour, tuple(COLOURS)),
                                     ("size", self.size, tuple(SIZES))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

    @property
    def radius(self) -> float:
        """Half-width of the object's box, as a fraction of the image side."""
        return SIZES[self.size]

    def describe(self, lang: str) -> str:
        """'a small red circle' (en) or '작은 빨간 원' (ko)."""
        if lang == "ko":
            return f"{KOREAN[self.size]} {KOREAN[self.colour]} {KOREAN[self.shape]}"
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Objects in the order the caption mentions them, and how they relate.

    relation: None (one object); for two objects one of PAIR_RELATIONS, read "objects[0] <relation> objects[1]";
    for three objects one of LIST_RELATIONS, the order in which `objects` are listed.

    Example:
        >>> red = SceneObject("circle", "red", "small", 0.5, 0.25)
        >>> blue = SceneObject("square", "blue", "large", 0.5, 0.7)
        >>> scene = Scene((red, blue), "above")
        >>> scene.caption("en"), scene.caption("ko")
        ('a small red circle above a large blue square', '큰 파란 사각형 위에 작은 빨간 원')
        >>> scene.foils("en")["colour"]
        'a small blue circle above a large red square'
    """

    objects: tuple[SceneObject, ...]
    relation: str | None = None

    def __post_init__(self):
        allowed = {1: (None,), 2: PAIR_RELATIONS, 3: LIST_RELATIONS}.get(len(self.objects))
        if allowed is None or self.relation not in allowed:
            raise ValueError(f"a scene has 1 object (relation None), 2 (relation in {PAIR_RELATIONS}) or 3 (relation "
                             f"in {LIST_RELATIONS}); got {len(self.objects)} objects and relation {self.relation!r}")

    @property
    def axis(self) -> str | None:
        """'horizontal' when the caption says left/right, 'vertical' for above/below, None for one object."""
        if self.relation is None:
            return None
        return "horizontal" if self.relation in ("left of", "right of", "left to right") else "vertical"

    def ordered(self) -> tuple[SceneObject, ...]:
        """Objects from left to right (horizontal axis) or top to bottom (vertical axis)."""
        if self.relation in ("right of", "below"):
            return self.objects[::-1]
        return self.objects

    def caption(self, lang: str = "en") -> str:
        """The caption in English ('en') or Korean ('ko')."""
        if lang not in CAPTION_LANGS:
            raise ValueError(f"lang must be 'en' or 'ko' for one caption, got {lang!r}")
        words = [obj.describe(lang) for obj in self.objects]
        if self.relation is None:
            return words[0]
        if self.relation in PAIR_RELATIONS:
            if lang == "ko":  # "큰 파란 사각형 위에 작은 빨간 원": reference, place + 에, then the subject
                return f"{words[1]} {_RELATION_KO[self.relation]} {words[0]}"
            return f"{words[0]} {_RELATION_EN[self.relation]} {words[1]}"
        if lang == "ko":
            return f"{_LIST_KO[self.relation]} {', '.join(words)}"
        return f"{', '.join(words[:-1])} and {words[-1]} from {self.relation}"

    def foils(self, lang: str = "en") -> dict[str, str]:
        """False captions that use exactly the words of the true caption, in swapped roles.

        For each pair of objects: swap their colours ('colour'), shapes ('shape'), sizes ('size'), or the whole
        objects ('role'). Keys are those kinds for two objects and e.g. 'colour 1-3' for three. A foil is left
        out when it equals the true caption (e.g. a colour swap of two red objects) or an earlier foil.
        Every foil is false for the image: it names an object that is not there, or puts two objects in the
        opposite order.
        """
        true_caption = self.caption(lang)
        foils: dict[str, str] = {}
        for i, j in combinations(range(len(self.objects)), 2):
            a, b = self.objects[i], self.objects[j]
            swaps = {
                "colour": (replace(a, colour=b.colour), replace(b, colour=a.colour)),
                "shape": (replace(a, shape=b.shape), replace(b, shape=a.shape)),
                "size": (replace(a, size=b.size), replace(b, size=a.size)),
                "role": (b, a),
            }
            for kind, (new_a, new_b) in swaps.items():
                objects = list(self.objects)
                objects[i], objects[j] = new_a, new_b
                foil = Scene(tuple(objects), self.relation).caption(lang)
                if foil != true_caption and foil not in foils.values():
                    foils[kind if len(self.objects) == 2 else f"{kind} {i + 1}-{j + 1}"] = foil
        return foils

    def binding_keys(self) -> set[tuple[str, tuple[str, str], tuple[str, str]]]:
        """Every (axis, (colour, shape) first, (colour, shape) second) pair the caption states.

        'first' is the left (horizontal) or upper (vertical) object, so "A left of B" and "B right of A" give the
        same key. These are the combinations the test split holds out.
        """
        if self.relation is None:
            return set()
        return {(self.axis, (a.colour, a.shape), (b.colour, b.shape)) for a, b in combinations(self.ordered(), 2)}


# ---------------------------------------------------------------------------------------------------------------------
# Held-out combinations. For two colours c != d and two shapes s != t on one axis, the four keys
#   (c s, d t), (d s, c t), (c t, d s), (d t, c s)
# are one "swap group": their captions are word-swaps of each other. Whole groups are held out, so no word-swapped
# version of a test caption was seen in training and the test split holds images for every member of the group.

HELD_OUT_GROUPS_PER_AXIS = 15  # of the 15 colour pairs x 10 shape pairs = 150 groups on each axis
_HELD_OUT_SEED = 20240611  # fixed, so every seed and split agrees on what is held out


def _held_out_combinations() -> tuple[tuple[str, tuple[str, str], tuple[str, str]], ...]:
    rng = np.random.default_rng(_HELD_OUT_SEED)
    keys = []
    for axis in ("horizontal", "vertical"):
        groups = [(c, d, s, t) for c, d in combinations(COLOURS, 2) for s, t in combinations(SHAPES, 2)]
        for g in sorted(rng.choice(len(groups), size=HELD_OUT_GROUPS_PER_AXIS, replace=False)):
            c, d, s, t = groups[g]
            keys += [(axis, (c, s), (d, t)), (axis, (d, s), (c, t)), (axis, (c, t), (d, s)), (axis, (d, t), (c, s))]
    return tuple(keys)


HELD_OUT_COMBINATIONS = _held_out_combinations()  # 120 keys; the four members of each swap group are adjacent
_HELD_OUT = frozenset(HELD_OUT_COMBINATIONS)


# ---------------------------------------------------------------------------------------------------------------------
# Random scenes.

def _layout(rng: np.random.Generator, radii: list[float], axis: str) -> list[tuple[float, float]]:
    """Centres (x, y) for boxes of the given half-widths, in order along `axis`, separated by at least _GAP.

    Along the axis the free space (slack) is cut at uniformly random points into len(radii) + 1 gaps, which samples
    uniformly among all valid rows. Across the axis objects sit near a common random line (within _JITTER).
    """
    n = len(radii)
    slack = 1 - 2 * _MARGIN - 2 * sum(radii) - _GAP * (n - 1)
    assert slack >= 0, "caller must choose sizes that fit"
    u = rng.random(2 * n + 1).tolist()  # one call: numpy's per-call cost dominates at this size
    cuts = sorted(slack * c for c in u[:n])
    along, position, previous_cut = [], _MARGIN, 0.0
    for radius, cut in zip(radii, cuts):
        position += cut - previous_cut + radius
        along.append(position)
        position, previous_cut = position + radius + _GAP, cut
    largest = max(radii)
    line = _MARGIN + largest + u[n] * (1 - 2 * _MARGIN - 2 * largest)
    across = [min(max(line + _JITTER * (2 * j - 1), _MARGIN + r), 1 - _MARGIN - r) for r, j in zip(radii, u[n + 1:])]
    if axis == "horizontal":
        return list(zip(along, across))
    return list(zip(across, along))


def _fits(sizes: list[str]) -> bool:
    return 2 * sum(SIZES[s] for s in sizes) + _GAP * (len(sizes) - 1) <= 1 - 2 * _MARGIN


_SHAPE_LIST, _COLOUR_LIST, _SIZE_LIST = list(SHAPES), list(COLOURS), list(SIZES)


def _random_attributes(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """n (shape, colour, size) triples, uniform and independent, except that the sizes must fit in one row."""
    while True:  # three large objects do not fit in one row: draw again
        picks = rng.integers(0, [len(_SHAPE_LIST), len(_COLOUR_LIST), len(_SIZE_LIST)], size=(n, 3)).tolist()
        attributes = [(_SHAPE_LIST[s], _COLOUR_LIST[c], _SIZE_LIST[z]) for s, c, z in picks]
        if _fits([size for _, _, size in attributes]):
            return attributes


def _place(rng: np.random.Generator, attributes: list[tuple[str, str, str]], axis: str) -> list[SceneObject]:
    centres = _layout(rng, [SIZES[size] for _, _, size in attributes], axis)
    return [SceneObject(shape, colour, size, x, y) for (shape, colour, size), (x, y) in zip(attributes, centres)]


def _random_scene(rng: np.random.Generator) -> Scene:
    n = 1 + int(np.searchsorted(_NUM_OBJECTS_CDF, rng.random(), side="right"))
    if n == 1:
        return Scene(tuple(_place(rng, _random_attributes(rng, 1), "horizontal")))
    if n == 3:
        relation = LIST_RELATIONS[int(rng.integers(2))]
        axis = "horizontal" if relation == "left to right" else "vertical"
        return Scene(tuple(_place(rng, _random_attributes(rng, 3), axis)), relation)
    relation = PAIR_RELATIONS[int(rng.integers(4))]
    axis = "horizontal" if relation in ("left of", "right of") else "vertical"
    first, second = _place(rng, _random_attributes(rng, 2), axis)  # left/top object first
    if relation in ("right of", "below"):
        first, second = second, first
    return Scene((first, second), relation)


def _held_out_scene(rng: np.random.Generator, key: tuple[str, tuple[str, str], tuple[str, str]]) -> Scene:
    axis, (colour_a, shape_a), (colour_b, shape_b) = key
    size_a, size_b = (_SIZE_LIST[k] for k in rng.integers(len(_SIZE_LIST), size=2).tolist())
    first, second = _place(rng, [(shape_a, colour_a, size_a), (shape_b, colour_b, size_b)], axis)
    if rng.random() < 0.5:  # say it either way round: "A left of B" or "B right of A"
        return Scene((first, second), "left of" if axis == "horizontal" else "above")
    return Scene((second, first), "right of" if axis == "horizontal" else "below")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _check_seed(seed: int) -> None:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_image_size(image_size: int) -> None:
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE} (smaller shapes are unrecognisable), "
                         f"got {image_size!r}")


def generate_scene(split: str = "train", seed: int = 0, index: int = 0) -> Scene:
    """The `index`-th scene of a split: a pure function of (split, seed, index), so any item can be rebuilt alone.

    train and val: one to three random objects, redrawn while the caption states a held-out combination.
    test: two objects in a held-out combination, cycling through HELD_OUT_COMBINATIONS (every one appears once
    the split has at least 120 images, and a swap group's four members are neighbours).

    Example:
        >>> generate_scene("test", seed=0, index=0).binding_keys() <= set(HELD_OUT_COMBINATIONS)
        True
    """
    _check_split(split)
    _check_seed(seed)
    if not _is_int(index) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    # One generator per item, seeded by a fixed-length key (numpy's SeedSequence treats [1] and [1, 0] alike).
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], 0, index])
    if split == "test":
        return _held_out_scene(rng, HELD_OUT_COMBINATIONS[index % len(HELD_OUT_COMBINATIONS)])
    while True:
        scene = _random_scene(rng)
        if not scene.binding_keys() & _HELD_OUT:
            return scene


# ---------------------------------------------------------------------------------------------------------------------
# Rendering with signed distances. Shape coordinates are in units of the box half-width: the box is [-1, 1]^2,
# y grows downwards.

def circle_sdf(x: np.ndarray, y: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """Signed distance to a circle centred on the origin. x, y broadcast to the output shape, e.g. (1, W), (H, 1)."""
    return np.sqrt(x * x + y * y) - radius


def box_sdf(x: np.ndarray, y: np.ndarray, half_width: float = 1.0) -> np.ndarray:
    """Signed distance to an axis-aligned square centred on the origin.

    Outside, the distance to the nearest point of the square (which may be a corner); inside, minus the distance to
    the nearest side. x, y broadcast to the output shape.

    Example:
        >>> box_sdf(np.array([[0.0, 4.0]]), np.array([[0.0], [5.0]]))  # centre, beside, above, diagonal (3-4-5)
        array([[-1.,  3.],
               [ 4.,  5.]])
    """
    qx, qy = np.abs(x) - half_width, np.abs(y) - half_width  # per-axis distance past the sides
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


class Polygon:
    """A closed polygon's edges, precomputed for polygon_sdf. vertices: (V, 2) in order around the outline."""

    def __init__(self, vertices: np.ndarray):
        vertices = np.asarray(vertices, np.float32)
        edges = np.roll(vertices, -1, axis=0) - vertices  # (V, 2): vertex i -> vertex i + 1
        self.ax, self.ay = vertices[:, 0], vertices[:, 1]  # (V,) edge starts
        self.ex, self.ey = edges[:, 0], edges[:, 1]  # (V,) edge vectors
        self.inverse_length2 = 1 / (self.ex ** 2 + self.ey ** 2)  # (V,)


def polygon_sdf(x: np.ndarray, y: np.ndarray, polygon: Polygon) -> np.ndarray:
    """Signed distance to a closed polygon (any simple polygon, convex or not); negative inside.

    x, y: point coordinates that broadcast to the output shape, e.g. (1, W) and (H, 1) for an (H, W) grid.
    The distance is the smallest distance to any edge segment; the sign comes from the even-odd rule (a ray
    from the point towards +x crosses the outline an odd number of times iff the point is inside).

    Example:
        >>> square = Polygon([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        >>> polygon_sdf(np.array([[0.0, 3.0]]), np.array([[0.0]]), square)
        array([[-1.,  2.]])
    """
    per_edge = (-1,) + (1,) * max(np.ndim(x), np.ndim(y))  # (V, 1, ..., 1): one slice per edge
    ax, ay, ex, ey = (v.reshape(per_edge) for v in (polygon.ax, polygon.ay, polygon.ex, polygon.ey))
    px, py = x - ax, y - ay  # (V, H, W) point relative to each edge start
    t = np.clip((px * ex + py * ey) * polygon.inverse_length2.reshape(per_edge), 0, 1)  # closest point on the edge
    dx, dy = px - t * ex, py - t * ey  # (V, H, W)
    distance = np.sqrt((dx * dx + dy * dy).min(axis=0))  # (H, W)
    # Even-odd rule: count the edges that span the point's height and cross that height to the right of the point,
    # i.e. px < py * ex / ey, multiplied out by ey (whose sign flips the inequality) to avoid dividing.
    straddles = (py < 0) != (py < ey)  # (V, H, W)
    right_of_point = (px * ey < py * ex) == (ey > 0)  # (V, H, W)
    inside = np.logical_xor.reduce(straddles & right_of_point, axis=0)  # (H, W) odd number of crossings
    return np.where(inside, -distance, distance)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points  # start at the top, alternate outer/inner
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)  # (2 * points, 2)


def _centred_vertically(vertices: np.ndarray) -> np.ndarray:
    return vertices - [0.0, (vertices[:, 1].max() + vertices[:, 1].min()) / 2]


_TRIANGLE = Polygon(_centred_vertically(np.array([[0.0, -1.0], [1.0, math.sqrt(3) - 1], [-1.0, math.sqrt(3) - 1]])))
_STAR = Polygon(_centred_vertically(_star()))
# The heart: a square turned 45 degrees (a diamond of half-diagonal h) with a circle on each upper edge, the
# circles' diameter equal to the edge. Width 2h(1/2 + 1/sqrt2) = 2 fits the box; _HEART_Y centres it vertically.
_HEART_H = 1 / (0.5 + math.sqrt(0.5))
_HEART_Y = (_HEART_H - _HEART_H * (0.5 + math.sqrt(0.5))) / 2  # midway between bottom (h) and lobe tops


def heart_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance to the heart in the unit box: the union of shapes is the minimum of their distances.

    (min is exact outside a union and only underestimates depth inside, which antialiasing never sees.)
    """
    y = y + _HEART_Y  # the diamond's centre sits at the origin of this frame
    diamond = box_sdf((x + y) * math.sqrt(0.5), (y - x) * math.sqrt(0.5), _HEART_H * math.sqrt(0.5))  # rotate 45°
    # Each lobe is centred on the midpoint of an upper edge, (+-h/2, -h/2), radius half the edge: h / sqrt(2).
    lobes = circle_sdf(np.abs(x) - _HEART_H / 2, y + _HEART_H / 2, _HEART_H * math.sqrt(0.5))  # |x|: mirrored
    return np.minimum(diamond, lobes)


_RGB = {name: np.array(rgb, np.float32) for name, rgb in COLOURS.items()}
SHAPE_SDF = {  # signed distance in box half-widths at points (x, y) of the box [-1, 1]^2, y down
    "circle": circle_sdf,
    "square": lambda x, y: box_sdf(x, y, 0.85),
    "triangle": lambda x, y: polygon_sdf(x, y, _TRIANGLE),
    "star": lambda x, y: polygon_sdf(x, y, _STAR),
    "heart": heart_sdf,
}


def render_scenes(scenes: list[Scene], image_size: int = 32) -> np.ndarray:
    """Draw scenes: uint8 array (N, image_size, image_size, 3), white background, antialiased edges.

    Speed comes from batching: objects are grouped by (position in their scene, shape, size), and each group is
    drawn in one vectorised step over crops of the same size around each object's box. Within a group every scene
    appears at most once, so the crops can be read, blended and written back without clashing.
    """
    _check_image_size(image_size)
    images = np.empty((len(scenes), image_size, image_size, 3), np.uint8)  # (N, S, S, 3)
    for start in range(0, len(scenes), _CHUNK):  # a float canvas for every image at once would not fit in cache
        images[start:start + _CHUNK] = _render_chunk(scenes[start:start + _CHUNK], image_size)
    return images


_CHUNK = 256


def _render_chunk(scenes: list[Scene], image_size: int) -> np.ndarray:
    pad = 2  # crops reach up to 2 pixels beyond a box; padding the canvas keeps them inside it
    side = image_size + 2 * pad
    canvas = np.empty((len(scenes) * side * side, 3), np.float32)  # (N * side * side, 3): pixels of all images
    canvas[:] = BACKGROUND
    groups: dict[tuple[int, str, str], list[tuple[int, SceneObject]]] = {}
    for n, scene in enumerate(scenes):
        for slot, obj in enumerate(scene.objects):
            groups.setdefault((slot, obj.shape, obj.size), []).append((n, obj))
    for (_, shape, size), members in groups.items():
        r = SIZES[size] * image_size  # box half-width in pixels
        width = math.ceil(2 * r) + 3  # crop: the box and an antialiased edge, wherever it falls on the pixel grid
        index = np.array([n for n, _ in members])  # (B,) image of each object
        centre = np.array([(obj.x, obj.y) for _, obj in members], np.float32) * image_size  # (B, 2) pixels
        first = np.floor(centre - r).astype(int) - 1  # (B, 2) first column and row of each crop
        cols = first[:, 0, None] + np.arange(width)  # (B, width) pixel columns of each crop
        rows = first[:, 1, None] + np.arange(width)  # (B, width)
        x = ((cols + 0.5 - centre[:, 0, None]) / r)[:, None, :]  # (B, 1, width) pixel centres in box units
        y = ((rows + 0.5 - centre[:, 1, None]) / r)[:, :, None]  # (B, width, 1)
        coverage = np.clip(0.5 - SHAPE_SDF[shape](x, y) * r, 0.0, 1.0)[..., None]  # (B, width, width, 1)
        colour = np.stack([_RGB[obj.colour] for _, obj in members])[:, None, None, :]  # (B, 1, 1, 3)
        pixel = ((index[:, None, None] * side + rows[:, :, None] + pad) * side + cols[:, None, :] + pad)  # (B, w, w)
        patch = canvas[pixel]  # (B, width, width, 3), a copy
        canvas[pixel] = patch + coverage * (colour - patch)  # alpha-blend, written back
    images = canvas.reshape(len(scenes), side, side, 3)[:, pad:-pad, pad:-pad]  # (N, S, S, 3)
    return np.rint(images).astype(np.uint8)


def render_scene(scene: Scene, image_size: int = 32) -> np.ndarray:
    """Draw one scene: uint8 array (image_size, image_size, 3). See render_scenes."""
    return render_scenes([scene], image_size)[0]


# ---------------------------------------------------------------------------------------------------------------------
# The dataset.

def role_twin(scene: Scene) -> Scene | None:
    """The drawing a role foil describes: the same objects in the opposite order along the caption's axis, with the
    same caption template, so only the word order changes. Each object keeps its shape, colour and size; the centres
    are mirrored along the axis (x -> 1 - x, or y -> 1 - y), which keeps every margin and gap of the layout. For two
    objects the twin's caption is the role foil of `scene.foils()`. None for one object, or when no word would change.

    Example:
        >>> red = SceneObject("circle", "red", "small", 0.25, 0.5)
        >>> blue = SceneObject("square", "blue", "large", 0.75, 0.5)
        >>> twin = role_twin(Scene((red, blue), "left of"))
        >>> twin.caption(), [(o.colour, o.x) for o in twin.objects]
        ('a large blue square to the left of a small red circle', [('blue', 0.25), ('red', 0.75)])
    """
    if scene.relation is None:
        return None
    if scene.axis == "horizontal":
        mirrored = [replace(o, x=1 - o.x) for o in scene.objects]
    else:
        mirrored = [replace(o, y=1 - o.y) for o in scene.objects]
    twin = Scene(tuple(mirrored[::-1]), scene.relation)  # listed in the new order, so the relation words still hold
    return None if twin.caption() == scene.caption() else twin


class ShapesDataset(torch.utils.data.Dataset):
    """Procedural shapes with captions: item i = (uint8 image (S, S, 3), caption str).

    split: 'train' and 'val' (same distribution, different scenes; no held-out combination) or 'test' (exactly
        the held-out combinations, two objects each). lang: 'en', 'ko', or 'both' (each image captioned in one
        language, chosen at random, so no image appears twice). image_size: S >= 24. num_images: defaults to
        DEFAULT_NUM_IMAGES[split]. seed: the same seed gives the same images and captions; the first k items do
        not depend on num_images. role_twins: every scene of two or more objects is followed by its role twin
        (`role_twin`: the same objects in the opposite order), still num_images items in all;
        `families` then names each item's scene, so a batch sampler can keep twins together: hard negative
        images (NegCLIP), whose captions differ only in word order.

    Attributes:
        images:    uint8 tensor (N, S, S, 3)
        captions:  list of N str (`epoch_captions(epoch)` and `epoch_images(epoch)` give the same at every epoch)
        languages: list of N 'en' / 'ko', the language of each caption
        records:   list of N Scene (objects with shape, colour, size, centre; relation), for evaluation
        families:  None, or with role_twins a list of N scene indices (a scene and its twin share one)
        foils:     list of N dict kind -> false caption with the same words, in the item's language (built on
                   first use: training never needs them)

    Captions that say left/right (or above/below) become false under a horizontal (vertical) flip.

    Example:
        >>> test = ShapesDataset("test", num_images=4)
        >>> image, caption = test[0]
        >>> image.shape, image.dtype
        (torch.Size([32, 32, 3]), torch.uint8)
        >>> {'colour', 'shape', 'role'} <= set(test.foils[0])  # plus 'size' when the sizes differ
        True
    """

    def __init__(self, split: str = "train", lang: str = "en", image_size: int = 32, num_images: int | None = None,
                 seed: int = 0, role_twins: bool = False):
        _check_split(split)
        _check_seed(seed)
        if lang not in LANGS:
            raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
        _check_image_size(image_size)
        num_images = DEFAULT_NUM_IMAGES[split] if num_images is None else num_images
        if not _is_int(num_images) or num_images < 1:
            raise ValueError(f"num_images must be a positive integer, got {num_images!r}")

        if not isinstance(role_twins, bool):
            raise ValueError(f"role_twins must be True or False, got {role_twins!r}")
        self.split, self.lang, self.image_size, self.seed = split, lang, int(image_size), seed
        scenes = [generate_scene(split, seed, i) for i in range(num_images)]
        if lang == "both":  # a separate random stream, so the scenes are the same whatever the language
            korean = np.random.default_rng([seed, _SPLIT_IDS[split], 1, 0]).random(num_images) < 0.5
            languages = ["ko" if k else "en" for k in korean]
        else:
            languages = [lang] * num_images
        self.families = None  # with role_twins: the index of the scene each item comes from
        if role_twins:  # each scene followed by its twin, in the scene's language, until num_images items
            self.families, twinned, twinned_languages = [], [], []
            for k, (scene, language) in enumerate(zip(scenes, languages)):
                for item in (scene, role_twin(scene)):
                    if item is not None and len(twinned) < num_images:
                        self.families.append(k)
                        twinned.append(item)
                        twinned_languages.append(language)
            scenes, languages = twinned, twinned_languages
        self.records, self.languages = scenes, languages
        self.captions = [scene.caption(l) for scene, l in zip(self.records, self.languages)]
        self.images = torch.from_numpy(render_scenes(self.records, image_size))  # (N, S, S, 3) uint8

    @functools.cached_property
    def foils(self) -> list[dict[str, str]]:
        return [scene.foils(lang) for scene, lang in zip(self.records, self.languages)]

    def epoch_captions(self, epoch: int | None = None) -> list[str]:
        """Every item's caption at `epoch`: `captions`, the same at every epoch (the emoji set draws its training
        captions per epoch, so training asks both sets by epoch)."""
        return list(self.captions)

    def epoch_images(self, epoch: int | None = None) -> torch.Tensor:
        """uint8 (N, S, S, 3): every item's image, the same at every epoch."""
        return self.images

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.images[index], self.captions[index]

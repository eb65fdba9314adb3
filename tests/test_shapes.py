"""Tests for minclip/shapes.py: determinism, drawing, geometry of relations, held-out splits, captions and foils.

The oracles are independent of the code under test: English captions are parsed back with regular expressions
and checked against object positions and pixels; signed distances are compared with brute-force distances and
matplotlib's point-in-polygon test; Korean captions are compared with hand-written ones.
"""

import doctest
import re
from collections import Counter
from itertools import combinations, permutations

import numpy as np
import pytest
import torch
from matplotlib.path import Path

from minclip import shapes
from minclip.shapes import (BACKGROUND, COLOURS, HELD_OUT_COMBINATIONS, KOREAN, SHAPE_SDF, SHAPES, SIZES, Polygon,
                            Scene, SceneObject, ShapesDataset, box_sdf, generate_scene, polygon_sdf, render_scene,
                            render_scenes, role_twin)

# ---------------------------------------------------------------------------------------------------------------------
# An independent reading of English captions: parse them back into objects and a relation.

_OBJECT = r"a (small|large) (\w+) (\w+)"
_ONE = re.compile(rf"^{_OBJECT}$")
_PAIR = re.compile(rf"^{_OBJECT} (to the left of|to the right of|above|below) {_OBJECT}$")
_LIST = re.compile(rf"^{_OBJECT}, {_OBJECT} and {_OBJECT} from (left to right|top to bottom)$")


def parse(caption):
    """'a small red circle above a large blue square' -> ([(small, red, circle), (large, blue, square)], 'above')."""
    if m := _ONE.match(caption):
        return [m.groups()], None
    if m := _PAIR.match(caption):
        g = m.groups()
        return [g[0:3], g[4:7]], g[3]
    if m := _LIST.match(caption):
        g = m.groups()
        return [g[0:3], g[3:6], g[6:9]], g[9]
    raise AssertionError(f"caption does not follow the grammar: {caption!r}")


def is_true(caption, scene):
    """Does the caption describe exactly the scene's objects, in a relation their centres satisfy?"""
    described, relation = parse(caption)
    if len(described) != len(scene.objects):
        return False
    attributes = lambda o: (o.size, o.colour, o.shape)  # noqa: E731
    if relation is None:
        return described[0] == attributes(scene.objects[0])
    if len(described) == 3:
        key = (lambda o: o.x) if relation == "left to right" else (lambda o: o.y)
        return described == [attributes(o) for o in sorted(scene.objects, key=key)]
    holds = {"to the left of": lambda a, b: a.x < b.x, "to the right of": lambda a, b: a.x > b.x,
             "above": lambda a, b: a.y < b.y, "below": lambda a, b: a.y > b.y}[relation]
    return any(described == [attributes(a), attributes(b)] and holds(a, b)
               for a, b in permutations(scene.objects, 2))


def stated_pairs(caption):
    """(axis, (colour, shape) of the left/upper object, (colour, shape) of the other) for every pair stated."""
    described, relation = parse(caption)
    if relation is None:
        return set()
    if relation in ("to the right of", "below"):
        described = described[::-1]
    axis = "horizontal" if relation in ("to the left of", "to the right of", "left to right") else "vertical"
    return {(axis, (a[1], a[2]), (b[1], b[2])) for a, b in combinations(described, 2)}


def words(caption):
    return caption.replace(",", " ").split()


@pytest.fixture(scope="module")
def scenes():
    return {"train": [generate_scene("train", 0, i) for i in range(3000)],
            "val": [generate_scene("val", 0, i) for i in range(500)],
            "test": [generate_scene("test", 0, i) for i in range(480)]}


def test_docstring_examples():
    assert doctest.testmod(shapes).failed == 0


# ---------------------------------------------------------------------------------------------------------------------
# The dataset: item contract, determinism, languages.

def test_item_contract():
    dataset = ShapesDataset("val", "en", image_size=32, num_images=6)
    assert len(dataset) == 6
    image, caption = dataset[5]
    assert image.dtype == torch.uint8 and image.shape == (32, 32, 3) and isinstance(caption, str)
    assert dataset.images.shape == (6, 32, 32, 3) and dataset.images.dtype == torch.uint8
    assert len(dataset.captions) == len(dataset.records) == len(dataset.foils) == len(dataset.languages) == 6
    assert torch.equal(image, torch.from_numpy(render_scene(dataset.records[5], 32)))
    assert caption == dataset.records[5].caption("en")


def test_same_seed_same_data_and_prefix_stable():
    a = ShapesDataset("train", "both", image_size=32, num_images=40, seed=3)
    b = ShapesDataset("train", "both", image_size=32, num_images=40, seed=3)
    assert torch.equal(a.images, b.images) and a.captions == b.captions and a.foils == b.foils
    shorter = ShapesDataset("train", "both", image_size=32, num_images=15, seed=3)
    assert torch.equal(shorter.images, a.images[:15]) and shorter.captions == a.captions[:15]


def test_different_seeds_and_splits_differ():
    base = ShapesDataset("train", image_size=32, num_images=20, seed=0)
    for other in (ShapesDataset("train", image_size=32, num_images=20, seed=1),
                  ShapesDataset("val", image_size=32, num_images=20, seed=0)):
        assert all(not torch.equal(x, y) for x, y in zip(base.images, other.images))
        assert base.captions != other.captions


def test_languages_share_scenes():
    en = ShapesDataset("test", "en", image_size=32, num_images=60)
    ko = ShapesDataset("test", "ko", image_size=32, num_images=60)
    both = ShapesDataset("test", "both", image_size=32, num_images=60)
    assert torch.equal(en.images, ko.images) and torch.equal(en.images, both.images)
    assert set(both.languages) == {"en", "ko"}
    for i, lang in enumerate(both.languages):
        assert both.captions[i] == (en if lang == "en" else ko).captions[i]
        assert both.foils[i] == (en if lang == "en" else ko).foils[i]


def test_default_sizes_follow_split():
    assert len(ShapesDataset("test")) == shapes.DEFAULT_NUM_IMAGES["test"]


# ---------------------------------------------------------------------------------------------------------------------
# Drawing.

@pytest.mark.parametrize("image_size", [24, 32, 64])
def test_single_objects_have_their_colour_at_the_centre(image_size):
    for shape in SHAPES:
        for colour, rgb in COLOURS.items():
            for size in SIZES:
                obj = SceneObject(shape, colour, size, 0.47, 0.53)  # off the pixel grid on purpose
                image = render_scene(Scene((obj,)), image_size)
                assert image.dtype == np.uint8 and image.shape == (image_size, image_size, 3)
                row, col = int(obj.y * image_size), int(obj.x * image_size)
                assert tuple(image[row, col]) == rgb, (shape, colour, size, image_size)
                assert tuple(image[0, 0]) == tuple(image[-1, -1]) == BACKGROUND


def test_large_shapes_cover_more_than_small_ones():
    for shape in SHAPES:
        area = {size: (render_scene(Scene((SceneObject(shape, "blue", size, 0.5, 0.5),)), 64) != 255).any(-1).sum()
                for size in SIZES}
        ratio = (SIZES["large"] / SIZES["small"]) ** 2
        assert 0.8 * ratio < area["large"] / area["small"] < 1.2 * ratio, (shape, area)


def test_edges_are_antialiased():
    image = render_scene(Scene((SceneObject("circle", "red", "large", 0.47, 0.53),)), 64)  # off-grid: no symmetry
    distinct = {tuple(p) for p in image.reshape(-1, 3)}
    assert len(distinct) > 20  # background, red, and many blends between them
    red, white = np.array(COLOURS["red"]), np.array(BACKGROUND)
    for pixel in distinct:  # every blend lies on the segment between the two colours
        t = np.dot(np.array(pixel) - white, red - white) / np.dot(red - white, red - white)
        np.testing.assert_allclose(pixel, white + t * (red - white), atol=1.0)


def test_every_object_shows_its_colour_and_nothing_is_drawn_outside_the_boxes(scenes):
    images = render_scenes(scenes["train"][:300] + scenes["test"][:100], 32)
    for scene, image in zip(scenes["train"][:300] + scenes["test"][:100], images):
        drawn = (image != BACKGROUND).any(-1)  # (32, 32)
        for obj in scene.objects:
            assert tuple(image[int(obj.y * 32), int(obj.x * 32)]) == COLOURS[obj.colour]
            left, right = int((obj.x - obj.radius) * 32) - 1, int((obj.x + obj.radius) * 32) + 2  # + antialiased edge
            top, bottom = int((obj.y - obj.radius) * 32) - 1, int((obj.y + obj.radius) * 32) + 2
            drawn[max(top, 0):bottom, max(left, 0):right] = False
        assert not drawn.any()


def test_batch_rendering_equals_one_at_a_time(scenes):
    batch = scenes["train"][:200] + scenes["test"][:100]  # more than one chunk of 256
    singles = np.stack([render_scene(scene, 24) for scene in batch])
    assert np.array_equal(render_scenes(batch, 24), singles)
    assert render_scenes([], 24).shape == (0, 24, 24, 3)


def test_horizontal_flip_mirrors_the_scene_and_swaps_left_and_right():
    # How a caption-consistent flip would work: mirror x, swap the words. A plain flip makes the caption false.
    scene = Scene((SceneObject("heart", "red", "small", 0.3, 0.41), SceneObject("star", "blue", "large", 0.7, 0.5)),
                  "left of")
    mirrored = Scene(tuple(SceneObject(o.shape, o.colour, o.size, 1 - o.x, o.y) for o in scene.objects), "right of")
    flipped = render_scene(scene, 64)[:, ::-1].astype(int)
    assert np.abs(flipped - render_scene(mirrored, 64)).max() <= 1
    assert is_true(scene.caption(), scene) and not is_true(scene.caption(), mirrored)
    assert is_true(mirrored.caption(), mirrored)


# ---------------------------------------------------------------------------------------------------------------------
# Signed distances against brute force.

def test_polygon_sdf_matches_brute_force_and_matplotlib():
    rng = np.random.default_rng(0)
    star = shapes._star()  # non-convex: the even-odd rule matters
    points = rng.uniform(-1.3, 1.3, size=(300, 2))
    sdf = polygon_sdf(points[None, :, 0], points[None, :, 1], Polygon(star))[0]  # (300,): x, y broadcast as (1, 300)
    # Distance: to a dense sampling of the outline. Sign: matplotlib's point-in-polygon.
    t = np.linspace(0, 1, 501)[:, None]
    outline = np.concatenate([a + t * (b - a) for a, b in zip(star, np.roll(star, -1, axis=0))])  # (E * 501, 2)
    distance = np.sqrt(((points[:, None] - outline[None]) ** 2).sum(-1)).min(1)
    inside = Path(star).contains_points(points)
    np.testing.assert_allclose(np.abs(sdf), distance, atol=1e-3)
    assert np.array_equal(sdf < 0, inside)


def test_box_sdf_matches_polygon_sdf():
    x, y = np.linspace(-2, 2, 41)[None, :], np.linspace(-2, 2, 37)[:, None]
    square = Polygon([[-0.7, -0.7], [0.7, -0.7], [0.7, 0.7], [-0.7, 0.7]])
    torch.testing.assert_close(torch.from_numpy(box_sdf(x, y, 0.7)),
                               torch.from_numpy(polygon_sdf(x, y, square)).double(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_sdfs_stay_in_the_box_and_measure_true_distance_outside(shape):
    # Inside points on a fine grid. An outside point's true distance to the shape is at most its distance to the
    # nearest of them, and at least that minus a few grid steps (sharp tips hold few grid points).
    spacing = 2.6 / 400
    grid = np.arange(-1.3, 1.3, spacing) + spacing / 2
    sdf = SHAPE_SDF[shape](grid[None, :], grid[:, None])  # (400, 400)
    inside = np.argwhere(sdf < 0)  # (K, 2) rows, cols
    assert np.all(np.abs(grid[inside]) <= 1 + spacing), "shapes must stay inside their box (no overlaps)"
    assert np.abs(grid[inside]).max() > 0.8, "and fill it"
    for axis in (0, 1):  # centred in the box, so that the box centre is the shape's centre
        assert abs(grid[inside[:, axis]].min() + grid[inside[:, axis]].max()) < 2 * spacing, (shape, axis)
    rng = np.random.default_rng(1)
    outside = np.argwhere(sdf > 3 * spacing)
    for row, col in outside[rng.choice(len(outside), 100, replace=False)]:
        nearest = np.sqrt((grid[inside[:, 0]] - grid[row]) ** 2 + (grid[inside[:, 1]] - grid[col]) ** 2).min()
        assert nearest - 4 * spacing < sdf[row, col] <= nearest + 1e-5, (shape, grid[col], grid[row])


# ---------------------------------------------------------------------------------------------------------------------
# Geometry: relations are true in the image, objects don't overlap.

@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_objects_inside_the_image_and_apart(scenes, split):
    for scene in scenes[split]:
        for o in scene.objects:
            assert 0 < o.x - o.radius and o.x + o.radius < 1 and 0 < o.y - o.radius and o.y + o.radius < 1
        for a, b in combinations(scene.objects, 2):  # boxes apart along x or along y
            assert abs(a.x - b.x) > a.radius + b.radius or abs(a.y - b.y) > a.radius + b.radius


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_relations_hold_with_whole_boxes_and_dominate_the_other_axis(scenes, split):
    for scene in scenes[split]:
        assert is_true(scene.caption("en"), scene)
        if scene.relation is None:
            continue
        ordered = scene.ordered()  # left to right / top to bottom, by the caption
        for a, b in zip(ordered, ordered[1:]):
            along, across = (b.x - a.x, b.y - a.y) if scene.axis == "horizontal" else (b.y - a.y, b.x - a.x)
            assert along > a.radius + b.radius, scene  # a's box entirely before b's
            assert along > abs(across), scene  # clearly along the stated axis


def test_relations_hold_in_the_pixels(scenes):
    # Pixels that are exactly one object's colour (test scenes have two colours) must be ordered as the caption says.
    for scene in scenes["test"][:120]:
        image = render_scene(scene, 64)
        described, relation = parse(scene.caption("en"))
        columns, rows = {}, {}
        for _, colour, _ in described:
            rows[colour], columns[colour] = np.nonzero((image == COLOURS[colour]).all(-1))
        (first, second) = [d[1] for d in described]
        if relation == "to the left of":
            assert columns[first].max() < columns[second].min()
        elif relation == "to the right of":
            assert columns[first].min() > columns[second].max()
        elif relation == "above":
            assert rows[first].max() < rows[second].min()
        else:
            assert rows[first].min() > rows[second].max()


# ---------------------------------------------------------------------------------------------------------------------
# Held-out combinations and splits.

def test_held_out_combinations_are_closed_swap_groups():
    held_out = set(HELD_OUT_COMBINATIONS)
    assert len(held_out) == len(HELD_OUT_COMBINATIONS) == 4 * 2 * shapes.HELD_OUT_GROUPS_PER_AXIS
    assert {axis for axis, _, _ in held_out} == {"horizontal", "vertical"}
    for axis, (c, s), (d, t) in held_out:
        assert c != d and s != t
        assert (axis, (d, s), (c, t)) in held_out  # colours swapped
        assert (axis, (c, t), (d, s)) in held_out  # shapes swapped
        assert (axis, (d, t), (c, s)) in held_out  # objects swapped


@pytest.mark.parametrize("split", ["train", "val"])
def test_held_out_combinations_never_in_train_or_val(scenes, split):
    stated = set().union(*(stated_pairs(scene.caption("en")) for scene in scenes[split]))
    assert not stated & set(HELD_OUT_COMBINATIONS)
    # ... although their objects, and other combinations of them, are common there.
    objects = {(o.colour, o.shape) for scene in scenes[split] for o in scene.objects}
    assert all(a in objects and b in objects for _, a, b in HELD_OUT_COMBINATIONS)


def test_test_split_is_exactly_the_held_out_combinations(scenes):
    stated = [stated_pairs(scene.caption("en")) for scene in scenes["test"]]
    assert all(len(pairs) == 1 and pairs <= set(HELD_OUT_COMBINATIONS) for pairs in stated)
    assert set().union(*stated[:len(HELD_OUT_COMBINATIONS)]) == set(HELD_OUT_COMBINATIONS)
    phrasings = Counter(parse(scene.caption("en"))[1] for scene in scenes["test"])
    assert set(phrasings) == {"to the left of", "to the right of", "above", "below"}


def test_test_captions_use_only_training_words(scenes):
    for lang in ("en", "ko"):
        vocabulary = {w for scene in scenes["train"] for w in words(scene.caption(lang))}
        for scene in scenes["test"]:
            assert set(words(scene.caption(lang))) <= vocabulary, scene.caption(lang)


# ---------------------------------------------------------------------------------------------------------------------
# Foils.

@pytest.mark.parametrize("split", ["train", "test"])
def test_foils_are_false_word_swaps(scenes, split):
    for scene in scenes[split][:400]:
        for lang in ("en", "ko"):
            caption, foils = scene.caption(lang), scene.foils(lang)
            assert len(set(foils.values())) == len(foils)
            for foil in foils.values():
                assert foil != caption and Counter(words(foil)) == Counter(words(caption)), (caption, foil)
        assert set(scene.foils("en")) == set(scene.foils("ko"))  # same swaps in both languages
        for kind, foil in scene.foils("en").items():
            assert not is_true(foil, scene), (kind, scene.caption(), foil)


def test_every_test_image_has_colour_shape_and_role_foils(scenes):
    for scene in scenes["test"]:
        foils = scene.foils("en")
        assert {"colour", "shape", "role"} <= set(foils) <= {"colour", "shape", "size", "role"}
        sizes = {o.size for o in scene.objects}
        assert ("size" in foils) == (len(sizes) == 2)


def test_foils_of_a_known_scene():
    red = SceneObject("circle", "red", "small", 0.25, 0.5)
    blue = SceneObject("square", "blue", "large", 0.7, 0.5)
    assert Scene((red, blue), "left of").foils("en") == {
        "colour": "a small blue circle to the left of a large red square",
        "shape": "a small red square to the left of a large blue circle",
        "size": "a large red circle to the left of a small blue square",
        "role": "a large blue square to the left of a small red circle",
    }
    twin = SceneObject("circle", "red", "small", 0.7, 0.5)
    assert Scene((red, twin), "left of").foils("en") == {}  # nothing to swap: every foil would equal the caption


# ---------------------------------------------------------------------------------------------------------------------
# Captions in both languages.

def test_captions_of_known_scenes():
    red = SceneObject("circle", "red", "small", 0.5, 0.2)
    blue = SceneObject("square", "blue", "large", 0.5, 0.7)
    green = SceneObject("star", "green", "small", 0.2, 0.5)
    yellow = SceneObject("heart", "yellow", "large", 0.7, 0.5)
    purple = SceneObject("triangle", "purple", "small", 0.5, 0.1)
    orange = SceneObject("circle", "orange", "large", 0.5, 0.45)
    cases = [
        (Scene((red,)), "a small red circle", "작은 빨간 원"),
        (Scene((red, blue), "above"), "a small red circle above a large blue square", "큰 파란 사각형 위에 작은 빨간 원"),
        (Scene((blue, red), "below"), "a large blue square below a small red circle", "작은 빨간 원 아래에 큰 파란 사각형"),
        (Scene((green, yellow), "left of"), "a small green star to the left of a large yellow heart",
         "큰 노란 하트 왼쪽에 작은 초록색 별"),
        (Scene((yellow, green), "right of"), "a large yellow heart to the right of a small green star",
         "작은 초록색 별 오른쪽에 큰 노란 하트"),
        (Scene((green, red, yellow), "left to right"),
         "a small green star, a small red circle and a large yellow heart from left to right",
         "왼쪽부터 차례로 작은 초록색 별, 작은 빨간 원, 큰 노란 하트"),
        (Scene((purple, orange, blue), "top to bottom"),
         "a small purple triangle, a large orange circle and a large blue square from top to bottom",
         "위에서부터 차례로 작은 보라색 삼각형, 큰 주황색 원, 큰 파란 사각형"),
    ]
    for scene, english, korean in cases:
        assert scene.caption("en") == english
        assert scene.caption("ko") == korean


def test_korean_captions_are_well_formed(scenes):
    allowed = set(KOREAN.values()) | {"위에", "아래에", "왼쪽에", "오른쪽에", "왼쪽부터", "위에서부터", "차례로"}
    dataset = ShapesDataset("train", "ko", image_size=32, num_images=200)
    for scene, caption in zip(dataset.records, dataset.captions):
        assert re.fullmatch(r"[가-힣]+(,? [가-힣]+)*", caption), caption  # Hangul words, single spaces, commas
        assert set(words(caption)) <= allowed, caption
        nouns = [w for w in words(caption) if w in {KOREAN[s] for s in SHAPES}]
        assert nouns == [KOREAN[o.shape] for o in (scene.objects[::-1] if len(scene.objects) == 2 else scene.objects)]


# ---------------------------------------------------------------------------------------------------------------------
# Errors.

@pytest.mark.parametrize("kwargs, message", [
    ({"split": "training"}, r"split must be one of \('train', 'val', 'test'\), got 'training'"),
    ({"lang": "fr"}, r"lang must be one of \('en', 'ko', 'both'\), got 'fr'"),
    ({"image_size": 16}, r"image_size must be an integer >= 24 .* got 16"),
    ({"image_size": 32.0}, r"image_size must be an integer >= 24 .* got 32.0"),
    ({"num_images": 0}, r"num_images must be a positive integer, got 0"),
    ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
])
def test_bad_dataset_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ShapesDataset(**{"num_images": 2, **kwargs})


def test_bad_scenes():
    red = SceneObject("circle", "red", "small", 0.2, 0.5)
    with pytest.raises(ValueError, match=r"colour must be one of \('red', .*\), got 'crimson'"):
        SceneObject("circle", "crimson", "small", 0.5, 0.5)
    with pytest.raises(ValueError, match=r"shape must be one of"):
        SceneObject("hexagon", "red", "small", 0.5, 0.5)
    with pytest.raises(ValueError, match=r"got 2 objects and relation None"):
        Scene((red, red))
    with pytest.raises(ValueError, match=r"got 3 objects and relation 'above'"):
        Scene((red, red, red), "above")


def test_bad_function_arguments():
    scene = generate_scene("val", 0, 0)
    with pytest.raises(ValueError, match=r"image_size must be an integer >= 24 .* got 8"):
        render_scene(scene, 8)
    with pytest.raises(ValueError, match=r"lang must be 'en' or 'ko' for one caption, got 'both'"):
        scene.caption("both")
    with pytest.raises(ValueError, match=r"index must be a non-negative integer, got -1"):
        generate_scene("train", 0, -1)
    with pytest.raises(ValueError, match=r"split must be one of"):
        generate_scene("dev", 0, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Role twins: hard negative images whose captions differ from the scene's only in word order.

def test_role_twin_is_the_role_foil_drawn_with_the_same_objects_in_a_valid_layout(scenes):
    twins = 0
    for scene in scenes["train"][:1500]:
        twin = role_twin(scene)
        if scene.relation is None:
            assert twin is None
            continue
        if twin is None:  # only when the swap changes no word: all objects alike
            assert len({(o.shape, o.colour, o.size) for o in scene.objects}) < len(scene.objects)
            continue
        twins += 1
        assert sorted(words(twin.caption())) == sorted(words(scene.caption())) and twin.caption() != scene.caption()
        if len(scene.objects) == 2:  # the role foil (kept under "size" or "colour" when that swap reads the same)
            assert twin.caption() == scene.foils().get("role", twin.caption()) and twin.caption() in scene.foils().values()
        assert is_true(twin.caption(), twin) and not is_true(scene.caption(), twin)
        assert sorted((o.shape, o.colour, o.size) for o in twin.objects) == \
            sorted((o.shape, o.colour, o.size) for o in scene.objects)
        for o in twin.objects:  # the layout stays valid: inside the image, boxes apart
            assert 0 < o.x - o.radius and o.x + o.radius < 1 and 0 < o.y - o.radius and o.y + o.radius < 1
        for a, b in combinations(twin.objects, 2):
            assert abs(a.x - b.x) > a.radius + b.radius or abs(a.y - b.y) > a.radius + b.radius
        assert not stated_pairs(twin.caption()) & set(HELD_OUT_COMBINATIONS)  # twins of training scenes stay in train
    assert twins > 1000


def test_role_twins_dataset_keeps_each_scene_beside_its_twin():
    plain = ShapesDataset("train", lang="both", image_size=24, num_images=40)
    twinned = ShapesDataset("train", lang="both", image_size=24, num_images=41, role_twins=True)
    assert plain.families is None and len(twinned) == 41
    families = twinned.families
    assert families[0] == 0 and all(b - a in (0, 1) for a, b in zip(families, families[1:]))
    for k in sorted(set(families)):
        members = [i for i, family in enumerate(families) if family == k]
        assert twinned.records[members[0]] == plain.records[k] and twinned.languages[members[0]] == plain.languages[k]
        if len(members) == 2:  # the twin: its caption, its language, its own drawing
            first, second = members
            assert twinned.records[second] == role_twin(plain.records[k])
            assert twinned.captions[second] == role_twin(plain.records[k]).caption(plain.languages[k])
            assert twinned.languages[second] == twinned.languages[first]
            assert torch.equal(twinned.images[second], torch.from_numpy(render_scene(twinned.records[second], 24)))
        else:
            assert len(members) == 1 and (role_twin(plain.records[k]) is None or members[0] == 40)
    shorter = ShapesDataset("train", image_size=24, num_images=20, role_twins=True)
    assert shorter.captions == ShapesDataset("train", image_size=24, num_images=41, role_twins=True).captions[:20]
    with pytest.raises(ValueError, match="role_twins must be True or False, got 'yes'"):
        ShapesDataset("train", num_images=4, role_twins="yes")

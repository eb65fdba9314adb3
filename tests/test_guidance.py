"""minclip.guidance: captions read exactly, the torch renderer equals minclip.shapes at hard edges, gradients reach
every parameter, reranking picks the arg-max, guidance and pixel optimisation run on a tiny model, clear errors."""

import numpy as np
import pytest
import torch

from minclip import guidance as g
from minclip import shapes
from minclip.model import CLIP, CLIPConfig
from minclip.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def tiny():
    """A random nano CLIP that reads 32 x 32 images, and a tokenizer learned on a few shapes captions."""
    captions = [shapes.generate_scene("train", 0, i).caption() for i in range(64)]
    tokenizer = BPETokenizer.train(captions, vocab_size=580)
    torch.manual_seed(0)
    config = CLIPConfig.preset("nano", image_size=32, patch_size=8, vocab_size=tokenizer.vocab_size,
                               sot_token_id=tokenizer.sot_token_id, eot_token_id=tokenizer.eot_token_id)
    return CLIP(config).eval(), tokenizer


def some_scenes(split="train", count=60):
    return [shapes.generate_scene(split, 3, i) for i in range(count)]


# ---------------------------------------------------------------------------------------------------------- captions
def test_describe_and_parse_caption_agree_on_every_kind_of_caption():
    for scene in some_scenes() + some_scenes("test", 8):
        assert g.parse_caption(scene.caption("en")) == g.describe(scene)
    left = g.parse_caption("a small red circle to the left of a large blue square")
    assert left == g.parse_caption("A large blue square to the right of a small red circle.")
    assert left == ("horizontal", (("small", "red", "circle"), ("large", "blue", "square")))
    assert g.parse_caption("a small red circle below a large blue square") == \
        ("vertical", (("large", "blue", "square"), ("small", "red", "circle")))


@pytest.mark.parametrize("caption, message", [
    ("a red circle", "cannot read 'a red circle' as a shapes caption"),
    ("a small pink circle", "unknown colour 'pink'"),
    ("a huge red circle to the left of a small blue square", "unknown size 'huge'"),
])
def test_parse_caption_errors_name_the_problem(caption, message):
    with pytest.raises(ValueError, match=message):
        g.parse_caption(caption)
    with pytest.raises(TypeError, match="caption must be a str"):
        g.parse_caption(3)


# ---------------------------------------------------------------------------------------------------------- renderer
@pytest.mark.parametrize("name", list(g.SHAPE_SDF))
def test_torch_signed_distances_equal_minclip_shapes(name):
    x = np.linspace(-1.6, 1.6, 41, dtype=np.float32)[None, :]  # (1, 41)
    y = np.linspace(-1.5, 1.7, 37, dtype=np.float32)[:, None]  # (37, 1)
    expected = torch.from_numpy(np.asarray(shapes.SHAPE_SDF[name](x, y), np.float32))
    torch.testing.assert_close(g.SHAPE_SDF[name](torch.from_numpy(x), torch.from_numpy(y)), expected)


@pytest.mark.parametrize("split, objects", [("train", 1), ("train", 2), ("train", 3), ("test", 2)])
def test_hard_render_with_one_pixel_edges_is_the_shapes_renderer(split, objects):
    scenes = [s for s in some_scenes(split, 120) if len(s.objects) == objects][:20]
    expected = torch.from_numpy(shapes.render_scenes(scenes, 48)).int()  # (B, 48, 48, 3)
    drawn = g.to_uint8(g.render(g.encode(scenes), 48, edge=1.0, hard=True)).int()
    assert (drawn - expected).abs().max() <= 1  # float sums in another order may round a pixel the other way
    assert (drawn != expected).float().mean() < 1e-4
    soft = g.to_uint8(g.render(g.encode(scenes), 48)).int()  # encode's one-hot logits: the mixtures are one-hot
    assert (soft - expected).abs().max() <= 1


def test_encode_then_decode_gives_the_scene_back():
    for scene in some_scenes() + some_scenes("test", 8):
        [decoded] = g.decode(g.encode(scene))
        assert g.describe(decoded) == g.describe(scene)
        assert [(o.shape, o.colour, o.size) for o in decoded.ordered()] == \
            [(o.shape, o.colour, o.size) for o in scene.ordered()]
        for a, b in zip(decoded.ordered(), scene.ordered()):
            assert (a.x, a.y) == pytest.approx((b.x, b.y), abs=1e-6)


def test_decode_reads_overlapping_objects_as_no_scene():
    red = shapes.SceneObject("circle", "red", "large", 0.5, 0.5)
    blue = shapes.SceneObject("square", "blue", "large", 0.15, 0.5)
    params = g.encode(shapes.Scene((red, blue), "right of"))
    assert g.describe(g.decode(params)[0]) == ("horizontal", (("large", "blue", "square"), ("large", "red", "circle")))
    params.centre[0, 1] = torch.tensor([0.55, 0.52])  # the boxes overlap: neither a row nor a column
    assert g.decode(params) == [None]
    assert not g.matches(None, "a large red circle to the left of a large blue square")


def test_gradients_reach_every_parameter_of_the_renderer():
    params = g.random_params(2, 2, torch.Generator().manual_seed(0))
    for tensor in params.tensors():
        tensor.requires_grad_(True)
    target = torch.rand(2, 3, 32, 32) * 255
    ((g.render(params, 32, edge=4.0) - target) ** 2).mean().backward()
    for name, tensor in zip(("centre", "radius", "colour_logits", "shape_logits"), params.tensors()):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name
        assert torch.isfinite(tensor.grad).all(), name


def test_gradients_stay_finite_when_a_pixel_centre_sits_on_a_centre_or_an_outline():
    # the circle's centre and the square's corner on pixel centres: sqrt's infinite slope at 0 must not give NaN
    params = g.encode(shapes.Scene((shapes.SceneObject("circle", "red", "large", 8.5 / 32, 8.5 / 32),
                                    shapes.SceneObject("square", "blue", "large", 24.5 / 32, 24.5 / 32)), "above"))
    for tensor in params.tensors():
        tensor.requires_grad_(True)
    g.render(params, 32, edge=8.0, straight_through=True).sum().backward()
    assert all(torch.isfinite(tensor.grad).all() for tensor in params.tensors())


def test_straight_through_draws_the_arg_max_and_passes_gradients_to_the_logits():
    params = g.random_params(1, 2, torch.Generator().manual_seed(1))
    params.shape_logits.requires_grad_(True)
    image = g.render(params, 32, straight_through=True)
    torch.testing.assert_close(image, g.render(params.detach(), 32, hard=True))
    image.mean().backward()
    assert params.shape_logits.grad.abs().sum() > 0


def test_render_rejects_a_bad_edge():
    with pytest.raises(ValueError, match="edge must be a positive width"):
        g.render(g.encode(some_scenes()[0]), 32, edge=0)


# ---------------------------------------------------------------------------------------------------------- reranking
def test_word_swap_scenes_use_the_captions_words_in_every_role():
    key = g.parse_caption("a small red circle above a large blue square")
    scenes = g.word_swap_scenes(key, 200, seed=0)
    assert all(s.axis == "vertical" for s in scenes)
    for scene in scenes:
        words = sorted((o.size, o.colour, o.shape) for o in scene.objects)
        assert sorted(o.size for o in scene.objects) == ["large", "small"]
        assert sorted(o.colour for o in scene.objects) == ["blue", "red"]
        assert sorted(o.shape for o in scene.objects) == ["circle", "square"]
        assert len(words) == 2
    assert len({g.describe(s) for s in scenes}) == 8  # 2 orders of sizes x colours x shapes
    assert key in {g.describe(s) for s in scenes}
    assert g.word_swap_scenes(key, 5, seed=1) == g.word_swap_scenes(key, 5, seed=1)
    with pytest.raises(ValueError, match="n must be a positive int"):
        g.word_swap_scenes(key, 0)


def test_rerank_picks_the_arg_max_and_best_of_n_counts_groups():
    scores = torch.tensor([0.1, 0.7, 0.3, 0.9, 0.2, 0.4])
    assert g.rerank(scores) == 3
    correct = torch.tensor([False, True, False, False, False, True])
    assert g.best_of_n_success(scores, correct, 1) == pytest.approx(2 / 6)
    assert g.best_of_n_success(scores, correct, 2) == pytest.approx(2 / 3)  # picks 1 (right), 3 (wrong), 5 (right)
    assert g.best_of_n_success(scores, correct, 3) == pytest.approx(1 / 2)  # picks 1 (right) and 3 (wrong)
    assert g.best_of_n_success(scores, correct, 6) == 0.0  # picks 3
    with pytest.raises(ValueError, match="non-empty 1-D tensor"):
        g.rerank(torch.tensor([]))
    with pytest.raises(ValueError, match="n must be an int from 1 to the number of samples"):
        g.best_of_n_success(scores, correct, 7)


def test_clip_scores_are_the_cosines_of_the_model_features(tiny):
    model, tokenizer = tiny
    scenes = some_scenes()[:5]
    images = torch.from_numpy(shapes.render_scenes(scenes, 32))
    scores = g.clip_scores(model, tokenizer, scenes[0].caption(), images)
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(
            model.encode_image(g.normalise(images.permute(0, 3, 1, 2).float())), dim=-1)  # (5, E)
        text = torch.nn.functional.normalize(
            model.encode_text(tokenizer.tokenize([scenes[0].caption()], model.config.context_length)), dim=-1)
    torch.testing.assert_close(scores, (image_features @ text.T)[:, 0])
    assert g.rerank(scores) == int(scores.argmax())


def test_rerank_curve_lies_between_chance_and_the_oracle(tiny):
    model, tokenizer = tiny
    captions = [shapes.generate_scene("test", 0, i).caption() for i in range(2)]
    curve = g.rerank_curve(model, tokenizer, captions, ns=(1, 4, 16), samples=16)
    assert curve["n"] == [1, 4, 16] and curve["captions"] == 2
    for name in ("clip", "oracle", "bag_of_words"):
        assert curve[name][0] == pytest.approx(curve["chance"])  # best of one is a random pick
    assert all(c <= o + 1e-9 for c, o in zip(curve["clip"], curve["oracle"]))
    assert all(c <= o + 1e-9 for c, o in zip(curve["clip"], curve["clip_objects"]))  # right order implies right objects
    with pytest.raises(ValueError, match="every N must be at most samples=16"):
        g.rerank_curve(model, tokenizer, captions, ns=(32,), samples=16)


# ---------------------------------------------------------------------------------------------------------- guidance
def test_guide_runs_returns_frames_and_keeps_parameters_in_range(tiny):
    model, tokenizer = tiny
    caption = "a small red circle to the left of a large blue square"
    result = g.guide(model, tokenizer, caption, steps=4, restarts=2, views=2, frames=3, seed=0)
    assert result.frames.shape == (3, 32, 32, 3) and result.frames.dtype == torch.uint8
    assert result.history.shape == (4, 2) and result.scores.shape == (2,)
    assert result.best == int(result.scores.argmax())
    assert result.params.centre.shape == (2, 2, 2)
    lo, hi = g.RADIUS_RANGE
    assert ((result.params.radius >= lo) & (result.params.radius <= hi)).all()
    assert result.scene is not None and result.scene.axis == "horizontal"  # the prior kept a row on the caption's axis
    # params are the snapped scenes: their hard render is what decode read, and scores are its readout
    legal = torch.tensor(list(shapes.SIZES.values()))  # (2,) float32, as the radii
    assert (result.params.radius[..., None] == legal).any(-1).all()
    assert g.describe(g.decode(result.params)[result.best]) == g.describe(result.scene)
    from minclip.evaluate import encode_texts
    text = encode_texts(model, tokenizer, [caption])[0]
    torch.testing.assert_close(result.scores, g.readout_scores(model, result.params, text))
    assert all(p.requires_grad for p in model.parameters())  # the model is given back as it was
    with pytest.raises(ValueError, match="steps, restarts, views and frames must be >= 1"):
        g.guide(model, tokenizer, caption, steps=0)
    with pytest.raises(ValueError, match="cannot read"):
        g.guide(model, tokenizer, "a cat", steps=1)


def test_guide_runs_the_old_way_too(tiny):
    model, tokenizer = tiny
    result = g.guide(model, tokenizer, "a small red circle above a large blue square", steps=3, restarts=2, views=2,
                     relaxation="straight-through", start="random", prior=False, search=None, seed=1)
    assert result.history.shape == (3, 2)
    assert ((result.params.centre >= 0) & (result.params.centre <= 1)).all()
    start = g.row_params(3, 2, "vertical", torch.Generator().manual_seed(6))
    from_init = g.guide(model, tokenizer, "a small red circle above a large blue square", steps=2, views=2, init=start)
    assert from_init.scores.shape == (3,)  # one restart per scene of init
    with pytest.raises(ValueError, match="init has 2 objects per scene, the caption 1"):
        g.guide(model, tokenizer, "a small red circle", steps=1, init=start)
    emoji = g.guide(model, tokenizer, "red heart", steps=2, restarts=1, views=2, objects=1, frames=1)
    assert len(emoji.scene.objects) == 1  # any text, given the number of objects


@pytest.mark.parametrize("option, value, message", [
    ("relaxation", "gumbel", "relaxation must be one of \\('softmax', 'straight-through'\\), got 'gumbel'"),
    ("start", "grid", "start must be one of \\('row', 'random'\\), got 'grid'"),
    ("temperature", (1.0, 0.0), "temperature must be two positive numbers"),
    ("objects", 3, "objects=3 disagrees with the caption, which names 2"),
    ("search", True, "search must be one of \\('one', 'pairs', 'all'\\) or None, got True"),
])
def test_guide_rejects_bad_options(tiny, option, value, message):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match=message):
        g.guide(model, tokenizer, "a small red circle above a large blue square", steps=1, **{option: value})


def test_softmax_at_a_tiny_temperature_is_the_hard_render():
    params = g.random_params(3, 3, torch.Generator().manual_seed(2))
    hard = g.render(params, 32, hard=True)
    torch.testing.assert_close(g.render(params, 32, temperature=1e-4), hard, atol=1e-3, rtol=0)  # of 255
    assert (g.render(params, 32, temperature=1.0) - hard).abs().max() > 10  # at T = 1 the mixtures show
    with pytest.raises(ValueError, match="temperature must be positive"):
        g.render(params, 32, temperature=0.0)


@pytest.mark.parametrize("axis, objects", [("horizontal", 2), ("vertical", 2), ("horizontal", 3), ("vertical", 3)])
def test_row_params_start_in_a_row_on_the_axis_that_decode_reads(axis, objects):
    params = g.row_params(5, objects, axis, torch.Generator().manual_seed(0))
    along, across = (0, 1) if axis == "horizontal" else (1, 0)
    assert (params.centre[:, 1:, along] > params.centre[:, :-1, along]).all()  # object k is k-th along the axis
    assert ((params.centre[..., across] - 0.5).abs() <= g.ROW_JITTER).all()  # near the middle line across it
    assert params.colour_logits.abs().max() < 1 and params.shape_logits.abs().max() < 1  # near-uniform choices
    for scene in g.decode(g.snap(params, axis)):
        assert scene is not None and scene.axis == axis and len(scene.objects) == objects
    one = g.row_params(2, 1, None)
    torch.testing.assert_close(one.centre, torch.full((2, 1, 2), 0.5), atol=g.ROW_JITTER, rtol=0)
    with pytest.raises(ValueError, match="axis must be 'horizontal' or 'vertical' for 2 or 3 objects"):
        g.row_params(1, 2, None)


@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
def test_keep_in_row_makes_any_layout_a_row_inside_the_image(axis):
    params = g.random_params(64, 3, torch.Generator().manual_seed(3))
    params.centre.mul_(1.6).sub_(0.3)  # some centres outside the image
    params.radius.uniform_(0.0, 0.3)  # some radii outside RADIUS_RANGE
    g.keep_in_row(params, axis)
    along, across = (0, 1) if axis == "horizontal" else (1, 0)
    r, a = params.radius, params.centre[..., along]
    lo, hi = g.RADIUS_RANGE
    assert ((r >= lo - 1e-6) & (r <= hi + 1e-6)).all()
    assert (a - r >= -1e-6).all() and (a + r <= 1 + 1e-6).all()  # every box inside the image
    assert (a[:, 1:] - r[:, 1:] - (a[:, :-1] + r[:, :-1]) >= g.ROW_GAP - 1e-6).all()  # index order, boxes apart
    assert (params.centre[..., across] == params.centre[:, :1, across]).all()  # one line across the axis
    before = [t.clone() for t in params.tensors()]
    g.keep_in_row(params, axis)  # a row is already a row: a projection changes nothing the second time
    for old, new in zip(before, params.tensors()):
        torch.testing.assert_close(old, new)


def test_snap_gives_one_hot_logits_legal_sizes_and_the_same_scene():
    scenes = [s for s in some_scenes("train", 120) if len(s.objects) == 2][:20]
    params = g.encode(scenes)
    noisy = g.SceneParams(params.centre, params.radius + 0.02 * (2 * torch.rand(params.radius.shape) - 1),
                          params.colour_logits / 12 + 0.3 * torch.rand(params.colour_logits.shape),
                          params.shape_logits / 12 + 0.3 * torch.rand(params.shape_logits.shape))
    snapped = g.snap(noisy)
    torch.testing.assert_close(snapped.colour_logits, params.colour_logits)  # the encoder's one-hot logits again
    torch.testing.assert_close(snapped.shape_logits, params.shape_logits)
    torch.testing.assert_close(snapped.radius, params.radius)  # the nearest of the two legal sizes
    torch.testing.assert_close(snapped.centre, params.centre)  # positions kept
    assert [g.describe(s) for s in g.decode(snapped)] == [g.describe(s) for s in scenes]


def test_choose_categories_finds_the_target_with_an_exact_oracle():
    target = g.encode(shapes.Scene((shapes.SceneObject("star", "purple", "small", 0.2, 0.5),
                                    shapes.SceneObject("heart", "orange", "large", 0.5, 0.5),
                                    shapes.SceneObject("triangle", "green", "small", 0.8, 0.5)), "left to right"))

    def oracle(p):  # (N,) how many of the 9 attributes match the target
        return ((p.colour_logits.argmax(-1) == target.colour_logits.argmax(-1)).float().sum(1)
                + (p.shape_logits.argmax(-1) == target.shape_logits.argmax(-1)).float().sum(1)
                + ((p.radius - target.radius).abs() < 1e-6).float().sum(1))

    start = g.snap(g.row_params(4, 3, "horizontal", torch.Generator().manual_seed(4)), "horizontal")
    for steps in g.SEARCH_STEPS:
        found = g.choose_categories(oracle, start, "horizontal", rounds=1, steps=steps)
        assert (oracle(found) == 9).all(), steps
    assert all(g.describe(s) == g.describe(g.decode(target)[0]) for s in g.decode(found))
    unchanged = g.choose_categories(oracle, start, "horizontal", rounds=0)
    torch.testing.assert_close(unchanged.colour_logits, start.colour_logits)


def test_searching_attributes_together_escapes_a_trap_of_one_at_a_time():
    # a yellow star beats a red star and a yellow circle, but a red circle beats them all
    table = {("yellow", "star"): 2.0, ("red", "star"): 1.0, ("yellow", "circle"): 1.0, ("red", "circle"): 3.0}

    def trap(p):  # (N,) for one object
        return torch.tensor([table.get((s.objects[0].colour, s.objects[0].shape), 0.0) for s in g.decode(p)])

    start = g.encode(shapes.Scene((shapes.SceneObject("star", "yellow", "small", 0.5, 0.5),)))
    stuck = g.choose_categories(trap, start, steps="one")
    assert g.decode(stuck)[0].objects[0].shape == "star"  # no single change helps: one at a time stays
    for steps in ("pairs", "all"):
        found = g.decode(g.choose_categories(trap, start, steps=steps))[0].objects[0]
        assert (found.colour, found.shape) == ("red", "circle"), steps
    with pytest.raises(ValueError, match="steps must be one of"):
        g.choose_categories(trap, start, steps="every")


def test_choose_categories_never_lowers_clips_score(tiny):
    model, tokenizer = tiny
    from minclip.evaluate import encode_texts
    text = encode_texts(model, tokenizer, ["a small red circle above a large blue square"])[0]
    start = g.snap(g.row_params(3, 2, "vertical", torch.Generator().manual_seed(5)), "vertical")
    score = lambda p: g.readout_scores(model, p, text)  # noqa: E731
    better = g.choose_categories(score, start, "vertical", steps="one")
    assert (score(better) >= score(start) - 1e-6).all()
    assert (score(g.choose_categories(score, better, "vertical")) >= score(better) - 1e-6).all()
    assert all(s is not None and s.axis == "vertical" for s in g.decode(better))  # size changes keep the row


def test_shifted_views_are_the_eight_fixed_neighbour_shifts():
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    views = g.shifted_views(image, 2)
    assert views.shape == (16, 3, 8, 8)
    torch.testing.assert_close(views, g.shifted_views(image, 2))  # deterministic
    torch.testing.assert_close(g.shifted_views(image, 0), image)
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="replicate")
    offsets = [(dy, dx) for dy in (0, 2, 4) for dx in (0, 2, 4) if (dy, dx) != (2, 2)]
    for b in range(2):
        for v, (dy, dx) in enumerate(offsets):
            torch.testing.assert_close(views[8 * b + v], padded[b, :, dy:dy + 8, dx:dx + 8])
    assert not any(torch.equal(view, image[b]) for b in range(2) for view in views[8 * b:8 * b + 8])


def test_random_views_are_shifted_crops():
    image = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    views = g.random_views(image, 4, 2, torch.Generator().manual_seed(0))
    assert views.shape == (8, 3, 8, 8)
    torch.testing.assert_close(g.random_views(image, 3, 0), image.repeat_interleave(3, dim=0))
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="replicate")
    for i, view in enumerate(views):  # each view is some window of its own padded image
        windows = padded[i // 4].unfold(1, 8, 1).unfold(2, 8, 1)  # (3, 5, 5, 8, 8)
        assert any(torch.equal(windows[:, dy, dx], view) for dy in range(5) for dx in range(5))


@pytest.mark.parametrize("parametrisation", ["pixels", "lowres"])
def test_optimise_image_raises_the_score(tiny, parametrisation):
    model, tokenizer = tiny
    from minclip.evaluate import encode_texts
    text = encode_texts(model, tokenizer, ["a small red circle"])[0]
    start = torch.full((32, 32, 3), 255, dtype=torch.uint8)
    image, history = g.optimise_image(model, text, start, steps=15, lr=0.1, parametrisation=parametrisation, factor=4)
    assert image.shape == (32, 32, 3) and image.dtype == torch.uint8 and history.shape == (15,)
    assert history[-1] > history[0]
    if parametrisation == "lowres":  # bilinear upsampling of an 8 x 8 image: neighbouring pixels move together
        assert (image[:, 1:].int() - image[:, :-1].int()).abs().float().mean() < 40
    with pytest.raises(ValueError, match="parametrisation must be"):
        g.optimise_image(model, text, start, parametrisation="fourier")
    with pytest.raises(ValueError, match="start must be a uint8 image"):
        g.optimise_image(model, text, start.float())


# ---------------------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    """The tiny model saved as a minclip checkpoint (what `load` reads; no optimiser state needed)."""
    import dataclasses

    from minclip.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
    from minclip.train import TrainConfig

    model, tokenizer = tiny
    path = tmp_path_factory.mktemp("generate") / "checkpoint.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model.state_dict(),
                           "model_config": model.config.to_dict(),
                           "train_config": dataclasses.asdict(TrainConfig(data="shapes", preset="nano")),
                           "tokenizer_merges": [list(pair) for pair in tokenizer.merges]})
    return path


def test_generate_saves_frames_and_says_what_it_drew(checkpoint, tmp_path, capsys):
    from minclip.__main__ import main

    out = tmp_path / "frames.png"
    assert main(["generate", str(checkpoint), "a small red circle above a large blue square", "--steps", "3",
                 "--restarts", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "drew: " in printed and "the caption" in printed and "frames saved to" in printed
    assert main(["generate", str(checkpoint), "a small red circle", "--steps", "2", "--restarts", "1",
                 "--relaxation", "straight-through", "--start", "random", "--no-prior", "--search", "none",
                 "--out", str(out)]) == 0
    assert "drew: a " in capsys.readouterr().out  # one object is always a scene


@pytest.mark.parametrize("argv, message", [
    (["a red dog"], "error: cannot read 'a red dog' as a shapes caption"),
    (["a small red circle", "--steps", "0"], "error: --steps and --restarts must be at least 1"),
])
def test_generate_bad_input_is_one_line_and_exit_2(checkpoint, capsys, argv, message):
    from minclip.__main__ import main

    assert main(["generate", str(checkpoint), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_generate_without_a_checkpoint_is_one_line(tmp_path, capsys):
    from minclip.__main__ import main

    assert main(["generate", str(tmp_path / "none.pt"), "a small red circle"]) == 2
    assert capsys.readouterr().err.startswith("error: no checkpoint at")

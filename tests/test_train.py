"""Training loop, checkpoints and `minclip.load`: resume equality, round trips, errors, the review's switches."""

import math
import os
import signal
import warnings
import sys
import zipfile
from pathlib import Path

import pytest
import torch


from minclip.checkpoint import load, model_from_checkpoint, read_checkpoint, save_checkpoint
from minclip.data import EmojiDataset, to_model_input
from minclip.loss import clip_loss
from minclip.model import CLIP, CLIPConfig
from minclip.tokenizer import BPETokenizer
from minclip.loss import SIGLIP_INIT_BIAS
from minclip.train import (MAX_LOGIT_SCALE, TrainConfig, TrainingInterrupted, build_model, make_autocast,
                           make_optimizer, parameter_groups, train, train_step, trained_with, unseen_artists,
                           warmup_cosine)

train_module = sys.modules["minclip.train"]  # the module (`minclip.train` is also the name of its function)

NANO = dict(preset="nano", batch_size=16, epochs=1, eval_every=0, vocab_size=600, augment=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 4-step nano run (shared by the tests that only read its outputs)."""
    out = tmp_path_factory.mktemp("run")
    return train(TrainConfig(**NANO, max_steps=4), out=out, progress=False), out


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    config = TrainConfig(**NANO, max_steps=6)
    straight = train(config, out=tmp_path / "straight", progress=False)
    first = train(config, out=tmp_path / "resumed", progress=False, stop_after=3)
    assert len(first.history["loss"]) == 3 and first.report == {}
    resumed = train(config, out=tmp_path / "resumed", resume=True, progress=False)
    assert resumed.history["loss"] == straight.history["loss"]  # bit for bit: every random draw is replayed
    assert resumed.history["temperature"] == straight.history["temperature"]
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_with_other_options_is_refused(tmp_path):
    train(TrainConfig(**NANO, max_steps=4), out=tmp_path, progress=False, stop_after=2)
    with pytest.raises(ValueError, match=r"trained with other options: batch_size 16 \(this run: 8\), lr 0.001 "
                                         r"\(this run: 0.002\); resume with the checkpoint's values"):
        train(TrainConfig(**{**NANO, "batch_size": 8, "lr": 2e-3}, max_steps=4), out=tmp_path, resume=True,
              progress=False)


def test_trained_with_tells_whether_a_checkpoint_is_this_run(finished_run, tmp_path):
    _, out = finished_run
    assert trained_with(out / "checkpoint.pt", TrainConfig(**NANO, max_steps=4))
    assert not trained_with(out / "checkpoint.pt", TrainConfig(**NANO, max_steps=5))
    assert not trained_with(tmp_path / "nothing.pt", TrainConfig(**NANO, max_steps=4))
    state = read_checkpoint(out / "checkpoint.pt")
    del state["train_config"]["loss"]  # a checkpoint from before the option existed: the default fills it
    save_checkpoint(tmp_path / "old.pt", state)
    assert trained_with(tmp_path / "old.pt", TrainConfig(**NANO, max_steps=4))
    state["model_config"]["image_size"] *= 2  # the preset changed since: the stored model is not this run's
    save_checkpoint(tmp_path / "stale.pt", state)
    assert not trained_with(tmp_path / "stale.pt", TrainConfig(**NANO, max_steps=4))


def test_checkpoint_round_trip_through_load(finished_run):
    result, out = finished_run
    model, preprocess, tokenizer = load(out / "checkpoint.pt", fast_path=True)  # the towers training ran
    assert not model.training and tokenizer.merges == result.tokenizer.merges
    images = EmojiDataset("val", image_size=64, caption_mode="eval").images[:4]  # 64x64: preprocess resizes to 16x16
    tokens = tokenizer.tokenize(["red heart", "cat face", "sun", "moon"], model.config.context_length)
    with torch.no_grad():
        expected = result.model.encode_image(preprocess(images)), result.model.encode_text(tokens)
        got = model.encode_image(preprocess(images)), model.encode_text(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert preprocess(images).shape == (4, 3, 16, 16)


def test_load_gives_the_plain_towers_whose_hooks_fire(finished_run):
    """Training runs the shortcuts of speedups.py, whose MLPs never call `mlp.gelu`; `load` rebuilds the plain towers
    (the same weights), so a hook on every `mlp.gelu` fires and the features equal the trained model's to rounding."""
    from minclip.speedups import FastTextTransformer, FastVisionTransformer
    from minclip.text import TextTransformer
    from minclip.vision import VisionTransformer

    result, out = finished_run
    assert read_checkpoint(out / "checkpoint.pt")["model_config"]["fast_path"]  # what train stores
    assert isinstance(result.model.visual, FastVisionTransformer) and isinstance(result.model.text, FastTextTransformer)
    model, preprocess, tokenizer = load(out / "checkpoint.pt")
    assert type(model.visual) is VisionTransformer and type(model.text) is TextTransformer
    assert not model.config.fast_path and model.config == result.model.config
    for a, b in zip(model.state_dict().items(), result.model.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    fired = []
    blocks = [*model.visual.transformer.resblocks, *model.text.transformer.resblocks]
    handles = [block.mlp.gelu.register_forward_hook(lambda module, inputs, output: fired.append(output.shape))
               for block in blocks]
    images = preprocess(EmojiDataset("val", image_size=64, caption_mode="eval").images[:4])  # (4, 3, 16, 16)
    tokens = tokenizer.tokenize(["red heart", "cat face", "sun", "moon"], model.config.context_length)
    with torch.no_grad():
        got = model.encode_image(images), model.encode_text(tokens)
        expected = result.model.encode_image(images), result.model.encode_text(tokens)
    assert len(fired) == len(blocks) and fired[0][0] == 4  # once per block, the whole batch
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for handle in handles:
        handle.remove()
    with pytest.raises(TypeError, match="fast_path must be True or False, got 'yes'"):
        load(out / "checkpoint.pt", fast_path="yes")


def test_load_builds_openai_weights_plain_or_with_the_fast_path(tmp_path):
    from minclip.speedups import FastVisionTransformer
    from minclip.vision import VisionTransformer

    torch.manual_seed(0)
    config = CLIPConfig(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
                        vocab_size=49408, context_length=77, text_width=64, text_layers=1, text_heads=1)
    torch.save(CLIP(config).to_openai_state_dict(), tmp_path / "ViT-tiny.pt")
    plain, preprocess, tokenizer = load(tmp_path / "ViT-tiny.pt")
    fast = load(tmp_path / "ViT-tiny.pt", fast_path=True)[0]
    assert type(plain.visual) is VisionTransformer and isinstance(fast.visual, FastVisionTransformer)
    images, tokens = torch.randn(2, 3, 32, 32), tokenizer.tokenize(["a red square", "a blue circle"])
    with torch.no_grad():
        torch.testing.assert_close(fast.encode_image(images), plain.encode_image(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.encode_text(tokens), plain.encode_text(tokens), rtol=1e-4, atol=1e-5)


def test_checkpoint_holds_what_resuming_needs(finished_run):
    _, out = finished_run
    state = read_checkpoint(out / "checkpoint.pt")  # weights_only=True inside
    assert {"model", "model_config", "train_config", "tokenizer_merges", "optimizer", "scheduler", "step", "rng",
            "history"} <= set(state)
    assert state["step"] == 4 and len(state["history"]["loss"]) == 4


def test_mismatched_config_is_a_clear_error(finished_run):
    _, out = finished_run
    state = read_checkpoint(out / "checkpoint.pt")
    other = CLIPConfig(**{**state["model_config"], "text_layers": 3})
    with pytest.raises(ValueError, match="text_layers: checkpoint 2 vs run 3"):
        model_from_checkpoint(state, expected=other)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.pt; train one"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt is not a readable minclip checkpoint"):
        read_checkpoint(tmp_path / "garbage.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="foreign.pt is not a minclip checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "x", "value": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": "x", "value": 2})
    assert torch.load(path, weights_only=True)["value"] == 1  # the old checkpoint survives a failed write
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # and no temporary file is left behind


def test_overfitting_32_pairs_drives_the_loss_far_below_chance():
    torch.manual_seed(0)
    data = EmojiDataset("train", image_size=16, caption_mode="eval")
    captions = [data.caption(i) for i in range(32)]
    tokenizer = BPETokenizer.train(captions, 640)
    model = CLIP(CLIPConfig.preset("nano", vocab_size=tokenizer.vocab_size))
    images, tokens = to_model_input(data.images[:32]), tokenizer.tokenize(captions, 32)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.0), lr=3e-3)
    for _ in range(150):
        loss = clip_loss(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True),
                         model.logit_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * math.log(32), loss.item()  # chance level is ln 32 = 3.47


def test_make_optimizer_is_clips_adamw_fused_and_equal_to_the_plain_loop():
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano"))
    twin = CLIP(CLIPConfig.preset("nano"))
    twin.load_state_dict(model.state_dict())
    config = TrainConfig(lr=1e-2, weight_decay=0.1)
    fused = make_optimizer(model, config)
    assert fused.defaults["fused"] and fused.defaults["betas"] == (0.9, 0.98) and fused.defaults["eps"] == 1e-6
    assert not make_optimizer(twin, config, fused=False).defaults["fused"]  # PyTorch's default, for comparisons
    plain = torch.optim.AdamW(parameter_groups(twin, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, foreach=False)
    for step in range(3):
        for m in (model, twin):
            g = torch.Generator().manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g)
        fused.step()
        plain.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(model.logit_scale, torch.tensor(CLIPConfig.preset("nano").init_logit_scale))  # it moved


def test_no_weight_decay_on_gains_biases_embeddings_and_temperature():
    model = CLIP(CLIPConfig.preset("nano"))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in decayed and "text.text_projection" in decayed
    for name in decayed:
        assert not name.endswith("bias") and "ln_" not in name and "embedding" not in name and name != "logit_scale"
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine():
    schedule = warmup_cosine(total_steps=100, warmup_steps=10)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(55) == pytest.approx(0.5)  # halfway through the cosine
    assert schedule(100) == pytest.approx(0.0, abs=1e-12)
    values = [schedule(s) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warm-up


def test_logit_scale_is_clamped_at_ln_100(tmp_path):
    config = TrainConfig(**{**NANO, "lr": 0.5}, max_steps=3, model={"init_logit_scale": MAX_LOGIT_SCALE - 1e-3})
    result = train(config, progress=False, stop_after=3)
    assert result.model.logit_scale.item() <= MAX_LOGIT_SCALE
    assert min(result.history["temperature"]) >= 0.01 - 1e-9


def test_review_switches_fix_the_temperature_and_freeze_the_image_backbone():
    config = TrainConfig(**NANO, max_steps=3, fixed_logit_scale=1.0, freeze_image_tower=True)
    torch.manual_seed(config.seed)
    result = train(config, progress=False, stop_after=3)
    assert result.model.logit_scale.item() == 0.0 and set(result.history["temperature"]) == {1.0}
    trained = {n for n, p in result.model.named_parameters() if p.requires_grad}
    assert "visual.proj" in trained and not any(n.startswith("visual.") and n != "visual.proj" for n in trained)


def test_artist_pairs_bring_each_caption_drawn_by_two_artists(tmp_path):
    config = TrainConfig(**{**NANO, "augment": False}, artists=("noto", "openmoji", "emojione"), artist_pairs=True)
    data = train_module.ShippedPairs(config, 16, train_module.Processes())
    tokenizer = BPETokenizer.train(data.tokenizer_corpus()[:2000], 600)
    batch = next(data.batches(0, 0, tokenizer, 32, torch.device("cpu")))
    assert batch.second_images.shape == batch.images.shape == (16, 3, 16, 16)
    items = torch.tensor(data.sampler.batches(0)[0])
    first, second = data.train_set.artist_of(0, 0)[items], data.train_set.artist_of(0, 1)[items]
    drawn_twice = data.train_set.drawn[:, items].sum(0) >= 2  # (16,) items two of the artists draw
    assert drawn_twice.any() and (first != second)[drawn_twice].all()  # two artists wherever there are two
    expected = to_model_input(data.train_set.artist_images[second, items])  # (16, 3, 16, 16)
    torch.testing.assert_close(batch.second_images, expected, rtol=0, atol=0)


def test_an_anchored_pair_is_the_first_artists_drawing_beside_another_artists():
    config = TrainConfig(**{**NANO, "augment": False}, artists=("fluent", "noto", "emojione"), artist_pairs=True,
                         anchor_artist=True)
    data = train_module.ShippedPairs(config, 16, train_module.Processes())
    tokenizer = BPETokenizer.train(data.tokenizer_corpus()[:2000], 600)
    batch = next(data.batches(0, 0, tokenizer, 32, torch.device("cpu")))
    items = torch.tensor(data.sampler.batches(0)[0])
    dataset = data.train_set
    first, other = (artists[items] for artists in dataset.anchored_artists(0))  # (16,) each
    anchored = dataset.drawn[0, items]  # (16,): items Fluent (the first artist) draws
    assert anchored.any() and (~anchored).any()  # both kinds in the batch: Fluent lacks some emoji
    assert (first[anchored] == 0).all() and (first[~anchored] != 0).all()  # Fluent wherever it draws the emoji
    assert dataset.drawn[first, items].all() and dataset.drawn[other, items].all()  # never a missing (white) row
    drawn_twice = dataset.drawn[:, items].sum(0) >= 2
    assert (first != other)[drawn_twice].all()  # two artists wherever there are two
    for view, artists in ((batch.images, first), (batch.second_images, other)):
        torch.testing.assert_close(view, to_model_input(dataset.artist_images[artists, items]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"anchor_artist keeps the first artist .* needs artist_pairs=True"):
        TrainConfig(artists=("noto", "openmoji"), anchor_artist=True)


def test_a_step_with_artist_pairs_adds_the_drawings_loss_to_both_caption_losses():
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano"))
    images, others = torch.randn(2, 6, 3, 16, 16).unbind(0)  # (6, 3, 16, 16) each
    tokens = torch.cat([torch.randint(0, 60, (6, 7)), torch.full((6, 1), 63)], dim=1)  # (6, 8): ids, then EOT
    with torch.no_grad():
        scale = model.logit_scale.exp()
        drawings, second = model.encode_image(torch.cat([images, others]), normalize=True).split(6)  # (6, E) each
        texts = model.encode_text(tokens, normalize=True)  # (6, E)
        expected = (clip_loss(drawings, texts, scale) + clip_loss(second, texts, scale)) / 2 \
            + clip_loss(drawings, second, scale)
    optimizer = make_optimizer(model, TrainConfig(preset="nano"))
    loss = train_step(model, images, tokens, optimizer, grad_clip=1.0, second_images=others)
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_restyle_changes_the_training_batches_of_both_artists():
    config = dict(NANO, augment=False, artists=("noto", "openmoji"), artist_pairs=True)
    sources = [train_module.ShippedPairs(TrainConfig(**config, restyle=r), 16, train_module.Processes())
               for r in (False, True)]
    tokenizer = BPETokenizer.train(sources[0].tokenizer_corpus()[:2000], 600)
    plain, restyled = (next(data.batches(0, 0, tokenizer, 32, torch.device("cpu"))) for data in sources)
    assert restyled.images.shape == plain.images.shape and restyled.second_images.shape == plain.second_images.shape
    assert not torch.equal(restyled.images, plain.images) and not torch.equal(restyled.second_images,
                                                                              plain.second_images)


def test_artist_pairs_need_two_artists_of_the_emoji_set():
    with pytest.raises(ValueError, match=r"artist_pairs pairs two artists' drawings .* at least two artists"):
        TrainConfig(artist_pairs=True)
    with pytest.raises(ValueError, match="data='emoji'"):
        TrainConfig(data="shapes", artist_pairs=True)


@pytest.mark.parametrize("max_shift, mirror", [(2, True), (1, False), (0, True)])
def test_the_batches_are_augmented_as_the_options_say(max_shift, mirror):
    from minclip.data import augment

    config = TrainConfig(**{**NANO, "max_shift": max_shift, "mirror": mirror})
    data = train_module.ShippedPairs(config, 16, train_module.Processes())
    tokenizer = BPETokenizer.train(data.tokenizer_corpus()[:2000], 600)
    batch = next(data.batches(0, 0, tokenizer, 32, torch.device("cpu")))
    items = data.sampler.batches(0)[0]
    captions = [data.train_set.epoch_captions(0)[i] for i in items]
    drawings = data.train_set.epoch_images(0)[torch.tensor(items)]  # (16, 16, 16, 3) uint8, as drawn
    expected = augment(drawings, captions, max_shift, mirror, generator=train_module.step_generator(config.seed, 0))
    torch.testing.assert_close(batch.images, to_model_input(expected), rtol=0, atol=0)
    assert not torch.equal(batch.images, to_model_input(drawings))  # and augmentation did change something


def test_augmentation_options_are_checked():
    with pytest.raises(ValueError, match=r"max_shift must be an int >= 0 \(0: no shifts\), got -1"):
        TrainConfig(max_shift=-1)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0 .* got 1.5"):
        TrainConfig(max_shift=1.5)
    with pytest.raises(ValueError, match="mirror must be True or False, got 'no'"):
        TrainConfig(mirror="no")


def test_restyle_is_only_for_the_emoji_set():
    with pytest.raises(ValueError, match="restyle shrinks and softens emoji drawings"):
        TrainConfig(data="shapes", restyle=True)


def test_a_run_on_several_artists_reports_the_others_as_unseen(tmp_path):
    config = TrainConfig(**NANO, max_steps=2, artists=("noto", "openmoji"))
    report = train(config, out=tmp_path, progress=False).report
    assert set(report["unseen_artists"]) == {"fluent", "fluent_color", "emojione"}
    fluent = report["unseen_artists"]["fluent"]
    assert fluent["training_captions"]["R@1_chance"] == pytest.approx(1 / fluent["candidate_images"])
    assert unseen_artists("shapes", ("noto",)) == ()
    with pytest.raises(ValueError, match="artists are drawings of the emoji set"):
        TrainConfig(data="shapes", artists=("openmoji",))
    with pytest.raises(ValueError, match="artists must be distinct names from"):
        TrainConfig(artists=("noto", "twemoji"))


def test_bad_training_options():
    with pytest.raises(ValueError, match="data must be one of .* or the path of your own data set"):
        TrainConfig(data="")
    with pytest.raises(ValueError, match="data 'cifar': no such file or folder; give emoji, shapes, a .csv"):
        train(TrainConfig(data="cifar"), progress=False)  # a name that is not shipped is a path: checked at the start
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train(TrainConfig(preset="huge"), progress=False)
    # the model's shape is checked when the options are, not minutes later when training starts
    with pytest.raises(ValueError, match=r"CLIPConfig.image_size=30 must be divisible by patch_size=16 "
                                         r"\(preset='tiny', model=\{'image_size': 30\}\)"):
        TrainConfig(model={"image_size": 30})
    with pytest.raises(ValueError, match=r"unknown CLIPConfig fields \['bogus'\]"):
        TrainConfig(model={"bogus": 1})


# ------------------------------------------------------------------------------------------------------------------
# SigLIP: loss="siglip" trains a model with a learned bias


def test_siglip_training_learns_32_pairs_far_below_its_chance_level():
    data = EmojiDataset("train", image_size=16, caption_mode="eval")
    captions = [data.caption(i) for i in range(32)]
    tokenizer = BPETokenizer.train(captions, 640)
    torch.manual_seed(0)
    model = build_model(TrainConfig(preset="nano", loss="siglip"), tokenizer)
    assert math.isclose(model.logit_scale.exp().item(), 10.0, rel_tol=1e-6) and model.logit_bias.item() == -10.0
    decay, no_decay = parameter_groups(model, 0.0)
    assert any(p is model.logit_bias for p in no_decay["params"])  # a bias is never decayed
    images, tokens = to_model_input(data.images[:32]), tokenizer.tokenize(captions, 32)
    optimizer = torch.optim.AdamW([decay, no_decay], lr=3e-3)
    losses = [train_step(model, images, tokens, optimizer, grad_clip=1.0, loss="siglip") for _ in range(100)]
    # A model that cannot tell pairs apart does best giving every pair probability 1/B of matching:
    # loss = -log(1/B) - (B - 1) log(1 - 1/B) = ln 32 + 31 ln(32/31) = 4.45, SigLIP's chance level at B = 32.
    chance = math.log(32) + 31 * math.log(32 / 31)
    assert losses[0] > chance and losses[-1] < 0.5 * chance, losses[::10]
    with torch.no_grad():
        similarity = model.encode_image(images, normalize=True) @ model.encode_text(tokens, normalize=True).T
    assert (similarity.argmax(dim=1) == torch.arange(32)).float().mean() >= 0.75  # each image finds its caption
    assert model.logit_bias.item() != -10.0  # the bias learns too


def test_siglip_run_keeps_its_bias_through_the_checkpoint(tmp_path):
    result = train(TrainConfig(**NANO, loss="siglip", max_steps=3), out=tmp_path, progress=False, stop_after=2)
    bias = result.model.logit_bias.item()
    assert result.history["bias"][-1] == bias != SIGLIP_INIT_BIAS and len(result.history["bias"]) == 2
    assert result.history["temperature"][0] == pytest.approx(0.1, rel=0.01)  # SigLIP's start: exp(t') = 10
    model, _, _ = load(tmp_path / "checkpoint.pt")
    assert model.logit_bias.item() == bias and model.config.init_logit_bias == SIGLIP_INIT_BIAS


def test_siglip_options_are_checked():
    with pytest.raises(ValueError, match=r"loss must be one of \('clip', 'siglip'\), got 'sigmoid'"):
        TrainConfig(loss="sigmoid")
    with pytest.raises(ValueError, match="init_logit_bias=-10 is the bias of the sigmoid loss: use it with "
                                         "loss='siglip'"):
        TrainConfig(loss="clip", model={"init_logit_bias": -10})
    with pytest.raises(ValueError, match="loss='siglip' learns a bias: model init_logit_bias must be a number"):
        TrainConfig(loss="siglip", model={"init_logit_bias": None})
    model = CLIP(CLIPConfig.preset("nano"))
    optimizer = torch.optim.AdamW(model.parameters())
    images, tokens = torch.randn(2, 3, 16, 16), torch.tensor([[62, 5, 63], [62, 63, 0]])
    with pytest.raises(ValueError, match="loss='siglip' needs a model with a learned bias: build it with CLIPConfig"):
        train_step(model, images, tokens, optimizer, 1.0, loss="siglip")
    with pytest.raises(ValueError, match="loss must be one of"):
        train_step(model, images, tokens, optimizer, 1.0, loss="infonce")


def test_checkpoints_from_before_an_option_existed_still_resume(tmp_path):
    config = TrainConfig(**NANO, max_steps=3)
    train(config, out=tmp_path, progress=False, stop_after=1)
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    del state["train_config"]["loss"]  # written before TrainConfig.loss existed: it means the default, "clip"
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert train(config, out=tmp_path, resume=True, progress=False, stop_after=2).history["step"] == [1, 2]


# --------------------------------------------------------------------------------------------------- bf16 autocast
# Training runs its forward pass under torch.autocast(bfloat16) on a GPU. The same autocast exists on the CPU, so the
# path (masks, pooling, the loss promoted back to float32, float32 weights and optimiser) is checked here.
@pytest.mark.parametrize("pooling", ["eot", "first"])
def test_train_step_under_bf16_autocast_follows_the_float32_step(pooling):
    torch.manual_seed(0)
    config = CLIPConfig.preset("nano", text_pooling=pooling)
    exact, mixed = CLIP(config), CLIP(config)
    mixed.load_state_dict(exact.state_dict())
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.randint(1, config.vocab_size - 2, (8, 12), generator=g)
    tokens[:, 0] = config.vocab_size - 2
    for row, length in enumerate([3, 11, 5, 7, 2, 9, 4, 6]):  # padding after the end-of-text token
        tokens[row, length] = config.eot_token_id
        tokens[row, length + 1:] = 0
    losses = []
    for model, autocast in ((exact, None), (mixed, torch.autocast("cpu", dtype=torch.bfloat16))):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        losses.append(train_step(model, images, tokens, optimizer, grad_clip=1e9, autocast=autocast))
    assert math.isfinite(losses[1]) and losses[1] == pytest.approx(losses[0], rel=2e-2)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())  # autocast computes in bf16, stores float32
    exact_grads = torch.cat([p.grad.flatten() for p in exact.parameters()])
    mixed_grads = torch.cat([p.grad.flatten() for p in mixed.parameters()])
    assert torch.isfinite(mixed_grads).all()
    assert torch.nn.functional.cosine_similarity(exact_grads, mixed_grads, dim=0) > 0.99


def test_towers_under_bf16_autocast_keep_their_features():
    torch.manual_seed(0)
    model = CLIP(CLIPConfig.preset("nano")).eval()
    images = torch.randn(4, 3, 16, 16)
    tokens = torch.full((4, 10), 0)
    tokens[:, 0] = model.config.vocab_size - 2
    tokens[torch.arange(4), torch.tensor([2, 5, 9, 1])] = model.config.eot_token_id
    with torch.no_grad():
        exact = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
    for e, m in zip(exact, mixed):
        assert m.dtype == torch.bfloat16 and torch.isfinite(m).all()  # the products really ran in bf16
        assert (e * m.float()).sum(-1).min() > 0.99  # cosine between the float32 and the bf16 feature of each input


def test_precision_picks_the_autocast_of_the_forward_pass():
    cpu = torch.device("cpu")
    assert make_autocast("auto", cpu) is None and make_autocast("fp32", cpu) is None  # float32 on the CPU by default
    autocast = make_autocast("bf16", cpu)
    assert autocast.device == "cpu" and autocast.fast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        TrainConfig(precision="fp16")


def test_train_in_bf16_on_the_cpu_records_it_and_resumes_only_in_bf16(tmp_path):
    config = TrainConfig(**{**NANO, "max_steps": 3, "precision": "bf16"})
    result = train(config, out=tmp_path, progress=False)
    assert all(math.isfinite(v) for v in result.history["loss"])
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert trained_with(tmp_path / "checkpoint.pt", config)
    assert not trained_with(tmp_path / "checkpoint.pt", TrainConfig(**{**NANO, "max_steps": 3}))


# --------------------------------------------------------------------------------------------------- reliability
# No run loses more than a bounded amount of work; checkpoints are checked; options are checked before training.
def calls_then(monkeypatch, after: int, action):
    """Make train's step run `action()` right after its `after`-th call (a signal, a crash...)."""
    real, calls = train_module.train_step, []

    def step(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls.append(loss)
        if len(calls) == after:
            return action(loss)
        return loss

    monkeypatch.setattr(train_module, "train_step", step)


def send(signum):
    def action(loss):
        os.kill(os.getpid(), signum)
        return loss
    return action


def crash(loss):
    raise RuntimeError("power cut")


def test_ctrl_c_or_sigterm_mid_run_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    config = TrainConfig(**NANO, max_steps=6)
    straight = train(config, out=tmp_path / "straight", progress=False)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / signum.name
        with monkeypatch.context() as patch:
            calls_then(patch, 3, send(signum))
            with pytest.raises(TrainingInterrupted, match=f"{signum.name} at step 3: checkpoint written to") as stop:
                train(config, out=out, progress=False)
        assert isinstance(stop.value, KeyboardInterrupt) and stop.value.checkpoint == out / "checkpoint.pt"
        assert read_checkpoint(out / "checkpoint.pt")["step"] == 3
        assert {s: signal.getsignal(s) for s in before} == before  # the handlers are restored
        resumed = train(config, out=out, resume=True, progress=False)
        assert resumed.history["loss"] == straight.history["loss"]  # bit for bit
        for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_crash_loses_at_most_the_current_epoch(tmp_path, monkeypatch):
    config = TrainConfig(**{**NANO, "batch_size": 1024, "epochs": 3, "augment": False})  # 2 steps per epoch
    calls_then(monkeypatch, 3, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, out=tmp_path, progress=False)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2  # written at the end of epoch 1


def test_a_crash_within_an_epoch_loses_at_most_save_every_minutes(tmp_path, monkeypatch):
    config = TrainConfig(**NANO, save_every_minutes=1e-9)  # a checkpoint after every step
    calls_then(monkeypatch, 3, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, out=tmp_path, progress=False)
    state = read_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and len(state["history"]["loss"]) == 2
    assert trained_with(tmp_path / "checkpoint.pt", TrainConfig(**NANO))  # how often it saves is not an option


def test_a_finished_run_continues_with_more_steps_along_a_recomputed_schedule(tmp_path):
    first = train(TrainConfig(**NANO, max_steps=4), out=tmp_path, progress=False)
    assert first.history["lr"][-1] == 0.0  # a finished run ends at the bottom of its cosine
    longer = TrainConfig(**NANO, max_steps=8)
    result = train(longer, out=tmp_path, resume=True, progress=False)
    assert result.history["step"] == list(range(1, 9)) and result.history["lr"][:4] == first.history["lr"]
    schedule = warmup_cosine(8, max(1, round(0.05 * 8)))  # the schedule of the 8-step run, from step 4 on
    assert result.history["lr"][4:] == pytest.approx([1e-3 * schedule(step) for step in range(5, 9)])
    assert result.history["lr"][4] > 0 and result.history["lr"][-1] == 0.0  # up from zero, back down to it
    assert result.report and trained_with(tmp_path / "checkpoint.pt", longer)
    with pytest.raises(ValueError, match="is at step 8, past the 5 steps of this run"):
        train(TrainConfig(**NANO, max_steps=5), out=tmp_path, resume=True, progress=False)


def flip_bytes_inside_a_tensor(path: Path) -> None:
    """Overwrite a few bytes in the middle of the largest tensor stored in the checkpoint's zip archive."""
    with zipfile.ZipFile(path) as archive:
        entry = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as file:
        file.seek(entry.header_offset + 26)
        name_length, extra_length = (int.from_bytes(file.read(2), "little") for _ in range(2))
        file.seek(entry.header_offset + 30 + name_length + extra_length + entry.file_size // 2)
        data = file.read(4)
        file.seek(-4, 1)
        file.write(bytes(b ^ 0xFF for b in data))


def test_a_damaged_checkpoint_is_refused_and_an_old_one_warns(finished_run, tmp_path):
    _, out = finished_run
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((out / "checkpoint.pt").read_bytes())
    flip_bytes_inside_a_tensor(damaged)
    torch.load(damaged, weights_only=True)  # torch itself notices nothing
    with pytest.raises(ValueError, match="damaged.pt is damaged: its contents no longer match the SHA-256"):
        load(damaged)
    state = read_checkpoint(out / "checkpoint.pt")
    del state["sha256"]
    torch.save(state, tmp_path / "old.pt")  # as minclip wrote checkpoints before the digest
    with pytest.warns(UserWarning, match="old.pt holds no SHA-256 .* cannot be checked for damage"):
        load(tmp_path / "old.pt")


def test_empty_and_truncated_checkpoints_are_explained(finished_run, tmp_path):
    _, out = finished_run
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.pt is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / "empty.pt")
    data = (out / "checkpoint.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="half.pt is not a readable minclip checkpoint: truncated, damaged"):
        read_checkpoint(tmp_path / "half.pt")


@pytest.mark.parametrize("options, message", [
    ({"lr": 1e6}, r"lr must be a finite number in \(0, 1\], got 1000000.0"),
    ({"lr": math.inf}, r"lr must be a finite number in \(0, 1\], got inf"),
    ({"lr": math.nan}, r"lr must be a finite number in \(0, 1\], got nan"),
    ({"lr": 0.0}, r"lr must be a finite number in \(0, 1\], got 0.0"),
    ({"max_steps": 0}, "max_steps must be a positive int .* got 0: a run needs at least one optimizer step"),
    ({"max_steps": -3}, "max_steps must be a positive int .* got -3"),
    ({"fixed_logit_scale": 0.0}, r"fixed_logit_scale must be a finite number in \(0, 100\], got 0.0"),
    ({"fixed_logit_scale": -1.0}, "fixed_logit_scale must be a finite number"),
    ({"fixed_logit_scale": 1e3}, "fixed_logit_scale must be a finite number .* CLIP clamps it at 100"),
    ({"warmup_fraction": 1.5}, r"warmup_fraction must be a finite number in \[0, 1\], got 1.5"),
    ({"grad_clip": 0.0}, "grad_clip must be a finite number"),
    ({"weight_decay": math.nan}, "weight_decay must be a finite number"),
    ({"save_every_minutes": 0}, "save_every_minutes must be a finite number"),
    ({"seed": -1}, r"seed must be an int in \[0, 2\*\*32\), got -1"),
    ({"eval_every": -1}, "eval_every must be an int >= 0"),
])
def test_numeric_options_must_be_finite_and_in_range(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**options)


def test_runs_that_cannot_take_a_step_or_write_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="batch_size=4096 leaves no full batch .* 3032 training pairs .* no step"):
        train(TrainConfig(**{**NANO, "batch_size": 4096}), progress=False)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="the output folder .*a_file is a file; choose a folder"):
        train(TrainConfig(**NANO, max_steps=1), out=tmp_path / "a_file", progress=False)
    if Path("/sys").is_dir():  # a folder nobody may write in, not even root
        with pytest.raises(ValueError, match="cannot write in the output folder /sys/minclip-test"):
            train(TrainConfig(**NANO, max_steps=1), out="/sys/minclip-test", progress=False)


def test_a_diverged_run_stops_with_an_error(tmp_path, monkeypatch):
    calls_then(monkeypatch, 2, lambda loss: math.nan)
    with pytest.raises(ValueError, match=r"training diverged at step 2: the loss is nan .* lower the learning rate"):
        train(TrainConfig(**NANO, max_steps=4), out=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing diverged was written


# ------------------------------------------------------------------------------------------------------------------
# Hard negatives: foils encoded by the text tower, passed to the loss


def _nano_batch(rows, seed):
    config = CLIPConfig.preset("nano")
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, config.vocab_size - 2, (rows, 10), generator=g)
    tokens[:, 0] = config.sot_token_id
    tokens[:, -1] = config.eot_token_id
    return config, torch.randn(rows, 3, config.image_size, config.image_size, generator=g), tokens


def test_train_step_with_foils_is_the_loss_with_the_foils_text_features():
    config, images, tokens = _nano_batch(6, seed=2)
    _, _, foil_tokens = _nano_batch(3, seed=3)
    torch.manual_seed(0)
    stepped, reference = CLIP(config).double(), CLIP(config).double()
    reference.load_state_dict(stepped.state_dict())
    images = images.double()
    value = train_step(stepped, images, tokens, torch.optim.SGD(stepped.parameters(), lr=0.0), grad_clip=1e9,
                       foil_tokens=foil_tokens)
    expected = clip_loss(reference.encode_image(images, normalize=True), reference.encode_text(tokens, normalize=True),
                         reference.logit_scale.exp(), reference.encode_text(foil_tokens, normalize=True))
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    for (name, parameter), twin in zip(stepped.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, twin.grad, rtol=1e-10, atol=1e-12, msg=name)
    # zero foils (every foil of the shard was dropped) is the plain step, gradients and all
    plain, empty = CLIP(config).double(), CLIP(config).double()
    empty.load_state_dict(plain.state_dict())
    values = [train_step(model, images, tokens, torch.optim.SGD(model.parameters(), lr=0.0), grad_clip=1e9,
                         foil_tokens=foils) for model, foils in ((plain, None), (empty, foil_tokens[:0]))]
    assert values[0] == values[1]
    for a, b in zip(plain.parameters(), empty.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_a_run_with_hard_negatives_trains_on_foils_and_records_the_option(tmp_path, monkeypatch):
    seen = []
    original = train_module.train_step

    def spy(*args, **kwargs):
        seen.append(args[8] if len(args) > 8 else kwargs.get("foil_tokens"))
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    result = train(TrainConfig(**NANO, max_steps=3, hard_negatives=True), out=tmp_path, progress=False, stop_after=2)
    assert len(seen) == 2 and all(foils is not None and 0 < len(foils) <= 16 for foils in seen), seen
    assert read_checkpoint(tmp_path / "checkpoint.pt")["train_config"]["hard_negatives"] is True
    assert all(math.isfinite(loss) for loss in result.history["loss"])
    with pytest.raises(ValueError, match="hard_negatives must be True or False, got 'yes'"):
        TrainConfig(hard_negatives="yes")


def test_shard_foil_tokens_keeps_this_process_s_usable_foils():
    from minclip.train import shard_foil_tokens

    captions = ["a", "b", "c", "d"]
    foils = ["x", None, "a", "y"]  # item 2's foil is item 0's true caption: left out
    foil_tokens = torch.tensor([[5, 1, 9, 0], [5, 9, 0, 0], [5, 2, 9, 0], [5, 3, 3, 9]])
    batch = [3, 2, 1, 0]  # global rows 0..3; two processes keep rows 0-1 and 2-3
    first = shard_foil_tokens(batch, captions, foils, foil_tokens, slice(0, 2), eot_token_id=9)
    second = shard_foil_tokens(batch, captions, foils, foil_tokens, slice(2, 4), eot_token_id=9)
    assert first.tolist() == [[5, 3, 3, 9]]  # item 3's foil "y"
    assert second.tolist() == [[5, 1, 9]]  # item 0's foil "x", trimmed to its end-of-text token


def test_family_batches_on_shapes_put_each_scene_beside_its_role_twin():
    import dataclasses

    from minclip.processes import Processes
    from minclip.shapes import ShapesDataset, role_twin
    from minclip.train import ShippedPairs

    config = TrainConfig(data="shapes", preset="nano", batch_size=32, family_batches=True)
    pairs = ShippedPairs(config, image_size=24, processes=Processes())
    data = pairs.train_set
    assert data.families is not None and len(data) == len(ShapesDataset("train", image_size=24))
    twins = {i: i + 1 for i in range(len(data) - 1) if data.families[i] == data.families[i + 1]}  # scene -> twin
    assert all(data.records[j] == role_twin(data.records[i]) for i, j in twins.items())
    batches = pairs.sampler.batches(0)
    where = {item: b for b, batch in enumerate(batches) for item in batch}
    together = [where.get(i) == where.get(j) for i, j in twins.items() if i in where and j in where]
    assert len(together) > 0.9 * len(twins) and sum(together) > 0.9 * len(together)  # split only at batch edges
    plain = ShippedPairs(dataclasses.replace(config, family_batches=False), image_size=24, processes=Processes())
    assert plain.train_set.families is None
    assert plain.train_set.captions == ShapesDataset("train", image_size=24).captions

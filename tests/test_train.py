"""Training loop, checkpoints and `minclip.load`: resume equality, round trips, errors, the review's switches."""

import math

import pytest
import torch

from minclip.data import EmojiDataset, to_model_input
from minclip.loss import clip_loss
from minclip.model import CLIP, CLIPConfig
from minclip.tokenizer import BPETokenizer
from minclip.loss import SIGLIP_INIT_BIAS
from minclip.train import (MAX_LOGIT_SCALE, TrainConfig, build_model, load, make_autocast, make_optimizer,
                           model_from_checkpoint, parameter_groups, read_checkpoint, save_checkpoint, train, train_step,
                           trained_with, unseen_artists, warmup_cosine)

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
    with pytest.raises(ValueError, match="trained with other options"):
        train(TrainConfig(**{**NANO, "batch_size": 8}, max_steps=4), out=tmp_path, resume=True, progress=False)


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
    model, preprocess, tokenizer = load(out / "checkpoint.pt")
    assert not model.training and tokenizer.merges == result.tokenizer.merges
    images = EmojiDataset("val", image_size=64, captions="eval").images[:4]  # 64x64: preprocess resizes to 16x16
    tokens = tokenizer.tokenize(["red heart", "cat face", "sun", "moon"], model.config.context_length)
    with torch.no_grad():
        expected = result.model.encode_image(preprocess(images)), result.model.encode_text(tokens)
        got = model.encode_image(preprocess(images)), model.encode_text(tokens)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert preprocess(images).shape == (4, 3, 16, 16)


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
    data = EmojiDataset("train", image_size=16, captions="eval")
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


def test_a_run_on_several_artists_reports_the_others_as_unseen(tmp_path):
    config = TrainConfig(**NANO, max_steps=2, artists=("noto", "openmoji"))
    report = train(config, out=tmp_path, progress=False).report
    assert set(report["unseen_artists"]) == {"fluent", "fluent_color", "emojione"}
    fluent = report["unseen_artists"]["fluent"]
    assert fluent["training_captions"]["R@1_chance"] == pytest.approx(1 / fluent["candidate_images"])
    assert unseen_artists(TrainConfig(data="shapes")) == ()
    with pytest.raises(ValueError, match="artists are drawings of the emoji set"):
        TrainConfig(data="shapes", artists=("openmoji",))
    with pytest.raises(ValueError, match="artists must be distinct names from"):
        TrainConfig(artists=("noto", "twemoji"))


def test_bad_training_options():
    with pytest.raises(ValueError, match="data must be one of"):
        TrainConfig(data="cifar")
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        train(TrainConfig(preset="huge"), progress=False)


# ------------------------------------------------------------------------------------------------------------------
# SigLIP: loss="siglip" trains a model with a learned bias


def test_siglip_training_learns_32_pairs_far_below_its_chance_level():
    data = EmojiDataset("train", image_size=16, captions="eval")
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

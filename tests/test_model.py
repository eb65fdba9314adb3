"""minclip.model: CLIPConfig and presets, CLIP's forward contract, gradients, input checks at the boundary."""

import dataclasses
import doctest
import json
import math

import pytest
import torch
import torch.nn.functional as F

from minclip import model as model_module
from minclip.model import CLIP, PRESETS, CLIPConfig

NANO = CLIPConfig.preset("nano")


def nano_batch(batch=3, seed=0, config=NANO):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.zeros(batch, config.context_length, dtype=torch.long)
    for row in range(batch):
        n = 2 + row
        tokens[row, 0] = config.sot_token_id
        tokens[row, 1:n + 1] = torch.randint(1, config.vocab_size - 2, (n,), generator=g)
        tokens[row, n + 1] = config.eot_token_id
    return images, tokens


def make_model(**overrides):
    torch.manual_seed(0)
    return CLIP(CLIPConfig.preset("nano", **overrides))


def test_presets():
    assert set(PRESETS) >= {"nano", "tiny", "small", "ViT-B/32", "ViT-B/16"}
    assert CLIPConfig.preset("tiny") == CLIPConfig()  # the dataclass defaults are the tutorial model
    b32 = CLIPConfig.preset("ViT-B/32")
    assert (b32.vocab_size, b32.context_length, b32.sot_token_id, b32.eot_token_id) == (49408, 77, 49406, 49407)
    vision = (b32.image_size, b32.patch_size, b32.vision_width, b32.vision_layers, b32.vision_heads)
    assert vision == (224, 32, 768, 12, 12)
    assert (b32.embed_dim, b32.text_width, b32.text_layers, b32.text_heads) == (512, 512, 12, 8)
    assert CLIPConfig.preset("ViT-B/16").patch_size == 16
    assert all(CLIPConfig.preset(name).activation == "quick_gelu" for name in PRESETS)
    small_vocab = CLIPConfig.preset("tiny", vocab_size=300)  # special ids follow the vocabulary unless given
    assert (small_vocab.sot_token_id, small_vocab.eot_token_id) == (298, 299)


def test_config_dict_round_trip_through_json():
    config = CLIPConfig.preset("nano", image_encoder="resnet", resnet_layers=(2, 1))
    assert CLIPConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_every_config_field_is_commented():
    source = open(model_module.__file__).read()
    for field in dataclasses.fields(CLIPConfig):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{field.name}:"))
        assert "#" in line, field.name


def test_config_errors():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; choose one of \['nano'"):
        CLIPConfig.preset("huge")
    with pytest.raises(ValueError, match=r"unknown CLIPConfig fields \['widht'\]"):
        CLIPConfig.preset("nano", widht=3)
    with pytest.raises(ValueError, match="vision_heads=3 must divide vision_width=32"):
        CLIPConfig.preset("nano", vision_heads=3)
    with pytest.raises(ValueError, match="image_size=18 must be divisible by patch_size=4"):
        CLIPConfig.preset("nano", image_size=18)
    with pytest.raises(ValueError, match=r"eot_token_id must be an id in \[0, vocab_size=64\), got 64"):
        CLIPConfig.preset("nano", eot_token_id=64)
    with pytest.raises(ValueError, match="sot_token_id and eot_token_id must differ"):
        CLIPConfig.preset("nano", sot_token_id=63)
    with pytest.raises(ValueError, match=r"text_pooling must be one of \('eot', 'first'\), got 'cls'"):
        CLIPConfig.preset("nano", text_pooling="cls")
    with pytest.raises(ValueError, match="text_layers must be a positive int, got 0"):
        CLIPConfig.preset("nano", text_layers=0)
    with pytest.raises(ValueError, match="resnet_layers must be positive ints"):
        CLIPConfig.preset("nano", resnet_layers=())
    with pytest.raises(TypeError, match="CLIP needs a CLIPConfig, got dict"):
        CLIP({"embed_dim": 8})


def test_logit_scale_starts_at_log_one_over_0_07():
    model = make_model()
    assert model.logit_scale.shape == () and model.logit_scale.requires_grad
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)


@pytest.mark.parametrize("image_encoder", ["vit", "resnet"])
def test_forward_is_scaled_cosine_similarity(image_encoder):
    model = make_model(image_encoder=image_encoder).eval()
    images, tokens = nano_batch(3)
    logits_per_image, logits_per_text = model(images, tokens[:2])  # 3 images, 2 texts: not square
    with torch.no_grad():
        image_features, text_features = model.encode_image(images), model.encode_text(tokens[:2])
    cosine = torch.tensor([[F.cosine_similarity(i, t, dim=0) for t in text_features] for i in image_features])
    torch.testing.assert_close(logits_per_image, model.logit_scale.exp().detach() * cosine)  # exp(): log space
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    assert logits_per_image.shape == (3, 2)
    normalized = model.encode_image(images, normalize=True)
    torch.testing.assert_close(normalized, image_features / image_features.norm(dim=-1, keepdim=True))
    assert not torch.allclose(image_features.norm(dim=-1), torch.ones(3))  # encode_* are unnormalised by default


@pytest.mark.parametrize("overrides", [{}, {"image_encoder": "resnet"}, {"text_pooling": "first"},
                                       {"activation": "gelu", "attn_impl": "sdpa"}])
def test_every_parameter_gets_a_gradient(overrides):
    model = make_model(**overrides)
    with torch.no_grad():  # the ResNet's zero-initialised block gains would hide the branches behind them
        for name, p in model.named_parameters():
            if name.endswith("bn2.weight"):
                p.fill_(1.0)
    logits, _ = model(*nano_batch(4))
    F.cross_entropy(logits, torch.arange(4)).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_manual_and_sdpa_attention_give_the_same_model():
    manual = make_model()
    fast = CLIP(dataclasses.replace(manual.config, attn_impl="sdpa"))
    fast.load_state_dict(manual.state_dict())
    batch = nano_batch(3)
    torch.testing.assert_close(fast(*batch)[0], manual(*batch)[0], rtol=1e-5, atol=1e-5)


def test_num_params():
    model = make_model()
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    model.visual.requires_grad_(False)
    assert model.num_params(trainable_only=True) == sum(p.numel() for p in model.text.parameters()) + 1


def test_input_errors_at_the_boundary():
    model = make_model()
    images, tokens = nano_batch(2)
    with pytest.raises(ValueError, match=r"3 colour channels, got \(2, 1, 16, 16\)"):
        model(images[:, :1], tokens)
    with pytest.raises(ValueError, match=r"must be 16x16 \(the configured image_size\), got \(2, 3, 18, 18\)"):
        model.encode_image(torch.randn(2, 3, 18, 18))
    with pytest.raises(ValueError, match=r"must be 16x16 \(the configured image_size\), got \(2, 3, 32, 32\)"):
        model.encode_image(torch.randn(2, 3, 32, 32))
    with pytest.raises(TypeError, match="got dtype torch.uint8"):
        model.encode_image(images.to(torch.uint8))
    with pytest.raises(ValueError, match="T=33 positions but context_length is 32"):
        model.encode_text(torch.cat([tokens, tokens[:, :1]], dim=1))
    with pytest.raises(ValueError, match=r"vocab_size=64\), got values from 0 to 64"):
        model.encode_text(tokens.index_put((torch.tensor([0]), torch.tensor([1])), torch.tensor(64)))
    with pytest.raises(TypeError, match="got dtype torch.float32"):
        model(images, tokens.float())


def test_half_precision_images_are_accepted():
    model = make_model()
    images, tokens = nano_batch(2)
    torch.testing.assert_close(model.encode_image(images.half()), model.encode_image(images.half().float()))


def test_docstring_examples_run():
    assert doctest.testmod(model_module).failed == 0


def test_siglip_bias_only_when_configured():
    assert make_model().logit_bias is None and "logit_bias" not in make_model().state_dict()  # CLIP: no bias
    model = make_model(init_logit_bias=-10.0).eval()
    assert model.logit_bias.shape == () and model.logit_bias.item() == -10.0 and model.logit_bias.requires_grad
    images, tokens = nano_batch(3)
    logits_per_image, logits_per_text = model(images, tokens)
    with torch.no_grad():
        scaled_cosines = model.logit_scale.exp() * model.encode_image(images, normalize=True) \
            @ model.encode_text(tokens, normalize=True).T  # (3, 3)
    torch.testing.assert_close(logits_per_image, scaled_cosines - 10.0)  # sigmoid(logits): probability of a match
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    with pytest.raises(ValueError, match="init_logit_bias must be a number .SigLIP: -10. or None, got 'low'"):
        CLIPConfig.preset("nano", init_logit_bias="low")


def test_siglip_bias_survives_the_openai_layout_round_trip():
    model = make_model(init_logit_bias=-10.0)
    with torch.no_grad():
        model.logit_bias.fill_(-7.25)
    with pytest.warns(UserWarning, match="OpenAI's clip.load would not rebuild this model"):  # nano: 2 heads of 16
        exported = model.to_openai_state_dict()
    assert exported["logit_bias"].item() == -7.25  # top level, as open_clip's SigLIP models store it
    restored = CLIP.from_openai_state_dict(exported, vision_heads=2, text_heads=2,
                                           eot_token_id=NANO.eot_token_id, sot_token_id=NANO.sot_token_id)
    assert restored.config.init_logit_bias == -7.25 and restored.logit_bias.item() == -7.25
    for key, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, rtol=0, atol=0)

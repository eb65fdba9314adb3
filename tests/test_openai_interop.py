"""OpenAI interop: minclip equals OpenAI's reference CLIP on its weights, exports weights OpenAI's code loads, reads
TorchScript archives, and refuses what is not an OpenAI state dict."""

import dataclasses
import datetime
import warnings

import pytest
import torch

from minclip.model import CLIP, CLIPConfig, load_openai_checkpoint, openai_config
from tests.references import openai_clip_model

# (reference CLIP arguments, text heads). The reference gives its ViT width // 64 heads; text heads are an argument.
CONFIGS = {
    "2-head-vit": (dict(embed_dim=24, image_resolution=32, vision_layers=2, vision_width=128, vision_patch_size=8,
                        context_length=16, vocab_size=100, transformer_width=64, transformer_heads=4,
                        transformer_layers=2), 4),
    "small-vocab": (dict(embed_dim=16, image_resolution=16, vision_layers=1, vision_width=64, vision_patch_size=4,
                         context_length=8, vocab_size=12, transformer_width=64, transformer_heads=1,
                         transformer_layers=1), None),
    "3-head-vit": (dict(embed_dim=32, image_resolution=24, vision_layers=1, vision_width=192, vision_patch_size=6,
                        context_length=10, vocab_size=50, transformer_width=128, transformer_heads=2,
                        transformer_layers=3), None),
}


def reference_model(name, seed=0):
    """OpenAI's CLIP with random values in every parameter (LayerNorms and biases included)."""
    torch.manual_seed(seed)
    model = openai_clip_model().CLIP(**CONFIGS[name][0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.logit_scale.fill_(2.0)
    return model.eval()


def batch(name, size=4, seed=1):
    """Images and tokens. OpenAI pools at tokens.argmax(), so EOT must be the largest id: vocab_size - 1."""
    args = CONFIGS[name][0]
    vocab, context = args["vocab_size"], args["context_length"]
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, args["image_resolution"], args["image_resolution"], generator=g)
    tokens = torch.zeros(size, context, dtype=torch.long)
    for row in range(size):
        n = row % (context - 2)
        tokens[row, 0] = vocab - 2
        tokens[row, 1:n + 1] = torch.randint(1, vocab - 2, (n,), generator=g)
        tokens[row, n + 1] = vocab - 1
    return images, tokens


def assert_same_outputs(ours, reference, images, tokens):
    with torch.no_grad():
        for mine, theirs in [(ours.encode_image(images), reference.encode_image(images)),
                             (ours.encode_text(tokens), reference.encode_text(tokens)),
                             (ours(images, tokens)[0], reference(images, tokens)[0])]:
            scale = theirs.abs().max()
            torch.testing.assert_close(mine / scale, theirs / scale, rtol=1e-5, atol=1e-5)  # 1e-5 relative


@pytest.mark.parametrize("name", list(CONFIGS))
def test_features_and_logits_equal_openai(name):
    reference = reference_model(name)
    ours = CLIP.from_openai_state_dict(reference.state_dict(), text_heads=CONFIGS[name][1])
    assert ours.config.vision_heads == CONFIGS[name][0]["vision_width"] // 64
    assert ours.num_params() == sum(p.numel() for p in reference.parameters())
    assert not ours.training
    assert_same_outputs(ours, reference, *batch(name))


def test_the_sdpa_path_equals_openai_too():
    reference = reference_model("2-head-vit")
    ours = CLIP.from_openai_state_dict(reference.state_dict(), text_heads=4, attn_impl="sdpa")
    assert_same_outputs(ours, reference, *batch("2-head-vit"))


@pytest.mark.parametrize("name", ["2-head-vit", "small-vocab"])
@pytest.mark.filterwarnings("ignore:this model has:UserWarning")  # heads other than width // 64: tested below
def test_export_loads_into_openai_code(name):
    reference = reference_model(name)
    ours = CLIP.from_openai_state_dict(reference.state_dict(), text_heads=CONFIGS[name][1])
    with torch.no_grad():  # change the weights, so that the round trip carries our values, not the reference's
        for p in ours.parameters():
            p.mul_(1.1)
    exported = ours.to_openai_state_dict()
    assert {k: v.shape for k, v in exported.items()} == {k: v.shape for k, v in reference.state_dict().items()}
    fresh = openai_clip_model().CLIP(**CONFIGS[name][0]).eval()
    fresh.load_state_dict(exported)  # strict: the same keys, the same shapes
    assert_same_outputs(ours, fresh, *batch(name))
    if CONFIGS[name][1] is None:  # OpenAI's build_model infers heads as width // 64, which this config uses
        built = openai_clip_model().build_model(dict(exported)).float()  # it builds the same architecture ...
        built.load_state_dict(exported)  # ... (its weights were rounded to fp16 on the way: reload them)
        assert_same_outputs(ours, built, *batch(name))


def test_released_format_fp16_weights_and_integer_entries():
    """Released checkpoints hold fp16 weights and three integer entries; both must be handled."""
    reference = reference_model("small-vocab")
    openai_clip_model().convert_weights(reference)  # OpenAI's own fp16 conversion
    state_dict = dict(reference.state_dict())
    state_dict.update(input_resolution=torch.tensor(16), context_length=torch.tensor(8), vocab_size=torch.tensor(12))
    ours = CLIP.from_openai_state_dict(state_dict)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    images, tokens = batch("small-vocab")
    assert_same_outputs(ours, reference.float(), images, tokens)  # same fp16-rounded values, computed in fp32
    torch.testing.assert_close(ours.encode_image(images.half()), ours.encode_image(images.half().float()))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_load_checkpoint_from_torchscript_and_plain_files(tmp_path):
    reference = reference_model("2-head-vit")
    images, tokens = batch("2-head-vit")
    traced = torch.jit.trace(reference, (images, tokens), check_trace=False)
    traced.save(str(tmp_path / "ViT-tiny.pt"))  # the format of OpenAI's released .pt files
    torch.save(reference.state_dict(), tmp_path / "state_dict.pt")
    for filename in ("ViT-tiny.pt", "state_dict.pt"):
        ours = load_openai_checkpoint(tmp_path / filename, text_heads=4)
        assert_same_outputs(ours, reference, images, tokens)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_openai_checkpoint(tmp_path / "missing.pt")


def test_openai_preset_shapes_equal_the_reference():
    """Our ViT-B/32, ViT-B/16 and ViT-L/14 presets have OpenAI's exact keys and shapes (built on the meta device)."""
    for name in ("ViT-B/32", "ViT-B/16", "ViT-L/14"):
        c = CLIPConfig.preset(name)
        with torch.device("meta"):
            ours = CLIP(c)
            reference = openai_clip_model().CLIP(c.embed_dim, c.image_size, c.vision_layers, c.vision_width,
                                                 c.patch_size, c.context_length, c.vocab_size, c.text_width,
                                                 c.text_heads, c.text_layers)
        theirs = reference.state_dict()
        assert {k: v.shape for k, v in ours.to_openai_state_dict().items()} == {k: v.shape for k, v in theirs.items()}
        assert openai_config(theirs) == c  # and the config read back from the shapes is the preset
        assert c.vision_heads == c.vision_width // 64


@pytest.mark.filterwarnings("ignore:this model has:UserWarning")
def test_not_an_openai_state_dict():
    model = CLIP(CLIPConfig.preset("nano"))
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        CLIP.from_openai_state_dict([1, 2])
    with pytest.raises(ValueError, match=r"not an OpenAI CLIP state dict: missing keys \['visual.conv1.weight'"):
        CLIP.from_openai_state_dict({"encoder.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match="looks like a minclip state dict"):
        CLIP.from_openai_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="ResNet checkpoints .* are not supported"):
        CLIP.from_openai_state_dict({"visual.layer1.0.conv1.weight": torch.zeros(1)})
    exported = model.to_openai_state_dict()  # width 32: width // 64 = 0 heads, so they must be given
    with pytest.raises(ValueError, match="cannot use 0 heads for the vision width 32.*pass vision_heads="):
        CLIP.from_openai_state_dict(exported)
    with pytest.raises(ValueError, match=r"\['image_size'\] are read from the state dict's shapes"):
        CLIP.from_openai_state_dict(exported, vision_heads=2, text_heads=2, image_size=32)
    broken = dict(exported)
    broken["visual.ln_post.weight"] = torch.ones(5)
    with pytest.raises(ValueError, match="does not fit the configuration read from its shapes"):
        CLIP.from_openai_state_dict(broken, vision_heads=2, text_heads=2)
    roundtrip = CLIP.from_openai_state_dict(exported, vision_heads=2, text_heads=2)
    resnet_fields = {"resnet_width": roundtrip.config.resnet_width, "resnet_layers": roundtrip.config.resnet_layers}
    assert roundtrip.config == dataclasses.replace(model.config, **resnet_fields)  # the rest is read back exactly
    with pytest.raises(ValueError, match="only ViT models have an OpenAI layout"):
        CLIP(CLIPConfig.preset("nano", image_encoder="resnet")).to_openai_state_dict()


def test_export_warns_when_openai_would_assume_other_heads(tmp_path):
    model = CLIP.from_openai_state_dict(reference_model("2-head-vit").state_dict(), text_heads=4)  # 64 wide, 4 heads
    with pytest.warns(UserWarning, match=r"text 4 heads \(OpenAI's loader assumes text_width 64 // 64 = 1\): "
                                         r"OpenAI's clip.load would not rebuild this model .* "
                                         r"load_openai_checkpoint\(path, vision_heads=2, text_heads=4\)"):
        exported = model.to_openai_state_dict()
    torch.save(exported, tmp_path / "exported.pt")
    loaded = load_openai_checkpoint(tmp_path / "exported.pt", vision_heads=2, text_heads=4)  # as the warning says
    assert loaded.config.text_heads == 4 and loaded.config.vision_heads == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # heads = width // 64 in both towers: nothing to warn about
        CLIP.from_openai_state_dict(reference_model("3-head-vit").state_dict()).to_openai_state_dict()


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\): the download or copy did not finish"),
    ("HALF", r"is neither a TorchScript archive .* nor a saved state dict of tensors: truncated, damaged or another "
             r"kind of file \(RuntimeError"),
    (b"not a checkpoint", r"is neither a TorchScript archive .* \(UnpicklingError"),
    ("CODE", r"is neither a TorchScript archive .* \(UnpicklingError: Weights only load failed"),
    ("LIST", "holds a list, not a state dict"),
])
def test_load_openai_checkpoint_explains_what_is_wrong_with_a_file(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if content == "HALF":
        torch.save(reference_model("small-vocab").state_dict(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content == "CODE":
        torch.save(datetime.date(2021, 1, 5), path)  # a pickled object that weights_only refuses to build
    elif content == "LIST":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_openai_checkpoint(path)

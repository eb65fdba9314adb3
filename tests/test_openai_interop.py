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
    with pytest.raises(ValueError, match=r"not an OpenAI CLIP state dict: missing keys \['visual.conv1.weight', "
                                         r"'visual.attnpool.positional_embedding'"):  # a ResNet's keys are expected
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
    with pytest.raises(ValueError, match="minclip's small ResNet has no OpenAI layout"):
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


# ----------------------------------------------------------------------------------------------------------------------
# OpenAI's ResNets (modified_resnet.py), on random weights of RN50's real shapes and of a small one

def randomised(module, seed=0):
    """`module` in eval mode with random values in every parameter and in the batch norms' running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, buffer in module.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
    return module.eval()


def assert_same_features(mine, theirs):
    scale = theirs.abs().max()
    torch.testing.assert_close(mine / scale, theirs / scale, rtol=1e-5, atol=1e-5)


def test_modified_resnet_equals_openai_on_rn50_shapes():
    """The slowest test here (~2 s): OpenAI's RN50 image tower, 38M random weights, against ours."""
    from minclip.modified_resnet import ModifiedResNet

    torch.manual_seed(0)
    reference = randomised(openai_clip_model().ModifiedResNet((3, 4, 6, 3), output_dim=1024, heads=32,
                                                              input_resolution=224, width=64))
    ours = ModifiedResNet(image_size=224, width=64, layers=(3, 4, 6, 3), heads=32, embed_dim=1024).eval()
    ours.load_state_dict(reference.state_dict())  # strict: OpenAI's key names and shapes
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same_features(ours(images), reference(images))


def test_vit_b32_image_tower_equals_openai_on_its_real_shapes():
    from minclip.vision import VisionTransformer

    c = CLIPConfig.preset("ViT-B/32")
    torch.manual_seed(0)
    reference = randomised(openai_clip_model().VisionTransformer(c.image_size, c.patch_size, c.vision_width,
                                                                 c.vision_layers, c.vision_heads, c.embed_dim))
    ours = VisionTransformer(c.image_size, c.patch_size, c.vision_width, c.vision_layers, c.vision_heads,
                             c.embed_dim).eval()
    ours.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert_same_features(ours(images), reference(images))


# A small ResNet CLIP in OpenAI's code: width 16 (attention pool 512 wide: 8 heads), 64x64 images
RESNET = dict(embed_dim=24, image_resolution=64, vision_layers=(1, 2, 1, 1), vision_width=16, vision_patch_size=None,
              context_length=16, vocab_size=100, transformer_width=64, transformer_heads=1, transformer_layers=2)


def test_resnet_clip_reads_openai_state_dicts_and_exports_them_back():
    torch.manual_seed(0)
    reference = randomised(openai_clip_model().CLIP(**RESNET))
    with torch.no_grad():
        reference.logit_scale.fill_(2.0)
    ours = CLIP.from_openai_state_dict(reference.state_dict())
    c = ours.config
    assert (c.image_encoder, c.image_size, c.resnet_width, c.resnet_layers, c.vision_heads) == \
           ("modified_resnet", 64, 16, (1, 2, 1, 1), 8)
    assert ours.num_params() == sum(p.numel() for p in reference.parameters())
    CONFIGS["resnet"] = (RESNET, None)  # for batch(): 64x64 images, 16 tokens of a 100-token vocabulary
    try:
        images, tokens = batch("resnet")
    finally:
        del CONFIGS["resnet"]
    assert_same_outputs(ours, reference, images, tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # OpenAI's heads: nothing to warn about
        exported = ours.to_openai_state_dict()
    built = openai_clip_model().build_model(dict(exported)).float()  # OpenAI's loader rebuilds the same network
    built.load_state_dict(exported)
    assert_same_outputs(ours, built, images, tokens)
    other = CLIP.from_openai_state_dict(reference.state_dict(), vision_heads=4)
    with pytest.warns(UserWarning, match=r"vision 4 heads \(OpenAI's loader assumes 32 \* resnet_width 512 // 64 = "
                                         r"8\)"):
        other.to_openai_state_dict()


def test_modified_resnet_configs_are_checked():
    with pytest.raises(ValueError, match="needs 4 resnet_layers, an image_size divisible by 32"):
        CLIPConfig.preset("nano", image_encoder="modified_resnet", image_size=48, resnet_layers=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"vision_heads=3 must divide the attention pool's width 32 \* resnet_width"):
        CLIPConfig.preset("nano", image_encoder="modified_resnet", image_size=32, resnet_layers=(1, 1, 1, 1),
                          vision_heads=3)
    model = CLIP(CLIPConfig.preset("nano", image_encoder="modified_resnet", image_size=32, resnet_layers=(1, 1, 1, 1)))
    assert model.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 32)
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0 for block in model.visual.layer1)  # OpenAI's zero init


# ----------------------------------------------------------------------------------------------------------------------
# minclip.load with OpenAI's files: the model, OpenAI's tokenizer and OpenAI's preprocessing

# A tiny CLIP in OpenAI's layout with OpenAI's vocabulary and context, so that their tokenizer fits it
TINY_OPENAI = dict(embed_dim=32, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=16,
                   context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=2)


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory):
    """The tiny reference model, saved as OpenAI releases weights (a TorchScript archive) and as a state dict."""
    folder = tmp_path_factory.mktemp("openai")
    torch.manual_seed(0)
    reference = openai_clip_model().CLIP(**TINY_OPENAI).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, 0], tokens[:, 3] = 49406, 49407
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates TorchScript, and tracing warns about the control flow
        torch.jit.trace(reference, (images, tokens), check_trace=False).save(str(folder / "ViT-tiny.pt"))
    torch.save(reference.state_dict(), folder / "state_dict.pt")
    return reference, folder


@pytest.mark.parametrize("filename", ["ViT-tiny.pt", "state_dict.pt"])
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_load_reads_openai_files_with_their_tokenizer_and_preprocess(openai_files, filename):
    import minclip
    from minclip.preprocess import CLIPPreprocess
    from minclip.tokenizer import BPETokenizer
    from tests.references import openai_bpe_path, openai_simple_tokenizer

    reference, folder = openai_files
    model, preprocess, tokenizer = minclip.load(folder / filename)
    assert isinstance(model, CLIP) and not model.training
    assert isinstance(preprocess, CLIPPreprocess) and preprocess.image_size == 32
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 49408
    text = "a photo of a cat on a skateboard"
    ids = openai_simple_tokenizer().SimpleTokenizer(bpe_path=str(openai_bpe_path())).encode(text)
    theirs = torch.zeros(1, 77, dtype=torch.long)
    theirs[0, : len(ids) + 2] = torch.tensor([49406, *ids, 49407])
    tokens = tokenizer.tokenize([text])
    assert torch.equal(tokens, theirs)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert_same_outputs(model, reference, images, tokens)


def test_load_refuses_openai_weights_that_openai_tokenizer_does_not_fit(tmp_path):
    import minclip
    from minclip.checkpoint import read_checkpoint

    torch.save(reference_model("small-vocab").state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="has a vocabulary of 12 tokens, not the 49408 of OpenAI's tokenizer: build "
                                         "it with CLIP.from_openai_state_dict"):
        minclip.load(tmp_path / "small.pt")
    with pytest.raises(ValueError, match="holds OpenAI-format CLIP weights, not a minclip checkpoint; minclip.load "
                                         "reads it"):
        read_checkpoint(tmp_path / "small.pt")


def test_read_checkpoint_names_a_torchscript_archive(openai_files):
    from minclip.checkpoint import read_checkpoint

    with pytest.raises(ValueError, match="is a TorchScript archive \\(OpenAI's released weights\\), not a minclip "
                                         "checkpoint; minclip.load reads it"):
        read_checkpoint(openai_files[1] / "ViT-tiny.pt")


def pictures():
    """PIL images of several sizes and modes: landscape, portrait, odd sizes, smaller than the input, exactly the
    input size, with transparency, grey, with a palette."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)

    def noise(height, width, channels=3):
        return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)

    return {
        "landscape": Image.fromarray(noise(120, 160)), "portrait": Image.fromarray(noise(161, 97)),
        "odd": Image.fromarray(noise(75, 99)), "small": Image.fromarray(noise(20, 30)),
        "exact": Image.fromarray(noise(64, 64)), "rgba": Image.fromarray(noise(50, 80, 4), "RGBA"),
        "grey": Image.fromarray(noise(70, 90, 1)[..., 0], "L"),
        "palette": Image.fromarray(noise(66, 90)).convert("P", palette=Image.ADAPTIVE, colors=16),
    }


@pytest.mark.parametrize("size", [64, 37])
def test_preprocess_equals_openai_transform(size):
    """CLIPPreprocess equals OpenAI's torchvision transform exactly, on PIL images of any size and mode."""
    from minclip.preprocess import CLIPPreprocess
    from tests.references import openai_transform

    theirs, ours = openai_transform(size), CLIPPreprocess(size)
    for name, image in pictures().items():
        expected = theirs(image)
        assert torch.equal(ours(image), expected), name
        assert torch.equal(ours([image, image]), torch.stack([expected, expected])), name
        if image.mode == "RGB":  # uint8 pictures are read as RGB PIL images
            import numpy as np

            assert torch.equal(ours(np.asarray(image)[None]), expected[None]), name


def test_preprocess_explains_bad_input():
    from minclip.preprocess import CLIPPreprocess

    with pytest.raises(ValueError, match=r"images must be a PIL image, a list of them, or uint8 \(N, H, W, 3\); got "
                                         r"\(2, 3, 8, 8\) torch.float32"):
        CLIPPreprocess(8)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="images is empty"):
        CLIPPreprocess(8)([])
    with pytest.raises(TypeError, match="expected a PIL image, got str"):
        CLIPPreprocess(8)(["cat.jpg"])


# ----------------------------------------------------------------------------------------------------------------------
# The open_clip export: open_clip's own create_model builds the same model

@pytest.mark.parametrize("overrides", [
    {},  # the nano ViT: 2 heads of width 16, which OpenAI's layout cannot state
    {"image_encoder": "modified_resnet", "image_size": 64, "resnet_width": 8, "resnet_layers": (1, 2, 1, 1),
     "vision_heads": 4},
    {"activation": "gelu", "init_logit_bias": -10.0, "eot_token_id": 3},  # exact GELU, SigLIP, EOT not the last id
])
def test_open_clip_loads_the_export_and_gives_the_same_features(tmp_path, overrides):
    from tests.references import open_clip

    open_clip = open_clip()
    torch.manual_seed(0)
    config = CLIPConfig.preset("nano", **overrides)
    ours = randomised(CLIP(config))
    paths = ours.save_open_clip(tmp_path / "export", name="minclip-test")
    assert {path.name for path in (tmp_path / "export").iterdir()} == \
           {"minclip-test.json", "open_clip_config.json", "open_clip_pytorch_model.bin"}
    open_clip.add_model_config(paths["config"])
    registered = open_clip.create_model("minclip-test", pretrained=str(paths["weights"])).eval()
    local_dir = open_clip.create_model(f"local-dir:{tmp_path / 'export'}").eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.zeros(3, config.context_length, dtype=torch.long)
    for row in range(3):
        tokens[row, 0] = config.sot_token_id
        tokens[row, 1:2 + row] = torch.randint(4, config.vocab_size - 2, (1 + row,), generator=g)
        tokens[row, 2 + row] = config.eot_token_id
    with torch.no_grad():
        for theirs in (registered, local_dir):
            assert_same_features(ours.encode_image(images), theirs.encode_image(images))
            assert_same_features(ours.encode_text(tokens), theirs.encode_text(tokens))
            assert_same_features(ours(images, tokens)[0], theirs.get_logits(images, tokens)[0])


def test_open_clip_export_refuses_what_open_clip_cannot_express(tmp_path):
    with pytest.raises(ValueError, match="minclip's small ResNet has no open_clip equivalent"):
        CLIP(CLIPConfig.preset("nano", image_encoder="resnet")).to_open_clip_config()
    with pytest.raises(ValueError, match="cannot pool like text_pooling='first'"):
        CLIP(CLIPConfig.preset("nano", text_pooling="first")).to_open_clip_config()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; the open_clip export is a folder"):
        CLIP(CLIPConfig.preset("nano")).save_open_clip(tmp_path / "file")
    with torch.device("meta"):  # OpenAI's ViT-B/32 shapes, no memory
        config = CLIP(CLIPConfig.preset("ViT-B/32")).to_open_clip_config()
    from tests.references import _site_file
    import json

    shipped = json.loads(_site_file("open_clip", "model_configs/ViT-B-32-quickgelu.json").read_text())
    assert config == {**shipped, "vision_cfg": {**shipped["vision_cfg"], "head_width": 64}}  # open_clip's own

"""The copy contract: `attention.py`, `loss.py` and `tokenizer.py` work copied alone; the five model files work copied
together into any folder, as loose files or as a package; importing a model module loads no training, data,
evaluation or plotting code. Every check runs in a fresh interpreter, since `sys.modules` remembers earlier imports.

A copy is run in an empty folder with the checkout off the import path; it reads its inputs from `inputs.pt` and
writes its outputs to `outputs.pt`, which are compared here with the package's outputs on the same inputs.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import minclip
from minclip.attention import MultiheadSelfAttention
from minclip.loss import clip_loss, siglip_loss
from minclip.model import CLIP, CLIPConfig
from minclip.tokenizer import OPENAI_MERGES_FILE, BPETokenizer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minclip"
MODEL_FILES = ("attention.py", "transformer.py", "text.py", "vision.py", "model.py")
MERGES = ROOT / "data" / "openai_bpe" / OPENAI_MERGES_FILE

# Appended to every copy's script: the copy ran from the folder it was put in and never imported the package.
CHECK_ALONE = """
from pathlib import Path as _Path
assert _Path({module}.__file__).resolve().is_relative_to(_Path.cwd().resolve()), {module}.__file__
assert not [name for name in sys.modules if name.split(".")[0] == "minclip"], "the copy imported minclip"
"""


def run_fresh(code: str, cwd: Path, pythonpath: Path | None = None) -> str:
    """Run `code` in a new interpreter started in `cwd`; the checkout is importable only through `pythonpath`."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"the fresh interpreter failed:\n{result.stderr}"
    return result.stdout


def run_copy(folder: Path, files, code: str, inputs: dict, module: str, destination: Path | None = None) -> dict:
    """Copy `files` from the package into `destination` (default `folder`), run `code` in `folder`, return its outputs."""
    destination = destination or folder
    destination.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(PACKAGE / name, destination / name)
    torch.save(inputs, folder / "inputs.pt")
    run_fresh("import sys\n" + textwrap.dedent(code) + CHECK_ALONE.format(module=module), cwd=folder)
    return torch.load(folder / "outputs.pt")


# ----------------------------------------------------------------------------------------------------------------------
# Importing a model module loads only torch and the model files.

NOT_FOR_MODELS = ("minclip.train", "minclip.data", "minclip.evaluate", "minclip.plots", "minclip.shapes",
                  "minclip.interpret", "minclip.diagrams", "numpy", "tqdm", "matplotlib")


@pytest.mark.parametrize("module", ["minclip.model", "minclip.attention", "minclip.loss", "minclip.tokenizer"])
def test_importing_a_model_module_loads_no_training_code(module, tmp_path):
    # torch itself may import numpy and tqdm (torch 2.x does, through torch.hub): only what minclip adds is checked.
    report = json.loads(run_fresh(f"""
        import json, sys
        import torch
        before = set(sys.modules)
        import {module}
        import minclip
        print(json.dumps({{"added": sorted(set(sys.modules) - before), "package": minclip.__file__}}))
    """, cwd=tmp_path, pythonpath=ROOT))
    assert Path(report["package"]).parent == PACKAGE
    unwanted = [name for name in report["added"] if name in NOT_FOR_MODELS or name.split(".")[0] in NOT_FOR_MODELS]
    assert unwanted == [], f"import {module} loaded {unwanted}"


def test_train_names_load_on_first_use(tmp_path):
    run_fresh("""
        import sys
        import minclip
        assert "minclip.train" not in sys.modules
        from minclip import load
        assert load is sys.modules["minclip.checkpoint"].load and minclip.load is load
        assert "minclip.train" not in sys.modules  # loading a trained model needs no training code
        module = sys.modules["minclip.train"] if minclip.TrainConfig else None
        assert minclip.train is module.train and minclip.TrainConfig is module.TrainConfig
        assert {"TrainConfig", "train", "load"} <= set(dir(minclip))
        # They run: both check their arguments before any work.
        for call, error in [(lambda: minclip.load("no-such-checkpoint.pt"), FileNotFoundError),
                            (lambda: minclip.train(minclip.TrainConfig(epochs=0)), ValueError)]:
            try:
                call()
                raise AssertionError("expected " + error.__name__)
            except error:
                pass
    """, cwd=tmp_path, pythonpath=ROOT)


def test_importing_the_train_module_keeps_minclip_train_the_function(tmp_path):
    run_fresh("""
        import sys
        import minclip.train
        from minclip import train
        assert callable(minclip.train) and minclip.train is train is sys.modules["minclip.train"].train
    """, cwd=tmp_path, pythonpath=ROOT)


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="module 'minclip' has no attribute 'Trainer'"):
        minclip.Trainer  # noqa: B018
    assert not hasattr(minclip, "Trainer")


# ----------------------------------------------------------------------------------------------------------------------
# attention.py, loss.py, tokenizer.py copied alone.

def test_attention_copied_alone(tmp_path):
    torch.manual_seed(0)
    layer = MultiheadSelfAttention(32, 4)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        out, weights = layer(x, is_causal=True, need_weights=True)
    copied = run_copy(tmp_path, ["attention.py"], """
        import torch
        import attention
        inputs = torch.load("inputs.pt")
        layer = attention.MultiheadSelfAttention(32, 4)
        layer.load_state_dict(inputs["state"])
        with torch.no_grad():
            out, weights = layer(inputs["x"], is_causal=True, need_weights=True)
        torch.save({"out": out, "weights": weights}, "outputs.pt")
    """, {"state": layer.state_dict(), "x": x}, module="attention")
    torch.testing.assert_close(copied["out"], out)
    torch.testing.assert_close(copied["weights"], weights)


def test_loss_copied_alone(tmp_path):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g)
    scale, bias = torch.tensor(2.6592), torch.tensor(-10.0)
    copied = run_copy(tmp_path, ["loss.py"], """
        import torch
        import loss
        inputs = torch.load("inputs.pt")
        image, text, scale, bias = inputs["image"], inputs["text"], inputs["scale"], inputs["bias"]
        torch.save({"clip": loss.clip_loss(image, text, scale), "siglip": loss.siglip_loss(image, text, scale, bias)},
                   "outputs.pt")
    """, {"image": image, "text": text, "scale": scale, "bias": bias}, module="loss")
    torch.testing.assert_close(copied["clip"], clip_loss(image, text, scale))
    torch.testing.assert_close(copied["siglip"], siglip_loss(image, text, scale, bias))


TEXT = "a 고양이 on a skateboard 🛹, smiling 😀!"
CORPUS = ["a red circle", "a blue square", "빨간 원", "파란 사각형", "a smiling face 😀", "a cat 🐱 on a mat"]


def test_tokenizer_copied_alone(tmp_path):
    # BPETokenizer.openai() looks for the merges file beside tokenizer.py first, so the copy carries it along.
    shutil.copy(MERGES, tmp_path / OPENAI_MERGES_FILE)
    copied = run_copy(tmp_path, ["tokenizer.py"], f"""
        import torch
        import tokenizer
        openai = tokenizer.BPETokenizer.openai()
        trained = tokenizer.BPETokenizer.train({CORPUS!r}, vocab_size=560)
        text = {TEXT!r}
        torch.save({{"openai": openai.encode(text), "tokens": openai.tokenize([text, ""]),
                    "trained": trained.encode(text), "merges": trained.merges}}, "outputs.pt")
    """, {}, module="tokenizer")
    openai = BPETokenizer.openai()
    trained = BPETokenizer.train(CORPUS, vocab_size=560)
    assert copied["openai"] == openai.encode(TEXT)
    torch.testing.assert_close(copied["tokens"], openai.tokenize([TEXT, ""]))
    assert copied["trained"] == trained.encode(TEXT)
    assert [tuple(pair) for pair in copied["merges"]] == trained.merges


# ----------------------------------------------------------------------------------------------------------------------
# The five model files copied together: as loose files (`import model`) and as a package (`import mymodels.model`).

MODEL_SCRIPT = """
    import torch
    {import_line}
    assert set({siblings!r}) <= set(sys.modules), "model.py did not import its siblings from its own folder"
    inputs = torch.load("inputs.pt")
    torch.manual_seed(0)
    clip = model.CLIP(model.CLIPConfig.preset("nano"))
    initial = {{name: tensor.clone() for name, tensor in clip.state_dict().items()}}
    clip.load_state_dict(inputs["state"])
    clip.eval()
    with torch.no_grad():
        images = clip.encode_image(inputs["images"], normalize=True)
        texts = clip.encode_text(inputs["tokens"], normalize=True)
    torch.save({{"initial": initial, "images": images, "texts": texts}}, "outputs.pt")
"""


@pytest.mark.parametrize("layout", ["loose files", "package"])
def test_model_files_copied_together(layout, tmp_path):
    torch.manual_seed(0)
    clip = CLIP(CLIPConfig.preset("nano"))
    initial = {name: tensor.clone() for name, tensor in clip.state_dict().items()}
    with torch.no_grad():  # different weights from the seeded ones, so that loading them is checked too
        for parameter in clip.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    clip.eval()
    config = clip.config
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, config.image_size, config.image_size, generator=g)
    tokens = torch.zeros(3, config.context_length, dtype=torch.long)
    for row in range(3):
        tokens[row, 0] = config.sot_token_id
        tokens[row, 1:3 + row] = torch.randint(1, config.vocab_size - 2, (2 + row,), generator=g)
        tokens[row, 3 + row] = config.eot_token_id
    inputs = {"state": clip.state_dict(), "images": images, "tokens": tokens}

    loose = layout == "loose files"
    destination = tmp_path if loose else tmp_path / "mymodels"
    if not loose:
        destination.mkdir()
        (destination / "__init__.py").write_text("")
    prefix = "" if loose else "mymodels."
    script = MODEL_SCRIPT.format(import_line="import model" if loose else "from mymodels import model",
                                 siblings=[prefix + name for name in ("attention", "transformer", "text", "vision")])
    copied = run_copy(tmp_path, MODEL_FILES, script, inputs, module="model", destination=destination)

    assert copied["initial"].keys() == initial.keys()
    for name, tensor in initial.items():
        torch.testing.assert_close(copied["initial"][name], tensor, msg=f"seeded initialisation differs at {name}")
    with torch.no_grad():
        torch.testing.assert_close(copied["images"], clip.encode_image(images, normalize=True))
        torch.testing.assert_close(copied["texts"], clip.encode_text(tokens, normalize=True))


def test_speedups_copied_with_the_model_files_give_the_package_features(tmp_path):
    """speedups.py is needed only with fast_path=True: copied beside the five model files, it gives the package's
    (plain) features."""
    torch.manual_seed(0)
    plain = CLIP(CLIPConfig.preset("nano")).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 16, 16, generator=g)
    tokens = torch.tensor([[62, 5, 7, 63, 0], [62, 9, 63, 0, 0]])
    copied = run_copy(tmp_path, [*MODEL_FILES, "speedups.py"], """
        import torch
        import model
        inputs = torch.load("inputs.pt")
        clip = model.CLIP(model.CLIPConfig.preset("nano", fast_path=True)).eval()
        clip.load_state_dict(inputs["state"])
        assert type(clip.visual).__name__ == "FastVisionTransformer", type(clip.visual)
        with torch.no_grad():
            torch.save({"images": clip.encode_image(inputs["images"]), "texts": clip.encode_text(inputs["tokens"])},
                       "outputs.pt")
    """, {"state": plain.state_dict(), "images": images, "tokens": tokens}, module="model")
    with torch.no_grad():
        torch.testing.assert_close(copied["images"], plain.encode_image(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(copied["texts"], plain.encode_text(tokens), rtol=1e-5, atol=1e-5)

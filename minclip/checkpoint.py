"""Checkpoints: what one holds, writing it atomically with a SHA-256 of its contents, reading it back safely, and
loading a trained model ready to use (`load`, like OpenAI's `clip.load`, for minclip's checkpoints and OpenAI's
released files).

A checkpoint is a `torch.save` file of plain containers and tensors, read with `torch.load(weights_only=True)`,
which never runs code from the file. Every way a file can be wrong (missing, empty, truncated, damaged after it was
written, OpenAI's weights, another program's file, another checkpoint version) gets its own clear error.

How it fits: train.py writes checkpoints during a run and reads them to resume; __main__.py and the notebooks read
them; it needs the model, the tokenizer and the image conversion of data.py, never the training loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import DATASETS, to_model_input
from .model import CLIP, CLIPConfig
from .tokenizer import BPETokenizer

CHECKPOINT_FORMAT = "minclip-checkpoint"
CHECKPOINT_VERSION = 1


# ------------------------------------------------------------------------------------------------------- what it holds
def training_state(model, tokenizer, config, optimizer, scheduler, step: int, history: dict) -> dict:
    """What a checkpoint holds: everything needed to use the model (weights, model config, tokenizer merges) and to
    resume its run exactly (training config, optimiser, scheduler, step, history, every RNG's state)."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": model.state_dict(), "model_config": model.config.to_dict(),
        "train_config": dataclasses.asdict(config),
        "tokenizer_merges": [list(pair) for pair in tokenizer.merges],
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "step": step, "history": history, "rng": rng_state(),
    }


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 0, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------------------------- writing and reading
def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` atomically, with the SHA-256 of its contents: to a temporary file beside `path`, then rename it
    over `path`.

    A crash mid-write (or a full disk) leaves the previous checkpoint intact instead of a truncated file; the stored
    `sha256` (see `checkpoint_digest`) lets `read_checkpoint` tell a file damaged later from a good one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({**state, "sha256": checkpoint_digest(state)}, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def checkpoint_digest(state: dict) -> str:
    """SHA-256 (hex) of everything in `state` but its own "sha256" entry, in a fixed order.

    Dict entries are fed in the order of their keys' repr, list items in order; a tensor feeds its dtype, shape and
    raw bytes, any other value its repr. So one flipped bit in a weight, an optimizer moment or a number of the
    history changes the digest, while writing and reading the same state gives the same one.
    """
    digest = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"tensor {value.dtype} {tuple(value.shape)};".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy())  # the bytes, whatever the dtype
        elif isinstance(value, dict):
            digest.update(f"dict {len(value)};".encode())
            for key in sorted(value, key=repr):
                digest.update(f"{key!r}:".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__} {len(value)};".encode())
            for item in value:
                feed(item)
        else:  # numbers, strings, booleans, None
            digest.update(f"{value!r};".encode())

    feed({key: value for key, value in state.items() if key != "sha256"})
    return digest.hexdigest()


def first_line(error: BaseException) -> str:
    """`"EOFError"` or `"RuntimeError: first line of the message"`: an exception in a few words."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def read_checkpoint(path: str | Path) -> dict:
    """Read a minclip checkpoint safely (`weights_only=True`) and check its SHA-256; a clear error for anything else.

    Raises FileNotFoundError (no file) or ValueError (an empty, truncated or damaged file, a foreign file, another
    checkpoint version). A checkpoint from before the digest existed loads with a warning that it cannot be checked.
    """
    return _checked_checkpoint(_read_file(path), Path(path))


def _read_file(path: str | Path):
    """What a `torch.save` file at `path` holds, read safely; clear errors for a missing, empty or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m minclip train --out DIR`")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): the run that wrote it, or the copy, did not finish; "
                         "use another copy or train again")
    if is_torchscript_archive(path):
        raise ValueError(f"{path} is a TorchScript archive (OpenAI's released weights), not a minclip checkpoint; "
                         "minclip.load reads it")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, unsafe globals: all mean "not our file", or a damaged one
        raise ValueError(f"{path} is not a readable minclip checkpoint: truncated, damaged or another kind of file "
                         f"({first_line(error)})") from None


def _checked_checkpoint(state, path: Path) -> dict:
    if is_openai_state_dict(state):
        raise ValueError(f"{path} holds OpenAI-format CLIP weights, not a minclip checkpoint; minclip.load reads it "
                         "(and `python -m minclip search/classify/eval` do)")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a minclip checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
                         "for OpenAI's weights use minclip.load")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}, this minclip reads "
                         f"version {CHECKPOINT_VERSION}")
    if "sha256" not in state:
        warnings.warn(f"{path} holds no SHA-256 (written by an older minclip), so it cannot be checked for damage; "
                      "it is used as it is", stacklevel=2)
    elif state["sha256"] != checkpoint_digest(state):
        raise ValueError(f"{path} is damaged: its contents no longer match the SHA-256 stored when it was written "
                         "(a partial copy or a failing disk?); use another copy of it or train again")
    return state


# ------------------------------------------------------------------------------------------------------- loading for use
def model_from_checkpoint(state: dict, expected: CLIPConfig | None = None,
                          fast_path: bool | None = None) -> tuple[CLIP, BPETokenizer]:
    """Rebuild the model and tokenizer stored in a checkpoint; `expected` must match the stored config if given.

    `fast_path`: None builds the towers the run used (training resumes with them); True or False picks training's
    shortcuts (minclip/speedups.py) or the plain towers, with the same weights either way.
    """
    config = CLIPConfig(**state["model_config"])
    if fast_path is not None:
        config = dataclasses.replace(config, fast_path=fast_path)
    if expected is not None and expected != config:
        differences = {f.name: (getattr(config, f.name), getattr(expected, f.name))
                       for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(expected, f.name)}
        raise ValueError("the checkpoint's model config differs from this run's: "
                         + ", ".join(f"{k}: checkpoint {a!r} vs run {b!r}" for k, (a, b) in differences.items())
                         + "; resume with the same --preset and options, or start a new --out folder")
    model = CLIP(config)
    model.load_state_dict(state["model"])
    tokenizer = BPETokenizer([tuple(pair) for pair in state["tokenizer_merges"]])
    return model, tokenizer


def load(path: str | Path, device: str = "cpu", fast_path: bool = False):
    """A trained checkpoint, ready to use: `(model, preprocess, tokenizer)`, as OpenAI's `clip.load`.

    `path` is a minclip checkpoint, or one of OpenAI's released files (see `load_openai`). The model has the plain
    towers of the model files, the ones the lessons read, whatever towers its training ran, so a forward hook on any
    module fires (e.g. on `mlp.gelu`). `fast_path=True` gives training's towers instead (minclip/speedups.py, what
    the command line uses): the same weights and features (equal to float rounding) for less work, and bit for bit
    what a model trained by `minclip.train` computed.

    For a minclip checkpoint, `preprocess` turns uint8 images `(N, H, W, 3)` (a tensor or numpy array) or a list of
    PIL images into the model's input `(N, 3, S, S)`: resized to the model's image size, scaled and normalised as in
    training. A checkpoint trained on your own data (`data` = a path) gets `minclip.preprocess.CLIPPreprocess`, the
    shorter-side resize and centre crop its training images went through.

        >>> model, preprocess, tokenizer = minclip.load("runs/tiny/checkpoint.pt")      # doctest: +SKIP
        >>> image_features = model.encode_image(preprocess(images))                    # doctest: +SKIP
        >>> text_features = model.encode_text(tokenizer.tokenize(["red heart"], 32))   # doctest: +SKIP
    """
    if not isinstance(fast_path, bool):
        raise TypeError(f"fast_path must be True or False, got {fast_path!r}")
    if Path(path).is_file() and is_torchscript_archive(path):
        return load_openai(path, device, fast_path=fast_path)
    state = _read_file(path)
    if is_openai_state_dict(state):
        return load_openai(path, device, state_dict=state, fast_path=fast_path)
    state = _checked_checkpoint(state, Path(path))
    model, tokenizer = model_from_checkpoint(state, fast_path=fast_path)
    model = model.to(device).eval()
    size = model.config.image_size
    if state["train_config"].get("data", "emoji") not in DATASETS:  # trained on your photos: prepared as in training
        from .preprocess import CLIPPreprocess  # (shorter side to S, centre crop; minclip.captioned)

        return model, CLIPPreprocess(size), tokenizer

    def preprocess(images) -> torch.Tensor:
        if isinstance(images, (list, tuple)):  # PIL images
            images = np.stack([np.asarray(image.convert("RGB").resize((size, size), resample=4)) for image in images])
        images = torch.as_tensor(np.asarray(images))
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3) or a list of PIL images, got "
                             f"{tuple(images.shape)} {images.dtype}")
        if images.shape[1:3] != (size, size):
            x = images.permute(0, 3, 1, 2).float()  # (N, 3, H, W)
            x = F.interpolate(x, size=(size, size), mode="area" if images.shape[1] > size else "bilinear")
            images = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (N, S, S, 3)
        return to_model_input(images).to(device)

    return model, preprocess, tokenizer


def is_openai_file(path: str | Path) -> bool:
    """Whether `load(path)` reads one of OpenAI's released files (a TorchScript archive or an OpenAI state dict)."""
    return Path(path).is_file() and (is_torchscript_archive(path) or is_openai_state_dict(_read_file(path)))


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether `path` is a TorchScript archive, the format of OpenAI's released `.pt` files: a zip file, like
    `torch.save`'s, that also holds the scripted code (`NAME/code/...`) and `NAME/constants.pkl`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.count("/") == 1 and name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_openai_state_dict(state) -> bool:
    """Whether `state` is a state dict in OpenAI's layout (``visual.*`` keys beside a top-level text tower)."""
    return isinstance(state, dict) and "text_projection" in state and "token_embedding.weight" in state \
        and any(isinstance(key, str) and key.startswith("visual.") for key in state)


def load_openai(path: str | Path, device: str = "cpu", state_dict: dict | None = None, fast_path: bool = False):
    """OpenAI's released weights, ready to use: `(model, preprocess, tokenizer)`, as their `clip.load` gives them.

    `path` is one of the TorchScript archives OpenAI released (`ViT-B-32.pt`, `RN50.pt`, ...; the addresses are in
    docs/openai.md) or a file holding an OpenAI-format state dict (`torch.save(state_dict, path)`, as written by
    `python -m minclip export`); `state_dict`, when given, is its already-read content. The model is minclip's CLIP
    (ViT or OpenAI's ResNet) in float32 and eval mode, the tokenizer OpenAI's BPE (49,408 tokens), and `preprocess`
    is `minclip.preprocess.CLIPPreprocess`: shorter side resized to the input size with bicubic interpolation, centre
    crop, CLIP's mean and standard deviation, equal to OpenAI's on PIL images. `fast_path` as in `load`. Nothing is
    downloaded.

        >>> model, preprocess, tokenizer = minclip.load("ViT-B-32.pt")                  # doctest: +SKIP
        >>> image_features = model.encode_image(preprocess(Image.open("cat.jpg"))[None])  # doctest: +SKIP
        >>> text_features = model.encode_text(tokenizer.tokenize(["a photo of a cat"]))   # doctest: +SKIP
    """
    from .model import load_openai_checkpoint
    from .preprocess import CLIPPreprocess

    model = load_openai_checkpoint(path, fast_path=fast_path) if state_dict is None else \
        CLIP.from_openai_state_dict(state_dict, fast_path=fast_path)
    tokenizer = BPETokenizer.openai()
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{path} has a vocabulary of {model.config.vocab_size} tokens, not the {tokenizer.vocab_size} "
                         "of OpenAI's tokenizer: build it with CLIP.from_openai_state_dict and use the tokenizer it "
                         "was trained with")
    return model.to(device).eval(), CLIPPreprocess(model.config.image_size), tokenizer

"""The training loop: contrastive pre-training of a small CLIP, readable in one sitting.

What CLIP's paper (Radford et al., 2021, section 2.5) trains with, scaled down to a laptop CPU:
- AdamW (beta2 = 0.98, eps = 1e-6) with decoupled weight decay on weight matrices only: gains, biases, embeddings
  and the temperature are left undecayed, since pulling them toward zero has no regularising meaning;
- a linear warm-up, then a cosine decay of the learning rate to zero;
- gradient-norm clipping, so one bad batch cannot wreck the run;
- the learnable temperature `logit_scale` (stored as log(1/T)) clamped to at most ln(100) after every step, as CLIP
  does, so the logits cannot grow without bound.

The whole data set is prepared as tensors up front (the emoji set is a few MB), so a step is pure tensor work. Every
random choice (batch order, caption templates, augmentation) comes from generators seeded by (seed, epoch) or
(seed, step): resuming from a checkpoint therefore replays exactly the run that was interrupted.

The loss is CLIP's InfoNCE (`loss="clip"`) or SigLIP's pairwise sigmoid (`loss="siglip"`, Zhai et al., 2023), which
adds a learned bias to the model, started as the paper does at b = -10 with the scale at exp(t') = 10.

Checkpoints hold everything needed to resume or to use the model (weights, configs, tokenizer merges, optimiser,
scheduler, step, RNG state, history); they are written atomically and read with `torch.load(weights_only=True)`,
which never runs code from the file. `load(path)` returns `(model, preprocess, tokenizer)`, like `clip.load`.

Several processes (`torchrun --nproc_per_node=N -m minclip train`) train one model together, on N GPUs (NCCL) or N
CPU processes (gloo): each encodes its slice of every global batch, the loss gathers all features and is that of the
global batch, and PyTorch's DistributedDataParallel averages the gradients, so the run is the single-process run with
the work shared (tested to float precision). Rank 0 alone shows progress, evaluates and writes files.

How it fits: model.py builds the model, tokenizer.py learns the vocabulary, data.py / shapes.py give the pairs,
loss.py the objective, evaluate.py the held-out report; `python -m minclip train` (__main__.py) calls `train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm  # text bars: they work in terminals and notebooks alike

from .data import ARTISTS, DistinctBatchSampler, EmojiDataset, augment, to_model_input
from .evaluate import heldout_report, retrieval_evaluate
from .loss import SIGLIP_INIT_BIAS, SIGLIP_INIT_LOG_SCALE, distributed_clip_loss, distributed_siglip_loss
from .model import CLIP, CLIPConfig
from .shapes import ShapesDataset
from .text import trim_padding
from .tokenizer import BPETokenizer

CHECKPOINT_FORMAT = "minclip-checkpoint"
CHECKPOINT_VERSION = 1
MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the inverse temperature at 100
DATASETS = ("emoji", "shapes")
LOSSES = ("clip", "siglip")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Every choice of a training run. The defaults are the main job (the `tiny` preset on the emoji set)."""

    preset: str = "tiny"  # CLIPConfig preset for the model
    data: str = "emoji"  # "emoji" (the shipped bilingual set) or "shapes" (procedural, for the binding test)
    lang: str = "en"  # caption language: "en", "ko" or "both"
    artists: tuple[str, ...] = ("noto",)  # emoji: whose drawings to train on (data.ARTISTS); the others are unseen
    epochs: int = 44  # passes over the training split (44 fit the 5-minute CPU budget of the main job: 227 s)
    batch_size: int = 128  # pairs per step (over all processes); every other pair in the batch is a negative
    loss: str = "clip"  # "clip": InfoNCE, a softmax over the batch; "siglip": a sigmoid per pair, with a learned bias
    lr: float = 1e-3  # peak learning rate, reached after the warm-up
    weight_decay: float = 0.1  # AdamW decay of weight matrices (CLIP: 0.2 on far more data)
    warmup_fraction: float = 0.05  # share of the steps spent warming the learning rate up from zero
    grad_clip: float = 1.0  # largest gradient norm; larger gradients are scaled down to it
    vocab_size: int = 2048  # BPE vocabulary learned on the training captions (512 bytes + merges + 2 specials)
    augment: bool = True  # pixel shifts and caption-respecting mirror images
    family_batches: bool = False  # emoji: keep skin-tone/gender siblings in one batch, as hard negatives
    seed: int = 0  # seeds the model's initialisation, the batches, the captions and the augmentation
    eval_every: int = 5  # evaluate on the validation split every this many epochs (0: only at the end)
    max_steps: int | None = None  # stop after this many steps (for tests and quick looks); None: all epochs
    device: str = "auto"  # "auto" picks CUDA, then MPS, then the CPU
    precision: str = "auto"  # forward pass: "auto" = bf16 autocast on CUDA, fp32 elsewhere; "fp32"; "bf16" anywhere
    # --- the review's recipe, as switches, to measure what it costs ---
    fixed_logit_scale: float | None = None  # a constant inverse temperature (review: 1.0, raw cosines); None: learned
    freeze_image_tower: bool = False  # review: the image backbone never trains (only its final projection does)
    model: dict = field(default_factory=dict)  # CLIPConfig fields overriding the preset, e.g. {"text_pooling": "first"}

    def __post_init__(self):
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if self.lang not in ("en", "ko", "both"):
            raise ValueError(f"lang must be 'en', 'ko' or 'both', got {self.lang!r}")
        self.artists = tuple(self.artists)  # JSON round trips (checkpoints) turn tuples into lists
        if not self.artists or len(set(self.artists)) != len(self.artists) or not set(self.artists) <= set(ARTISTS):
            raise ValueError(f"artists must be distinct names from {ARTISTS}, got {self.artists!r}")
        if self.data != "emoji" and self.artists != ("noto",):
            raise ValueError(f"artists are drawings of the emoji set; data={self.data!r} has its own images")
        for name in ("epochs", "batch_size", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: a contrastive loss needs negatives in the batch")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        bias = self.model.get("init_logit_bias")
        if self.loss == "clip" and bias is not None:
            raise ValueError(f"model init_logit_bias={bias!r} is the bias of the sigmoid loss: use it with "
                             "loss='siglip' (InfoNCE has no bias, which would never train)")
        if self.loss == "siglip" and "init_logit_bias" in self.model and bias is None:
            raise ValueError("loss='siglip' learns a bias: model init_logit_bias must be a number "
                             f"(SigLIP starts at {SIGLIP_INIT_BIAS}), not None")


# ------------------------------------------------------------------------------------------------------- set-up
def make_autocast(precision: str, device: torch.device):
    """The autocast context of the forward pass, or None (float32): `precision` as `TrainConfig.precision`.

    bf16 keeps float32's exponent range (no loss scaling needed) with 8 bits of mantissa; the weights, gradients and
    optimiser stay float32. On GPUs it is the default. On CPUs with bf16 matrix units (Intel AMX: Sapphire Rapids and
    later) it is an option: there a bf16 product runs about 8x faster than a float32 one; CPUs without bf16 matrix
    units emulate or convert it and can be slower than in float32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return None


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA if available, else Apple's MPS, else the CPU; any other name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight matrices decay; gains, biases, embeddings and the temperature do not.

    A LayerNorm gain or a bias is a single number per channel: decaying it only biases the model toward zero output.
    An embedding row is a lookup (only rows that occur get gradients), and decaying it shrinks rare tokens most.
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_embedding = "embedding" in name  # token_embedding, positional_embedding, class_embedding
        if parameter.ndim < 2 or is_embedding or name == "logit_scale":
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainConfig, fused: bool | None = None) -> torch.optim.Optimizer:
    """CLIP's AdamW (beta2 = 0.98, eps = 1e-6) over `parameter_groups`, at `config.lr` and `config.weight_decay`.

    On the CPU and CUDA it is PyTorch's fused AdamW (`fused=None` picks it where it exists): one pass over each
    parameter instead of about eight element-wise operations, each reading and writing the whole tensor (on the CPU
    the unfused default even loops parameter by parameter). Same update up to float rounding; 3x faster here (`tiny`:
    3 ms instead of 10 per step). `fused=False` gives PyTorch's default implementation (the benchmark's baseline)."""
    groups = parameter_groups(model, config.weight_decay)
    if fused is None:
        devices = {p.device.type for group in groups for p in group["params"]}
        fused = bool(devices) and devices <= {"cpu", "cuda"}  # where PyTorch has the fused kernel
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=fused or None)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of training step `step`: its draws depend on (seed, step) only, so a resumed run
    augments every batch exactly as the uninterrupted run did."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """Learning-rate multiplier: 0 -> 1 linearly over `warmup_steps`, then 1 -> 0 along a half cosine."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return multiplier


# ------------------------------------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class Processes:
    """Where this process stands: alone (rank 0 of 1), or one of `world_size` processes training one model."""

    rank: int = 0  # 0 .. world_size - 1; rank 0 shows progress, evaluates and writes files
    world_size: int = 1  # processes sharing every batch
    device: torch.device = torch.device("cpu")  # where this process computes (GPU r for the r-th on a machine)
    owns_group: bool = False  # this run initialised the process group, so it also destroys it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This process's rows of a global batch: rank r of W keeps the r-th of W equal, contiguous slices.

        Why not torch's `DistributedSampler`: it deals the *items* out to the processes, and each process then batches
        its own share, so a global batch would be W local batches drawn apart. `DistinctBatchSampler` builds every
        global batch so that no caption and no duplicate image occurs twice in it, which keeps false negatives out of
        the loss, and the loss sees the whole global batch through the gathered features. So every process runs the
        same seeded sampler (the same global batches) and keeps its slice, in rank order, which is where
        `gather_features` puts it. Each process still sees a disjoint 1/W of every epoch, as with a
        DistributedSampler, and the run is the single-process run, step for step.

            >>> Processes(rank=1, world_size=2).shard(8)
            slice(4, 8, None)
        """
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def barrier(self) -> None:
        """Wait until every process gets here (while rank 0 evaluates and writes, for example)."""
        if self.world_size > 1 and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])  # NCCL: on this process's GPU
        elif self.world_size > 1:
            dist.barrier()


def start_processes(device: str = "auto") -> Processes:
    """Join the process group that torchrun describes in the environment (or one already set up), else run alone.

    `torchrun --nproc_per_node=N` starts N copies of the program and tells each who it is in environment variables:
    `WORLD_SIZE` (N times the machines), `RANK` (0 .. WORLD_SIZE - 1), `LOCAL_RANK` (0 .. N - 1 on this machine: which
    GPU to use) and `MASTER_ADDR`/`MASTER_PORT`, where they meet. Processes on GPUs talk through NCCL, one GPU each
    (`cuda:LOCAL_RANK`); on the CPU through gloo. With `device="auto"` they take the GPUs if there are any, else the
    CPU (gloo cannot exchange tensors on Apple's MPS). A group initialised by the caller (a test, a notebook) is used
    as it is and left open; without either, this is one process on `pick_device(device)`.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if owns_group else dist.get_world_size()
    if world_size == 1:
        return Processes(device=pick_device(device))
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} asks for several processes, but this PyTorch build has no "
                           "torch.distributed; run a single process")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type not in ("cuda", "cpu"):
        raise ValueError(f"several processes train on CUDA GPUs (NCCL) or on the CPU (gloo), not on {device!r}")
    if chosen.type == "cuda":
        if chosen.index is None:
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)  # NCCL uses the current device; each process must own a different one
    if owns_group:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")  # reads torchrun's variables
    return Processes(dist.get_rank(), world_size, chosen, owns_group)


def global_mean(value: torch.Tensor) -> float:
    """The mean of a scalar over all processes (its own value when alone): the loss of the whole global batch."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)  # sum over processes
        value /= dist.get_world_size()
    return value.item()


# ------------------------------------------------------------------------------------------------------- data
def load_pairs(data: str, split: str, lang: str, image_size: int, seed: int, captions: str = "train",
               artists: tuple[str, ...] = ("noto",)):
    """The dataset of `split` for `data`; training captions (and, with several artists, the emoji's drawings) vary
    per epoch for emoji, they are fixed for shapes."""
    if data == "emoji":
        return EmojiDataset(split, lang=lang, image_size=image_size, captions=captions, seed=seed, artists=artists)
    return ShapesDataset(split, lang=lang, image_size=image_size, seed=seed)


def epoch_captions(dataset, epoch: int) -> list[str]:
    """The captions of every item at `epoch` (emoji captions are drawn per epoch; shapes captions are fixed)."""
    captions = dataset.captions
    return list(captions(epoch)) if callable(captions) else list(captions)


def epoch_images(dataset, epoch: int) -> torch.Tensor:
    """The image of every item at `epoch`, uint8 (N, S, S, 3): emoji drawn by several artists show one drawing per
    item and epoch; a dataset without `epoch_images` (shapes) has fixed images."""
    return dataset.epoch_images(epoch) if hasattr(dataset, "epoch_images") else dataset.images


def unseen_artists(config: "TrainConfig") -> tuple[str, ...]:
    """The shipped artists a run did not train on, whose drawings its report tests (none for shapes)."""
    return tuple(artist for artist in ARTISTS if artist not in config.artists) if config.data == "emoji" else ()


def tokenizer_corpus(dataset, epochs: int = 4) -> list[str]:
    """Texts to learn the vocabulary from: the training captions of a few epochs (templates, names, keywords)."""
    texts = []
    for epoch in range(epochs):
        texts += epoch_captions(dataset, epoch)
    return texts


# ------------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` atomically: to a temporary file beside `path`, then rename it over `path`.

    A crash mid-write (or a full disk) leaves the previous checkpoint intact instead of a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_checkpoint(path: str | Path) -> dict:
    """Read a minclip checkpoint safely (`weights_only=True`), with a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `python -m minclip train --out DIR`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, unsafe globals: all mean "not our file"
        raise ValueError(f"{path} is not a readable minclip checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a minclip checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
                         "for OpenAI's weights use minclip.load_openai_checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}, this minclip reads "
                         f"version {CHECKPOINT_VERSION}")
    return state


def model_from_checkpoint(state: dict, expected: CLIPConfig | None = None) -> tuple[CLIP, BPETokenizer]:
    """Rebuild the model and tokenizer stored in a checkpoint; `expected` must match the stored config if given."""
    config = CLIPConfig(**state["model_config"])
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


def load(path: str | Path, device: str = "cpu"):
    """A trained checkpoint, ready to use: `(model, preprocess, tokenizer)`, as OpenAI's `clip.load`.

    `preprocess` turns uint8 images `(N, H, W, 3)` (a tensor or numpy array) or a list of PIL images into the model's
    input `(N, 3, S, S)`: resized to the model's image size, scaled and normalised as in training.

        >>> model, preprocess, tokenizer = minclip.load("runs/tiny/checkpoint.pt")      # doctest: +SKIP
        >>> image_features = model.encode_image(preprocess(images))                    # doctest: +SKIP
        >>> text_features = model.encode_text(tokenizer.tokenize(["red heart"], 32))   # doctest: +SKIP
    """
    state = read_checkpoint(path)
    model, tokenizer = model_from_checkpoint(state)
    model = model.to(device).eval()
    size = model.config.image_size

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


# ------------------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: CLIP
    tokenizer: BPETokenizer
    history: dict  # per step: loss, temperature (1 / exp(logit_scale)), lr (SigLIP: bias); per evaluation: val metrics
    report: dict  # the held-out report of the final model
    seconds: float
    rank: int = 0  # this process's rank; with several processes only rank 0 holds the val metrics and the report


def model_config(config: TrainConfig, vocab_size: int, sot_token_id: int, eot_token_id: int) -> CLIPConfig:
    """The CLIPConfig a run of `config` builds: its preset and overrides, sized for the learned vocabulary."""
    siglip = {"init_logit_scale": SIGLIP_INIT_LOG_SCALE, "init_logit_bias": SIGLIP_INIT_BIAS} \
        if config.loss == "siglip" else {}
    return CLIPConfig.preset(config.preset, **{"vocab_size": vocab_size, "sot_token_id": sot_token_id,
                                               "eot_token_id": eot_token_id, **siglip, **config.model})


def build_model(config: TrainConfig, tokenizer: BPETokenizer) -> CLIP:
    """A fresh CLIP of the configured preset, sized for `tokenizer`'s vocabulary and special ids.

    For `loss="siglip"` the model gets SigLIP's learned bias, and both scale and bias start where the paper starts
    them (exp(t') = 10, b = -10; `config.model` may set `init_logit_scale` / `init_logit_bias` otherwise).
    """
    model = CLIP(model_config(config, tokenizer.vocab_size, tokenizer.sot_token_id, tokenizer.eot_token_id))
    if config.fixed_logit_scale is not None:  # the review's loss: a constant scale instead of a learned one
        with torch.no_grad():
            model.logit_scale.fill_(math.log(config.fixed_logit_scale))
    return model


def freeze_for_recipe(model: CLIP, config: TrainConfig) -> CLIP:
    """Stop the gradients the review's recipe does without: a fixed temperature, a frozen image backbone.

    With `freeze_image_tower`, only the image tower's final projection `visual.proj` still learns, as in the review,
    where the backbone runs under `torch.no_grad()` and only the linear layer after it trains.
    """
    if config.fixed_logit_scale is not None:
        model.logit_scale.requires_grad_(False)
    if config.freeze_image_tower:
        for name, parameter in model.visual.named_parameters():
            parameter.requires_grad_(name == "proj")
    return model


class Towers(nn.Module):
    """Both towers of a CLIP as one module: `(images, tokens) -> (image_features, text_features)`, unit length.

    A training step needs the features, not `CLIP.forward`'s logits. In a multi-process run this is the module that
    `DistributedDataParallel` wraps: DDP averages, over processes, the gradients of the parameters it holds (here all
    of the model's, the temperature and SigLIP's bias included) while backward runs.
    """

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode_image(images, normalize=True), self.model.encode_text(tokens, normalize=True)


def train_step(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, optimizer, grad_clip: float,
               autocast=None, loss: str = "clip", towers: nn.Module | None = None) -> float:
    """One contrastive step on a batch of matching pairs; returns the loss as a Python float.

    Encode both towers, normalise, score every image against every text with the learned temperature, take the loss
    (`"clip"`: the symmetric cross-entropy; `"siglip"`: the pairwise sigmoid loss with the model's `logit_bias`),
    step the optimiser on clipped gradients, then clamp the temperature as CLIP does. `autocast` (e.g.
    `torch.autocast("cuda", dtype=torch.bfloat16)`) wraps the forward pass only.

    Several processes: each calls this with its shard of the global batch, `(n, 3, S, S)` and `(n, T)`, and with
    `towers = DistributedDataParallel(Towers(model))`. The loss gathers every process's features (the gradients
    flow back to each shard; see minclip.loss) and covers the global batch: each process's value is the mean over its
    own n rows, scored against all N = W * n pairs, so the W values sum to W times the global loss. DDP divides the
    summed gradients by W, which makes them exactly the gradients of the global batch; no further scaling is needed.
    Every process then clips and steps identically, and the returned loss is the mean over processes: the global one.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "siglip" and model.logit_bias is None:
        raise ValueError("loss='siglip' needs a model with a learned bias: build it with CLIPConfig("
                         f"init_logit_bias={SIGLIP_INIT_BIAS}, init_logit_scale={SIGLIP_INIT_LOG_SCALE:.4f}) as "
                         "build_model does for TrainConfig(loss='siglip')")
    towers = Towers(model) if towers is None else towers
    with autocast if autocast is not None else contextlib.nullcontext():
        image_features, text_features = towers(images, tokens)  # (n, E) each, unit length
    precision = torch.promote_types(image_features.dtype, torch.float32)  # the loss in float32 at least (autocast)
    image_features, text_features = image_features.to(precision), text_features.to(precision)
    if loss == "clip":
        value = distributed_clip_loss(image_features, text_features, model.logit_scale.exp())
    else:
        value = distributed_siglip_loss(image_features, text_features, model.logit_scale.exp(), model.logit_bias)
    optimizer.zero_grad(set_to_none=True)
    value.backward()  # under DDP: gradients averaged over processes here
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)  # T >= 0.01: the logits cannot grow without bound
    return global_mean(value)


def train(config: TrainConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Train a CLIP as `config` says; write `out/checkpoint.pt` after every evaluation and at the end.

    With `resume=True`, continue from `out/checkpoint.pt` (same config required) and replay the same run.
    `stop_after` interrupts the run after that many steps (as a crash or Ctrl-C would, but leaving a checkpoint):
    resuming it later gives exactly the losses of an uninterrupted run.

    Started by torchrun (or inside an initialised process group), all processes train the one model together (see
    `start_processes`, `Processes.shard` and `train_step`): the same run as one process, computed in parallel. Rank 0
    alone shows progress, evaluates and writes the checkpoint; the others wait for it at barriers.
    """
    processes = start_processes(config.device)
    try:
        return _train(config, processes, out, resume, progress, stop_after)
    finally:
        if processes.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, processes: Processes, out, resume: bool, progress: bool,
           stop_after: int | None) -> TrainResult:
    start_time = time.perf_counter()
    device = processes.device
    seed_everything(config.seed)  # the same seed in every process: the same initial model
    if config.batch_size % processes.world_size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {processes.world_size} processes, "
                         "which take equal shares of every batch")
    out = Path(out) if out is not None else None
    checkpoint_path = out / "checkpoint.pt" if out is not None else None
    resumed = read_checkpoint(checkpoint_path) if resume else None
    if resume and not _same_options(resumed, config):
        raise ValueError("the checkpoint was trained with other options or another model "
                         f"({resumed['train_config']}, {resumed['model_config']}); resume with the same options "
                         "or use another --out folder")

    image_size = CLIPConfig.preset(config.preset, **config.model).image_size
    train_set = load_pairs(config.data, "train", config.lang, image_size, config.seed, artists=config.artists)
    if resumed is not None:
        model, tokenizer = model_from_checkpoint(resumed)
    else:
        tokenizer = BPETokenizer.train(tokenizer_corpus(train_set), config.vocab_size)
        model = build_model(config, tokenizer)
    freeze_for_recipe(model, config).to(device)
    context_length = model.config.context_length
    towers = Towers(model)
    if processes.world_size > 1:  # DDP copies rank 0's weights to all (equal anyway) and averages gradients
        towers = DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None)

    families = [record["family"] for record in train_set.records] if config.family_batches and config.data == "emoji" \
        else None
    sampler = DistinctBatchSampler(lambda epoch: epoch_captions(train_set, epoch), config.batch_size,
                                   groups=getattr(train_set, "duplicate_groups", None), drop_last=True,
                                   seed=config.seed, families=families)
    steps_per_epoch = len(sampler.batches(0))
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, max(1, round(config.warmup_fraction * total_steps))))
    history = {"step": [], "loss": [], "temperature": [], "lr": [], "val": []}
    if model.logit_bias is not None:
        history["bias"] = []
    step = 0
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        history, step = resumed["history"], resumed["step"]
        _set_rng_state(resumed["rng"])

    autocast = make_autocast(config.precision, device)
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and processes.is_main), desc="train",
               unit="step")
    end = total_steps if stop_after is None else min(total_steps, stop_after)
    while step < end:
        epoch, position = divmod(step, steps_per_epoch)
        captions = epoch_captions(train_set, epoch)
        tokens_all = tokenizer.tokenize(captions, context_length, truncate=True)  # (N, T), once per epoch
        images_all = epoch_images(train_set, epoch)  # (N, S, S, 3) uint8: this epoch's drawings
        batches = sampler.batches(epoch)
        model.train()
        for batch in batches[position:]:
            if step >= end:
                break
            tick = time.perf_counter()
            index = torch.tensor(batch)
            images = images_all[index]  # (B, S, S, 3) uint8
            if config.augment:  # the whole global batch, in every process: the shifts and flips of a single process
                generator = step_generator(config.seed, step)
                images = augment(images, [captions[i] for i in batch], generator=generator)
            tokens = trim_padding(tokens_all[index], tokenizer.eot_token_id)  # (B, T' <= T): same result, less work
            mine = processes.shard(len(batch))  # this process's rows (all of them when alone)
            images, tokens = to_model_input(images[mine]).to(device), tokens[mine].to(device)  # (n, 3, S, S), (n, T')
            loss = train_step(model, images, tokens, optimizer, config.grad_clip, autocast, config.loss, towers)
            scheduler.step()
            step += 1
            temperature = math.exp(-model.logit_scale.item())
            for key, value in (("step", step), ("loss", loss), ("temperature", temperature),
                               ("lr", scheduler.get_last_lr()[0])):
                history[key].append(value)
            if "bias" in history:
                history["bias"].append(model.logit_bias.item())
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", T=f"{temperature:.4f}",
                            pairs_s=f"{len(batch) / (time.perf_counter() - tick):.0f}")
            bar.update(1)
        end_of_epoch = step % steps_per_epoch == 0 or step >= total_steps
        finished_epochs = math.ceil(step / steps_per_epoch)
        if end_of_epoch and (step >= total_steps or (config.eval_every and finished_epochs % config.eval_every == 0)):
            if processes.is_main:  # one process evaluates and writes; every process holds the same model
                metrics = validation_metrics(model, tokenizer, config, image_size)
                history["val"].append({"step": step, **metrics})
                bar.write(f"epoch {finished_epochs}: val " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
                if checkpoint_path is not None:
                    save_checkpoint(checkpoint_path, _state(model, tokenizer, config, optimizer, scheduler, step,
                                                            history))
            processes.barrier()
    bar.close()
    report = {}
    if processes.is_main:
        if step >= total_steps:  # finished (not interrupted on purpose by stop_after): the held-out report
            report = heldout_report(model, tokenizer, config.data, config.lang, image_size, seed=config.seed,
                                    unseen_artists=unseen_artists(config))
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, _state(model, tokenizer, config, optimizer, scheduler, step, history))
    processes.barrier()
    return TrainResult(model.eval(), tokenizer, history, report, time.perf_counter() - start_time, processes.rank)


def validation_metrics(model: CLIP, tokenizer: BPETokenizer, config: TrainConfig, image_size: int) -> dict:
    """Recall@1 and @5 on the validation split: each plain-name caption against every validation image."""
    lang = "en" if config.lang == "both" else config.lang
    val = load_pairs(config.data, "val", lang, image_size, config.seed, captions="eval")
    captions = epoch_captions(val, 0)
    result = retrieval_evaluate(model, tokenizer, to_model_input(val.images), captions, list(range(len(captions))),
                                ks=(1, 5))
    return {f"{direction}_R@{k}": result[direction][f"R@{k}"]
            for direction in ("text_to_image", "image_to_text") for k in (1, 5)}


_DEFAULTS = dataclasses.asdict(TrainConfig())  # fills options added after a checkpoint was written


def _same_options(state: dict, config: TrainConfig) -> bool:
    """Same training options, and the same model: a preset's sizes may have changed since the checkpoint was written."""
    if {**_DEFAULTS, **state["train_config"]} != dataclasses.asdict(config):  # missing keys: older minclip
        return False
    stored = state["model_config"]
    expected = model_config(config, stored["vocab_size"], stored["sot_token_id"], stored["eot_token_id"])
    return CLIPConfig(**stored) == expected


def trained_with(path: str | Path, config: TrainConfig) -> bool:
    """Whether `path` holds a checkpoint of a run with exactly `config` (finished or interrupted).

    Notebooks use it to reuse a run instead of training it again: `train(config, out, resume=True)` then returns
    the finished run at once, or continues the interrupted one.
    """
    return Path(path).is_file() and _same_options(read_checkpoint(path), config)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), 0, 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _state(model, tokenizer, config, optimizer, scheduler, step, history) -> dict:
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": model.state_dict(), "model_config": model.config.to_dict(),
        "train_config": dataclasses.asdict(config),
        "tokenizer_merges": [list(pair) for pair in tokenizer.merges],
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "step": step, "history": history, "rng": _rng_state(),
    }

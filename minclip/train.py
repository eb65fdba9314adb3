"""The training loop: contrastive pre-training of a small CLIP, readable in one sitting.

What CLIP's paper (Radford et al., 2021, section 2.5) trains with, scaled down to a laptop CPU:
- AdamW (beta2 = 0.98, eps = 1e-6) with decoupled weight decay on weight matrices only: gains, biases, embeddings
  and the temperature are left undecayed, since pulling them toward zero has no regularising meaning;
- a linear warm-up, then a cosine decay of the learning rate to zero;
- gradient-norm clipping, so one bad batch cannot wreck the run;
- the learnable temperature `logit_scale` (stored as log(1/T)) clamped to at most ln(100) after every step, as CLIP
  does, so the logits cannot grow without bound.

The shipped sets are prepared as tensors up front (the emoji set is a few MB), so a step is pure tensor work; your own
data (`data` = a path: CSV/TSV, JSONL, a folder, tar shards) is read from disk step by step by minclip.captioned,
each process reading only its share (`ShippedPairs` and `OwnPairs` give the loop the same batches either way). Every
random choice (batch order, caption templates, augmentation) comes from generators seeded by (seed, epoch) or
(seed, step): resuming from a checkpoint therefore replays exactly the run that was interrupted.

The loss is CLIP's InfoNCE (`loss="clip"`) or SigLIP's pairwise sigmoid (`loss="siglip"`, Zhai et al., 2023), which
adds a learned bias to the model, started as the paper does at b = -10 with the scale at exp(t') = 10. With
`hard_negatives` (NegCLIP, Yuksekgonul et al., 2023) each caption also brings a word-swapped foil (minclip/foils.py),
encoded by the text tower and scored against every image as one more wrong caption. With `family_batches` the
batches also hold hard negative images: an emoji's siblings, or a shapes scene and its role twin. With
`artist_pairs` (emoji, several artists) every caption comes drawn by two artists, and the two drawings are also
positives of each other (an image-image InfoNCE term): what two hands draw alike is what the image tower must see;
`anchor_artist` makes the first artist one of the two wherever it draws the emoji.

Checkpoints (minclip/checkpoint.py) hold everything needed to resume or to use the model; a run writes one after
every epoch (and every `save_every_minutes`, and when Ctrl-C or SIGTERM stops a run between two steps).

Several processes (`torchrun --nproc_per_node=N -m minclip train`) train one model together, on N GPUs (NCCL) or N
CPU processes (gloo): each encodes its slice of every global batch, the loss gathers all features and is that of the
global batch, and PyTorch's DistributedDataParallel averages the gradients, so the run is the single-process run with
the work shared (tested to float precision). Rank 0 alone shows progress, evaluates and writes files; the process
plumbing lives in minclip/processes.py.

Reading order: `TrainConfig`; the set-up helpers (optimiser, schedule); the data sources; `train_step`; then `train`,
the loop itself, top to bottom, and the small helpers it names.

How it fits: model.py builds the model, tokenizer.py learns the vocabulary, data.py / shapes.py / captioned.py give
the pairs, loss.py the objective, evaluate.py the held-out report, checkpoint.py the files;
`python -m minclip train` (__main__.py) calls `train`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm  # text bars: they work in terminals and notebooks alike

from .captioned import CaptionedData
from .checkpoint import (first_line, model_from_checkpoint, read_checkpoint, save_checkpoint, set_rng_state,
                         training_state)
from .data import (ARTISTS, DATASETS, LANGS, DistinctBatchSampler, EmojiDataset, augment, restyle,
                   to_model_input)
from .evaluate import heldout_report, retrieval_evaluate
from .foils import batch_foils, epoch_foils
from .loss import SIGLIP_INIT_BIAS, SIGLIP_INIT_LOG_SCALE, distributed_clip_loss, distributed_siglip_loss
from .model import CLIP, CLIPConfig
from .processes import (Processes, StopSignals, TrainingInterrupted, any_process, global_mean, process_group,
                        sum_over_processes)
from .shapes import ShapesDataset
from .text import trim_padding
from .tokenizer import BPETokenizer

MAX_LOGIT_SCALE = math.log(100)  # CLIP clamps the inverse temperature at 100
LOSSES = ("clip", "siglip")
PRECISIONS = ("auto", "fp32", "bf16")
TOKENIZERS = ("learn", "openai")


@dataclass
class TrainConfig:
    """Every choice of a training run. The defaults are notebook 07's run (the `tiny` preset on Noto's emoji), the
    model the lessons read; `make train` changes the artists, the pairs, the augmentation and the model's shape (the
    Makefile's MAIN_JOB, README "Results")."""

    preset: str = "tiny"  # CLIPConfig preset for the model
    data: str = "emoji"  # "emoji" (the shipped bilingual set), "shapes" (procedural), or a path to your own pairs
    lang: str = "en"  # caption language: "en", "ko" or "both"
    artists: tuple[str, ...] = ("noto",)  # emoji: whose drawings to train on (data.ARTISTS); the others are unseen
    epochs: int = 44  # passes over the training split (44 fit the tiny preset into 5 CPU minutes; docs/experiments.md)
    batch_size: int = 128  # pairs per step (over all processes); every other pair in the batch is a negative
    loss: str = "clip"  # "clip": InfoNCE, a softmax over the batch; "siglip": a sigmoid per pair, with a learned bias
    lr: float = 1e-3  # peak learning rate, reached after the warm-up
    weight_decay: float = 0.1  # AdamW decay of weight matrices (CLIP: 0.2 on far more data)
    warmup_fraction: float = 0.05  # share of the steps spent warming the learning rate up from zero
    grad_clip: float = 1.0  # largest gradient norm; larger gradients are scaled down to it
    vocab_size: int = 2048  # BPE vocabulary learned on the training captions (512 bytes + merges + 2 specials)
    augment: bool = True  # caption-respecting augmentation: pixel shifts, and mirror images where the caption allows
    max_shift: int = 2  # with augment: each image moves by up to this many pixels in x and in y
    mirror: bool = True  # with augment: mirror left-right with probability 1/2 where the caption survives it
    restyle: bool = False  # emoji: also shrink each drawing (70-100 %) and soften it through a lower resolution
    family_batches: bool = False  # hard negative images in every batch: emoji siblings (skin tone, gender), or
    #                               each shapes scene beside its role twin (the same objects in the opposite order)
    hard_negatives: bool = False  # NegCLIP: add each caption's word-swapped foil (foils.py) as a wrong caption
    artist_pairs: bool = False  # emoji, 2+ artists: each caption brings two artists' drawings, positives of each
    #                             other (an image-image InfoNCE term) and both of the caption
    anchor_artist: bool = False  # with artist_pairs: the first of `artists` draws one drawing of every pair (where it
    #                              draws the emoji), so each epoch shows every caption in its hand
    seed: int = 0  # seeds the model's initialisation, the batches, the captions and the augmentation
    eval_every: int = 5  # evaluate on the validation split every this many epochs (0: only at the end)
    max_steps: int | None = None  # stop after this many steps (for tests and quick looks); None: all epochs
    save_every_minutes: float = 10.0  # with an out folder: a checkpoint after every epoch, or sooner after this long
    device: str = "auto"  # "auto" picks CUDA, then MPS, then the CPU
    precision: str = "auto"  # forward pass: "auto" = bf16 autocast on CUDA, fp32 elsewhere; "fp32"; "bf16" anywhere
    # --- the review's recipe, as switches, to measure what it costs ---
    fixed_logit_scale: float | None = None  # a constant inverse temperature (review: 1.0, raw cosines); None: learned
    freeze_image_tower: bool = False  # review: the image backbone never trains (only its final projection does)
    model: dict = field(default_factory=dict)  # CLIPConfig fields overriding the preset, e.g. {"text_pooling": "first"}
    # --- your own captioned images (data = a CSV/TSV or JSONL file, a folder, or tar shards; see minclip.captioned) ---
    image_key: str | None = None  # the image-path column (CSV/TSV; None: "filepath") or key (JSONL; None: "image")
    caption_key: str | None = None  # the caption column (None: "title") or key (None: "caption")
    split_key: str | None = None  # a column/key saying "train" or "val"/"test" (held out); None: use val_fraction
    val_fraction: float = 0.0  # share of the distinct images (of the shards) held out for recall@K; 0: none
    tokenizer: str = "learn"  # "learn": a BPE of vocab_size tokens from the captions; "openai": OpenAI's 49,408 tokens
    workers: int = 0  # DataLoader worker processes decoding images; 0: the training process decodes them

    def __post_init__(self):
        if not isinstance(self.data, str) or not self.data.strip():
            raise ValueError(f"data must be one of {DATASETS} or the path of your own data set, got {self.data!r}")
        self._check_own_data_options()
        if self.lang not in LANGS:
            raise ValueError(f"lang must be 'en', 'ko' or 'both', got {self.lang!r}")
        self.artists = tuple(self.artists)  # JSON round trips (checkpoints) turn tuples into lists
        if not self.artists or len(set(self.artists)) != len(self.artists) or not set(self.artists) <= set(ARTISTS):
            raise ValueError(f"artists must be distinct names from {ARTISTS}, got {self.artists!r}")
        if not isinstance(self.hard_negatives, bool):
            raise ValueError(f"hard_negatives must be True or False, got {self.hard_negatives!r}")
        if self.hard_negatives and self.own_data:
            raise ValueError("hard_negatives writes foils from the shipped sets' scene descriptions and emoji families; "
                             f"it cannot be used with your own data ({self.data!r}): leave --hard-negatives out")
        if self.data != "emoji" and self.artists != ("noto",):
            raise ValueError(f"artists are drawings of the emoji set; data={self.data!r} has its own images")
        if self.restyle and self.data != "emoji":
            raise ValueError(f"restyle shrinks and softens emoji drawings, where size says nothing; data="
                             f"{self.data!r} has captions about size or its own images: leave it off")
        if self.anchor_artist and not self.artist_pairs:
            raise ValueError("anchor_artist keeps the first artist in every pair of drawings: it needs artist_pairs="
                             "True (--artist-pairs)")
        if self.artist_pairs and (self.data != "emoji" or len(self.artists) < 2):
            raise ValueError(f"artist_pairs pairs two artists' drawings of each emoji: it needs data='emoji' and at "
                             f"least two artists, got data={self.data!r}, artists={self.artists!r} "
                             "(e.g. --artists noto openmoji fluent)")
        for name in ("epochs", "batch_size", "vocab_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2: a contrastive loss needs negatives in the batch")
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive int (or None for all epochs), got {self.max_steps!r}: "
                             "a run needs at least one optimizer step")
        if not _is_int(self.max_shift) or self.max_shift < 0:
            raise ValueError(f"max_shift must be an int >= 0 (0: no shifts), got {self.max_shift!r}")
        if not isinstance(self.mirror, bool):
            raise ValueError(f"mirror must be True or False, got {self.mirror!r}")
        if not _is_int(self.eval_every) or self.eval_every < 0:
            raise ValueError(f"eval_every must be an int >= 0 (0: evaluate only at the end), got {self.eval_every!r}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r}")
        _check_range("lr", self.lr, 0, 1, "AdamW moves every weight by about lr per step, so above 1 the first step "
                     "overwrites the weights (CLIP: 5e-4; the tiny recipe: 1e-3)")
        _check_range("weight_decay", self.weight_decay, 0, math.inf, "0 turns it off", low_open=False)
        _check_range("warmup_fraction", self.warmup_fraction, 0, 1, "a share of the steps", low_open=False)
        _check_range("grad_clip", self.grad_clip, 0, math.inf, "the largest gradient norm")
        _check_range("save_every_minutes", self.save_every_minutes, 0, math.inf,
                     "a checkpoint is written at the end of every epoch anyway")
        if self.fixed_logit_scale is not None:
            _check_range("fixed_logit_scale", self.fixed_logit_scale, 0, math.exp(MAX_LOGIT_SCALE),
                         "it is the inverse temperature 1/T, and CLIP clamps it at 100 (T >= 0.01)")
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
        try:  # the model's shape is checked now, not when training starts
            CLIPConfig.preset(self.preset, **self.model)
        except ValueError as error:
            raise ValueError(f"{error} (preset={self.preset!r}, model={self.model!r})") from None

    @property
    def own_data(self) -> bool:
        """Whether `data` is the user's data set (a path) rather than a shipped one."""
        return self.data not in DATASETS

    def _check_own_data_options(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {self.tokenizer!r}")
        if not _is_int(self.workers) or self.workers < 0:
            raise ValueError(f"workers must be an int >= 0 (0: decode in the training process), got {self.workers!r}")
        for name in ("image_key", "caption_key", "split_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a column name (or None for the default), got {value!r}")
        _check_range("val_fraction", self.val_fraction, 0, 0.9, "a share of the images held out; 0: none",
                     low_open=False)
        if self.split_key is not None and self.val_fraction:
            raise ValueError(f"split_key={self.split_key!r} already says which rows are held out: leave val_fraction "
                             f"at 0 (got {self.val_fraction!r})")
        if not self.own_data:
            changed = [name for name in ("image_key", "caption_key", "split_key", "val_fraction", "tokenizer",
                                         "workers") if getattr(self, name) != _OWN_DATA_DEFAULTS[name]]
            if changed:
                raise ValueError(f"{changed[0]} is an option of your own data (data = a path); the shipped "
                                 f"{self.data!r} set has its own splits and learns its vocabulary")
        elif self.lang != "en" or self.family_batches:
            raise ValueError("lang and family_batches are options of the shipped sets; your captions are used as "
                             "they are written (any language)")


_OWN_DATA_DEFAULTS = {"image_key": None, "caption_key": None, "split_key": None, "val_fraction": 0.0,
                      "tokenizer": "learn", "workers": 0}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(name: str, value, low: float, high: float, why: str, low_open: bool = True) -> None:
    """Raise ValueError unless `value` is a finite number in (low, high] (or [low, high] when not `low_open`)."""
    above_low = value > low if low_open else value >= low
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not above_low or value > high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]".replace("inf]", "inf)")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r} ({why})")


# ------------------------------------------------------------------------------------------------------- set-up
def make_autocast(precision: str, device: torch.device):
    """The autocast context of the forward pass, or None (float32): `precision` as `TrainConfig.precision`.

    bf16 keeps float32's exponent range (no loss scaling needed) with 8 bits of mantissa; the weights, gradients and
    optimiser stay float32. On GPUs it is the default. On CPUs with bf16 matrix units (Intel AMX: Sapphire Rapids and
    later) it is an option, much faster there (docs/speed.md); CPUs without bf16 matrix units emulate or convert it
    and can be slower than in float32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return None


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
    the unfused default even loops parameter by parameter). Same update up to float rounding, in a third of the
    time (docs/speed.md). `fused=False` gives PyTorch's default implementation (the benchmark's baseline)."""
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


# ------------------------------------------------------------------------------------------------------- data
def load_pairs(data: str, split: str, lang: str, image_size: int, seed: int, caption_mode: str = "train",
               artists: tuple[str, ...] = ("noto",), role_twins: bool = False):
    """The dataset of `split` for `data`; training captions (and, with several artists, the emoji's drawings) vary
    per epoch for emoji, they are fixed for shapes (with `role_twins`, each scene is followed by its role twin)."""
    if data == "emoji":
        return EmojiDataset(split, lang=lang, image_size=image_size, caption_mode=caption_mode, seed=seed, artists=artists)
    return ShapesDataset(split, lang=lang, image_size=image_size, seed=seed, role_twins=role_twins)


def unseen_artists(data: str, artists) -> tuple[str, ...]:
    """The shipped artists a run on `data` with `artists` did not train on, tested by its report (none for shapes)."""
    return tuple(artist for artist in ARTISTS if artist not in artists) if data == "emoji" else ()


def tokenizer_corpus(dataset, epochs: int = 4) -> list[str]:
    """Texts to learn the vocabulary from: the training captions of a few epochs (templates, names, keywords)."""
    texts = []
    for epoch in range(epochs):
        texts += dataset.epoch_captions(epoch)
    return texts


@dataclass
class Batch:
    """One step's inputs for this process."""

    images: torch.Tensor  # (n, 3, S, S) float on the device: this process's rows of the global batch
    tokens: torch.Tensor  # (n, T') on the device, trimmed to the batch's longest caption (less work)
    foil_tokens: torch.Tensor | None  # (n', T') hard negative captions on the device, or None
    pairs: int  # pairs in the global batch (for the pairs/s shown)
    second_images: torch.Tensor | None = None  # (n, 3, S, S): with artist_pairs, row i drawn by another artist


class ShippedPairs:
    """The emoji or shapes training split, held in memory as tensors: caption-distinct global batches, of which each
    process keeps its slice (`Processes.shard`); captions, drawings and augmentation seeded by (seed, epoch/step)."""

    def __init__(self, config: TrainConfig, image_size: int, processes: Processes):
        self.config, self.image_size, self.processes = config, image_size, processes
        self.train_set = load_pairs(config.data, "train", config.lang, image_size, config.seed,
                                    artists=config.artists, role_twins=config.family_batches)
        families = None  # with family_batches: which items must share a batch (kept together by the sampler)
        if config.family_batches:
            families = [record["family"] for record in self.train_set.records] if config.data == "emoji" \
                else self.train_set.families  # shapes: a scene and its role twin
        self.sampler = DistinctBatchSampler(self.train_set.epoch_captions, config.batch_size,
                                            groups=getattr(self.train_set, "duplicate_groups", None), drop_last=True,
                                            seed=config.seed, families=families)
        self.steps_per_epoch = len(self.sampler.batches(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={config.batch_size} leaves no full batch of distinct pairs in the "
                             f"{len(self.train_set.images)} training pairs of {config.data!r}, so no step would run; "
                             f"use a smaller batch size")

    def batches(self, epoch: int, position: int, tokenizer: BPETokenizer, context_length: int,
                device: torch.device) -> Iterator[Batch]:
        """The batches of `epoch` from its `position`-th on."""
        config = self.config
        captions = self.train_set.epoch_captions(epoch)
        tokens_all = tokenizer.tokenize(captions, context_length, truncate=True)  # (N, T), once per epoch
        if config.anchor_artist:  # (N, S, S, 3) uint8 twice: the first artist's drawings beside another artist's
            images_all, second_all = map(self.train_set.drawings, self.train_set.anchored_artists(epoch))
        else:
            images_all = self.train_set.epoch_images(epoch)  # (N, S, S, 3) uint8: this epoch's drawings
            second_all = self.train_set.epoch_images(epoch, view=1) if config.artist_pairs else None  # another's
        foils = epoch_foils(self.train_set, epoch) if config.hard_negatives else None  # one per item, or None
        foil_tokens_all = None if foils is None else \
            tokenizer.tokenize([foil or "" for foil in foils], context_length, truncate=True)  # (N, T)
        first_step = epoch * self.steps_per_epoch + position
        for step, batch in enumerate(self.sampler.batches(epoch)[position:], start=first_step):
            index = torch.tensor(batch)
            images = images_all[index]  # (B, S, S, 3) uint8
            second = None if second_all is None else second_all[index]  # (B, S, S, 3) uint8, or None
            generator = step_generator(config.seed, step)  # the whole global batch, in every process: one run's draws
            if config.augment:  # shifts and flips
                batch_captions = [captions[i] for i in batch]
                images = augment(images, batch_captions, config.max_shift, config.mirror, generator=generator)
                if second is not None:  # its own shifts and flips, drawn next from the same generator
                    second = augment(second, batch_captions, config.max_shift, config.mirror, generator=generator)
            if config.restyle:  # sizes and resolutions
                images = restyle(images, generator=generator)
                second = None if second is None else restyle(second, generator=generator)
            tokens = trim_padding(tokens_all[index], tokenizer.eot_token_id)  # (B, T' <= T)
            mine = self.processes.shard(len(batch))  # this process's rows (all of them when alone)
            images, tokens = images[mine], tokens[mine]  # (n, S, S, 3), (n, T')
            foil_tokens = None if foils is None else shard_foil_tokens(
                batch, captions, foils, foil_tokens_all, mine, tokenizer.eot_token_id).to(device)  # (n', T')
            second = None if second is None else to_model_input(second[mine]).to(device)  # (n, 3, S, S)
            yield Batch(to_model_input(images).to(device), tokens.to(device), foil_tokens, len(batch), second)

    def tokenizer_corpus(self) -> list[str]:
        return tokenizer_corpus(self.train_set)

    def check_resumable(self, state: dict | None, path: Path | None) -> None:
        pass  # the shipped sets do not change between runs

    def checkpoint_extras(self) -> dict:
        return {}

    def warn_problems(self) -> None:
        pass  # every shipped pair is usable

    def validation_metrics(self, model: CLIP, tokenizer: BPETokenizer) -> dict:
        return validation_metrics(model, tokenizer, self.config, self.image_size)

    def heldout_report(self, model: CLIP, tokenizer: BPETokenizer) -> dict:
        config = self.config
        return heldout_report(model, tokenizer, config.data, config.lang, self.image_size, seed=config.seed,
                              unseen_artists=unseen_artists(config.data, config.artists))


class OwnPairs:
    """Your own pairs (`config.data` is a path), read from disk step by step (minclip.captioned): each process reads
    only its share of every batch, and unusable samples are left out and counted."""

    def __init__(self, config: TrainConfig, image_size: int, processes: Processes):
        self.config, self.processes = config, processes
        self.data = CaptionedData(config.data, image_size, config.batch_size, processes.rank, processes.world_size,
                                  config.seed, config.val_fraction, config.split_key, config.image_key,
                                  config.caption_key, config.workers)
        self.steps_per_epoch = self.data.steps_per_epoch

    def batches(self, epoch: int, position: int, tokenizer: BPETokenizer, context_length: int,
                device: torch.device) -> Iterator[Batch | None]:
        """This process's share of the batches of `epoch` from its `position`-th on; None where some process holds
        no usable sample (then no process steps)."""
        config, processes = self.config, self.processes
        first_step = epoch * self.steps_per_epoch + position
        for step, (images, captions) in enumerate(self.data.batches(epoch, position), start=first_step):
            # images (n, S, S, 3) uint8: n < B / W where samples were unusable
            if any_process(not captions, device):
                yield None
                continue
            if config.augment:  # each process its own rows, with a generator of its own per step
                generator = step_generator(config.seed, step * processes.world_size + processes.rank)
                images = augment(images, captions, config.max_shift, config.mirror, generator=generator)
            tokens = tokenizer.tokenize(captions, context_length, truncate=True)  # (n, T)
            tokens = trim_padding(tokens, tokenizer.eot_token_id)  # (n, T' <= T)
            # no foils: hard negatives need the shipped sets' caption families (TrainConfig refuses them here)
            yield Batch(to_model_input(images).to(device), tokens.to(device), None, config.batch_size)

    def tokenizer_corpus(self) -> list[str]:
        return self.data.tokenizer_corpus()

    def check_resumable(self, state: dict | None, path: Path | None) -> None:
        """The step of a checkpoint means something only on the same data: refuse a resume on changed data."""
        now = self.data.fingerprint()
        if state is not None and state.get("data_index", now) != now:
            raise ValueError(f"{self.config.data} has changed since {path} was written (then "
                             f"{state['data_index']}, now {now}), so its step no longer says where "
                             "the run stopped; resume on the same data, or start a new run in another folder")

    def checkpoint_extras(self) -> dict:
        return {"data_index": self.data.fingerprint()}

    def warn_problems(self) -> None:
        """The one warning about unusable samples, counted over all processes."""
        device = self.processes.device
        sum_counts = (lambda counts: sum_over_processes(counts, device)) if self.processes.world_size > 1 else None
        self.data.warn_problems(sum_counts)

    def validation_metrics(self, model: CLIP, tokenizer: BPETokenizer) -> dict:
        return self.data.validation_metrics(model, tokenizer)

    def heldout_report(self, model: CLIP, tokenizer: BPETokenizer) -> dict:
        return self.data.heldout_report(model, tokenizer)


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
                                               "eot_token_id": eot_token_id, "fast_path": True,  # speedups.py
                                               **siglip, **config.model})


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
    of the model's, the temperature and SigLIP's bias included) while backward runs. `foil_tokens` `(n', T)`, hard
    negative captions, go through the same text tower and come back as a third output `(n', E)` (zero rows allowed).
    """

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, tokens: torch.Tensor, foil_tokens: torch.Tensor | None = None):
        image_features = self.model.encode_image(images, normalize=True)
        text_features = self.model.encode_text(tokens, normalize=True)
        if foil_tokens is None:
            return image_features, text_features
        if len(foil_tokens) == 0:  # no usable foil in this shard: an empty (0, E) block, still in the graph
            return image_features, text_features, text_features[:0]
        return image_features, text_features, self.model.encode_text(foil_tokens, normalize=True)


def train_step(model: CLIP, images: torch.Tensor, tokens: torch.Tensor, optimizer, grad_clip: float,
               autocast=None, loss: str = "clip", towers: nn.Module | None = None,
               foil_tokens: torch.Tensor | None = None, second_images: torch.Tensor | None = None) -> float:
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

    `foil_tokens` `(n', T)`: hard negative captions (NegCLIP), encoded by the text tower and passed to the loss as
    extra wrong captions for every image (gathered over processes like the features; see minclip.loss.clip_loss).
    With several processes, give every process a tensor (zero rows allowed) or none.

    `second_images` `(n, 3, S, S)`: the same captions drawn by another artist (`artist_pairs`). Both drawings go
    through the image tower in one pass; the loss is the mean of the two image-caption losses plus the InfoNCE between
    the two drawings (each must find its twin among the other artist's drawings of the batch), so the tower is asked
    directly to see what two artists' drawings of one emoji share.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "siglip" and model.logit_bias is None:
        raise ValueError("loss='siglip' needs a model with a learned bias: build it with CLIPConfig("
                         f"init_logit_bias={SIGLIP_INIT_BIAS}, init_logit_scale={SIGLIP_INIT_LOG_SCALE:.4f}) as "
                         "build_model does for TrainConfig(loss='siglip')")
    towers = Towers(model) if towers is None else towers
    n = len(images)
    if second_images is not None:
        images = torch.cat([images, second_images])  # (2n, 3, S, S): both artists' drawings in one pass
    with autocast if autocast is not None else contextlib.nullcontext():
        features = towers(images, tokens) if foil_tokens is None else towers(images, tokens, foil_tokens)
    precision = torch.promote_types(features[0].dtype, torch.float32)  # the loss in float32 at least (autocast)
    image_features, text_features = features[0].to(precision), features[1].to(precision)  # (n or 2n, E), (n, E)
    foil_features = features[2].to(precision) if foil_tokens is not None else None  # (n', E)

    def pair_loss(first: torch.Tensor, second: torch.Tensor, foils: torch.Tensor | None = None) -> torch.Tensor:
        if loss == "clip":
            return distributed_clip_loss(first, second, model.logit_scale.exp(), foil_features=foils)
        return distributed_siglip_loss(first, second, model.logit_scale.exp(), model.logit_bias, foil_features=foils)

    if second_images is None:
        value = pair_loss(image_features, text_features, foil_features)
    else:
        drawings, others = image_features[:n], image_features[n:]  # (n, E) each: one caption, two artists
        captions_found = (pair_loss(drawings, text_features, foil_features)
                          + pair_loss(others, text_features, foil_features)) / 2
        value = captions_found + pair_loss(drawings, others)  # + each drawing finds the other artist's
    optimizer.zero_grad(set_to_none=True)
    value.backward()  # under DDP: gradients averaged over processes here
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)  # T >= 0.01: the logits cannot grow without bound
    return global_mean(value)


def train(config: TrainConfig, out: str | Path | None = None, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> TrainResult:
    """Train a CLIP as `config` says, writing `out/checkpoint.pt` after every epoch (or sooner, see below).

    The checkpoint is written at the end of every epoch, within an epoch whenever `config.save_every_minutes` have
    passed since the last one, at the end of the run, and when Ctrl-C or SIGTERM stops the run between two steps
    (which then raises `TrainingInterrupted`). Every write is atomic and carries the SHA-256 of its contents, so a
    crash loses at most the steps since the last write, and never the previous checkpoint.

    With `resume=True`, continue from `out/checkpoint.pt`: with the same config it replays exactly the run that was
    interrupted; a finished run returns at once. A config that differs only in `epochs`, `max_steps` or `eval_every`
    continues the run: with more steps than before, the schedule is recomputed for the new total, so from the step
    reached the learning rate follows the warm-up + cosine of the longer run (for a finished run it jumps from zero
    back up to that curve, then decays to zero again at the new end). Any other difference is refused with an error
    that names it. `stop_after` interrupts the run after that many steps (as a crash or Ctrl-C would, but leaving a
    checkpoint): resuming it later gives exactly the losses of an uninterrupted run.

    Before any training, `out` must be a folder this process can write, and the data must yield at least one step;
    a run whose loss or temperature stops being finite stops with an error (the last checkpoint stays as it was).

    Started by torchrun (or inside an initialised process group), all processes train the one model together (see
    minclip/processes.py and `train_step`): the same run as one process, computed in parallel. Rank 0
    alone shows progress, evaluates and writes the checkpoint; the others wait for it at barriers.
    """
    start_time = time.perf_counter()
    with process_group(config.device) as processes:
        device = processes.device
        seed_everything(config.seed)  # the same seed in every process: the same initial model
        check_run_options(config, processes, stop_after)
        checkpoint_path, resumed = open_output(out, resume, config, processes)

        # the data, the tokenizer and the model (fresh, or as the checkpoint left them)
        image_size = CLIPConfig.preset(config.preset, **config.model).image_size
        data = (OwnPairs if config.own_data else ShippedPairs)(config, image_size, processes)
        data.check_resumable(resumed, checkpoint_path)
        model, tokenizer = model_and_tokenizer(config, data, resumed)
        freeze_for_recipe(model, config).to(device)
        towers = Towers(model)
        if processes.world_size > 1:  # DDP copies rank 0's weights to all (equal anyway) and averages gradients
            towers = DistributedDataParallel(towers, device_ids=[device.index] if device.type == "cuda" else None)

        # the optimiser and its schedule: linear warm-up, then a cosine decay to zero
        steps_per_epoch = data.steps_per_epoch
        total_steps = total_steps_of(config, steps_per_epoch)
        schedule = warmup_cosine(total_steps, max(1, round(config.warmup_fraction * total_steps)))
        optimizer = make_optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        step, history = 0, new_history(model)
        if resumed is not None:
            step, history = restore_run(resumed, optimizer, scheduler, schedule, total_steps, steps_per_epoch,
                                        checkpoint_path)
        saved_step = step if resumed is not None else None  # the step of the checkpoint on disk

        def save() -> None:  # rank 0 writes the checkpoint, unless the file already holds this step
            nonlocal saved_step
            if processes.is_main and checkpoint_path is not None and saved_step != step:
                state = training_state(model, tokenizer, config, optimizer, scheduler, step, history)
                save_checkpoint(checkpoint_path, {**state, **data.checkpoint_extras()})
            saved_step = step

        def interrupted(signal_number: int) -> TrainingInterrupted:  # Ctrl-C or SIGTERM: save, then stop
            bar.close()
            save()
            data.warn_problems()
            processes.barrier()
            return TrainingInterrupted(step, checkpoint_path, signal_number)

        autocast = make_autocast(config.precision, device)
        end = total_steps if stop_after is None else min(total_steps, stop_after)
        bar = tqdm(total=total_steps, initial=step, disable=not (progress and processes.is_main), desc="train",
                   unit="step")
        saved_at, tick = time.monotonic(), time.perf_counter()
        with StopSignals() as stop:
            while step < end:
                epoch, position = divmod(step, steps_per_epoch)
                model.train()
                for batch in data.batches(epoch, position, tokenizer, model.config.context_length, device):
                    if step >= end:
                        break
                    if any_process(stop.received is not None, device):  # every process stops at the same step
                        raise interrupted(stop.received or signal.SIGTERM)
                    if batch is None:  # your data: a process holds no usable sample, so nobody steps
                        scheduler.step()
                        step += 1
                        bar.update(1)
                        continue
                    # the step: forward both towers, loss, backward, clip, optimiser step, temperature clamp
                    loss = train_step(model, batch.images, batch.tokens, optimizer, config.grad_clip, autocast,
                                      config.loss, towers, batch.foil_tokens, batch.second_images)
                    scheduler.step()
                    step += 1
                    check_finite(loss, model, step, config)
                    temperature = log_step(history, step, loss, model, scheduler.get_last_lr()[0])
                    now = time.perf_counter()
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}", T=f"{temperature:.4f}",
                                    pairs_s=f"{batch.pairs / max(now - tick, 1e-9):.0f}")
                    tick = now
                    bar.update(1)
                    if step % steps_per_epoch and time.monotonic() - saved_at >= 60 * config.save_every_minutes:
                        save()  # a long epoch: do not lose more than save_every_minutes of it
                        saved_at = time.monotonic()

                if step % steps_per_epoch == 0 or step >= total_steps:  # the end of an epoch (or of the run)
                    data.warn_problems()  # after the first epoch (all processes at once): every unusable sample met
                    finished_epochs = math.ceil(step / steps_per_epoch)
                    if step >= total_steps or (config.eval_every and finished_epochs % config.eval_every == 0):
                        if processes.is_main:  # one process evaluates; every process holds the same model
                            metrics = data.validation_metrics(model, tokenizer)
                            if metrics:  # your data without a held-out part has none
                                history["val"].append({"step": step, **metrics})
                                bar.write(f"epoch {finished_epochs}: val "
                                          + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
                        processes.barrier()
                    save()  # at least one checkpoint per epoch
                    saved_at = time.monotonic()
            if stop.received is not None:  # asked to stop during the last evaluation
                raise interrupted(stop.received)

        bar.close()
        data.warn_problems()
        report = {}
        if processes.is_main:
            if step >= total_steps:  # finished (not interrupted on purpose by stop_after): the held-out report
                report = data.heldout_report(model, tokenizer)
            save()
        processes.barrier()
        return TrainResult(model.eval(), tokenizer, history, report, time.perf_counter() - start_time, processes.rank)


# ------------------------------------------------------------------------------------------------------- its helpers
def check_run_options(config: TrainConfig, processes: Processes, stop_after: int | None) -> None:
    """The checks of a run's arguments that `TrainConfig` cannot make alone (they depend on the processes)."""
    if config.batch_size % processes.world_size:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the {processes.world_size} processes, "
                         "which take equal shares of every batch")
    if stop_after is not None and (not _is_int(stop_after) or stop_after < 0):
        raise ValueError(f"stop_after must be an int >= 0 (or None), got {stop_after!r}")


def open_output(out, resume: bool, config: TrainConfig, processes: Processes) -> tuple[Path | None, dict | None]:
    """The checkpoint path of a run writing to `out` (None: nothing is written) and, with `resume`, the checkpoint it
    continues, checked to be a run of `config`. Rank 0 makes sure it can write in `out` before any training."""
    out = Path(out) if out is not None else None
    checkpoint_path = out / "checkpoint.pt" if out is not None else None
    if out is not None and processes.is_main:
        check_output_folder(out)
    resumed = read_checkpoint(checkpoint_path) if resume else None
    if resumed is not None:
        _check_resumable(resumed, config, checkpoint_path)
    return checkpoint_path, resumed


def model_and_tokenizer(config: TrainConfig, data, resumed: dict | None) -> tuple[CLIP, BPETokenizer]:
    """The checkpoint's model and tokenizer, or a tokenizer (OpenAI's, or learned on the training captions) and a
    fresh model sized for it."""
    if resumed is not None:
        return model_from_checkpoint(resumed)
    if config.tokenizer == "openai":
        tokenizer = BPETokenizer.openai()
    else:
        tokenizer = BPETokenizer.train(data.tokenizer_corpus(), config.vocab_size)
    return build_model(config, tokenizer), tokenizer


def new_history(model: CLIP) -> dict:
    """What a run records: per step the loss, temperature and learning rate (SigLIP: the bias); per evaluation the
    validation metrics."""
    history = {"step": [], "loss": [], "temperature": [], "lr": [], "val": []}
    if model.logit_bias is not None:
        history["bias"] = []
    return history


def log_step(history: dict, step: int, loss: float, model: CLIP, lr: float) -> float:
    """Append one step to `history`; returns the temperature T = 1 / exp(logit_scale)."""
    temperature = math.exp(-model.logit_scale.item())
    for key, value in (("step", step), ("loss", loss), ("temperature", temperature), ("lr", lr)):
        history[key].append(value)
    if "bias" in history:
        history["bias"].append(model.logit_bias.item())
    return temperature


def restore_run(state: dict, optimizer, scheduler, schedule, total_steps: int, steps_per_epoch: int,
                path: Path) -> tuple[int, dict]:
    """Put the optimiser, scheduler and RNGs back as the checkpoint `state` left them; returns `(step, history)`.

    A run given more steps than the checkpoint's continues on the schedule of the longer run from its step on."""
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    step = state["step"]
    if step > total_steps:
        raise ValueError(f"{path} is at step {step}, past the {total_steps} steps of this run; "
                         "to continue it, give at least its epochs and max_steps")
    stored = TrainConfig(**{**_DEFAULTS, **state["train_config"]})
    if total_steps_of(stored, steps_per_epoch) != total_steps:  # a longer run: its schedule from this step on
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base_lr * schedule(step)
    return step, state["history"]


def check_output_folder(folder: str | Path) -> Path:
    """Make sure `folder` exists (creating it) and this process can write files in it; ValueError otherwise.

    Called before a run trains, so that a bad output folder costs seconds, not the whole run.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"the output folder {folder} is a file; choose a folder (or a path that does not exist yet)")
    try:
        probe_writable(folder)
    except OSError as error:
        raise ValueError(f"cannot write in the output folder {folder} ({error.strerror or first_line(error)}); "
                         "choose a folder you can write to") from None
    return folder


def probe_writable(folder: Path) -> None:
    """Create `folder` if needed and write and delete an empty file in it; raises the OSError if that fails."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".minclip-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def total_steps_of(config: TrainConfig, steps_per_epoch: int) -> int:
    """The optimizer steps of a run: all epochs, or `max_steps` if fewer."""
    total = steps_per_epoch * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def shard_foil_tokens(batch: list[int], captions: list[str], foils: list, foil_tokens: torch.Tensor, shard: slice,
                      eot_token_id: int) -> torch.Tensor:
    """The tokens `(n', T')` of the foils that this process's rows (`shard` of the global `batch`) bring to the loss.

    `foils[i]` is item i's foil (or None) and `foil_tokens[i]` its tokens. `batch_foils` decides on the global batch
    which foils may be used (none equal to a true caption of the batch), so every process leaves out the same ones.
    """
    rows = batch_foils([captions[i] for i in batch], [foils[i] for i in batch])
    mine = torch.tensor([batch[row] for row in rows if shard.start <= row < shard.stop], dtype=torch.long)
    return trim_padding(foil_tokens[mine], eot_token_id)  # (n', T')


def check_finite(loss: float, model: CLIP, step: int, config: TrainConfig) -> None:
    """Stop a diverged run with an error that names the likely cause, instead of training on NaNs."""
    if not (math.isfinite(loss) and -700 < model.logit_scale.item() < 700):  # else exp(-logit_scale) overflows
        raise ValueError(f"training diverged at step {step}: the loss is {loss} and logit_scale "
                         f"{model.logit_scale.item()}; lower the learning rate (lr={config.lr:g}) and start again "
                         "(the last checkpoint, if any, is from before the divergence)")


def validation_metrics(model: CLIP, tokenizer: BPETokenizer, config: TrainConfig, image_size: int) -> dict:
    """Recall@1 and @5 on the validation split: each plain-name caption against every validation image."""
    lang = "en" if config.lang == "both" else config.lang
    val = load_pairs(config.data, "val", lang, image_size, config.seed, caption_mode="eval")
    captions = val.captions
    result = retrieval_evaluate(model, tokenizer, to_model_input(val.images), captions, list(range(len(captions))),
                                ks=(1, 5))
    return {f"{direction}_R@{k}": result[direction][f"R@{k}"]
            for direction in ("text_to_image", "image_to_text") for k in (1, 5)}


_DEFAULTS = dataclasses.asdict(TrainConfig())  # fills options added after a checkpoint was written


# options that change how long a run is or how often it reports, not what it computes: a resume may change them
CONTINUABLE = ("epochs", "max_steps", "eval_every")
_NEVER_COMPARED = ("save_every_minutes", "workers")  # how often a checkpoint is written, or how many processes
# decode the images, changes nothing in the run


def option_differences(state: dict, config: TrainConfig) -> dict[str, tuple]:
    """The training options in which `config` differs from the checkpoint `state`: {name: (checkpoint's, config's)}.

    Options missing from an older checkpoint count as their defaults.
    """
    stored = {**_DEFAULTS, **state["train_config"]}
    given = dataclasses.asdict(config)
    return {name: (stored[name], value) for name, value in given.items()
            if name not in _NEVER_COMPARED and stored.get(name) != value}


def _same_model(state: dict, config: TrainConfig) -> bool:
    """Whether `config` builds the stored model: a preset's sizes may have changed since the checkpoint was written."""
    stored = state["model_config"]
    expected = model_config(config, stored["vocab_size"], stored["sot_token_id"], stored["eot_token_id"])
    return CLIPConfig(**stored) == expected


def _same_options(state: dict, config: TrainConfig) -> bool:
    """Same training options, and the same model."""
    return not option_differences(state, config) and _same_model(state, config)


def _check_resumable(state: dict, config: TrainConfig, path: Path) -> None:
    """Raise ValueError naming what keeps `config` from continuing the checkpoint `state` (read from `path`)."""
    fixed = {name: values for name, values in option_differences(state, config).items() if name not in CONTINUABLE}
    if fixed:
        listed = ", ".join(f"{name} {stored!r} (this run: {given!r})" for name, (stored, given) in fixed.items())
        raise ValueError(f"{path} was trained with other options: {listed}; resume with the checkpoint's values "
                         "(only epochs, max_steps and eval_every may change), or start a new run in another folder")
    if not _same_model(state, config):
        raise ValueError(f"{path} holds another model than the {config.preset!r} preset builds now (the preset's "
                         f"sizes changed since?): {state['model_config']}; start a new run in another folder")


def trained_with(path: str | Path, config: TrainConfig) -> bool:
    """Whether `path` holds a checkpoint of a run with exactly `config` (finished or interrupted).

    Notebooks use it to reuse a run instead of training it again: `train(config, out, resume=True)` then returns
    the finished run at once, or continues the interrupted one.
    """
    return Path(path).is_file() and _same_options(read_checkpoint(path), config)

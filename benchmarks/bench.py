"""Benchmarks: how fast minclip trains, how much of the machine's matmul peak it uses, and how it compares with
OpenAI's own CLIP code on the same model, the same weights and the same data. A script that prints figures, not a test.

    python benchmarks/bench.py                                  # tiny, ref128 and ref64 on this machine
    python benchmarks/bench.py --preset tiny small --steps 20
    python benchmarks/bench.py --preset ref128 --compare-openai --threads 2     # what `make bench` runs
    python benchmarks/bench.py --preset nano --steps 1          # a smoke test: seconds

For each configuration it prints, then sums up in a Markdown table ready for the README (with the CPU or GPU, the
torch version and the thread count):

* **training pairs/s**: the median time of minclip's training step (:func:`minclip.train.train_step`: both towers,
  symmetric InfoNCE, backward, gradient clipping, AdamW with the parameter groups and settings of
  :func:`minclip.train.train`) on batches prepared as training prepares them;
* **data ms**: the time spent preparing each batch on the host (indexing the uint8 images, the caption-respecting
  augmentation, conversion to normalised floats, trimming the padding off the tokens, the copy to the device), plus
  the per-epoch work (drawing the captions, tokenising them, making the batches) spread over the epoch's steps;
* **forward pairs/s**: inference, ``model(images, tokens)`` without gradients;
* **GFLOP/s** and **share of peak**: the matrix products of the step counted analytically
  (:func:`minclip.flops.matmul_flops`) over the step time, against the GFLOP/s of a large square matmul
  (:func:`minclip.flops.matmul_peak`) timed just before every
  timed step. A shared or virtual machine's peak can move during a run (on this project's 2-core VM it swings between
  about 160 and 320 GFLOP/s, as if the two virtual cores were sometimes one core's two hyperthreads): each step is
  set against the peak of its own moment, and the table shows the peaks' range beside the median share;
* **peak memory**: on the CPU the process's peak resident memory during the timed training steps (the interpreter,
  torch, the data set, the model and its optimiser included; memory freed by earlier configurations is handed back to
  the system first), on CUDA ``torch.cuda.max_memory_allocated``;
* with ``--breakdown`` (CPU): a step's time split by the profiler into the matrix products, the optimiser and
  everything else, and the GFLOP/s inside the products alone (:func:`step_breakdown`): what limits the share of peak;
  and the ceiling of that share: the step's products replayed back to back with nothing between them;
* with ``--compare-openai``: OpenAI's reference ``clip/model.py`` (from the ``clip-anytorch`` wheel, loaded as the
  tests load it, :mod:`tests.references`), built with the
  same architecture, holding the same weights (copied with :meth:`minclip.model.CLIP.to_openai_state_dict` and checked
  to give the same logits), trained by the same step function, optimiser and batches. Its code needs every batch
  padded to the full context, so the ratio is given on identical full-length tokens (the model code alone) and
  against minclip's step on trimmed tokens (what ``python -m minclip train`` runs); a third ratio trains OpenAI's
  model with PyTorch's default AdamW instead of minclip's fused one, the whole step a plain PyTorch user would run.
  The contestants alternate step by step, in alternating order, so drifts in the machine's speed hit them alike.

Configurations: every preset of :data:`minclip.model.PRESETS`, built as ``python -m minclip train`` builds it
(vocabulary of the BPE tokenizer learned on the training captions), and the reference shapes, :data:`REFERENCE_SHAPES`
(``ref128``, ``ref64``, and ref128 widened: ``ref256``, ``ref512``), with OpenAI's 49,408-token vocabulary size.
Images larger than the shipped 64 px (OpenAI's 224 px presets) are random pixels; everything else is the real
pipeline. Timings on a machine shared with other work are noisy: compare figures from one run, and quote figures
from an idle machine.

How it fits: a tool beside the package, not part of it. It reuses train.py's step, parameter groups, model building
and data helpers, so it times what training runs; nothing in the package imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import os
import platform
import re
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: time the checkout's minclip; load OpenAI's code as the tests do
    sys.path.insert(0, str(ROOT))

from minclip.attention import IMPLEMENTATIONS  # noqa: E402 (after the path is set)
from minclip.data import SHIPPED_SIZE, DistinctBatchSampler, augment, to_model_input  # noqa: E402
from minclip.flops import matmul_flops, matmul_peak, synchronize  # noqa: E402
from minclip.model import CLIP, PRESETS, CLIPConfig  # noqa: E402
from minclip.processes import pick_device  # noqa: E402
from minclip.text import first_eot_index, trim_padding  # noqa: E402
from minclip.tokenizer import BPETokenizer  # noqa: E402
from minclip.train import (PRECISIONS, TrainConfig, build_model, load_pairs,  # noqa: E402
                           make_autocast, make_optimizer, step_generator, tokenizer_corpus, train_step)
from tests.references import openai_clip_model  # noqa: E402

# The shapes of the reference measurements (OpenAI's code on a 2-core CPU): a width-128 ViT CLIP with 4 + 4
# blocks on 32 x 32 images in 4 x 4 patches, context 32, and a width-64 one with 2 + 2 blocks and 8 x 8 patches,
# context 16; OpenAI's vocabulary size and head width (64 channels per head).
REFERENCE_SHAPES: dict[str, dict] = {
    "ref128": dict(embed_dim=128, image_size=32, patch_size=4, vision_width=128, vision_layers=4, vision_heads=2,
                   vocab_size=49408, context_length=32, text_width=128, text_layers=4, text_heads=2),
    "ref64": dict(embed_dim=64, image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=1,
                  vocab_size=49408, context_length=16, text_width=64, text_layers=2, text_heads=1),
}
# ref128 made wider, nothing else changed (64 channels per head). Per token, a linear layer's arithmetic grows with
# the width squared and the element-wise work between products only with the width: these show what that does to the
# share of the matmul peak.
REFERENCE_SHAPES.update({f"ref{width}": {**REFERENCE_SHAPES["ref128"], "embed_dim": width, "vision_width": width,
                                          "text_width": width, "vision_heads": width // 64, "text_heads": width // 64}
                         for width in (256, 512)})
CONFIG_NAMES = [*PRESETS, *REFERENCE_SHAPES]
OPENAI_INSTALL = "pip install --no-deps clip-anytorch==2.6.0"


# ------------------------------------------------------------------------------------------------------- peak
def peak_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype the step's products run in (``precision`` as ``TrainConfig.precision``): bf16 under autocast."""
    return torch.float32 if make_autocast(precision, device) is None else torch.bfloat16


def peak_range(peaks: list[float]) -> str:
    """'163–318' (lowest–highest), or one number when they agree to 5 %."""
    low, high = min(peaks), max(peaks)
    return f"{high:,.0f}" if high <= 1.05 * low else f"{low:,.0f}–{high:,.0f}"


# ------------------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory from ``reset()`` to ``read()``, in bytes: resident memory of the process on the CPU (Linux:
    ``VmHWM``, whose peak ``reset`` clears; elsewhere the process's lifetime peak from ``getrusage``), allocated
    tensor memory on CUDA."""

    def __init__(self, device: torch.device):
        self.device = device
        self.lifetime = False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        gc.collect()  # earlier models and batches: freed, and their pages handed back to the system where possible
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed heap pages resident until trimmed
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux: reset the peak resident set size
        except OSError:
            self.lifetime = True

    def read(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if not self.lifetime:
            with contextlib.suppress(OSError, AttributeError):
                status = Path("/proc/self/status").read_text()
                return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
        self.lifetime = True
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) float on the device, normalised
    tokens: torch.Tensor  # (B, T') on the device, trimmed to the longest caption as training does
    full_tokens: torch.Tensor  # (B, context_length) on the device, padded to the full context
    seconds: float  # host time spent preparing this batch, the epoch's share included


class EmojiBatches:
    """Training batches of the emoji set, prepared the way :func:`minclip.train.train` prepares them.

    Per epoch: draw the captions, tokenise them all, make caption-distinct batches. Per step: index the uint8
    images, augment them (seeded per step), convert to model input, trim the tokens, move both to the device.
    Images larger than the shipped 64 px are random pixels (the rest of the pipeline is unchanged).
    """

    def __init__(self, image_size: int, context_length: int, batch_size: int, tokenizer: BPETokenizer,
                 device: torch.device, seed: int = 0, clock=time.perf_counter):
        self.dataset = load_pairs("emoji", "train", "en", min(image_size, SHIPPED_SIZE), seed)
        self.random_pixels = image_size > SHIPPED_SIZE  # the emoji set has no larger images
        self.image_size, self.context_length, self.batch_size = image_size, context_length, batch_size
        self.tokenizer, self.device, self.seed, self.clock = tokenizer, device, seed, clock
        self.sampler = DistinctBatchSampler(self.dataset.epoch_captions, batch_size,
                                            groups=self.dataset.duplicate_groups, drop_last=True, seed=seed)
        self.steps_per_epoch = len(self.sampler.batches(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch size {batch_size} is larger than the emoji training split "
                             f"({len(self.dataset)} pairs)")
        self.epoch = None

    def _start_epoch(self, epoch: int) -> None:
        start = self.clock()
        self.captions = self.dataset.epoch_captions(epoch)
        self.tokens = self.tokenizer.tokenize(self.captions, self.context_length, truncate=True)  # (N, T)
        self.batches = self.sampler.batches(epoch)
        self.epoch = epoch
        self.epoch_seconds_per_step = (self.clock() - start) / len(self.batches)  # spread over the epoch's steps

    def get(self, step: int) -> Batch:
        """The batch of training step ``step`` (0, 1, ...; epochs follow one another as in training)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self.epoch:
            self._start_epoch(epoch)
        start = self.clock()
        batch = self.batches[position % len(self.batches)]
        index = torch.tensor(batch)
        generator = step_generator(self.seed, step)  # as training seeds each step
        if self.random_pixels:
            images = torch.randint(0, 256, (len(batch), self.image_size, self.image_size, 3), dtype=torch.uint8,
                                   generator=generator)
        else:
            images = augment(self.dataset.images[index], [self.captions[i] for i in batch], generator=generator)
        full_tokens = self.tokens[index]  # (B, T)
        tokens = trim_padding(full_tokens, self.tokenizer.eot_token_id)  # (B, T' <= T)
        images, tokens = to_model_input(images).to(self.device), tokens.to(self.device)
        full_tokens = full_tokens.to(self.device)
        synchronize(self.device)
        return Batch(images, tokens, full_tokens, self.clock() - start + self.epoch_seconds_per_step)


# ------------------------------------------------------------------------------------------------------- models
@functools.cache
def emoji_tokenizer() -> BPETokenizer:
    """The BPE tokenizer ``python -m minclip train`` learns: the training captions, the default vocabulary size."""
    train_set = load_pairs("emoji", "train", "en", SHIPPED_SIZE, seed=TrainConfig().seed)
    return BPETokenizer.train(tokenizer_corpus(train_set), TrainConfig().vocab_size)


def bench_model(name: str, tokenizer: BPETokenizer, **overrides) -> CLIP:
    """A fresh model of configuration ``name``: a preset built as ``python -m minclip train`` builds it (vocabulary
    and special ids from ``tokenizer``), or a reference shape with its own vocabulary size and the tokenizer's ids."""
    torch.manual_seed(0)
    if name in REFERENCE_SHAPES:
        return CLIP(CLIPConfig(**REFERENCE_SHAPES[name], sot_token_id=tokenizer.sot_token_id,
                               eot_token_id=tokenizer.eot_token_id, **{"fast_path": True, **overrides}))
    if name not in PRESETS:
        raise ValueError(f"unknown configuration {name!r}; choose from {CONFIG_NAMES}")
    return build_model(TrainConfig(preset=name, model=overrides), tokenizer)


def openai_reference():
    """OpenAI's ``clip/model.py`` from the installed ``clip-anytorch`` wheel, or ``None`` if it is not installed."""
    return openai_clip_model(required=False)


class OpenAIAdapter(nn.Module):
    """OpenAI's CLIP behind minclip's ``encode_image(images, normalize)`` / ``encode_text(tokens, normalize)``, so
    that :func:`minclip.train.train_step` drives it unchanged. The parameters are OpenAI's own, by their own names."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.clip.encode_image(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.clip.encode_text(tokens)
        return F.normalize(features, dim=-1) if normalize else features


def openai_twin(model: CLIP, reference) -> nn.Module:
    """OpenAI's CLIP with ``model``'s architecture and a copy of its weights (float32, training mode).

    OpenAI's constructor gives the image tower ``width // 64`` heads; a model with another number gets OpenAI's
    ``VisionTransformer`` built with its own. Needs a ViT with ``vision_width >= 64``, QuickGELU and EOT pooling."""
    c = model.config
    problems = [problem for problem, present in [
        (f"image_encoder={c.image_encoder!r} (OpenAI's twin needs 'vit')", c.image_encoder != "vit"),
        (f"vision_width={c.vision_width} (OpenAI's CLIP gives width // 64 heads: needs >= 64)", c.vision_width < 64),
        (f"activation={c.activation!r} (OpenAI's CLIP uses 'quick_gelu')", c.activation != "quick_gelu"),
        (f"text_pooling={c.text_pooling!r} (OpenAI's CLIP pools at the end-of-text token: 'eot')",
         c.text_pooling != "eot")] if present]
    if problems:
        raise ValueError("no OpenAI twin for this config: " + "; ".join(problems))
    twin = reference.CLIP(embed_dim=c.embed_dim, image_resolution=c.image_size, vision_layers=c.vision_layers,
                          vision_width=c.vision_width, vision_patch_size=c.patch_size,
                          context_length=c.context_length, vocab_size=c.vocab_size, transformer_width=c.text_width,
                          transformer_heads=c.text_heads, transformer_layers=c.text_layers)
    if c.vision_heads != c.vision_width // 64:
        twin.visual = reference.VisionTransformer(input_resolution=c.image_size, patch_size=c.patch_size,
                                                  width=c.vision_width, layers=c.vision_layers,
                                                  heads=c.vision_heads, output_dim=c.embed_dim)
    with warnings.catch_warnings():  # the heads warning is about OpenAI's loader; the twin is built with ours
        warnings.simplefilter("ignore", UserWarning)
        state_dict = model.to_openai_state_dict()
    twin.load_state_dict(state_dict)
    return twin.float().train()


def check_same_logits(model: CLIP, twin: nn.Module, batch: Batch) -> float:
    """Largest |logit difference| between minclip and its OpenAI twin on one batch (eval mode, no gradients).

    OpenAI pools text at ``argmax`` of the ids, which is the end-of-text token only if it is the largest id of
    every row: true for the BPE tokenizer's layout (end-of-text is its last id)."""
    if (batch.full_tokens.argmax(dim=-1) != first_eot_index(batch.full_tokens, model.config.eot_token_id)).any():
        raise ValueError("OpenAI's CLIP pools at the largest token id, which is not the end-of-text token here")
    model.eval(), twin.eval()
    with torch.no_grad():
        ours = model(batch.images, batch.full_tokens)[0]
        theirs = twin(batch.images, batch.full_tokens)[0]
    model.train(), twin.train()
    difference = (ours - theirs).abs().max().item()
    if difference > 1e-3 * max(1.0, theirs.abs().max().item()):
        raise RuntimeError(f"minclip and OpenAI's CLIP disagree by {difference:.3g} on the same weights and batch: "
                           "the comparison would not be fair")
    return difference


# ------------------------------------------------------------------------------------------------------- running
@dataclass
class Result:
    name: str
    config: CLIPConfig
    batch_size: int
    step_seconds: float  # median training step
    data_seconds: float  # mean host time per batch
    forward_seconds: float  # median inference pass
    flops: float  # mean matmul FLOPs per training step
    text_length: float  # mean tokens per caption row after trimming
    peak_memory: int  # bytes
    peak_is_lifetime: bool
    matmul_peaks: list[float]  # GFLOP/s of the probe before each timed step
    share_of_peak: float  # median over the timed steps of (step GFLOP/s) / (the probe's GFLOP/s just before it)
    openai: dict = field(default_factory=dict)  # median step seconds: "minclip", "OpenAI", "minclip, trimmed"
    compiled: bool = False  # minclip's towers ran through torch.compile
    breakdown: dict = field(default_factory=dict)  # with --breakdown: see step_breakdown

    @property
    def gflops(self) -> float:
        return self.flops / self.step_seconds / 1e9


# The operators that do the matrix products of a step (forward and backward); their self time is matmul time.
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mkldnn_convolution",
              "aten::convolution_backward"}


def step_breakdown(model, optimizer, batches: list, config: CLIPConfig, autocast=None, probe=None,
                   dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict:
    """Profile training steps on ``batches`` (CPU) and split their time: the matrix products (self time of
    :data:`MATMUL_OPS`), the optimiser step, and everything else (LayerNorm, softmax, activations, sums, copies,
    the loss, gradient clipping). Also the GFLOP/s *inside* the matrix products: how fast the products themselves
    run, apart from the work between them. Times are per step, in ms.

    Then the step's ceiling: the products of one step replayed alone (:func:`replay_products`: the same operators at
    the same shapes, back to back, into kept outputs; ``repeats`` times, the median), their GFLOP/s, and with ``probe``
    (a function returning the matmul peak of the moment, called before each replay) their median share of that peak:
    the share a step would reach if all the work between its products took no time. ``dtype``: the one the step's
    products run in (:func:`peak_dtype`: bf16 under autocast)."""
    from torch.profiler import ProfilerActivity, profile

    flops = 0
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        for batch in batches:
            train_step(model, batch.images, batch.tokens, optimizer, TrainConfig().grad_clip, autocast)
            flops += matmul_flops(config, len(batch.tokens), training=True, text_length=batch.tokens.shape[1])
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    optimizer_time = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#"))
    other = total - matmul - optimizer_time
    n = len(batches)
    parts = {"step_ms": total / 1e3 / n, "matmul_ms": matmul / 1e3 / n, "optimizer_ms": optimizer_time / 1e3 / n,
             "other_ms": other / 1e3 / n, "matmul_share": matmul / total, "optimizer_share": optimizer_time / total,
             "other_share": other / total, "matmul_gflops": flops / (matmul / 1e6) / 1e9}

    shapes = [(e.key, e.input_shapes) for e in profiler.key_averages(group_by_input_shape=True)
              for _ in range(e.count // n) if e.key in MATMUL_OPS]  # one step's products
    run, replay_flops = replay_products(shapes, dtype)
    run()  # warm-up
    seconds, shares = [], []
    for _ in range(repeats):
        peak = probe() if probe is not None else None
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
        if peak is not None:
            shares.append(replay_flops / seconds[-1] / 1e9 / peak)
    replay_seconds = statistics.median(seconds)
    parts.update(replay_ms=replay_seconds * 1e3, replay_gflops=replay_flops / replay_seconds / 1e9,
                 replay_share=statistics.median(shares) if shares else None)
    return parts


def replay_products(shapes: list[tuple[str, list]], dtype: torch.dtype = torch.float32):
    """``(run, flops)``: ``run()`` performs the matrix products ``shapes`` lists (``(operator, input shapes)`` as
    the profiler records them, e.g. ``("aten::addmm", [[512], [8320, 128], [128, 512], [], []])``) on random operands
    made once, into outputs made once; ``flops`` is their count, ``2 m k n`` each. Only the products, with nothing
    between them: how fast the matrix library runs a step's shapes. Convolutions (the patch embedding) are left out of
    both.

        >>> run, flops = replay_products([("aten::mm", [[4, 3], [3, 2]]), ("aten::bmm", [[5, 4, 3], [5, 3, 2]])])
        >>> flops, run() is None
        (288, True)
    """
    calls, flops = [], 0
    for op, dims in shapes:
        if op in ("aten::mm", "aten::addmm"):
            first = 1 if op == "aten::addmm" else 0  # addmm(bias, a, b)
            (m, k), (k2, n) = dims[first], dims[first + 1]
            batch = None
        elif op in ("aten::bmm", "aten::baddbmm"):
            first = 1 if op == "aten::baddbmm" else 0  # baddbmm(c, a, b)
            (batch, m, k), (_, k2, n) = dims[first], dims[first + 1]
        else:
            continue  # convolutions
        if k != k2:
            raise ValueError(f"{op} with shapes {dims}: inner sizes {k} and {k2} differ")
        lead = () if batch is None else (batch,)
        a, b = torch.randn(*lead, m, k, dtype=dtype), torch.randn(*lead, k, n, dtype=dtype)
        out = torch.empty(*lead, m, n, dtype=dtype)
        if first:  # the added term, broadcast as recorded
            c = torch.randn(dims[0], dtype=dtype)
            product = functools.partial(torch.addmm if batch is None else torch.baddbmm, c, a, b, out=out)
        else:
            product = functools.partial(torch.mm if batch is None else torch.bmm, a, b, out=out)
        calls.append(product)
        flops += 2 * (batch or 1) * m * k * n

    def run() -> None:
        for product in calls:
            product()

    return run, flops


def timed_train_step(model, optimizer, images, tokens, device: torch.device, clock, autocast=None) -> float:
    """Seconds of one :func:`minclip.train.train_step` (with training's gradient clipping), the device synchronised."""
    synchronize(device)
    start = clock()
    train_step(model, images, tokens, optimizer, TrainConfig().grad_clip, autocast)
    synchronize(device)
    return clock() - start


def bench_one(name: str, args, tokenizer: BPETokenizer, device: torch.device, clock, reference,
              attn_impl: str | None = None, log=print) -> Result:
    """Time configuration ``name`` (with ``attn_impl`` if given): training steps, then forward passes, then (with
    ``reference``) the comparison with OpenAI's code. Batches follow one another as in training, over as many
    epochs as the steps need."""
    overrides = {"attn_impl": attn_impl} if attn_impl else {}
    model = bench_model(name, tokenizer, **overrides).to(device).train()
    config = model.config
    if args.compile:  # each tower's forward through TorchInductor (fused element-wise kernels)
        for tower in (model.visual, model.text):
            tower.compile(dynamic=True)  # dynamic: the trimmed text length changes from batch to batch
    optimizer = make_optimizer(model, TrainConfig())  # as `python -m minclip train` makes it
    autocast = make_autocast(args.precision, device)  # as train does
    data = EmojiBatches(config.image_size, config.context_length, args.batch_size, tokenizer, device, clock=clock)
    step = 0
    for _ in range(args.warmup):
        batch = data.get(step)
        timed_train_step(model, optimizer, batch.images, batch.tokens, device, clock, autocast)
        step += 1

    memory = PeakMemory(device)
    memory.reset()
    step_times, data_times, flops, lengths, peaks, shares = [], [], [], [], [], []
    probe_dtype = peak_dtype(device, args.precision)
    probe = functools.partial(matmul_peak, device, probe_dtype, args.peak_size, repeats=2, clock=clock)
    for _ in range(args.steps):
        batch = data.get(step)
        step += 1
        data_times.append(batch.seconds)
        peaks.append(probe())
        step_times.append(timed_train_step(model, optimizer, batch.images, batch.tokens, device, clock, autocast))
        flops.append(matmul_flops(config, args.batch_size, training=True, text_length=batch.tokens.shape[1]))
        lengths.append(batch.tokens.shape[1])
        shares.append(flops[-1] / step_times[-1] / 1e9 / peaks[-1])
    peak_memory = memory.read()
    breakdown = {}
    if args.breakdown:
        breakdown = step_breakdown(model, optimizer, [data.get(step + i) for i in range(3)], config, autocast, probe,
                                   probe_dtype)
        step += 3

    model.eval()
    forward_times = []
    with torch.inference_mode(), autocast if autocast is not None else contextlib.nullcontext():
        for i in range(args.warmup + args.steps):
            batch = data.get(step)
            step += 1
            synchronize(device)
            start = clock()
            model(batch.images, batch.tokens)
            synchronize(device)
            if i >= args.warmup:
                forward_times.append(clock() - start)
    del model, optimizer

    result = Result(name, config, args.batch_size, statistics.median(step_times), statistics.fmean(data_times),
                    statistics.median(forward_times), statistics.fmean(flops), statistics.fmean(lengths),
                    peak_memory, memory.lifetime, peaks, statistics.median(shares),
                    compiled=args.compile, breakdown=breakdown)
    pairs = args.batch_size
    log(f"{name} ({config.attn_impl}): {pairs / result.step_seconds:,.0f} training pairs/s "
        f"({result.step_seconds * 1e3:.0f} ms per step, data {result.data_seconds * 1e3:.1f} ms), "
        f"{pairs / result.forward_seconds:,.0f} forward pairs/s, {result.gflops:.0f} GFLOP/s "
        f"({result.share_of_peak:.0%} of the matmul peak, {peak_range(peaks)} GFLOP/s), "
        f"peak memory {peak_memory / 2**20:,.0f} MiB")
    if breakdown:
        b = breakdown
        log(f"  where a step's time goes (3 steps under the profiler): matrix products {b['matmul_ms']:.0f} ms "
            f"({b['matmul_share']:.0%}; {b['matmul_gflops']:.0f} GFLOP/s inside them, "
            f"{b['matmul_gflops'] / statistics.median(peaks):.0%} of the median peak), optimiser "
            f"{b['optimizer_ms']:.0f} ms ({b['optimizer_share']:.0%}), everything else {b['other_ms']:.0f} ms "
            f"({b['other_share']:.0%})")
        log(f"  the same products replayed alone, nothing between them: {b['replay_ms']:.0f} ms, "
            f"{b['replay_gflops']:.0f} GFLOP/s, {b['replay_share']:.0%} of the peak: the ceiling of the step's share")
    if reference is not None:
        result.openai = compare_with_openai(name, overrides, reference, data, step, args, device, clock, autocast,
                                            log)
    return result


def compare_with_openai(name: str, overrides: dict, reference, data: EmojiBatches, step: int, args,
                        device: torch.device, clock, autocast, log=print) -> dict:
    """Train minclip (on full-length and on trimmed tokens) and its OpenAI twin from the same weights on the same
    batches, one step each in turn (in alternating order); returns each one's median step seconds."""
    start_weights = bench_model(name, data.tokenizer, **overrides).to(device).train()
    try:
        twin = openai_twin(start_weights, reference).to(device)
    except ValueError as error:
        log(f"  OpenAI comparison skipped: {error}")
        return {}
    difference = check_same_logits(start_weights, twin, data.get(step))
    models = {"minclip": start_weights, "OpenAI": twin, "minclip, trimmed": copy.deepcopy(start_weights),
              "OpenAI, unfused AdamW": copy.deepcopy(twin)}
    optimizers = {key: make_optimizer(model, TrainConfig(), fused=False if "unfused" in key else None)
                  for key, model in models.items()}  # the same groups and settings
    for key in ("OpenAI", "OpenAI, unfused AdamW"):
        models[key] = OpenAIAdapter(models[key])  # after the optimiser: its parameter names are OpenAI's own
    times = {key: [] for key in models}
    order = list(models)
    for round_ in range(args.warmup + args.steps):
        batch = data.get(step)
        step += 1
        for key in (order if round_ % 2 == 0 else order[::-1]):
            tokens = batch.tokens if key == "minclip, trimmed" else batch.full_tokens
            seconds = timed_train_step(models[key], optimizers[key], batch.images, tokens, device, clock, autocast)
            if round_ >= args.warmup:
                times[key].append(seconds)
    medians = {key: statistics.median(values) for key, values in times.items()}
    log(f"  same weights: max |logit difference| {difference:.1e}; step: minclip {medians['minclip'] * 1e3:.0f} ms, "
        f"OpenAI {medians['OpenAI'] * 1e3:.0f} ms (same full-length tokens) -> "
        f"{medians['OpenAI'] / medians['minclip']:.2f}x; minclip on trimmed tokens "
        f"{medians['minclip, trimmed'] * 1e3:.0f} ms -> {medians['OpenAI'] / medians['minclip, trimmed']:.2f}x; "
        f"OpenAI with PyTorch's default (unfused) AdamW {medians['OpenAI, unfused AdamW'] * 1e3:.0f} ms -> "
        f"{medians['OpenAI, unfused AdamW'] / medians['minclip, trimmed']:.2f}x")
    return medians


# ------------------------------------------------------------------------------------------------------- report
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line(device: torch.device, threads: int, precision: str = "auto") -> str:
    numbers = "fp32" if make_autocast(precision, device) is None else "bf16 autocast"
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} ({numbers})"
    else:
        where = f"{cpu_name()}, {os.cpu_count()} logical CPUs, {threads} torch threads, {numbers}"
    return f"{where}; torch {torch.__version__}; Python {platform.python_version()}"


def describe(result: Result) -> str:
    c = result.config
    return (f"ViT {c.image_size}px/{c.patch_size}, width {c.vision_width}/{c.text_width}, "
            f"{c.vision_layers}+{c.text_layers} blocks, text {result.text_length:.0f}/{c.context_length} tokens, "
            f"vocab {c.vocab_size}, {c.attn_impl}" + (", compiled" if result.compiled else ""))


def markdown_table(results: list[Result]) -> str:
    head = ("| config | model | train pairs/s | step ms | data ms | forward pairs/s | GFLOP/s | matmul peak "
            "| share of peak | peak memory | OpenAI pairs/s | × OpenAI, same tokens | × OpenAI, trimmed "
            "| × OpenAI + unfused AdamW, trimmed |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        b = r.batch_size
        memory = f"{r.peak_memory / 2**20:,.0f} MiB" + (" (lifetime)" if r.peak_is_lifetime else "")
        if r.openai:
            o = r.openai
            openai = (f"{b / o['OpenAI']:,.0f} | {o['OpenAI'] / o['minclip']:.2f} | "
                      f"{o['OpenAI'] / o['minclip, trimmed']:.2f} | "
                      f"{o['OpenAI, unfused AdamW'] / o['minclip, trimmed']:.2f}")
        else:
            openai = "– | – | – | –"
        rows.append(f"| {r.name} | {describe(r)} | {b / r.step_seconds:,.0f} | {r.step_seconds * 1e3:.0f} | "
                    f"{r.data_seconds * 1e3:.1f} | {b / r.forward_seconds:,.0f} | {r.gflops:.0f} | "
                    f"{peak_range(r.matmul_peaks)} | {r.share_of_peak:.0%} | {memory} | {openai} |")
    return "\n".join(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Time minclip's training step, inference and data pipeline per configuration; count the "
                    "matmul GFLOP/s against this machine's peak; optionally compare with OpenAI's CLIP code.",
        epilog="configurations: " + ", ".join(CONFIG_NAMES) + ". ref128 and ref64 are the reference shapes of "
               "the benchmark issue (vocabulary 49408). Timings on a busy machine are noisy: compare figures from "
               "one run; quote figures from an idle machine.")
    parser.add_argument("--preset", "--config", dest="configs", nargs="+", default=["tiny", "ref128", "ref64"],
                        choices=CONFIG_NAMES, metavar="NAME",
                        help="configurations to time (default: tiny ref128 ref64)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (default: 128)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, usually one per core)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto, as training picks)")
    parser.add_argument("--attn-impl", nargs="+", choices=list(IMPLEMENTATIONS), metavar="IMPL",
                        help="override the configurations' attention implementation; several (manual sdpa) time "
                             "each configuration once per implementation")
    parser.add_argument("--compare-openai", action="store_true",
                        help="also train OpenAI's clip/model.py on the same weights and batches, interleaved")
    parser.add_argument("--peak-size", type=int,
                        help="side of the square matmul that measures the peak before every timed step (default: "
                             "2048 on the CPU, 8192 on a GPU)")
    parser.add_argument("--compile", action="store_true",
                        help="run minclip's towers through torch.compile (compiling takes minutes and happens in the "
                             "warm-up steps: give --warmup 3 or more)")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="forward pass as `python -m minclip train --precision`: auto = bf16 autocast on a GPU, "
                             "float32 elsewhere; bf16 also on the CPU (fast with Intel AMX); the peak probe follows")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile 3 steps per configuration and split a step's time into matrix products, "
                             "optimiser and everything else, with the GFLOP/s inside the products (CPU)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time (default); cpu: this process's CPU time, steadier on a shared "
                             "machine but meaningful only with --threads 1 on the CPU")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for option, value, least in [("--batch-size", args.batch_size, 2), ("--steps", args.steps, 1),
                                 ("--warmup", args.warmup, 0), ("--threads", args.threads, 1),
                                 ("--peak-size", args.peak_size, 1)]:
        if value is not None and value < least:
            why = ": a contrastive loss needs negatives in the batch" if option == "--batch-size" else ""
            parser.error(f"{option} must be at least {least}, got {value}{why}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        parser.error(f"--device {args.device}: {str(error).splitlines()[0]}")
    if args.breakdown and device.type != "cpu":
        parser.error("--breakdown profiles CPU time: use it with --device cpu")
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    reference = None
    if args.compare_openai:
        reference = openai_reference()
        if reference is None:
            print(f"OpenAI comparison skipped: clip-anytorch is not installed (install it with `{OPENAI_INSTALL}`)")

    threads = torch.get_num_threads()
    print(f"machine: {machine_line(device, threads, args.precision)}")
    dtype = peak_dtype(device, args.precision)
    tokenizer = emoji_tokenizer()

    results = []
    for name in args.configs:
        for attn_impl in args.attn_impl or [None]:
            results.append(bench_one(name, args, tokenizer, device, clock, reference, attn_impl))
    peaks = [p for r in results for p in r.matmul_peaks]

    command = "python benchmarks/bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print()
    print(f"`{command.strip()}` on {machine_line(device, threads, args.precision)}. Batch {args.batch_size}, median of "
          f"{args.steps} steps after {args.warmup} warm-up, {args.clock} clock; data = host time per batch; "
          f"matmul peak = a {args.peak_size or (2048 if device.type == 'cpu' else 8192)}² "
          f"{str(dtype).removeprefix('torch.')} product timed before every step ({peak_range(peaks)} GFLOP/s in "
          "this run), share of peak = median of each step's GFLOP/s over the peak of its moment.")
    print()
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

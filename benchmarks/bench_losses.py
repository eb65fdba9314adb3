"""CLIP's InfoNCE against SigLIP's sigmoid loss at batch sizes 16 to 256 on the emoji set (a script, not a test).

Two parts, each printed as a markdown table:

* speed: the loss alone, forward and backward, on random unit features of the preset's embedding width (what the
  loss costs per step, apart from the towers). Both losses are timed in turn inside one loop, so that a busy machine
  slows them alike; the median of the repeats is reported.
* quality: the same training budget (`--epochs` passes over the training split, the preset's recipe otherwise) for
  each loss and batch size, then the held-out report: each test caption must find its unseen image among all shipped
  images (recall@1/5, text to image), and within-family accuracy (the right tone or gender among its siblings).
  SigLIP starts as its paper does (scale exp(t') = 10, bias b = -10); CLIP at scale 1 / 0.07. One learning rate for
  all batch sizes (`--lr`, default the recipe's): smaller batches take more, noisier steps over the same epochs.

Runs on one thread by default (`--threads`), so that it can share a machine; timings of a busy machine are noisy.

    python benchmarks/bench_losses.py                                      # both parts: tiny preset, 8 epochs each
    python benchmarks/bench_losses.py --part speed                         # the loss timings only (seconds)
    python benchmarks/bench_losses.py --part quality --epochs 28           # the main job's budget (long)
    python benchmarks/bench_losses.py --preset nano --epochs 1 --batch-sizes 16 32   # a quick look that it works
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: make `minclip` importable

from minclip.loss import SIGLIP_INIT_BIAS, SIGLIP_INIT_LOG_SCALE, clip_loss, siglip_loss  # noqa: E402
from minclip.model import CLIPConfig  # noqa: E402
from minclip.train import TrainConfig, train  # noqa: E402

LOSSES = ("clip", "siglip")


def time_losses(batch_size: int, width: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Median seconds of one forward + backward of each loss on `(batch_size, width)` unit features."""
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch_size, width, generator=generator), dim=-1).requires_grad_(True)
    text = F.normalize(torch.randn(batch_size, width, generator=generator), dim=-1).requires_grad_(True)
    log_scale = torch.tensor(SIGLIP_INIT_LOG_SCALE, requires_grad=True)
    bias = torch.tensor(SIGLIP_INIT_BIAS, requires_grad=True)
    step = {
        "clip": lambda: clip_loss(image, text, log_scale.exp()),
        "siglip": lambda: siglip_loss(image, text, log_scale.exp(), bias),
    }
    seconds = {name: [] for name in LOSSES}
    for repeat in range(repeats + 3):  # the first three warm up
        for name in LOSSES:  # interleaved: a load spike hits both
            for tensor in (image, text, log_scale, bias):
                tensor.grad = None
            start = time.perf_counter()
            step[name]().backward()
            if repeat >= 3:
                seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def speed_table(batch_sizes, width: int, repeats: int) -> str:
    lines = [f"loss forward + backward on random unit features of width {width} (median of {repeats}):", "",
             "| batch | CLIP (µs) | SigLIP (µs) | SigLIP / CLIP |", "|---:|---:|---:|---:|"]
    for batch_size in batch_sizes:
        seconds = time_losses(batch_size, width, repeats)
        lines.append(f"| {batch_size} | {1e6 * seconds['clip']:.0f} | {1e6 * seconds['siglip']:.0f} | "
                     f"{seconds['siglip'] / seconds['clip']:.2f} |")
    return "\n".join(lines)


def quality_row(config: TrainConfig) -> str:
    with contextlib.redirect_stdout(io.StringIO()):  # the loop's own "epoch N: val ..." lines
        result = train(config, progress=False)
    report = result.report
    search = report["among_all_images"]["text_to_image"]
    family = report["within_family"]
    temperature = result.history["temperature"][-1]
    bias = f"{result.history['bias'][-1]:.2f}" if "bias" in result.history else "-"
    return (f"| {config.batch_size} | {config.loss} | {result.history['step'][-1]} | {100 * search['R@1']:.1f} | "
            f"{100 * search['R@5']:.1f} | {100 * family['accuracy']:.1f} | {1 / temperature:.1f} | {bias} | "
            f"{result.seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["speed", "quality", "both"], default="both")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--preset", default="tiny", help="model preset (default: tiny)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs per run (default: 8)")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate for every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=50, help="timed repeats of each loss (default: 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, {args.threads} "
          f"torch thread(s), Python {platform.python_version()}, torch {torch.__version__}")
    if args.part in ("speed", "both"):
        print()
        print(speed_table(args.batch_sizes, CLIPConfig.preset(args.preset).embed_dim, args.repeats))
    if args.part in ("quality", "both"):
        print(f"\n{args.preset} preset, {args.epochs} epochs, lr {args.lr}, seed {args.seed}; held-out report on "
              "the emoji test split (R@K: a test caption finds its image among all shipped images):\n")
        print("| batch | loss | steps | R@1 % | R@5 % | within-family % | final scale | final bias | seconds |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for batch_size in args.batch_sizes:
            for loss in LOSSES:
                config = TrainConfig(preset=args.preset, epochs=args.epochs, batch_size=batch_size, lr=args.lr,
                                     loss=loss, seed=args.seed, eval_every=0)
                print(quality_row(config), flush=True)


if __name__ == "__main__":
    main()

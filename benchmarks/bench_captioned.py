"""Throughput from disk of your own captioned images (minclip/captioned.py), in every layout, at 64 and 224 px.

Generates N pairs (default 10,000) in a temporary folder: JPEG photos-like images (smooth gradients with a few
shapes, 400 x 300, quality 90, about the size of a Flickr photo scaled down) with one caption each, then indexes them
as a CSV, a TSV, a JSONL file, a folder with .txt captions and 10 tar shards in WebDataset's layout. For each layout
and image size it times

    index   building `CaptionedData` (reading the CSV/JSONL and checking each file exists, listing the folder,
            counting the shards' samples), then
    read    one pass over every training pair as training reads them: decode, resize as CLIP's preprocess
            (shorter side bicubic, centre crop), uint8 tensor; pairs/s.

Single-threaded by default (`--workers 0`, one torch thread), with the files in the page cache (they were just
written): the cost of decoding on one core, which is what sets how many loader workers a GPU needs. Then a paper
estimate: the matrix products of a ViT-B/32 step (minclip.flops.matmul_flops) at an assumed GPU throughput, and the
loader cores that would keep it fed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_captioned.py            # ~10,000 pairs, a few minutes
    PYTHONPATH=. python benchmarks/bench_captioned.py --pairs 2000 --sizes 64      # a quick look
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from minclip.flops import matmul_flops
from minclip.captioned import CaptionedData
from minclip.model import CLIPConfig

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
SHAPES = ["circle", "square"]


def photo(k: int, width: int = 400, height: int = 300) -> tuple[bytes, str]:
    """A JPEG of a smooth background with a shape, and its caption."""
    rng = np.random.default_rng(k)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]  # (H, 1, 1)
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1).astype(np.uint8)  # (H, W, 3)
    image = Image.fromarray(pixels)
    colour, shape = COLOURS[k % len(COLOURS)], SHAPES[(k // len(COLOURS)) % 2]
    x, y, r = int(rng.integers(60, width - 60)), int(rng.integers(60, height - 60)), int(rng.integers(20, 60))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), f"a {colour} {shape} on a gradient, photo {k}"


def generate(root: Path, n: int, shards: int) -> dict[str, str]:
    """Write the images once and every layout over them; returns layout -> the --data argument."""
    images = root / "photos"
    images.mkdir(parents=True)
    rows = []
    for k in range(n):
        payload, caption = photo(k)
        (images / f"{k:06d}.jpg").write_bytes(payload)
        (images / f"{k:06d}.txt").write_text(caption)  # the folder layout: image + same-name .txt
        rows.append((f"photos/{k:06d}.jpg", caption))
    for suffix, delimiter in (("csv", ","), ("tsv", "\t")):
        with open(root / f"pairs.{suffix}", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter=delimiter)
            writer.writerow(["filepath", "title"])
            writer.writerows(rows)
    with open(root / "pairs.jsonl", "w", encoding="utf-8") as f:
        for path, caption in rows:
            f.write(json.dumps({"image": path, "caption": caption}) + "\n")
    per_shard = -(-n // shards)
    (root / "shards").mkdir()
    for s in range(shards):
        with tarfile.open(root / "shards" / f"shard-{s:03d}.tar", "w") as tar:
            for k in range(s * per_shard, min(n, (s + 1) * per_shard)):
                tar.add(images / f"{k:06d}.jpg", arcname=f"{k:06d}.jpg")
                tar.add(images / f"{k:06d}.txt", arcname=f"{k:06d}.txt")
    return {"csv": str(root / "pairs.csv"), "tsv": str(root / "pairs.tsv"), "jsonl": str(root / "pairs.jsonl"),
            "folder": str(images), "shards": str(root / "shards" / f"shard-{{000..{shards - 1:03d}}}.tar")}


def measure(data: str, size: int, workers: int) -> tuple[float, float, int]:
    """(seconds to index, pairs/s of one pass, pairs read)."""
    start = time.perf_counter()
    dataset = CaptionedData(data, size, batch_size=2, workers=workers)
    indexed = time.perf_counter() - start
    start = time.perf_counter()
    count = sum(1 for image, _, problem in dataset.items(0, 0) if problem is None)
    return indexed, count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--layouts", nargs="+", default=["csv", "tsv", "jsonl", "folder", "shards"])
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: single-threaded)")
    parser.add_argument("--gpu-tflops", type=float, default=125.0,
                        help="assumed sustained bf16 matrix throughput per GPU for the estimate (default 125: an "
                             "A100's 312 peak at 40 %%)")
    parser.add_argument("--estimate-pairs", type=float, default=3.3e6, help="data set size for the estimate")
    parser.add_argument("--estimate-epochs", type=int, default=32)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4096, help="global batch of the estimate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, workers {args.workers}, one torch thread")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        layouts = generate(Path(folder), args.pairs, args.shards)
        megabytes = sum(p.stat().st_size for p in (Path(folder) / "photos").glob("*.jpg")) / 1e6
        print(f"generated {args.pairs} pairs ({megabytes:.0f} MB of 400x300 JPEG) in every layout in "
              f"{time.perf_counter() - start:.0f} s")
        print(f"{'layout':8} {'size':>5} {'index s':>8} {'pairs/s':>8}")
        rates = {}
        for size in args.sizes:
            for layout, data in ((name, layouts[name]) for name in args.layouts):
                indexed, rate, count = measure(data, size, args.workers)
                assert count == args.pairs, (layout, count)
                rates[layout, size] = rate
                print(f"{layout:8} {size:5d} {indexed:8.2f} {rate:8.0f}")

    config = CLIPConfig.preset("ViT-B/32")
    per_gpu = args.batch // args.gpus
    flops = matmul_flops(config, per_gpu, training=True)  # one process's step (its logits are B/8 x B: close)
    step = flops / (args.gpu_tflops * 1e12)  # seconds: the matrix products at the assumed throughput
    rate = per_gpu / step  # pairs/s per GPU
    seen = args.estimate_pairs * args.estimate_epochs
    hours = seen / (rate * args.gpus) / 3600
    print(f"\npaper estimate, ViT-B/32 (224 px, 77 tokens): {flops / per_gpu / 1e9:.1f} GFLOP of matrix products per "
          f"pair and training step; at {args.gpu_tflops:g} TFLOP/s per GPU a step of {per_gpu} pairs per GPU takes "
          f"{step * 1e3:.0f} ms, {rate:.0f} pairs/s per GPU, {rate * args.gpus:.0f} pairs/s on {args.gpus} GPUs;")
    print(f"{args.estimate_pairs / 1e6:g} M pairs x {args.estimate_epochs} epochs = {seen / 1e6:.0f} M pairs seen: "
          f"{hours:.1f} hours")
    if 224 in args.sizes:
        for layout in [name for name in ("csv", "shards") if (name, 224) in rates]:
            cores = rate / rates[layout, 224]
            print(f"loader cores to keep one GPU fed from {layout} at 224 px: {rate:.0f} / {rates[layout, 224]:.0f} "
                  f"= {cores:.0f} (--workers), {cores * args.gpus:.0f} for {args.gpus} GPUs")


if __name__ == "__main__":
    main()

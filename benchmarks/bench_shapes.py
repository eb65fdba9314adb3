"""How fast the procedural shapes set (minclip/shapes.py) is generated and rendered: images per second in one
process, with the machine it ran on, and a few of the captions. A script that prints figures, not a test.

    python benchmarks/bench_shapes.py                              # 5,000 scenes at 32 x 32
    python benchmarks/bench_shapes.py --image-size 64 --num-images 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the checkout's minclip

from minclip.shapes import ShapesDataset  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-images", type=int, default=5000)
    args = parser.parse_args(argv)
    start, cpu_start = time.perf_counter(), time.process_time()
    dataset = ShapesDataset("train", "both", args.image_size, args.num_images)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    n = args.num_images
    print(f"{n} scenes generated and rendered at {args.image_size}x{args.image_size}: {n / seconds:,.0f} images/s "
          f"({seconds:.2f} s wall clock; {n / cpu_seconds:,.0f} per CPU second) in one process on "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, numpy {np.__version__}")
    for caption in dataset.captions[:6]:
        print("  ", caption)


if __name__ == "__main__":
    main()

"""Your own captioned images: `python -m minclip train --data PATH` on files, folders or tar shards.

Four layouts are read, the format told by PATH:

    pairs.csv / pairs.tsv     a header row, then one pair per row: an image path column (`filepath`, as in
                              open_clip) and a caption column (`title`); comma-separated for .csv, tab for .tsv
    pairs.jsonl               one JSON object per line: {"image": "photos/cat.jpg", "caption": "a cat on a mat"}
    photos/                   a folder: every image file with a caption file of the same name, cat.jpg + cat.txt
    shards-{000..009}.tar     WebDataset-style tar shards: members that share a base name form one sample, an image
                              (.jpg, .png, ...) and its caption (.txt): 000017.jpg + 000017.txt. The braces expand
                              as in a shell ({000..009} counts, {a,b} lists); read with the standard library's tarfile

Relative image paths resolve against the folder of the CSV/JSONL file; `image_key`/`caption_key` name other
columns. Every image is decoded with PIL and resized as OpenAI's CLIP preprocesses its input
(`preprocess.resize_and_crop`: shorter side to the model's size, bicubic, centre crop), so `minclip.load`'s
`preprocess` (a `CLIPPreprocess` for checkpoints of your data) prepares new photos exactly as training saw them.

How the pairs reach training. An index file or a folder is listed up front (paths and captions; the images stay on
disk) and batched by `DistinctBatchSampler`, with the image path as the group, so the five captions Flickr-style sets
give each photo never meet in one batch as false negatives. Tar shards *stream*: each process reads its own shards,
one sample after another, so memory does not grow with the data set; processes (torchrun) own disjoint shards, and
within a process the DataLoader's workers take turns (worker k of K decodes every K-th sample and seeks over the
others), so no pair is read twice in an epoch and the order does not depend on the number of workers. Shards are
shuffled per epoch, samples within a shard are not (WebDataset's answer is a shuffle buffer; here the order stays
a pure function of (seed, epoch), which is what makes resuming exact).

Every process consumes exactly `batch_size / processes` samples per step, bad ones included, so a step's position in
the sample stream is known from the step alone: a checkpoint's step is where to resume, and a resumed run reads the
same pairs as one that never stopped (tested). A sample that cannot be used (missing file, undecodable image, empty
caption) leaves a hole in its batch, which the loss handles (processes may hold unequal shares, see minclip.loss);
all of them are counted and reported in one warning. A data set without a usable pair, or whose first images all
fail to decode, is refused before training.

A held-out part (`val_fraction` of the distinct images, or of the shards; or the rows whose `split_key` column says
"val"/"test") is never trained on and gives recall@K (minclip.evaluate) in both directions.

How it fits: train.py builds a `CaptionedData` when `TrainConfig.data` is a path; data.py gives the resize, the
batch sampler and the augmentation; evaluate.py the recall. Nothing here depends on a package beyond torch and PIL.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from .data import DistinctBatchSampler, to_model_input
from .preprocess import resize_and_crop

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")  # image files (also for `--images`)
DEFAULT_KEYS = {"csv": ("filepath", "title"), "tsv": ("filepath", "title"), "jsonl": ("image", "caption")}
TRAIN_VALUES = ("train",)  # split column values that train; HELD_OUT_VALUES are held out, anything else is an error
HELD_OUT_VALUES = ("val", "valid", "validation", "test")
VAL_LIMIT = 1000  # at most this many held-out images are decoded for recall@K (all of them live in memory)
TOKENIZER_SAMPLE = 50_000  # the vocabulary is learned from at most this many training captions
PROBE = 16  # before training, decode up to this many images: none readable means an unusable data set
Item = tuple  # (image uint8 (S, S, 3) or None, caption, None or "reason: name"): a sample as the stream yields it


# --------------------------------------------------------------------------------------------- formats and paths
def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion, as WebDataset names shards: numeric ranges keep their zero padding.

        >>> expand_braces("shards-{000..002}.tar")
        ['shards-000.tar', 'shards-001.tar', 'shards-002.tar']
        >>> expand_braces("{train,extra}-{0..1}.tar")
        ['train-0.tar', 'train-1.tar', 'extra-0.tar', 'extra-1.tar']
    """
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail, body = pattern[:match.start()], pattern[match.end():], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        width = len(first) if first.startswith("0") else 0
        step = 1 if int(last) >= int(first) else -1
        choices = [str(n).zfill(width) for n in range(int(first), int(last) + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise ValueError(f"cannot expand {{{body}}} in {pattern!r}: write a range {{000..009}} or a list {{a,b}}")
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def data_format(data: str) -> str:
    """Which layout `data` names: "csv", "tsv", "jsonl", "folder" or "shards" (ValueError if none, or missing)."""
    if re.search(r"\.(tar|tar\.gz|tgz)$", str(data)):
        return "shards"
    path = Path(data)
    if path.is_dir():
        return "folder"
    formats = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
    known = "emoji, shapes, a .csv/.tsv file with a header, a .jsonl file, a folder of images with .txt captions " \
            "or .tar shards"
    if not path.exists():
        raise ValueError(f"data {data!r}: no such file or folder; give {known}")
    if path.suffix.lower() not in formats or not path.is_file():
        raise ValueError(f"data {data!r} is not a data set minclip reads; give {known}")
    return formats[path.suffix.lower()]


@dataclass(frozen=True)
class Pair:
    """One row of an index: the image's path (resolved) and its caption; held_out: kept for recall@K."""

    image: str
    caption: str
    held_out: bool = False


class Problems:
    """Unusable samples, counted by reason, with a few examples for the one warning that reports them."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.examples: list[str] = []
        self.warned = False

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 3:
            self.examples.append(f"{example} ({reason})")

    def total(self) -> int:
        return sum(self.counts.values())

    def message(self, total: int | None = None, counts: Counter | None = None) -> str:
        counts = self.counts if counts is None else counts
        listed = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        return (f"skipped {sum(counts.values()) if total is None else total} unusable samples of the data "
                f"({listed}), e.g. {'; '.join(self.examples)}; training goes on without them")


# --------------------------------------------------------------------------------------------- reading images
def decode_image(source, size: int) -> torch.Tensor:
    """An image file (a path, or its bytes) -> uint8 (size, size, 3), resized and cropped as CLIP's preprocess.

    Raises what PIL raises for a file that is not an image or is damaged, and for an image too large to decode
    safely (PIL's decompression-bomb guard, turned into an error)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return torch.from_numpy(np.array(resize_and_crop(image, size).convert("RGB")))  # (S, S, 3) uint8


DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError)  # what PIL raises for undecodable files and bombs


def _read_pair(source, caption: str, size: int, name: str) -> Item:
    """(image, caption, None), or (None, caption, "reason: name") when the pair cannot be used: never raises for bad
    data. `name` (the file, or the sample's key in its shard) is for the warning."""
    if not caption.strip():
        return None, caption, f"empty caption: {name}"
    try:
        return decode_image(source, size), caption, None
    except FileNotFoundError:
        return None, caption, f"missing file: {name}"
    except DECODE_ERRORS:
        return None, caption, f"unreadable image: {name}"


# --------------------------------------------------------------------------------------------- index files, folders
def read_index(data: str, image_key: str | None = None, caption_key: str | None = None,
               split_key: str | None = None) -> tuple[list[Pair], Problems]:
    """The pairs a CSV/TSV, JSONL file or folder lists, and the rows that cannot be used (counted by reason).

    Rows with an empty caption, no image path or an image file that does not exist are left out here (a cheap check
    per row; images are decoded only when training reads them). A missing column, a bad split value or an
    unreadable index file is a ValueError naming it.
    """
    kind = data_format(data)
    problems = Problems()
    if kind == "shards":
        raise ValueError("read_index lists CSV/TSV, JSONL files and folders; tar shards stream (ShardStream)")
    if kind == "folder":
        if image_key is not None or caption_key is not None or split_key is not None:
            raise ValueError("a folder of images pairs each image with its .txt file: image_key, caption_key and "
                             "split_key are for CSV/TSV and JSONL files")
        return _read_folder(Path(data), problems), problems
    default_image, default_caption = DEFAULT_KEYS[kind]
    image_key, caption_key = image_key or default_image, caption_key or default_caption
    path = Path(data)
    rows = _read_rows(path, kind, problems)
    if kind != "jsonl" and rows is not None:
        missing = [key for key in (image_key, caption_key, split_key) if key is not None and key not in rows.columns]
        if missing:
            raise ValueError(f"{path} has no column {missing[0]!r} (its columns: {', '.join(rows.columns)}); name the "
                             "right one with --image-key, --caption-key or --split-key")
    pairs = []
    for number, row in rows:
        image, caption = row.get(image_key), row.get(caption_key)
        if not isinstance(image, str) or not image.strip():
            problems.add("no image path", f"{path.name} row {number}")
            continue
        if not isinstance(caption, str) or not caption.strip():
            problems.add("empty caption", f"{path.name} row {number}")
            continue
        image_path = Path(image.strip())
        image_path = image_path if image_path.is_absolute() else path.parent / image_path
        if not image_path.is_file():
            problems.add("missing file", str(image_path))
            continue
        held_out = False
        if split_key is not None:
            value = str(row.get(split_key, "")).strip().lower()
            if value not in TRAIN_VALUES + HELD_OUT_VALUES:
                raise ValueError(f"{path} row {number}: {split_key}={row.get(split_key)!r}; the split column holds "
                                 f"'train' or one of {', '.join(HELD_OUT_VALUES)} (held out)")
            held_out = value in HELD_OUT_VALUES
        pairs.append(Pair(str(image_path), " ".join(caption.split()), held_out))
    return pairs, problems


class _Rows:
    """(row number, dict) pairs of a CSV/TSV or JSONL file, with the CSV header as `columns`."""

    def __init__(self, rows, columns):
        self.rows, self.columns = rows, columns

    def __iter__(self):
        return iter(self.rows)


def _read_rows(path: Path, kind: str, problems: Problems) -> _Rows:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a spreadsheet's byte-order mark is not a column name
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8") from None
    if kind == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict):
                problems.add("unreadable line", f"{path.name} line {number}")
                continue
            rows.append((number, row))
        return _Rows(rows, None)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if kind == "tsv" else ",")
    if not reader.fieldnames:
        raise ValueError(f"{path} is empty: it needs a header row naming its columns, then one pair per row")
    return _Rows([(number, row) for number, row in enumerate(reader, start=2)], list(reader.fieldnames))


def _read_folder(folder: Path, problems: Problems) -> list[Pair]:
    pairs = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower().lstrip(".") not in IMAGE_SUFFIXES:
            continue
        caption_file = path.with_suffix(".txt")
        if not caption_file.is_file():
            problems.add("no caption file", path.name)
            continue
        caption = caption_file.read_text(encoding="utf-8", errors="replace")
        if not caption.strip():
            problems.add("empty caption", caption_file.name)
            continue
        pairs.append(Pair(str(path), " ".join(caption.split())))
    return pairs


def hold_out(pairs: list[Pair], fraction: float, seed: int) -> list[Pair]:
    """Mark a seeded random `fraction` of the distinct images held out (all captions of an image go together, so a
    held-out photo was never seen in training under another caption)."""
    images = sorted({pair.image for pair in pairs})
    random.Random(seed).shuffle(images)
    held = set(images[:round(fraction * len(images))])
    return [Pair(p.image, p.caption, p.image in held) for p in pairs]


class IndexedPairs(Dataset):
    """Map-style dataset over listed pairs: item i -> (uint8 (S, S, 3) or None, caption, problem or None)."""

    def __init__(self, pairs: list[Pair], image_size: int):
        self.pairs, self.image_size = pairs, image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Item:
        pair = self.pairs[i]
        return _read_pair(pair.image, pair.caption, self.image_size, pair.image)


# --------------------------------------------------------------------------------------------- tar shards
def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: a member's key is its path up to the first dot of the file name, the rest its extension.

        >>> _split_name("part1/000017.seg.png")
        ('part1/000017', 'seg.png')
    """
    folder, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


def _samples(tar: tarfile.TarFile, wanted=lambda index: True) -> Iterator[tuple[str, dict | None]]:
    """(key, {extension: bytes}) for each complete sample of a shard (an image and a .txt sharing a key), in order.

    Only the samples whose index (0, 1, ... over the shard's complete samples) satisfies `wanted` have their data
    read; the others give (key, None), and tarfile seeks over their bytes. Whether a sample is wanted is decided at
    its first member, so the archive is read front to back once, never seeking back (a .tar.gz cannot, cheaply).
    """
    count, key, parts, read = 0, None, {}, False
    for member in tar:
        if not member.isfile():
            continue
        member_key, extension = _split_name(member.name)
        if member_key != key:
            if key is not None and "txt" in parts and _image_extension(parts):
                yield key, (parts if read else None)
                count += 1
            key, parts, read = member_key, {}, wanted(count)
        parts[extension] = tar.extractfile(member).read() if read else None
        tar.members = []  # tarfile keeps every header it has read: forget them, memory stays flat
    if key is not None and "txt" in parts and _image_extension(parts):
        yield key, (parts if read else None)


def _image_extension(parts: dict) -> str | None:
    return next((ext for ext in parts if ext.rsplit(".", 1)[-1] in IMAGE_SUFFIXES), None)


def count_shard(path: str) -> int:
    """How many samples of a shard hold both an image and a .txt caption (reads the headers only)."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return sum(1 for _ in _samples(tar, wanted=lambda index: False))
    except FileNotFoundError:
        raise ValueError(f"shard {path} does not exist; check the name and the {{000..009}} range") from None
    except tarfile.TarError as error:
        raise ValueError(f"{path} is not a readable tar file ({error}); rebuild the shard") from None


def shard_sizes(shards: list[str]) -> list[int]:
    """The samples of each shard: from `sizes.json` beside the shards if there is one (open_clip's convention,
    {"shard-000.tar": 10000, ...}, which saves reading every header of a large set; it must be right), else counted."""
    sizes_file = Path(shards[0]).parent / "sizes.json"
    if sizes_file.is_file():
        sizes = json.loads(sizes_file.read_text())
        if all(Path(s).name in sizes for s in shards):
            return [int(sizes[Path(s).name]) for s in shards]
    return [count_shard(s) for s in shards]


class ShardStream(IterableDataset):
    """One process's samples of one epoch, streamed from its tar shards: (uint8 (S, S, 3) or None, caption, problem).

    The epoch's order is the process's shards in a seeded shuffle of (seed, epoch), each shard's samples in the order
    they are stored. `skip` samples of it are passed over (a resumed run): whole shards unopened, then samples
    unread. With K DataLoader workers, worker k decodes samples skip + k, skip + k + K, ... and seeks over the
    others' bytes; a DataLoader hands out one sample from each worker in turn, so the stream is the same sequence
    with any number of workers, and a run may resume with another `--workers`.
    """

    def __init__(self, shards: list[str], sizes: list[int], image_size: int, seed: int, epoch: int, skip: int = 0):
        self.image_size, self.skip = image_size, skip
        order = list(range(len(shards)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        self.shards, self.sizes = [shards[i] for i in order], [sizes[i] for i in order]

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = 0  # the position, in this epoch's order, of the current shard's first sample
        for path, size in zip(self.shards, self.sizes):
            if self.skip > 0 and start + size <= self.skip:  # read before the interruption: not even opened
                start += size
                continue

            def mine(index: int, first: int = start) -> bool:
                position = first + index
                return position >= self.skip and (position - self.skip) % workers == worker

            with tarfile.open(path, "r:*") as tar:
                for key, parts in _samples(tar, mine):
                    if parts is None:
                        continue  # another worker's, or before the resume point
                    image = _image_extension(parts)
                    caption = parts["txt"].decode("utf-8", errors="replace")
                    name = f"{Path(path).name}:{key}.{image}"
                    yield _read_pair(parts[image], " ".join(caption.split()), self.image_size, name)
            start += size


def _leave_signals_to_training(_worker: int) -> None:
    """In a DataLoader worker: ignore Ctrl-C and SIGTERM. The training process receives them too, finishes its step,
    writes the checkpoint and then shuts its workers down. A worker forked on Linux inherits the training process's
    handler, which only notes the request; one started by spawn (macOS, Windows) would die on Ctrl-C and fail the
    next step, before the checkpoint is written."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------------------------------- what training uses
class CaptionedData:
    """A user's data set as training reads it: per-process sample streams, a held-out set, the problem count.

    Args:
        data: a CSV/TSV or JSONL file, a folder, or a tar shard pattern (see the module docstring).
        image_size: the model's input side S.
        batch_size: pairs per step over all processes; each of the `world_size` processes reads batch_size / W.
        rank, world_size: this process, and how many train together.
        seed: the batch order, shard order and held-out choice.
        val_fraction, split_key: the held-out part (see `hold_out`; for shards, the last shards of the list).
        image_key, caption_key: the columns (keys) of an index file.
        workers: DataLoader worker processes that decode images.

    Raises ValueError before any training when the data cannot give a step (no usable pair, too few for a batch,
    fewer shards than processes, none of the first images decodable).
    """

    def __init__(self, data: str, image_size: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, val_fraction: float = 0.0, split_key: str | None = None,
                 image_key: str | None = None, caption_key: str | None = None, workers: int = 0):
        self.data, self.kind = data, data_format(data)
        self.image_size, self.seed, self.workers = image_size, seed, workers
        self.rank, self.world_size = rank, world_size
        self.local_batch = batch_size // world_size
        self.problems = Problems()
        self._heldout = None
        if self.kind == "shards":
            self._init_shards(val_fraction, split_key, image_key, caption_key)
        else:
            self._init_index(val_fraction, split_key, image_key, caption_key, batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size={batch_size} leaves no full batch in the {self.train_pairs} training pairs "
                             f"of {data}{' (per process)' if world_size > 1 else ''}, so no step would run; use a "
                             "smaller batch size")
        self._probe()

    def _init_index(self, val_fraction, split_key, image_key, caption_key, batch_size) -> None:
        pairs, self.problems = read_index(self.data, image_key, caption_key, split_key)
        if not pairs:
            reasons = ", ".join(f"{n} {reason}" for reason, n in self.problems.counts.items()) or "it lists none"
            raise ValueError(f"{self.data} holds no usable image-caption pair ({reasons}); check the paths (relative "
                             "ones start at the file's folder) and the column names (--image-key, --caption-key)")
        if split_key is None and val_fraction > 0:
            pairs = hold_out(pairs, val_fraction, self.seed)
        self.train = [p for p in pairs if not p.held_out]
        self.heldout_list = [p for p in pairs if p.held_out]
        if not self.train:
            raise ValueError(f"{self.data}: every usable pair is held out; lower --val-fraction or mark some rows "
                             "train in the split column")
        self.train_pairs = len(self.train)
        self.dataset = IndexedPairs(self.train, self.image_size)
        self.sampler = DistinctBatchSampler([p.caption for p in self.train], batch_size,
                                            groups=[p.image for p in self.train], drop_last=True, seed=self.seed)
        self.steps_per_epoch = len(self.sampler.batches(0))

    def _init_shards(self, val_fraction, split_key, image_key, caption_key) -> None:
        if split_key is not None or image_key is not None or caption_key is not None:
            raise ValueError("tar shards pair an image with the .txt of the same name: split_key, image_key and "
                             "caption_key are for CSV/TSV and JSONL files (hold shards out with val_fraction)")
        shards = expand_braces(self.data)
        held = max(1, round(val_fraction * len(shards))) if val_fraction > 0 else 0  # whole shards, at least one
        if held >= len(shards):
            raise ValueError(f"val_fraction={val_fraction} holds out all {len(shards)} shards of {self.data}; hold "
                             "out fewer, or give more shards")
        self.heldout_shards, train_shards = shards[len(shards) - held:], shards[:len(shards) - held]
        if len(train_shards) < self.world_size:
            raise ValueError(f"{len(train_shards)} training shards cannot be shared by {self.world_size} processes "
                             "without reading a pair twice: give at least one shard per process")
        sizes = shard_sizes(train_shards)
        mine = list(range(self.rank, len(train_shards), self.world_size))  # this process's shards, every epoch
        self.shards, self.sizes = [train_shards[i] for i in mine], [sizes[i] for i in mine]
        self.train_pairs = sum(sizes)
        if self.train_pairs == 0:
            raise ValueError(f"the shards {self.data} hold no sample with both an image and a .txt caption (members "
                             "sharing a base name: 000017.jpg and 000017.txt)")
        per_process = [sum(sizes[rank::self.world_size]) for rank in range(self.world_size)]
        self.steps_per_epoch = min(per_process) // self.local_batch  # every process takes as many steps

    def _probe(self) -> None:
        """Decode the first images; if none is usable, the data set is refused now rather than after an epoch."""
        items = list(itertools.islice(self.items(0, 0, workers=0), PROBE))
        if items and all(image is None for image, _, _ in items):
            reasons = Counter(problem.partition(": ")[0] for _, _, problem in items)
            raise ValueError(f"none of the first {len(items)} training pairs of {self.data} can be used ("
                             + ", ".join(f"{n} {reason}" for reason, n in reasons.items())
                             + "): are these image files PIL can open?")

    def fingerprint(self) -> dict:
        """What a checkpoint stores of the data, so a resume on changed data is refused instead of misplaced."""
        return {"train_pairs": self.train_pairs, "steps_per_epoch": self.steps_per_epoch}

    # ---- training stream
    def items(self, epoch: int, position: int, workers: int | None = None) -> Iterator[Item]:
        """This process's samples of `epoch` from step `position` on: `local_batch` per step, in a fixed order."""
        workers = self.workers if workers is None else workers
        skip = position * self.local_batch
        if self.kind == "shards":
            stream = ShardStream(self.shards, self.sizes, self.image_size, self.seed, epoch, skip)
            loader = DataLoader(stream, batch_size=None, num_workers=workers, worker_init_fn=_leave_signals_to_training)
        else:
            mine = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
            order = [i for batch in self.sampler.batches(epoch)[position:] for i in batch[mine]]
            loader = DataLoader(self.dataset, batch_size=None, sampler=order, num_workers=workers,
                                worker_init_fn=_leave_signals_to_training)
        return iter(loader)

    def batches(self, epoch: int, position: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
        """(images uint8 (n, S, S, 3), captions) per step from `position` to the end of `epoch`, n <= local_batch:
        unusable samples are left out of their batch and counted in `problems`."""
        stream = self.items(epoch, position)
        for _ in range(position, self.steps_per_epoch):
            images, captions = [], []
            for image, caption, problem in itertools.islice(stream, self.local_batch):
                if problem is None:
                    images.append(image)
                    captions.append(caption)
                elif epoch == 0:  # the same samples fail every epoch: count them once
                    reason, _, name = problem.partition(": ")
                    self.problems.add(reason, Path(name).name)
            empty = torch.empty(0, self.image_size, self.image_size, 3, dtype=torch.uint8)
            yield (torch.stack(images) if images else empty), captions

    def warn_problems(self, all_reduce=None) -> None:
        """The one warning about unusable samples (index checks and decoding), summed over processes by
        `all_reduce` (a function on a tensor, in place) when given; later calls do nothing."""
        if self.problems.warned:
            return
        self.problems.warned = True
        reasons = sorted(set(self.problems.counts) | {"missing file", "unreadable image", "empty caption"})
        counts = torch.tensor([float(self.problems.counts[r]) for r in reasons])
        if all_reduce is not None:
            all_reduce(counts)
        total = Counter({r: int(n) for r, n in zip(reasons, counts.tolist()) if n})
        if total and self.rank == 0:
            warnings.warn(self.problems.message(counts=total), stacklevel=3)

    def tokenizer_corpus(self) -> list[str]:
        """Training captions to learn the vocabulary from (at most TOKENIZER_SAMPLE, in the data's order)."""
        if self.kind != "shards":
            return [p.caption for p in self.train[:TOKENIZER_SAMPLE]]
        captions = []
        for shard in self._all_train_shards():  # the same list in every process: the same vocabulary
            with tarfile.open(shard, "r:*") as tar:
                for member in tar:
                    if member.isfile() and _split_name(member.name)[1] == "txt":
                        captions.append(tar.extractfile(member).read().decode("utf-8", errors="replace"))
                        if len(captions) >= TOKENIZER_SAMPLE:
                            return captions
                    tar.members = []
        return captions

    def _all_train_shards(self) -> list[str]:
        shards = expand_braces(self.data)
        return shards[:len(shards) - len(self.heldout_shards)]

    # ---- held out
    def heldout(self) -> tuple[torch.Tensor, list[str], list[int]] | None:
        """The held-out set (decoded once): images uint8 (N, S, S, 3), captions, caption -> image index; None if no
        part is held out. At most VAL_LIMIT images; unusable ones are left out."""
        if self._heldout is not None:
            return self._heldout or None
        if self.kind == "shards":
            stream = itertools.chain.from_iterable(
                ShardStream([s], [0], self.image_size, 0, 0) for s in self.heldout_shards)
            pairs = ((image, caption) for image, caption, problem in stream if problem is None)
            images, captions = [], []
            for image, caption in itertools.islice(pairs, VAL_LIMIT):
                images.append(image)
                captions.append(caption)
            index = list(range(len(images)))
        else:
            paths = list(dict.fromkeys(p.image for p in self.heldout_list))[:VAL_LIMIT]
            slot, images = {}, []
            for path in paths:
                image, _, problem = _read_pair(path, "x", self.image_size, path)
                if problem is None:
                    slot[path] = len(images)
                    images.append(image)
            chosen = [p for p in self.heldout_list if p.image in slot]
            captions, index = [p.caption for p in chosen], [slot[p.image] for p in chosen]
        self._heldout = (torch.stack(images), captions, index) if images else ()
        return self._heldout or None

    def validation_metrics(self, model, tokenizer) -> dict:
        """Recall@1 and @5 in both directions on the held-out pairs ({} when nothing is held out)."""
        from .evaluate import retrieval_evaluate

        heldout = self.heldout()
        if heldout is None:
            return {}
        images, captions, index = heldout
        result = retrieval_evaluate(model, tokenizer, to_model_input(images), captions, index, ks=(1, 5))
        return {f"{direction}_R@{k}": result[direction][f"R@{k}"]
                for direction in ("text_to_image", "image_to_text") for k in (1, 5)}

    def heldout_report(self, model, tokenizer) -> dict:
        """The held-out report (format_report prints it): recall@1/5/10 among the held-out images ({} if none)."""
        from .evaluate import encode_images, encode_texts, retrieval_recall

        heldout = self.heldout()
        if heldout is None:
            return {}
        images, captions, index = heldout
        similarity = encode_texts(model, tokenizer, captions) @ encode_images(model, to_model_input(images)).T
        return {"data": self.data, "lang": "your captions", "test_captions": len(captions),
                "candidate_images": len(images), "among_test_images": retrieval_recall(similarity, index)}


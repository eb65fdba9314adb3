"""Data: the shipped bilingual emoji captioning set, captions, model input, augmentation, batching and a gallery.

CLIP learns from (image, caption) pairs. minclip ships a real, small set in `data/emoji/`: 3,655 emoji rendered at
64x64 from Noto Color Emoji, each with an English and a Korean name and keywords from Unicode CLDR
(data/README.md tells how it is built, split and licensed). This module turns it into tensors:

    load_emoji()          verified records + uint8 images (N, S, S, 3), cached per image size
    load_artist()         the same emoji drawn by another artist (ARTISTS): images + which rows it draws
    EmojiDataset          a torch Dataset of (image uint8 (S, S, 3), caption str) for one split and language;
                          training captions come from a few templates, evaluation captions are the plain name;
                          with several artists, each emoji shows one of its drawings per epoch
    to_model_input        uint8 (N, H, W, 3) -> normalised float (N, 3, H, W), what the vision tower takes
    augment               random small shifts and mirror images that never contradict the caption
    DistinctBatchSampler  batches in which no caption and no image appears twice (no false negatives)

Everything after `EmojiDataset` works for any dataset that returns (uint8 image (H, W, 3), caption str), such as
`minclip.shapes`. Normalisation uses OpenAI CLIP's channel mean and std (clip/clip.py `_transform`) so that the same
input also feeds imported OpenAI weights.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from .model import CLIP_MEAN, CLIP_STD  # OpenAI CLIP's per-channel image statistics, defined with the model

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "emoji"  # the shipped set, beside the package
SHIPPED_SIZE = 64  # images_64.npz holds (N, 64, 64, 3); smaller sizes are made from it at load time
# The artists whose drawings of the same emoji ship in data/emoji/ (images_64_<artist>.npz beside Noto's
# images_64.npz), for training on some and testing on an unseen one. fluent and fluent_color are two styles of one
# design (Microsoft's Fluent Emoji): hold both out together when testing on an unseen artist.
ARTISTS = ("noto", "openmoji", "fluent", "fluent_color", "emojione")
DATASETS = ("emoji", "shapes")  # the shipped sets (emoji here, shapes in shapes.py); any other data is a path
SPLITS = ("train", "val", "test")  # the splits of both shipped sets (the emoji set can also be read whole: "all")
EMOJI_SPLITS = (*SPLITS, "all")
CAPTION_LANGS = ("en", "ko")  # the languages every shipped caption is written in
LANGS = (*CAPTION_LANGS, "both")  # a data set's `lang`: one of them, or both (a language per image and epoch)

REBUILD_HINT = (
    "restore the shipped files with `git checkout -- data/emoji` or rebuild them with "
    "`python data/build_emoji.py` (see data/README.md)"
)

# Training caption templates. Every template contains the name, so each caption identifies its image; keywords
# and the group add variety. {keywords} is 1-3 keywords that do not repeat the name.
TEMPLATES = {
    "en": (
        "{name}",
        "an emoji of {name}",
        "a picture of {name}",
        "{name}, {keywords}",
        "an emoji of {name}: {keywords}",
        "{name}, from the {group} group",
    ),
    "ko": (
        "{name}",
        "{name} 이모지",
        "{name} 그림",
        "{name}, {keywords}",
        "{name} 이모지: {keywords}",
        "{group} 그룹의 {name}",
    ),
}


# --------------------------------------------------------------------------------------------- loading
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(root: Path, names: Sequence[str]) -> None:
    """Check `names` in `root` against `root/SHA256SUMS`; raise naming the file and the fix if one is wrong.

    Raises FileNotFoundError for a missing file (or manifest) and ValueError for a file whose SHA-256 differs.
    """
    manifest = root / "SHA256SUMS"
    if not manifest.is_file():
        raise FileNotFoundError(f"checksum manifest {manifest} is missing: {REBUILD_HINT}")
    expected = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        expected[name.strip()] = digest.strip()
    for name in names:
        path = root / name
        if name not in expected:
            raise ValueError(f"{manifest} has no checksum for {name}: {REBUILD_HINT}")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {REBUILD_HINT}")
        actual = _sha256(path)
        if actual != expected[name]:
            raise ValueError(
                f"{path} is corrupt or modified: SHA-256 {actual[:16]}... but {manifest.name} expects "
                f"{expected[name][:16]}...; {REBUILD_HINT}"
            )


@functools.lru_cache(maxsize=4)
def _load_verified(root: str, manifest_text: str) -> tuple[tuple[dict, ...], torch.Tensor]:
    # Keyed by the manifest's text, so a rebuilt set is loaded again; verification runs once per version.
    path = Path(root)
    verify_files(path, ["captions.jsonl", f"images_{SHIPPED_SIZE}.npz"])
    with open(path / "captions.jsonl", encoding="utf-8") as f:
        records = tuple(json.loads(line) for line in f)
    with np.load(path / f"images_{SHIPPED_SIZE}.npz") as npz:
        images = torch.from_numpy(npz["images"])  # (N, 64, 64, 3) uint8
    if images.shape != (len(records), SHIPPED_SIZE, SHIPPED_SIZE, 3) or images.dtype != torch.uint8:
        raise ValueError(f"{path} holds images {tuple(images.shape)} {images.dtype} for {len(records)} records")
    return records, images


@functools.lru_cache(maxsize=8)
def _resized(root: str, manifest_text: str, size: int) -> torch.Tensor:
    return resize_images(_load_verified(root, manifest_text)[1], size)


def _cache_key(image_size: int, root: str | Path | None) -> tuple[str, str]:
    """Check the arguments; return (resolved root, manifest text), the key of the caches."""
    if not isinstance(image_size, int) or not 1 <= image_size <= SHIPPED_SIZE:
        raise ValueError(f"image_size must be an int in 1..{SHIPPED_SIZE} (the shipped size), got {image_size!r}")
    root = Path(root) if root is not None else DATA_DIR
    manifest = root / "SHA256SUMS"
    if not manifest.is_file():
        raise FileNotFoundError(f"checksum manifest {manifest} is missing: {REBUILD_HINT}")
    return str(root.resolve()), manifest.read_text(encoding="utf-8")


def _shared(image_size: int, root: str | Path | None) -> tuple[tuple[dict, ...], torch.Tensor]:
    """The cached records and images (shared between callers: never modify them in place)."""
    key = _cache_key(image_size, root)
    records, images = _load_verified(*key)
    return records, (images if image_size == SHIPPED_SIZE else _resized(*key, image_size))


def load_emoji(image_size: int = SHIPPED_SIZE, root: str | Path | None = None) -> tuple[list[dict], torch.Tensor]:
    """All records and images of the shipped emoji set, checked against SHA256SUMS (cached per size).

    Returns (records, images): `records[i]` is the dict of line i of captions.jsonl (emoji, name_en, name_ko,
    keywords_en, keywords_ko, group, subgroup, group_ko, base, family, tones, gender, split, holdout, duplicate_of,
    duplicate_group, ...; data/README.md lists them) and `images[i]` its uint8 image (image_size, image_size, 3).
    A missing file raises FileNotFoundError, a changed one ValueError, both naming the file and the fix.

        >>> records, images = load_emoji(32)
        >>> len(records), tuple(images.shape), records[0]["name_en"]
        (3655, (3655, 32, 32, 3), 'grinning face')
    """
    records, images = _shared(image_size, root)
    return [dict(r) for r in records], images.clone()


@functools.lru_cache(maxsize=8)
def _load_artist_verified(root: str, manifest_text: str, artist: str) -> tuple[torch.Tensor, torch.Tensor]:
    records = _load_verified(root, manifest_text)[0]  # the rows the artist's images must match
    name = f"images_{SHIPPED_SIZE}_{artist}.npz"
    verify_files(Path(root), [name])
    with np.load(Path(root) / name) as npz:
        images, present = torch.from_numpy(npz["images"]), torch.from_numpy(npz["present"])  # (N, 64, 64, 3), (N,)
    if (images.shape != (len(records), SHIPPED_SIZE, SHIPPED_SIZE, 3) or images.dtype != torch.uint8
            or present.shape != (len(records),) or present.dtype != torch.bool):
        raise ValueError(f"{name} holds images {tuple(images.shape)} {images.dtype} and present "
                         f"{tuple(present.shape)} {present.dtype} for {len(records)} records")
    return images, present


@functools.lru_cache(maxsize=8)
def _artist_resized(root: str, manifest_text: str, artist: str, size: int) -> torch.Tensor:
    return resize_images(_load_artist_verified(root, manifest_text, artist)[0], size)


def load_artist(artist: str, image_size: int = SHIPPED_SIZE,
                root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped emoji as drawn by one artist, row for row with `load_emoji`'s records (cached per size).

    Returns (images, present): `images[i]` uint8 (image_size, image_size, 3) is the artist's drawing of records[i],
    `present[i]` bool says whether the artist draws it at all (a missing row is white, never another emoji). "noto"
    is the set of `load_emoji`, with every row present. The files are checked against SHA256SUMS like load_emoji's;
    data/README.md lists the artists, their licences and how many emoji each draws.

        >>> images, present = load_artist("fluent", 32)
        >>> tuple(images.shape), int(present.sum())     # Fluent Emoji has no country flags, among others
        ((3655, 32, 32, 3), 3025)
    """
    if artist not in ARTISTS:
        raise ValueError(f"artist must be one of {ARTISTS}, got {artist!r}")
    if artist == "noto":
        records, images = _shared(image_size, root)
        return images.clone(), torch.ones(len(records), dtype=torch.bool)
    key = _cache_key(image_size, root)
    images, present = _load_artist_verified(*key, artist)
    if image_size != SHIPPED_SIZE:
        images = _artist_resized(*key, artist, image_size)
    return images.clone(), present.clone()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale uint8 images (N, H, W, 3) -> (N, size, size, 3) by area averaging (each output pixel is the mean
    of the input pixels it covers; exact for integer factors such as 64 -> 32, no aliasing of thin lines)."""
    x = images.permute(0, 3, 1, 2).contiguous().float()  # (N, 3, H, W)
    x = F.interpolate(x, size=(size, size), mode="area")  # (N, 3, size, size)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (N, size, size, 3)


# --------------------------------------------------------------------------------------------- captions
def make_caption(record: dict, lang: str, rng: random.Random, name_override: str | None = None) -> str:
    """One training caption for a record in `lang` ('en' or 'ko'), with a template and keywords drawn from `rng`.

    `name_override` writes another name in the record's place, everything else drawn as for the record: a hard
    negative caption that differs from the true one only in the name (minclip/foils.py swaps in a sibling's).

        >>> rec = {"name_en": "red heart", "keywords_en": ["emotion", "heart", "love", "red heart"],
        ...        "group": "Smileys & Emotion"}
        >>> [make_caption(rec, "en", random.Random(seed)) for seed in (0, 1, 5)]
        ['red heart, emotion, love', 'an emoji of red heart', 'an emoji of red heart: love, emotion']

    Keywords contained in the name ("heart", "red heart") are left out: they would only repeat it.
    """
    name = record[f"name_{lang}"]
    group = record["group"].lower() if lang == "en" else record["group_ko"]
    keywords = [k for k in record[f"keywords_{lang}"] if k.lower() not in name.lower()]
    templates = TEMPLATES[lang] if keywords else [t for t in TEMPLATES[lang] if "{keywords}" not in t]
    template = rng.choice(templates)
    chosen = rng.sample(keywords, rng.randint(1, min(3, len(keywords)))) if "{keywords}" in template else []
    written = name if name_override is None else name_override
    return template.format(name=written, keywords=", ".join(chosen), group=group)


class EmojiDataset(Dataset):
    """The shipped emoji set as (image, caption) pairs for one split and language.

    Args:
        split: "train", "val", "test" (held-out compositions, see data/README.md) or "all".
        lang: "en", "ko" or "both" (training captions pick a language per image and epoch).
        image_size: side S of the returned images, 1..64 (smaller than 64: area-downscaled once, cached).
        caption_mode: "train" (templates over name, keywords and group, drawn per epoch) or "eval" (the plain name).
        seed: with `set_epoch`, fixes every training caption: caption(i) depends only on (seed, epoch, image).
        root: folder holding the shipped files (default: data/emoji next to the package).
        artists: whose drawings to use (`ARTISTS`; default Noto's alone). With several, each emoji shows one of
            its artists' drawings per epoch, drawn like its caption from (seed, epoch, emoji), so an epoch still
            holds every emoji once; emoji none of them draws are left out.

    Item i is (images[i] uint8 (S, S, 3), caption str). Whole-split tensors are attributes, so training can
    prepare everything up front: `images` uint8 (N, S, S, 3) and `captions` (list of N str), both the current
    epoch's; `epoch_images(epoch)` and `epoch_captions(epoch)` for any epoch; `records` (dicts, see `load_emoji`),
    `duplicate_groups` (equal ids = some artist's drawings are byte-identical; for `DistinctBatchSampler`), and per
    artist `artist_images` (A, N, S, S, 3) and `drawn` (A, N). The shapes set answers the same four names.

        >>> test = EmojiDataset("test", lang="ko", image_size=32, caption_mode="eval")
        >>> image, caption = test[0]
        >>> tuple(image.shape), image.dtype
        ((32, 32, 3), torch.uint8)
    """

    def __init__(self, split: str = "train", lang: str = "en", image_size: int = SHIPPED_SIZE,
                 caption_mode: str = "train", seed: int = 0, root: str | Path | None = None,
                 artists: Sequence[str] = ("noto",)):
        if split not in EMOJI_SPLITS:
            raise ValueError(f"split must be one of {EMOJI_SPLITS}, got {split!r}")
        if lang not in LANGS:
            raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
        if caption_mode not in ("train", "eval"):
            raise ValueError(f"caption_mode must be 'train' (templates) or 'eval' (plain names), got {caption_mode!r}")
        if caption_mode == "eval" and lang == "both":
            raise ValueError("evaluation captions are the plain name in one language: use lang='en' or lang='ko'")
        if isinstance(artists, str) or not artists or len(set(artists)) != len(artists) \
                or not set(artists) <= set(ARTISTS):
            raise ValueError(f"artists must be a non-empty list of distinct names from {ARTISTS}, got {artists!r}")
        records, _ = _shared(image_size, root)
        drawings = [load_artist(artist, image_size, root) for artist in artists]  # [(images, present)] per artist
        drawn = torch.stack([present for _, present in drawings])  # (A, N_all) bool
        keep = [i for i, r in enumerate(records) if (split == "all" or r["split"] == split) and drawn[:, i].any()]
        self.split, self.lang, self.image_size, self.caption_mode, self.seed = split, lang, image_size, caption_mode, seed
        self.records = [dict(records[i]) for i in keep]
        self.artists = tuple(artists)
        self.artist_images = torch.stack([images[keep] for images, _ in drawings])  # (A, N, S, S, 3) uint8
        self.drawn = drawn[:, keep]  # (A, N): which artist draws which item
        self.duplicate_groups = self._identical_drawings()
        self.epoch = 0
        self._orders: tuple[int, list[list[int]]] | None = None  # (epoch, _artist_orders(epoch)), the last asked for
        self._captions: tuple[int, list[str]] | None = None  # (epoch, epoch_captions(epoch)), the last asked for

    def __len__(self) -> int:
        return len(self.records)

    def _identical_drawings(self) -> list[int]:
        """A group id per item; items share one if some artist draws them pixel for pixel alike (Noto: the flags of
        Norway and Svalbard; OpenMoji: "farmer" and "man farmer"), directly or through a chain of such pairs."""
        group = list(range(len(self)))

        def root(i: int) -> int:
            while group[i] != i:
                i = group[i]
            return i

        for images, drawn in zip(self.artist_images, self.drawn):
            first: dict[bytes, int] = {}
            for i in drawn.nonzero().flatten().tolist():
                j = first.setdefault(images[i].numpy().tobytes(), i)
                group[root(i)] = root(j)
        return [self.records[root(i)]["index"] for i in range(len(self))]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        artist = self.artist_of()[i] if len(self.artists) > 1 else 0
        return self.artist_images[artist, i], self.caption(i)

    @property
    def images(self) -> torch.Tensor:
        """uint8 (N, S, S, 3): every item's drawing at the current epoch (with one artist, always that artist's)."""
        return self.epoch_images()

    def artist_of(self, epoch: int | None = None, view: int = 0) -> torch.Tensor:
        """(N,) long: which of `artists` draws each item at `epoch` (default: the current one).

        View v takes the v-th artist of each item's `_artist_orders(epoch)`, so views 0 and 1 of an item show two
        different artists wherever two draw it.
        """
        if len(self.artists) == 1:
            return torch.zeros(len(self), dtype=torch.long)
        return torch.tensor([order[view % len(order)] for order in self._artist_orders(epoch)])

    def _artist_orders(self, epoch: int | None = None) -> list[list[int]]:
        """Per item, the artists that draw it (indices into `artists`) in a random order seeded by (seed, epoch,
        emoji). Kept for the last epoch asked for: every view and every batch of an epoch reads the same orders."""
        epoch = self.epoch if epoch is None else epoch
        if self._orders is None or self._orders[0] != epoch:
            orders = []
            for i, record in enumerate(self.records):
                artists = self.drawn[:, i].nonzero().flatten().tolist()
                rng = random.Random(f"{self.seed}:{epoch}:{record['index']}:artist")
                orders.append(rng.sample(artists, len(artists)))
            self._orders = (epoch, orders)
        return self._orders[1]

    def anchored_artists(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) long twice, an anchored pair of artists per item at `epoch`: the first of `artists` wherever it draws
        the item (else view 0's artist), and another artist that draws it (view 0 or 1 of `artist_of`, whichever is
        not the first; the same artist twice only where no other draws the item)."""
        view0, view1 = self.artist_of(epoch, 0), self.artist_of(epoch, 1)  # (N,) each, different where two draw
        first = torch.where(self.drawn[0], torch.zeros_like(view0), view0)  # (N,)
        return first, torch.where(view0 != first, view0, view1)

    def drawings(self, artists: torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3): item i drawn by `artists[i]` (an index into `artists`)."""
        return self.artist_images[artists, torch.arange(len(self))]

    def epoch_images(self, epoch: int | None = None, view: int = 0) -> torch.Tensor:
        """uint8 (N, S, S, 3): each item's drawing at `epoch` (default: the current one) in `view` (`artist_of`)."""
        if len(self.artists) == 1:
            return self.artist_images[0]
        return self.drawings(self.artist_of(epoch, view))  # (N, S, S, 3)

    def set_epoch(self, epoch: int) -> None:
        """Draw training captions for `epoch` from now on (call it, like DistributedSampler's, every epoch)."""
        self.epoch = epoch

    def caption(self, i: int, epoch: int | None = None) -> str:
        """The caption of item i at `epoch` (default: the current one)."""
        record = self.records[i]
        if self.caption_mode == "eval":
            return record[f"name_{self.lang}"]
        epoch = self.epoch if epoch is None else epoch
        rng = random.Random(f"{self.seed}:{epoch}:{record['index']}")  # the same image gets the same caption
        lang = self.lang if self.lang != "both" else rng.choice(CAPTION_LANGS)
        return make_caption(record, lang, rng)

    @property
    def captions(self) -> list[str]:
        """Every item's caption at the current epoch, in item order (a list, like the shapes set's `captions`)."""
        return self.epoch_captions()

    def epoch_captions(self, epoch: int | None = None) -> list[str]:
        """Every item's caption at `epoch` (default: the current one), in item order: what a sampler or a training
        loop asks for, since training captions change from epoch to epoch."""
        epoch = self.epoch if epoch is None else epoch
        if self._captions is None or self._captions[0] != epoch:  # the sampler and the batches both ask, once each
            self._captions = (epoch, [self.caption(i, epoch) for i in range(len(self))])
        return list(self._captions[1])


# --------------------------------------------------------------------------------------------- model input
# Inputs are normalised with OpenAI CLIP's channel statistics (CLIP_MEAN, CLIP_STD). The emoji set's own are
# mean (0.80, 0.75, 0.71), std (0.30, 0.30, 0.35) (white backgrounds), so its inputs centre near +1.2 rather than 0;
# ln_pre after the patch embedding absorbs that, and keeping OpenAI's values lets the same tensors feed pretrained
# OpenAI weights. Pass mean/std to `to_model_input` to use others.
def to_model_input(images: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                   std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> float32 (N, 3, H, W), scaled to 0..1 and normalised per channel.

        >>> x = to_model_input(torch.full((2, 4, 4, 3), 255, dtype=torch.uint8))
        >>> tuple(x.shape), round(x[0, 0, 0, 0].item(), 4)   # (1 - 0.4815) / 0.2686
        ((2, 3, 4, 4), 1.9303)
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[-1] != 3:
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor (N, H, W, 3), got {got}; stack single images with "
                         "torch.stack and convert numpy arrays with torch.from_numpy")
    # One new tensor, then in-place arithmetic: each fresh tensor of a batch costs page faults, more than the maths.
    x = images.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)  # (N, 3, H, W)
    mean = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return x.div_(255).sub_(mean).div_(std)


def from_model_input(x: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                     std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """The inverse of `to_model_input`: float (N, 3, H, W) -> uint8 (N, H, W, 3), for looking at batches."""
    mean = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x.detach() * std + mean) * 255
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (N, H, W, 3)


# --------------------------------------------------------------------------------------------- augmentation
# A mirror image contradicts a caption that names a side or a direction, and garbles text, digits, clock hands and
# flags. English words are matched whole; Korean ones anywhere in a word, since particles attach to them (왼쪽으로).
_NO_FLIP_EN = re.compile(
    r"\b(left|right|leftwards?|rightwards?|arrows?|clockwise|anticlockwise|counterclockwise|clocks?|thirty"
    r"|keycaps?|letters?|input|latin|buttons?|flags?|signs?|symbols?|numbers?|question|dollar|yen|euro|pound|currency"
    r"|copyright|registered|trade|zzz|hundred|calendar|newspaper|reverse|forward|backward|facing)\b|\d",
    re.IGNORECASE,
)
_NO_FLIP_KO = re.compile(
    r"왼쪽|오른쪽|좌우|[좌우상하][상하]?향|화살|뒤로|시계|(^|\s)[시곧](\s|$|:|,)|깃발|국기|키 캡|버튼|기호|표시|숫자"
    r"|문자|알파벳|편지|물음표|느낌표|상표|저작권|달력|신문|달러|유로|파운드|엔화|종료|켜짐"
)


@functools.lru_cache(maxsize=1 << 16)  # training asks about the same captions every epoch
def flip_allowed(caption: str) -> bool:
    """Whether a horizontal mirror image still fits `caption` (no sides, directions, text, digits, clocks, flags).

        >>> flip_allowed("grinning face"), flip_allowed("backhand index pointing left"), flip_allowed("왼쪽 말풍선")
        (True, False, False)
    """
    return not (_NO_FLIP_EN.search(caption) or _NO_FLIP_KO.search(caption))


def augment(images: torch.Tensor, captions: Sequence[str], max_shift: int = 2, flip: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Caption-respecting augmentation of uint8 images (B, H, W, 3) -> (B, H, W, 3).

    Each image is shifted by up to `max_shift` pixels in x and y (the border pixels are repeated into the gap,
    which is the white background for emoji) and, if `flip` and `flip_allowed(caption)`, mirrored left-right with
    probability 1/2. Shifts keep relative positions, so relations such as "left of" stay true.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {tuple(images.shape)} {images.dtype}")
    if len(captions) != len(images):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions")
    B, H, W, _ = images.shape
    m = max(0, max_shift)
    padded = _replicate_pad(images, m)  # (B, H+2m, W+2m, 3)
    dy, dx = torch.randint(0, 2 * m + 1, (2, B), generator=generator).tolist() if m > 0 else ([0] * B, [0] * B)
    mirror = [False] * B
    if flip:
        coin = (torch.rand(B, generator=generator) < 0.5).tolist()
        mirror = [c and flip_allowed(t) for c, t in zip(coin, captions)]
    crops = [padded[b, dy[b]:dy[b] + H, dx[b]:dx[b] + W] for b in range(B)]  # views, (H, W, 3) each
    return torch.stack([crop.flip(1) if mirrored else crop for crop, mirrored in zip(crops, mirror)])  # W: dim 1


def restyle(images: torch.Tensor, min_scale: float = 0.7, min_side: int = 24,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Two habits that differ between emoji artists, varied at random: uint8 (B, H, W, 3) -> (B, H, W, 3).

    Each drawing is shrunk about the centre to a random `min_scale`..1 of its size (OpenMoji's drawings fill 78 % of
    the frame, Noto's 94 %), the border pixels filling the gap; then the whole batch passes through one random lower
    resolution `min_side`..H and back, which softens outlines and fine detail the way a plainer style would. Colours
    are kept (a red heart stays red, a skin tone stays that tone), so every caption stays true.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (B, H, W, 3), got {tuple(images.shape)} {images.dtype}")
    B, H, W, _ = images.shape
    x = images.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    scale = min_scale + (1 - min_scale) * torch.rand(B, generator=generator)  # (B,)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale  # output pixel -> input point: reading further out shrinks
    grid = F.affine_grid(theta, [B, 3, H, W], align_corners=False)  # (B, H, W, 2)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, 3, H, W)
    side = int(torch.randint(min(min_side, H), H + 1, (1,), generator=generator))
    if side < H:
        x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)  # (B, 3, s, s)
        x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)  # (B, 3, H, W)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # (B, H, W, 3)


def _replicate_pad(images: torch.Tensor, m: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, H+2m, W+2m, C), the edge pixels repeated outwards (uint8 in, uint8 out, no float copy)."""
    if m == 0:
        return images
    rows = torch.cat([images[:, :1].expand(-1, m, -1, -1), images, images[:, -1:].expand(-1, m, -1, -1)], dim=1)
    return torch.cat([rows[:, :, :1].expand(-1, -1, m, -1), rows, rows[:, :, -1:].expand(-1, -1, m, -1)], dim=2)


# --------------------------------------------------------------------------------------------- batching
def _normalise(caption: str) -> str:
    return " ".join(caption.casefold().split())  # "Red  Heart" and "red heart" are one caption to the model


class DistinctBatchSampler(Sampler[list[int]]):
    """Shuffled batches of indices in which no two items share a caption or an image group.

    The contrastive loss treats every other pair in a batch as a negative; two equal captions (or two identical
    images, e.g. the flags of Norway and Svalbard) in one batch would be false negatives. The sampler makes
    ceil(N / batch_size) batches and fills them in a seeded random order, each item going to the first batch that
    has room and holds neither its caption nor its group. Items whose caption or group is shared go first, so
    they spread over different batches; a class larger than the number of batches opens extra ones.

    Args:
        captions: the captions, or a function epoch -> captions (e.g. `dataset.epoch_captions`) when they change
            per epoch.
        batch_size: at most this many items per batch; all batches are full except the last (or extra ones).
        groups: optional group id per item (e.g. `dataset.duplicate_groups`); items with equal ids never share a batch.
        families: optional family label per item (e.g. the base emoji of its skin-tone and gender variants). The
            shuffled order then keeps each family together, so batches hold siblings: *hard negatives* that the
            loss can only tell apart by the detail that differs (a tone, a gender), where random batches mostly
            hold easy negatives that differ in everything.
        shuffle, seed: a new seeded order per epoch (`set_epoch`), else index order.
        drop_last: leave out batches smaller than batch_size.

        >>> sampler = DistinctBatchSampler(["a cat", "a cat", "a dog", "A  Cat"], batch_size=2, shuffle=False)
        >>> list(sampler)
        [[0, 2], [1], [3]]
    """

    def __init__(self, captions: Sequence[str] | Callable[[int], Sequence[str]], batch_size: int,
                 groups: Sequence | None = None, shuffle: bool = True, drop_last: bool = False, seed: int = 0,
                 families: Sequence | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.captions, self.batch_size, self.groups, self.families = captions, batch_size, groups, families
        self.shuffle, self.drop_last, self.seed, self.epoch = shuffle, drop_last, seed, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of `epoch` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        captions = self.captions(epoch) if callable(self.captions) else self.captions
        n, size = len(captions), self.batch_size
        for name in ("groups", "families"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"got {n} captions but {len(getattr(self, name))} {name}")
        keys = [(("caption", _normalise(c)),) + ((("group", self.groups[i]),) if self.groups is not None else ())
                for i, c in enumerate(captions)]
        class_size = collections.Counter(k for item_keys in keys for k in item_keys)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        if self.families is not None:  # each family contiguous, families in the order of their first member
            members: dict = {}
            for i in order:
                members.setdefault(self.families[i], []).append(i)
            order = [i for family in members.values() for i in family]
        order.sort(key=lambda i: -max(class_size[k] for k in keys[i]))  # stable: random order within a class size
        n_batches = -(-n // size)
        capacity = [size] * (n_batches - 1) + [n - size * (n_batches - 1)] if n else []
        batches = [[] for _ in capacity]
        used = [set() for _ in capacity]
        first_open = 0  # batches before it are full
        for i in order:
            for b in range(first_open, len(batches)):
                if len(batches[b]) < capacity[b] and used[b].isdisjoint(keys[i]):
                    break
            else:  # every batch is full or conflicts: open another one
                b = len(batches)
                batches.append([]), used.append(set()), capacity.append(size)
            batches[b].append(i)
            used[b].update(keys[i])
            while first_open < len(batches) and len(batches[first_open]) == capacity[first_open]:
                first_open += 1
        batches = [b if self.shuffle else sorted(b) for b in batches if b]
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        self._cache = (epoch, batches)
        return batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


# --------------------------------------------------------------------------------------------- fonts
FONT_KO = DATA_DIR / "font_ko.ttf"  # Hangul subset of an OFL font (matplotlib's own fonts have no Hangul)

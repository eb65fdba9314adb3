"""Build the bilingual emoji captioning set shipped in data/emoji/ from public sources.

    python data/build_emoji.py                 # fetch sources into /tmp, build, write data/emoji/
    python data/build_emoji.py --sources DIR   # reuse (or fill) a sources folder outside the repo
    python data/build_emoji.py --artists-only  # keep the shipped captions and Noto images, redo the other artists

What it does, step by step (data/README.md explains the choices):
  1. fetch   Debian bookworm packages with `apt-get download` + `dpkg -x` (no install) and npm packages with
             `npm pack` (emojibase-data and the other artists' SVGs); every archive is checked against a pinned
             SHA-256 (architecture-specific .debs against a pinned version).
  2. list    the 3,655 fully-qualified emoji of Unicode's emoji-test.txt (Emoji 15.0), in its order, with group
             and subgroup.
  3. name    English and Korean names (CLDR `type="tts"`) and keywords from Unicode CLDR 41 annotations and
             annotationsDerived; the 31 emoji new in 15.0 (absent from CLDR 41) from emojibase-data 17.0.0.
  4. render  each emoji with Pillow from Noto Color Emoji (a CBDT colour-bitmap font: size 109,
             embedded_color=True, RAQM layout so ZWJ sequences, flags and skin tones shape to one glyph), cut with
             ONE fixed 128x128 box for all emoji (no per-emoji tight crop, so "small" vs "large" stays visible),
             composite on white, LANCZOS downscale to 64x64.
  5. check   every emoji is one glyph (same advance as a single emoji, different from the missing-glyph box),
             names and keywords exist in both languages, names are unique; find exact duplicate images.
  6. split   train / val / test by held-out compositions (skin tone per base, gender x role, colour x shape,
             clock times) such that every word of a held-out name still appears in training names; exact
             duplicates never leave train.
  7. write   captions.jsonl, images_64.npz (byte-reproducible), font_ko.ttf (a renamed Hangul subset of an OFL
             font for the gallery).
  8. artists the same emoji drawn by OpenMoji, Microsoft's Fluent Emoji (Flat and Color) and EmojiOne 2: their SVGs
             matched to the rows by code points (with or without U+FE0F and U+200D), each drawn whole (its viewBox,
             no per-emoji crop) at 256x256 by rsvg-convert, composited on white, LANCZOS downscale to 64x64. One
             images_64_<artist>.npz per artist with `images` (N, 64, 64, 3) and `present` (N,): a row the artist
             lacks is white and absent, never another emoji. Then LICENSE.md and SHA256SUMS.

Needs: Debian/Ubuntu's apt-get and dpkg (run `apt-get update` once), npm, and Python with numpy and Pillow built
with RAQM (Pillow's wheels are). fontTools comes from the Debian package python3-fonttools and rsvg-convert from
librsvg2-bin and librsvg2-2, unpacked like the rest; rsvg-convert loads librsvg's own dependencies (cairo, pango,
...) from the system, as a Debian bookworm install of librsvg2-2 has them.
Not run by CI; the outputs are committed.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import logging
import re
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

OUT_DEFAULT = Path(__file__).resolve().parent / "emoji"
SOURCES_DEFAULT = Path("/tmp/minclip-emoji-sources")

# Debian bookworm packages: name -> (version, SHA-256 of the .deb). None: architecture-specific, version pin only.
DEBIAN = {
    "fonts-noto-color-emoji": ("2.042-0+deb12u1", "a5ab0f69c7938423862320d9aca5dd187b3fd879d6a9a57dd52e17c3fa8d2751"),
    "unicode-data": ("15.0.0-1", "5efef23bbb1c6a133ecbdd63a2cfa07159ccacf5466a49e2426101c5ecd691fc"),
    "unicode-cldr-core": ("41-0.1", "35d30d5d3bee4d8244e95236259c4c2a0db06e21bad696515751fcfeee4d0260"),
    "fonts-nanum": ("20200506-1", "5e86c346e6485b694e1f0ebd27132892fcf014d1b975de4fd21d1654ddf37043"),
    "python3-fonttools": ("4.38.0-1+deb12u1", None),  # build tool only: subsets the Hangul font
    "librsvg2-bin": ("2.54.7+dfsg-1~deb12u1", None),  # build tool only: rsvg-convert rasterises the artists' SVGs
    "librsvg2-2": ("2.54.7+dfsg-1~deb12u1", None),  # its library, pinned too (run from the unpacked folder)
}
# npm packages: name -> (version, SHA-256 of the tarball, folders/files to unpack (None: all)).
NPM = {
    "emojibase-data": ("17.0.0", "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a", None),
    "openmoji": ("17.0.0", "55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68",
                 ("package/color/svg/", "package/LICENSE.txt", "package/package.json")),
    "@iconify-json/fluent-emoji-flat": ("1.2.6", "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
                                        None),
    "@iconify-json/fluent-emoji": ("1.2.7", "8044210dbf11e016d4de85f15d01a243423bd832457e7e2491df1b751c0e272b", None),
    "emojione": ("2.2.7", "5fe002738e6e276f49ac37783799d2feab99a6131fdedccfa56569d745449ae5",
                 ("package/assets/svg/", "package/LICENSE.md", "package/package.json")),  # 94 MB: only the SVGs
}

IMAGE_SIZE = 64  # shipped resolution; smaller sizes are made at load time
FONT_SIZE = 109  # the only strike size of Noto Color Emoji's bitmaps
CROP_BOX = (4, 0, 132, 128)  # one 128x128 box, relative to the drawing origin, that holds every glyph's ink

SKIN_TONES = {0x1F3FB: 1, 0x1F3FC: 2, 0x1F3FD: 3, 0x1F3FE: 4, 0x1F3FF: 5}  # modifier -> 1 (light) .. 5 (dark)

# Held-out colour x shape and clock emoji, by English name. The build fails if one of them would leave a word of a
# held-out name without a training example, so these lists are safe to change and rerun.
HOLDOUT_NAMES = {
    "test": {
        "colour-shape": ["yellow circle", "green square", "purple heart", "large blue diamond"],
        "clock": ["three o’clock", "seven-thirty", "ten o’clock", "eleven-thirty"],
    },
    "val": {
        "colour-shape": ["orange circle", "brown square", "blue heart"],
        "clock": ["five o’clock", "one-thirty"],
    },
}

# Gender variants with their own code points (the ZWJ ones are found by rule in `neutral_names`).
GENDER_PAIRS = {
    "boy": "child", "girl": "child", "old man": "older person", "old woman": "older person",
    "prince": "person with crown", "princess": "person with crown", "Santa Claus": "mx claus", "Mrs. Claus": "mx claus",
    "pregnant man": "pregnant person", "pregnant woman": "pregnant person",
    "woman and man holding hands": "people holding hands",
}
MULTI_PERSON = ("kiss", "couple with heart", "family", "people holding hands", "handshake")

WORD = re.compile(r"[^\W_]+")  # a "word" for the coverage rule: letters/digits in any script, lowercased


def words(text: str) -> set[str]:
    """The words of a name: `words("woman firefighter: dark skin tone") == {"woman", "firefighter", ...}`."""
    return set(WORD.findall(text.lower()))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- 1. fetch sources
def fetch(sources: Path) -> Path:
    """Download and unpack the sources into `sources` (outside the repo); return the unpacked root."""
    sources.mkdir(parents=True, exist_ok=True)
    root = sources / "root"
    for name, (version, expected) in DEBIAN.items():
        pattern = f"{name}_{version.replace(':', '%3a')}_*.deb"
        if not list(sources.glob(pattern)):
            subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=sources, check=True)
        deb = sorted(sources.glob(pattern))[0]
        if expected is not None and sha256(deb) != expected:
            raise SystemExit(f"{deb} has SHA-256 {sha256(deb)}, expected {expected}: delete it and rerun")
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    for package, (version, expected, members) in NPM.items():
        tgz = sources / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"  # npm pack's file name
        if not tgz.exists():
            subprocess.run(["npm", "pack", "--loglevel=warn", f"{package}@{version}"], cwd=sources, check=True,
                           stdout=subprocess.DEVNULL)
        if sha256(tgz) != expected:
            raise SystemExit(f"{tgz} has SHA-256 {sha256(tgz)}, expected {expected}: delete it and rerun")
        with tarfile.open(tgz) as tar:
            keep = [m for m in tar.getmembers() if members is None or m.name.startswith(members)]
            tar.extractall(root / "npm" / package, members=keep, filter="data")
    return root


# --------------------------------------------------------------------------------------------- 2-3. list and name
@dataclass
class Emoji:
    emoji: str
    codepoints: str
    version: str
    group: str
    subgroup: str
    name_en: str = ""
    name_ko: str = ""
    keywords_en: list[str] = field(default_factory=list)
    keywords_ko: list[str] = field(default_factory=list)
    source: str = ""


def read_emoji_test(path: Path) -> list[Emoji]:
    """The fully-qualified emoji of emoji-test.txt in file order (CLDR order), with group and subgroup."""
    rows, group, subgroup = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codepoints = line.split(";")[0].split()
            emoji = "".join(chr(int(c, 16)) for c in codepoints)
            _, version, name = line.split("#", 1)[1].strip().split(" ", 2)
            rows.append(Emoji(emoji, " ".join(codepoints), version, group, subgroup, name_en=name))
    return rows


def read_cldr(cldr: Path, lang: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """CLDR names (`type="tts"`) and keywords keyed by the emoji with U+FE0F removed (CLDR drops it)."""
    names, keywords = {}, {}
    for sub in ("annotations", "annotationsDerived"):
        for node in ET.parse(cldr / sub / f"{lang}.xml").iter("annotation"):
            if node.get("type") == "tts":
                names[node.get("cp")] = node.text.strip()
            else:
                keywords[node.get("cp")] = [k.strip() for k in node.text.split("|") if k.strip()]
    return names, keywords


def read_emojibase(package: Path, lang: str) -> dict[str, tuple[str, list[str]]]:
    """emojibase (label, tags) keyed by emoji without U+FE0F; skin-tone entries add their tone to the base tags."""
    out = {}
    for entry in json.loads((package / lang / "data.json").read_text(encoding="utf-8")):
        tags = entry.get("tags", [])
        out[entry["emoji"].replace("\ufe0f", "")] = (entry["label"], tags)
        for skin in entry.get("skins", []):
            tone = skin["label"].split(": ", 1)[1]  # "woman health worker: medium skin tone" -> the tone words
            out[skin["emoji"].replace("\ufe0f", "")] = (skin["label"], sorted({*tags, entry["label"], tone}))
    return out


def add_names(rows: list[Emoji], root: Path) -> dict[str, str]:
    """Fill names and keywords in both languages; return the Korean group names (from emojibase)."""
    cldr = root / "usr/share/unicode/cldr/common"
    package = root / "npm/emojibase-data/package"
    for lang in ("en", "ko"):
        names, keywords = read_cldr(cldr, lang)
        base = read_emojibase(package, lang)
        for row in rows:
            key = row.emoji.replace("\ufe0f", "")
            if key in names:
                name, kws, source = names[key], keywords.get(key, []), "cldr-41"
            elif key in base:
                (name, kws), source = base[key], "emojibase-data-17.0.0"
            else:
                raise SystemExit(f"no {lang} name for {row.emoji} ({row.codepoints}) {row.name_en}")
            if lang == "en":
                if name != row.name_en:
                    raise SystemExit(f"CLDR name {name!r} differs from emoji-test's {row.name_en!r}")
                row.keywords_en, row.source = kws, source
            else:
                row.name_ko, row.keywords_ko = name, kws
    groups = json.loads((package / "ko/messages.json").read_text(encoding="utf-8"))["groups"]
    return {g["key"]: g["message"] for g in groups}


def group_key(group: str) -> str:
    """emoji-test group -> emojibase key: "Smileys & Emotion" -> "smileys-emotion"."""
    return re.sub(r"[^a-z]+", "-", group.lower()).strip("-")


# --------------------------------------------------------------------------------------------- 4. render
def render(rows: list[Emoji], font_path: Path) -> tuple[np.ndarray, dict]:
    """Render every emoji to uint8 (N, 64, 64, 3) on white; return the images and render facts."""
    if not features.check("raqm"):
        raise SystemExit("Pillow lacks RAQM layout: ZWJ sequences would split into several glyphs")
    font = ImageFont.truetype(str(font_path), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM)
    one_glyph = font.getlength("\U0001F600")
    canvas = (CROP_BOX[2] + 8, CROP_BOX[3] + 8)

    def draw(text: str) -> Image.Image:
        rgba = Image.new("RGBA", canvas, (255, 255, 255, 0))
        ImageDraw.Draw(rgba).text((0, 0), text, font=font, embedded_color=True)
        return rgba

    missing = np.asarray(draw("\U000E0100\U0010FFFD"))  # what an unsupported code point draws (the .notdef box)
    images = np.empty((len(rows), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    full = []
    for i, row in enumerate(rows):
        if font.getlength(row.emoji) != one_glyph:
            raise SystemExit(f"{row.emoji} {row.name_en} does not shape to one glyph")
        rgba = draw(row.emoji)
        box = rgba.getbbox()
        if box is None or np.array_equal(np.asarray(rgba), missing):
            raise SystemExit(f"{row.emoji} {row.name_en} renders nothing or the missing-glyph box")
        if not (box[0] >= CROP_BOX[0] and box[1] >= CROP_BOX[1] and box[2] <= CROP_BOX[2] and box[3] <= CROP_BOX[3]):
            raise SystemExit(f"{row.emoji} {row.name_en} has ink {box} outside the crop box {CROP_BOX}")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB").crop(CROP_BOX)  # 128 x 128
        full.append(hashlib.sha256(rgb.tobytes()).hexdigest())
        images[i] = np.asarray(rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))
    facts = {"full_resolution_duplicates": len(full) - len(set(full))}
    return images, facts


def find_duplicates(images: np.ndarray) -> list[int | None]:
    """duplicate_of[i] = index of the first image byte-identical to image i, or None if i is the first."""
    first, duplicate_of = {}, []
    for i, image in enumerate(images):
        key = hashlib.sha256(image.tobytes()).hexdigest()
        duplicate_of.append(first.get(key))
        first.setdefault(key, i)
    return duplicate_of


# --------------------------------------------------------------------------------------------- 6. families, splits
def without_tones(name: str) -> str:
    """Drop the skin-tone parts of a name: "person: light skin tone, blond hair" -> "person: blond hair"."""
    head, _, tail = name.partition(": ")
    rest = [part for part in tail.split(", ") if part and not part.endswith("skin tone")]
    return f"{head}: {', '.join(rest)}" if rest else head


def neutral_names(name: str) -> list[str]:
    """Candidate gender-neutral names, best first: "woman firefighter" -> ["person firefighter", "firefighter"]."""
    if name in GENDER_PAIRS:
        return [GENDER_PAIRS[name]]
    for prefix in MULTI_PERSON:
        if name.startswith(prefix + ":"):
            return [prefix]
    if m := re.match(r"(man|woman)(?=$|[ :])(:? ?)(.*)", name):
        rest = m.group(3)
        return [f"person{m.group(2)}{rest}".strip(), rest] if rest else ["person"]
    if m := re.match(r"(men|women) (.*)", name):
        return [f"people {m.group(2)}"]
    return []


def gender_of(name: str) -> str:
    """'man' / 'woman' for gendered names, '' otherwise ('person' is set later for the neutral members)."""
    if name in GENDER_PAIRS:
        return "man" if name in ("boy", "old man", "prince", "Santa Claus", "pregnant man") else (
            "" if " and " in name else "woman")
    if re.match(r"(man|men)(?=$|[ :])", name):
        return "man"
    if re.match(r"(woman|women)(?=$|[ :])", name):
        return "woman"
    return ""


def add_structure(rows: list[Emoji], records: list[dict]) -> None:
    """Fill `tones`, `base` (tone-free emoji), `family` (tone- and gender-free emoji) and `gender`."""
    by_name = {row.name_en: row.emoji for row in rows}
    for row, rec in zip(rows, records):
        rec["tones"] = [SKIN_TONES[ord(c)] for c in row.emoji if ord(c) in SKIN_TONES]
        base_name = without_tones(row.name_en) if rec["tones"] else row.name_en
        if base_name not in by_name:  # "kiss: person, person" is not a name; its tone-free form is "kiss"
            base_name = next(n for n in neutral_names(base_name) if n in by_name)
        rec["base"] = by_name[base_name]
        neutral = [n for n in neutral_names(base_name) if n in by_name]
        rec["family"] = by_name[neutral[0]] if neutral else rec["base"]
        multi = base_name.startswith(MULTI_PERSON) or base_name == "woman and man holding hands"
        rec["gender"] = "" if multi else gender_of(base_name)
    families = collections.defaultdict(set)
    for rec in records:
        families[rec["family"]].add(rec["gender"])
    for rec in records:  # the neutral member of a family with gendered members is the "person" variant
        if rec["gender"] == "" and families[rec["family"]] & {"man", "woman"} and rec["base"] == rec["family"]:
            rec["gender"] = "person"


class Splitter:
    """Assign held-out units to val/test while every word of every held-out name keeps a training example.

    A unit is a set of image indices that leaves train together (e.g. one gender variant of a role with all its
    skin tones). `counts[lang][word]` is how many training images have the word in their name; a unit is accepted
    only if, after removing it, every word of every held-out name (its own and those accepted before) is still > 0.
    """

    def __init__(self, records: list[dict]):
        self.records = records
        self.counts = {lang: collections.Counter() for lang in ("en", "ko")}
        for rec in records:
            rec["split"], rec["holdout"] = "train", ""
            for lang in ("en", "ko"):
                self.counts[lang].update(words(rec[f"name_{lang}"]))
        self.needed = {"en": set(), "ko": set()}  # words of held-out names

    def try_hold_out(self, unit: list[int], split: str, reason: str) -> bool:
        recs = [self.records[i] for i in unit]
        if any(r["split"] != "train" or r["duplicate_group"] is not None for r in recs):
            return False  # already held out, or an exact duplicate (those stay in train, see README)
        for lang in ("en", "ko"):
            removed = collections.Counter(w for r in recs for w in words(r[f"name_{lang}"]))
            needed = self.needed[lang] | {w for r in recs for w in words(r[f"name_{lang}"])}
            if any(self.counts[lang][w] - removed[w] <= 0 for w in needed):
                return False
        for lang in ("en", "ko"):
            for r in recs:
                self.counts[lang].subtract(words(r[f"name_{lang}"]))
                self.needed[lang] |= words(r[f"name_{lang}"])
        for r in recs:
            r["split"], r["holdout"] = split, reason
        return True


def assign_splits(records: list[dict]) -> None:
    """Held-out compositions -> val/test (see data/README.md); everything else is train.

    1. skin tone     every base with skin-tone variants gives one of them to test; the tone rotates with the base's
                     position so each of the five tones is held out about equally often.
    2. gender x role every other role family with several gender variants (person/man/woman) gives one variant,
                     with whatever of its tone variants is still in train, alternately to test and to val; the
                     variant rotates so all three genders get held out. All its images are then marked
                     "gender-role" (the one test tone of a variant sent to val included).
    3. skin tone     every other base gives a second tone variant to val.
    4. by name       the colour x shape and clock emoji in HOLDOUT_NAMES.
    A unit that would leave a word of a held-out name without a training example is skipped (the next candidate is
    tried); exact duplicates stay in train.
    """
    splitter = Splitter(records)
    members = collections.defaultdict(list)  # base emoji -> indices of the base and its skin-tone variants
    for r in records:
        members[r["base"]].append(r["index"])
    toned = [[i for i in idx if records[i]["tones"]] for idx in members.values()]
    toned = [idx for idx in toned if idx]

    def hold_out_one_of(candidates: list[int], start: int, split: str, reason: str) -> None:
        for j in range(len(candidates)):
            if splitter.try_hold_out([candidates[(start + j) % len(candidates)]], split, reason):
                return

    for k, idx in enumerate(toned):  # 1.
        hold_out_one_of(idx, k, "test", "skin-tone")
    role_families = collections.defaultdict(list)  # family -> its single-person bases, in image order
    for r in records:
        if r["gender"] and r["emoji"] == r["base"]:
            role_families[r["family"]].append(r["base"])
    role_families = [bases for bases in role_families.values() if len(bases) >= 2]
    for k, bases in enumerate(role_families[::2]):  # 2.
        split = "test" if k % 2 == 0 else "val"
        for j in range(len(bases)):
            base = bases[(k // 2 + j) % len(bases)]
            if splitter.try_hold_out([i for i in members[base] if records[i]["split"] == "train"], split,
                                     "gender-role"):
                for i in members[base]:  # its test tone is now a held-out gender x role composition too
                    records[i]["holdout"] = "gender-role"
                break
    for k, idx in enumerate(toned[::2]):  # 3.
        hold_out_one_of([i for i in idx if records[i]["split"] == "train"], 2 * k + 2, "val", "skin-tone")
    index_of = {r["name_en"]: r["index"] for r in records}
    for split, kinds in HOLDOUT_NAMES.items():  # 4.
        for reason, names in kinds.items():
            for name in names:
                if not splitter.try_hold_out([index_of[name]], split, reason):
                    raise SystemExit(f"holding out {name!r} would leave a word without a training example")


# --------------------------------------------------------------------------------------------- 7. write
def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed, but LZMA-compressed and byte-reproducible (a fixed zip timestamp)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_LZMA  # 9.1 MB instead of DEFLATE's 13.3 MB; np.load reads it (via zipfile)
            zf.writestr(info, buffer.getvalue())


def hangul_font(root: Path, records: list[dict], out: Path) -> int:
    """Subset NanumGothic (OFL 1.1) to the Hangul the gallery needs, renamed as the OFL's Reserved Font Names ask."""
    sys.path.insert(0, str(root / "usr/lib/python3/dist-packages"))
    from fontTools import subset
    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools").setLevel(logging.ERROR)  # it lists every table it drops

    ks_x_1001 = set()  # the 2,350 common Hangul syllables of KS X 1001, enough for most Korean text
    for lead in range(0xB0, 0xC9):
        for trail in range(0xA1, 0xFF):
            char = bytes([lead, trail]).decode("euc_kr", errors="ignore")
            if len(char) == 1 and "\uac00" <= char <= "\ud7a3":
                ks_x_1001.add(char)
    used = {c for r in records for text in (r["name_ko"], r["group_ko"], *r["keywords_ko"]) for c in text}
    chars = ks_x_1001 | used | {chr(c) for c in range(0x20, 0x7F)} | {chr(c) for c in range(0x3131, 0x318F)}
    font = TTFont(root / "usr/share/fonts/truetype/nanum/NanumGothic.ttf")
    options = subset.Options()
    options.name_IDs, options.name_languages, options.notdef_outline = ["*"], [0x409], True
    options.hinting = False  # matplotlib's FreeType renders unhinted outlines well; halves the file
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes={ord(c) for c in chars if ord(c) > 0x7F or c.isprintable()})
    subsetter.subset(font)
    names = font["name"]
    copyright_line = names.getDebugName(0)
    names.names = []
    for name_id, text in {0: copyright_line, 1: "minclip Hangul", 2: "Regular", 3: "minclip Hangul subset 1.0",
                          4: "minclip Hangul", 5: "Version 1.0", 6: "minclipHangul",
                          13: "SIL Open Font License 1.1", 14: "https://openfontlicense.org"}.items():
        names.setName(text, name_id, 3, 1, 0x409)
    font.recalcTimestamp = False  # keep the original's `modified` date, so the file is byte-reproducible
    font.save(out)
    return len(chars)


def license_text(root: Path) -> str:
    """LICENSE.md: where each part came from, what we changed, and the licence texts copied from the packages."""
    def debian_license(package: str, name: str) -> str:
        text = (root / f"usr/share/doc/{package}/copyright").read_text(encoding="utf-8")
        block = re.search(rf"^License: *{re.escape(name)}\n((?: .*\n?)+)", text, re.M).group(1)
        return "\n".join("" if line.strip() == "." else line[1:] for line in block.rstrip().splitlines())

    mit = (root / "npm/emojibase-data/package/LICENSE").read_text(encoding="utf-8").strip()
    mit_microsoft, n = re.subn(r"^Copyright .*$", "Copyright (c) Microsoft Corporation.", mit, count=1, flags=re.M)
    if n != 1:
        raise SystemExit("emojibase-data's LICENSE has no copyright line to reuse the MIT text")
    cc_by_sa = (root / "npm/openmoji/package/LICENSE.txt").read_text(encoding="utf-8").strip()
    if not cc_by_sa.startswith("Attribution-ShareAlike 4.0 International"):
        raise SystemExit("openmoji's LICENSE.txt is not the CC BY-SA 4.0 legal code")
    return f"""# Licences of the emoji captioning set

This folder is a derived work of several sources. None of them endorses minclip. The set is "the minclip emoji set";
it is not "Noto" and must not be called so. Each image file carries the licence of the artwork it is drawn from.

## Images (`images_64.npz`): SIL Open Font License 1.1

Rendered from the font Noto Color Emoji 2.042 (Debian package `fonts-noto-color-emoji` 2.042-0+deb12u1).
Font copyright line: "Copyright 2022 Google Inc." Modifications: each glyph drawn with Pillow, cut with one fixed box,
composited on white and downscaled to 64x64 pixels.

## Images by other artists (`images_64_<artist>.npz`)

The same emoji, drawn by other artists, in the rows of `captions.jsonl`. Modifications, the same for all: each SVG
drawn with rsvg-convert (librsvg 2.54.7) at 256x256 pixels, composited on white and downscaled to 64x64 pixels; rows
the artist does not draw are white and marked absent (`present`).

### `images_64_openmoji.npz`: CC BY-SA 4.0 (Creative Commons Attribution-ShareAlike 4.0 International)

All emojis designed by OpenMoji – the open-source emoji and icon project (https://openmoji.org). License: CC BY-SA
4.0. From OpenMoji 17.0.0 (npm package `openmoji` 17.0.0, `color/svg`). This file is an adaptation and is licensed
under CC BY-SA 4.0 as well: whoever shares it, or an adaptation of it (for example images made from it), must give
the same attribution and share under the same licence. The licence text is at the end of this file; the other files of
this folder are separate works under their own licences.

### `images_64_fluent.npz`, `images_64_fluent_color.npz`: MIT

Microsoft's Fluent Emoji (https://github.com/microsoft/fluentui-emoji), Copyright (c) Microsoft Corporation: the
"Flat" style (`fluent`) and the "Color" style (`fluent_color`), from the Iconify packages
`@iconify-json/fluent-emoji-flat` 1.2.6 and `@iconify-json/fluent-emoji` 1.2.7 (the same artwork, optimised and
renamed by Iconify; MIT), code points from the flat package's `chars.json`.

{mit_microsoft}

### `images_64_emojione.npz`: CC BY 4.0 (Creative Commons Attribution 4.0 International)

Emoji artwork by EmojiOne (Emoji One, http://emojione.com), version 2.2.7 (npm package `emojione` 2.2.7,
`assets/svg`), licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/legalcode), as the package's
LICENSE.md states for artwork of versions 2.0.0 and later.

## Gallery font (`font_ko.ttf`): SIL Open Font License 1.1

A subset (2,350 KS X 1001 Hangul syllables, the Hangul of the captions, compatibility jamo and ASCII; hinting
removed) of NanumGothic 3.021 (Debian package `fonts-nanum` 20200506-1), renamed "minclip Hangul" because the
original names are Reserved Font Names. Copyright (c) 2010, NAVER Corporation, with Reserved Font Name Nanum,
Naver Nanum, NanumGothic, Naver NanumGothic, NanumMyeongjo, Naver NanumMyeongjo, NanumBrush, Naver NanumBrush,
NanumPen, Naver NanumPen, Naver NanumGothicEco, NanumGothicEco, Naver NanumMyeongjoEco, NanumMyeongjoEco, Naver
NanumGothicLight, NanumGothicLight, NanumBarunGothic, Naver NanumBarunGothic. Font copyright line: "Copyright ©
2011 NHN Corporation. All rights reserved. Font designed by Sandoll Communications Inc."

## Names, keywords, groups (`captions.jsonl`): Unicode licence (Unicode-DFS-2016)

From Unicode CLDR 41 (`common/annotations` and `common/annotationsDerived`, `en` and `ko`; Debian package
`unicode-cldr-core` 41-0.1) and Unicode's `emoji-test.txt` for Emoji 15.0 (Debian package `unicode-data`
15.0.0-1). Modified: keywords split into lists, joined per emoji with English and Korean names, the group
and subgroup, and fields of our own (family, tones, gender, split, duplicates).

{debian_license("unicode-cldr-core", "Unicode-DFS-2016")}

## The 31 emoji new in Emoji 15.0 (`"source": "emojibase-data-17.0.0"`): MIT

Names, keywords and the Korean group names from the npm package emojibase-data 17.0.0. Modified: the tags of a
skin-tone variant are its base's tags plus the base name and the tone.

{mit}

## SIL Open Font License 1.1 (applies to `images_64.npz` and `font_ko.ttf`)

{debian_license("fonts-noto-color-emoji", "SIL-1.1")}

## Creative Commons Attribution-ShareAlike 4.0 International (applies to `images_64_openmoji.npz`)

{cc_by_sa}
"""


# --------------------------------------------------------------------------------------------- 8. other artists
# The same emoji drawn by other artists, one LZMA npz per artist aligned row for row with captions.jsonl. Each artist
# ships SVGs; `rsvg-convert` (Debian librsvg2-bin, unpacked like the other packages) draws the artist's whole
# drawing area (its viewBox, no per-emoji crop) at RENDER_SIZE, the build composites it on white and downscales
# it with LANCZOS, as for Noto. artist -> the npm package of its SVGs (licences: `license_text`).
ARTISTS = {
    "openmoji": "openmoji",  # SVG files named by code points
    "fluent": "@iconify-json/fluent-emoji-flat",  # Microsoft's Fluent Emoji, Flat style, as an Iconify icon set
    "fluent_color": "@iconify-json/fluent-emoji",  # the same design in its Color style (gradients, soft shadows)
    "emojione": "emojione",  # EmojiOne 2.2.7 (Unicode 9, no gendered roles), SVG files named by code points
}
RENDER_SIZE = 256  # rasterise at 4x, then LANCZOS to IMAGE_SIZE
# Drawings rsvg-convert 2.54.7 cannot render ("rendering error: NoMemory" on their filters), by `sequence_key`: they
# are marked missing.
UNRENDERABLE = {"fluent_color": {"\u2602", "\u2614"}}  # umbrella, umbrella with rain drops
ZWJ, VS16 = "\u200d", "\ufe0f"


def sequence_key(text: str) -> str:
    """The emoji without U+FE0F and U+200D: artists name files with or without them ("1F468-1F469-1F466" is the
    family ZWJ sequence in EmojiOne 2, "2764" the red heart that emoji-test.txt writes 2764 FE0F)."""
    return text.replace(VS16, "").replace(ZWJ, "")


def codepoint_svgs(folder: Path) -> dict[str, str]:
    """SVG files named by hex code points ("1F469-200D-2695-FE0F.svg") -> {emoji: SVG text}."""
    out = {}
    for path in sorted(folder.glob("*.svg")):
        try:
            emoji = "".join(chr(int(c, 16)) for c in path.stem.split("-"))
        except ValueError:
            raise SystemExit(f"{path} is not named by hex code points") from None
        out[emoji] = path.read_text(encoding="utf-8")
    return out


def iconify_svgs(icons_json: Path, chars_json: Path) -> dict[str, str]:
    """An Iconify icon set (icons.json: SVG bodies by name; chars.json: hex code points -> name) -> {emoji: SVG}.

    Each body is wrapped in an <svg> whose square viewBox holds the icon's box (0 0 width height), centred."""
    data = json.loads(icons_json.read_text(encoding="utf-8"))
    out = {}
    for hexes, name in json.loads(chars_json.read_text(encoding="utf-8")).items():
        if name not in data["icons"]:
            raise SystemExit(f"{chars_json} maps {hexes} to {name!r}, which is not an icon of {icons_json}")
        icon = data["icons"][name]
        if {"left", "top", "hFlip", "vFlip", "rotate"} & icon.keys():
            raise SystemExit(f"icon {name} has a transform or offset this build does not handle: {icon.keys()}")
        width, height = icon.get("width", data["width"]), icon.get("height", data["height"])
        side = max(width, height)
        box = f"{(width - side) / 2:g} {(height - side) / 2:g} {side} {side}"
        emoji = "".join(chr(int(c, 16)) for c in hexes.split("-"))
        out[emoji] = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{box}">{icon["body"]}</svg>'
    return out


def artist_svgs(artist: str, root: Path) -> dict[str, str]:
    """{emoji as the artist writes it: SVG text} for one artist."""
    folder = root / "npm" / ARTISTS[artist] / "package"
    if artist == "openmoji":
        return codepoint_svgs(folder / "color/svg")
    if artist == "emojione":
        return codepoint_svgs(folder / "assets/svg")
    # Both Fluent styles use the same icon names; only the flat set's package lists their code points.
    return iconify_svgs(folder / "icons.json", root / "npm/@iconify-json/fluent-emoji-flat/package/chars.json")


def align(emoji: list[str], svgs: dict[str, str]) -> list[str | None]:
    """The artist's SVG for each row, or None where the artist lacks it (never another emoji's drawing).

    A row takes the file of exactly its code points, else the one file with the same `sequence_key`, if no
    other row shares that key."""
    by_key = collections.defaultdict(list)
    for e in svgs:
        by_key[sequence_key(e)].append(e)
    rows_per_key = collections.Counter(sequence_key(e) for e in emoji)
    out = []
    for e in emoji:
        key = sequence_key(e)
        if e in svgs:
            out.append(svgs[e])
        elif rows_per_key[key] == 1 and len(by_key[key]) == 1:
            out.append(svgs[by_key[key][0]])
        else:
            out.append(None)
    return out


def rasterise(svg: str, rsvg: Path, env: dict) -> np.ndarray:
    """One SVG -> uint8 (64, 64, 3): its viewBox drawn at RENDER_SIZE, composited on white, LANCZOS-downscaled."""
    if not re.search(r"viewBox=\"[-\d.]+ [-\d.]+ ([\d.]+) \1\"", svg[:svg.index(">")]):
        raise SystemExit(f"SVG without a square viewBox: {svg[:200]}")
    result = subprocess.run([str(rsvg), "-w", str(RENDER_SIZE), "-h", str(RENDER_SIZE), "-f", "png"],
                            input=svg.encode(), capture_output=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"rsvg-convert failed ({result.stderr.decode().strip()}) on {svg[:200]}")
    rgba = Image.open(io.BytesIO(result.stdout)).convert("RGBA")
    if rgba.size != (RENDER_SIZE, RENDER_SIZE):
        raise SystemExit(f"rsvg-convert drew {rgba.size}, expected {RENDER_SIZE}x{RENDER_SIZE}")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def render_artist(artist: str, emoji: list[str], root: Path, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 64, 64, 3) and present bool (N,) of one artist, row for row with `emoji`; missing rows
    are white."""
    svgs = align(emoji, artist_svgs(artist, root))
    svgs = [None if sequence_key(e) in UNRENDERABLE.get(artist, ()) else svg for e, svg in zip(emoji, svgs)]
    rsvg = root / "usr/bin/rsvg-convert"
    env = {"LD_LIBRARY_PATH": str(next(root.glob("usr/lib/*/librsvg-2.so.2")).parent)}  # the pinned librsvg
    images = np.full((len(emoji), IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
    present = np.array([svg is not None for svg in svgs])
    with ThreadPoolExecutor(workers) as pool:  # each call runs one rsvg-convert process
        drawn = pool.map(lambda svg: rasterise(svg, rsvg, env), [svg for svg in svgs if svg is not None])
        for i, image in zip(np.flatnonzero(present), drawn):
            images[i] = image
    blank = [emoji[i] for i in np.flatnonzero(present) if (images[i] >= 250).all()]
    if blank:
        raise SystemExit(f"{artist}: {len(blank)} emoji render blank, e.g. {blank[:5]}")
    return images, present


# --------------------------------------------------------------------------------------------- the build
def build_noto(root: Path, out: Path) -> list[dict]:
    """Steps 2-7 for the Noto images: captions.jsonl, images_64.npz, font_ko.ttf; return the records."""
    rows = read_emoji_test(root / "usr/share/unicode/emoji/emoji-test.txt")
    groups_ko = add_names(rows, root)
    for lang in ("en", "ko"):
        names = [getattr(r, f"name_{lang}") for r in rows]
        if len(set(names)) != len(names):
            repeated = [n for n, c in collections.Counter(names).items() if c > 1]
            raise SystemExit(f"{lang} names are not unique: {repeated}")
        if not all(getattr(r, f"keywords_{lang}") for r in rows):
            raise SystemExit(f"some emoji have no {lang} keywords")
    images, facts = render(rows, root / "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
    duplicate_of = find_duplicates(images)

    records = []
    for i, (row, dup) in enumerate(zip(rows, duplicate_of)):
        records.append({
            "index": i, "emoji": row.emoji, "codepoints": row.codepoints, "version": row.version,
            "name_en": row.name_en, "name_ko": row.name_ko,
            "keywords_en": row.keywords_en, "keywords_ko": row.keywords_ko,
            "group": row.group, "subgroup": row.subgroup, "group_ko": groups_ko[group_key(row.group)],
            "duplicate_of": dup, "source": row.source,
        })
    groups_of = collections.defaultdict(list)  # duplicate group: the first image and its copies
    for rec in records:
        groups_of[rec["duplicate_of"] if rec["duplicate_of"] is not None else rec["index"]].append(rec["index"])
    for rec in records:
        group = groups_of[rec["duplicate_of"] if rec["duplicate_of"] is not None else rec["index"]]
        rec["duplicate_group"] = group[0] if len(group) > 1 else None
    add_structure(rows, records)
    assign_splits(records)

    fields = ["index", "emoji", "codepoints", "version", "name_en", "name_ko", "keywords_en", "keywords_ko",
              "group", "subgroup", "group_ko", "base", "family", "tones", "gender", "split", "holdout",
              "duplicate_of", "duplicate_group", "source"]
    with open(out / "captions.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps({k: rec[k] for k in fields}, ensure_ascii=False) + "\n")
    write_npz(out / "images_64.npz", images=images)
    n_font_chars = hangul_font(root, records, out / "font_ko.ttf")

    splits = collections.Counter(r["split"] for r in records)
    reasons = collections.Counter((r["split"], r["holdout"]) for r in records if r["holdout"])
    dups = [r for r in records if r["duplicate_of"] is not None]
    print(f"emoji: {len(records)}  sources: {dict(collections.Counter(r['source'] for r in records))}")
    print(f"mean keywords: en {np.mean([len(r['keywords_en']) for r in records]):.2f}, "
          f"ko {np.mean([len(r['keywords_ko']) for r in records]):.2f}")
    print(f"exact duplicates at 64x64: {len(dups)} (at 128x128: {facts['full_resolution_duplicates']})")
    for r in dups:
        print(f"  {r['name_en']!r} == {records[r['duplicate_of']]['name_en']!r}")
    print(f"families: {len(set(r['family'] for r in records))}, splits: {dict(splits)}")
    for (split, reason), n in sorted(reasons.items()):
        print(f"  {split:5s} {reason:13s} {n}")
    print(f"font_ko.ttf: {n_font_chars} characters")
    return records


def build_artists(root: Path, out: Path, records: list[dict]) -> list[str]:
    """Step 8: images_64_<artist>.npz for every artist in ARTISTS, row for row with `records`; return the names."""
    emoji = [r["emoji"] for r in records]
    names = []
    for artist in ARTISTS:
        start = time.perf_counter()
        images, present = render_artist(artist, emoji, root)
        names.append(f"images_{IMAGE_SIZE}_{artist}.npz")
        write_npz(out / names[-1], images=images, present=present)
        missing = collections.Counter(r["group"] for r, p in zip(records, present) if not p)
        print(f"{artist}: {present.sum()} of {len(emoji)} emoji drawn ({time.perf_counter() - start:.0f} s); "
              f"missing by group: {dict(missing)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=Path, default=SOURCES_DEFAULT, help="download folder, outside the repo")
    parser.add_argument("--out", type=Path, default=OUT_DEFAULT, help="output folder (default: data/emoji)")
    parser.add_argument("--artists-only", action="store_true",
                        help="keep the captions.jsonl, images_64.npz and font_ko.ttf in --out; redo only the other "
                             "artists' images, LICENSE.md and SHA256SUMS")
    args = parser.parse_args()
    start = time.perf_counter()

    root = fetch(args.sources)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.artists_only:
        with open(out / "captions.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
    else:
        records = build_noto(root, out)
    artist_files = build_artists(root, out, records)
    (out / "LICENSE.md").write_text(license_text(root), encoding="utf-8")
    shipped = ["captions.jsonl", "images_64.npz", "font_ko.ttf", "LICENSE.md", *artist_files]
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in shipped), encoding="utf-8")
    for name in shipped:
        print(f"{name}: {(out / name).stat().st_size / 1e6:.2f} MB")
    print(f"built in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

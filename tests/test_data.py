"""Tests for minclip/data.py and the shipped emoji set in data/emoji/.

The shipped-set tests recompute every fact from the files themselves (image bytes, names) rather than trusting the
fields the build script wrote: duplicates by hashing pixels, split leakage by comparing pixels across splits, the
word rule by splitting names into words.
"""

import collections
import doctest
import hashlib
import re
import shutil
import warnings

import matplotlib
import pytest
import torch
from torch.utils.data import DataLoader

import minclip.data as data
import minclip.model as model
from minclip.data import (
    ARTISTS, CLIP_MEAN, CLIP_STD, DATA_DIR, TEMPLATES, DistinctBatchSampler, EmojiDataset, augment, flip_allowed,
    from_model_input, load_artist, load_emoji, make_caption, resize_images, restyle, to_model_input, verify_files,
)
from minclip.plots import show_gallery

matplotlib.use("Agg")

FIELDS = {"index": int, "emoji": str, "codepoints": str, "version": str, "name_en": str, "name_ko": str,
          "keywords_en": list, "keywords_ko": list, "group": str, "subgroup": str, "group_ko": str, "base": str,
          "family": str, "tones": list, "gender": str, "split": str, "holdout": str, "source": str}
WORD = re.compile(r"[^\W_]+")


def words(text):
    return set(WORD.findall(text.lower()))


class WhitespaceTokenizer:
    """Stand-in for minclip.tokenizer.BPETokenizer: [sot, one id per word, eot, 0, ...]."""

    sot_token_id, eot_token_id = 1, 2

    def __init__(self):
        self.vocab = {}

    def tokenize(self, texts, context_length=77):
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [1] + [self.vocab.setdefault(w, len(self.vocab) + 3) for w in text.split()] + [2]
            out[row, : len(ids)] = torch.tensor(ids[:context_length])
        return out


@pytest.fixture(scope="module")
def shipped():
    records, images = load_emoji()
    return records, images


@pytest.fixture(scope="module")
def image_hashes(shipped):
    return [hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in shipped[1]]


# --------------------------------------------------------------------------------------------- the shipped set
def test_counts_fields_and_uniqueness(shipped):
    records, images = shipped
    assert len(records) == 3655
    assert images.shape == (3655, 64, 64, 3) and images.dtype == torch.uint8
    for i, record in enumerate(records):
        for name, kind in FIELDS.items():
            assert isinstance(record[name], kind), (i, name)
        assert record["index"] == i
        assert record["name_en"] and record["name_ko"] and record["keywords_en"] and record["keywords_ko"]
        assert record["split"] in ("train", "val", "test")
    for key in ("emoji", "name_en", "name_ko", "codepoints"):
        assert len({r[key] for r in records}) == 3655, key
    mean_keywords = sum(len(r["keywords_en"]) + len(r["keywords_ko"]) for r in records) / (2 * len(records))
    assert 3.5 < mean_keywords < 5
    assert sum(r["source"] == "emojibase-data-17.0.0" for r in records) == 31  # new in Emoji 15.0, not in CLDR 41
    # Korean names are in Hangul (none fell back to English), flags and keycaps included; CLDR's one exception:
    assert [r["name_ko"] for r in records if not re.search("[가-힣]", r["name_ko"])] == ["DNA"]


def test_load_emoji_returns_copies(shipped):
    records, images = load_emoji()
    records[0]["name_en"], images[0] = "changed", 0
    again_records, again_images = load_emoji()
    assert again_records[0]["name_en"] == "grinning face" and torch.equal(again_images, shipped[1])


def test_every_image_is_a_real_rendering(shipped):
    _, images = shipped
    assert images[:, 0, :, :].float().mean() > 250  # white background at the top edge
    assert (images.flatten(1).float().std(dim=1) > 5).all()  # no blank image


def test_exact_duplicates_are_marked(shipped, image_hashes):
    records, _ = shipped
    first = {}
    for i, digest in enumerate(image_hashes):
        assert records[i]["duplicate_of"] == first.get(digest), records[i]["name_en"]
        first.setdefault(digest, i)
    duplicates = [r for r in records if r["duplicate_of"] is not None]
    assert len(duplicates) == 14
    names = {r["name_en"] for r in duplicates}
    assert {"flag: Norway", "flag: Svalbard & Jan Mayen", "snowboarder: dark skin tone"} <= names
    groups = collections.defaultdict(set)
    for r, digest in zip(records, image_hashes):
        groups[digest].add(r["duplicate_group"])
    assert all(len(g) == 1 for g in groups.values())  # one duplicate_group id per distinct image


def test_no_image_in_two_splits(shipped, image_hashes):
    records, _ = shipped
    split_of = {}
    for r, digest in zip(records, image_hashes):
        assert split_of.setdefault(digest, r["split"]) == r["split"], r["name_en"]
    assert all(r["split"] == "train" for r in records if r["duplicate_group"] is not None)


def test_split_sizes(shipped):
    counts = collections.Counter(r["split"] for r in shipped[0])
    assert counts["train"] > 0.8 * 3655 and counts["val"] > 150 and counts["test"] > 300


def test_every_word_of_a_held_out_name_appears_in_training_names(shipped):
    records, _ = shipped
    for lang in ("en", "ko"):
        train_words = set().union(*(words(r[f"name_{lang}"]) for r in records if r["split"] == "train"))
        for r in records:
            if r["split"] != "train":
                unseen = words(r[f"name_{lang}"]) - train_words
                assert not unseen, (r[f"name_{lang}"], unseen)


def test_family_and_base_fields(shipped):
    records, _ = shipped
    by_emoji = {r["emoji"]: r for r in records}
    by_name = {r["name_en"]: r for r in records}
    for r in records:
        assert r["base"] in by_emoji and r["family"] in by_emoji
        assert by_emoji[r["base"]]["tones"] == [] and by_emoji[r["base"]]["family"] == r["family"]
        assert all(tone in (1, 2, 3, 4, 5) for tone in r["tones"])
        if not r["tones"]:
            assert r["base"] == r["emoji"]
    assert by_name["woman health worker: medium skin tone"]["family"] == by_name["health worker"]["emoji"]
    assert by_name["woman health worker: medium skin tone"]["base"] == by_name["woman health worker"]["emoji"]
    assert by_name["woman health worker: medium skin tone"]["tones"] == [3]
    assert by_name["kiss: woman, man, light skin tone, dark skin tone"]["family"] == by_name["kiss"]["emoji"]
    assert by_name["person: dark skin tone, beard"]["base"] == by_name["person: beard"]["emoji"]
    assert by_name["girl: light skin tone"]["family"] == by_name["child"]["emoji"]
    assert (by_name["woman firefighter"]["gender"], by_name["firefighter"]["gender"]) == ("woman", "person")
    family_sizes = collections.Counter(r["family"] for r in records)
    assert family_sizes[by_name["health worker"]["emoji"]] == 18  # 3 genders x (no tone + 5 tones)


def test_one_skin_tone_per_base_is_held_out_in_test(shipped):
    records, _ = shipped
    members = collections.defaultdict(list)
    for r in records:
        members[r["base"]].append(r)
    tones_held_out = collections.Counter()
    n_bases = 0
    for base, group in members.items():
        toned = [r for r in group if r["tones"]]
        if not toned or all(r["duplicate_group"] is not None for r in toned):
            continue  # no tones, or tones that are all the same picture (the snowboarder)
        n_bases += 1
        in_test = [r for r in toned if r["split"] == "test"]
        assert in_test, group[0]["name_en"]
        if any(r["split"] == "train" for r in group):
            assert len(in_test) == 1, group[0]["name_en"]  # exactly one tone of a base still seen in training
            assert any(r["split"] == "train" and r["tones"] for r in group)
        if len(in_test) == 1 and len(in_test[0]["tones"]) == 1:
            tones_held_out[in_test[0]["tones"][0]] += 1
    assert n_bases > 250
    assert set(tones_held_out) == {1, 2, 3, 4, 5}
    assert min(tones_held_out.values()) > 0.15 * sum(tones_held_out.values())  # tones rotate


def test_gender_role_compositions_are_held_out(shipped):
    records, _ = shipped
    held = [r for r in records if r["holdout"] == "gender-role" and r["split"] == "test"]
    assert {r["gender"] for r in held} == {"person", "man", "woman"}
    for r in held:
        base_splits = {x["split"] for x in records if x["base"] == r["base"]}
        family_train = [x for x in records if x["family"] == r["family"] and x["split"] == "train"]
        assert "train" not in base_splits, r["name_en"]  # this gender x role is never seen in training...
        assert {x["gender"] for x in family_train} - {r["gender"]}, r["name_en"]  # ...the role with another gender is


def test_colour_shape_and_clock_compositions_are_held_out(shipped):
    records, _ = shipped
    train_names = {r["name_en"] for r in records if r["split"] == "train"}
    patterns = {"colour-shape": r"(\w+) (circle|square|heart|diamond)$", "clock": r"(\w+)[ -](o’clock|thirty)$"}
    for kind, pattern in patterns.items():
        held = [r for r in records if r["holdout"] == kind]
        assert {r["split"] for r in held} == {"val", "test"}
        for r in held:
            first, second = re.search(pattern, r["name_en"]).groups()
            assert any(re.search(rf"\b{first}\b", n) for n in train_names), r["name_en"]
            assert any(n.endswith(second) for n in train_names), r["name_en"]


# --------------------------------------------------------------------------------------------- files, checksums
def _copy_shipped(tmp_path, names=("SHA256SUMS", "captions.jsonl", "images_64.npz")):
    for name in names:
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return tmp_path


def test_all_shipped_files_match_the_manifest():
    verify_files(DATA_DIR, ["captions.jsonl", "images_64.npz", "font_ko.ttf", "LICENSE.md"])
    assert (DATA_DIR / "LICENSE.md").read_text(encoding="utf-8").count("SIL OPEN FONT LICENSE") >= 1


def test_missing_file_names_the_file_and_the_fix(tmp_path):
    root = _copy_shipped(tmp_path, ("SHA256SUMS", "captions.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"images_64\.npz is missing.*python data/build_emoji\.py"):
        load_emoji(root=root)


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"SHA256SUMS is missing.*git checkout -- data/emoji"):
        load_emoji(root=tmp_path)


def test_corrupt_file_names_the_file_and_the_fix(tmp_path):
    root = _copy_shipped(tmp_path)
    text = (root / "captions.jsonl").read_text(encoding="utf-8")
    (root / "captions.jsonl").write_text(text.replace("grinning face", "grinning fact", 1), encoding="utf-8")
    with pytest.raises(ValueError, match=r"captions\.jsonl is corrupt or modified.*python data/build_emoji\.py"):
        load_emoji(root=root)


# --------------------------------------------------------------------------------------------- other artists
@pytest.fixture(scope="module")
def artists():
    return {artist: load_artist(artist) for artist in ARTISTS}


def _is_white(images):
    return (images == 255).flatten(1).all(dim=1)  # (N,)


def _ink_colour(image):
    """Mean RGB of the pixels that are neither background (nearly white) nor outline (nearly black): the colour
    of the drawing. image: uint8 (H, W, 3) -> float (3,)."""
    pixels = image.reshape(-1, 3).float()
    return pixels[(pixels < 235).any(dim=1) & (pixels > 60).any(dim=1)].mean(dim=0)


def test_artist_files_shapes_and_missing_rows(shipped, artists):
    n = len(shipped[0])
    verify_files(DATA_DIR, [f"images_64_{a}.npz" for a in ARTISTS if a != "noto"])
    assert ARTISTS[0] == "noto" and len(ARTISTS) >= 3
    for artist, (images, present) in artists.items():
        assert images.shape == (n, 64, 64, 3) and images.dtype == torch.uint8, artist
        assert present.shape == (n,) and present.dtype == torch.bool, artist
        white = _is_white(images)
        assert white[~present].all(), f"{artist}: a missing row is not white"
        assert not white[present].any(), f"{artist}: a drawn row is blank"
        assert present.sum() >= n // 3, f"{artist} draws only {present.sum()} of {n}"
    assert artists["noto"][1].all()
    torch.testing.assert_close(artists["noto"][0], shipped[1], atol=0, rtol=0)


def test_artists_draw_the_same_emoji_in_the_same_row(shipped, artists):
    """Every artist draws known emoji in their row: the colour named in the caption dominates, light skin tones
    are lighter than dark ones, and colours follow Noto's row for row far better than in another order."""
    records, noto = shipped
    row = {r["name_en"]: r["index"] for r in records}
    light = {r["base"]: r["index"] for r in records if r["tones"] == [1]}
    dark = {r["base"]: r["index"] for r in records if r["tones"] == [5]}
    noto_colours = torch.stack([_ink_colour(image) for image in noto])  # (N, 3)
    for artist, (images, present) in artists.items():
        for name in ("red heart", "grinning face"):
            assert present[row[name]], f"{artist} lacks {name}"
        for name, channel in [("red heart", 0), ("green heart", 1), ("blue heart", 2), ("red circle", 0),
                              ("blue circle", 2)]:
            colour = _ink_colour(images[row[name]])
            assert colour.argmax() == channel, f"{artist}'s {name} has ink colour {colour.tolist()}"
        pairs = [(light[b], dark[b]) for b in light if b in dark and present[light[b]] and present[dark[b]]]
        lighter = [_ink_colour(images[i]).sum() > _ink_colour(images[j]).sum() for i, j in pairs]
        assert len(pairs) >= 50 and sum(lighter) >= 0.95 * len(pairs), f"{artist}: {sum(lighter)} of {len(pairs)}"
        if artist != "noto":
            assert not torch.equal(images[row["grinning face"]], noto[row["grinning face"]]), artist
            idx = present.nonzero().squeeze(1)
            colours = torch.stack([_ink_colour(images[i]) for i in idx])  # (M, 3)
            aligned = (colours - noto_colours[idx]).norm(dim=1).median()
            rolled = (colours - noto_colours[(idx + len(noto) // 2) % len(noto)]).norm(dim=1).median()
            assert aligned < 0.8 * rolled, f"{artist}: rows look misaligned ({aligned:.0f} vs {rolled:.0f})"


def test_load_artist_resizes_and_returns_copies():
    images, present = load_artist("openmoji", 32)
    full, full_present = load_artist("openmoji")
    torch.testing.assert_close(images, resize_images(full, 32), atol=0, rtol=0)
    assert torch.equal(present, full_present)
    images[0], present[0] = 0, False
    again, again_present = load_artist("openmoji", 32)
    assert again[0].max() == 255 and again_present[0]
    noto, noto_present = load_artist("noto", 16)
    torch.testing.assert_close(noto, load_emoji(16)[1], atol=0, rtol=0)
    assert noto_present.all()


def test_load_artist_rejects_unknown_artists_and_sizes():
    with pytest.raises(ValueError, match=r"artist must be one of \('noto', 'openmoji'.*got 'twemoji'"):
        load_artist("twemoji")
    with pytest.raises(ValueError, match="image_size must be an int in 1..64"):
        load_artist("openmoji", 128)


def test_corrupt_artist_file_names_the_file(tmp_path):
    root = _copy_shipped(tmp_path, ("SHA256SUMS", "captions.jsonl", "images_64.npz", "images_64_openmoji.npz"))
    with open(root / "images_64_openmoji.npz", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=r"images_64_openmoji\.npz is corrupt or modified"):
        load_artist("openmoji", root=root)
    with pytest.raises(FileNotFoundError, match=r"images_64_fluent\.npz is missing"):
        load_artist("fluent", root=root)


# --------------------------------------------------------------------------------------------- dataset
def test_resize_is_an_area_average():
    images = torch.randint(0, 256, (3, 8, 8, 3), dtype=torch.uint8)
    expected = images.double().view(3, 4, 2, 4, 2, 3).mean(dim=(2, 4))  # mean of each 2x2 block
    torch.testing.assert_close(resize_images(images, 4).double(), expected.round(), atol=0, rtol=0)
    assert resize_images(images, 5).shape == (3, 5, 5, 3)


def test_dataset_items_and_whole_split_tensors(shipped):
    records, images = shipped
    test = EmojiDataset("test", lang="ko", image_size=32, caption_mode="eval")
    keep = [r["index"] for r in records if r["split"] == "test"]
    assert len(test) == len(keep) and test.images.shape == (len(keep), 32, 32, 3)
    torch.testing.assert_close(test.images, resize_images(images[keep], 32))
    image, caption = test[5]
    assert image.dtype == torch.uint8 and image.shape == (32, 32, 3)
    assert caption == records[keep[5]]["name_ko"]
    full = EmojiDataset("all", image_size=64)
    assert len(full) == 3655 and torch.equal(full.images, images)


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "dev"}, r"split must be one of \('train', 'val', 'test', 'all'\), got 'dev'"),
    ({"lang": "fr"}, r"lang must be one of \('en', 'ko', 'both'\), got 'fr'"),
    ({"caption_mode": "plain"}, r"caption_mode must be 'train' \(templates\) or 'eval' \(plain names\), got 'plain'"),
    ({"caption_mode": "eval", "lang": "both"}, r"use lang='en' or lang='ko'"),
    ({"image_size": 128}, r"image_size must be an int in 1\.\.64 \(the shipped size\), got 128"),
])
def test_dataset_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmojiDataset(**kwargs)


def _template_index(caption, record, lang):
    """Which template (index) produced `caption` for `record`, checking that its keywords are the record's."""
    name = record[f"name_{lang}"]
    group = record["group"].lower() if lang == "en" else record["group_ko"]
    for t, template in enumerate(TEMPLATES[lang]):
        before, _, after = template.replace("{name}", name).replace("{group}", group).partition("{keywords}")
        if "{keywords}" not in template:
            if caption == before:
                return t
        elif caption.startswith(before) and caption.endswith(after) and len(caption) > len(before) + len(after):
            keywords = caption[len(before):len(caption) - len(after)].split(", ")
            if 1 <= len(keywords) <= 3 and set(keywords) <= set(record[f"keywords_{lang}"]):
                return t
    return None


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_training_captions_follow_the_templates(lang):
    train = EmojiDataset("train", lang=lang, image_size=8, seed=0)
    used = collections.Counter()
    for record, caption in zip(train.records, train.captions):
        assert record[f"name_{lang}"] in caption
        t = _template_index(caption, record, lang)
        assert t is not None, caption
        used[t] += 1
    assert set(used) == set(range(len(TEMPLATES[lang])))  # every template is used
    assert min(used.values()) > 0.05 * len(train)


def test_make_caption_leaves_out_keywords_that_repeat_the_name():
    record = {"name_en": "red heart", "keywords_en": ["heart", "red heart"], "group": "Smileys & Emotion"}
    import random
    captions = {make_caption(record, "en", random.Random(s)) for s in range(50)}
    assert captions == {"red heart", "an emoji of red heart", "a picture of red heart",
                        "red heart, from the smileys & emotion group"}


def test_captions_are_deterministic_per_seed_and_epoch():
    a = EmojiDataset("val", lang="both", image_size=8, seed=1)
    b = EmojiDataset("all", lang="both", image_size=8, seed=1)
    epoch0 = a.captions
    assert epoch0 == a.epoch_captions(0) == EmojiDataset("val", lang="both", image_size=8, seed=1).captions
    a.set_epoch(1)
    assert a.captions != epoch0 and a.captions == a.epoch_captions(1) and a.epoch_captions(0) == epoch0
    shown = a.captions
    shown[0] = "edited by a caller"
    assert a.captions[0] != shown[0]  # every call hands out its own list: the epoch's captions stay as drawn
    assert EmojiDataset("val", lang="both", image_size=8, seed=2).captions != epoch0
    position = {r["index"]: i for i, r in enumerate(b.records)}
    assert [b.caption(position[r["index"]]) for r in a.records] == epoch0  # an image's caption ignores the split
    korean = sum(bool(re.search("[가-힣]", c)) for c in epoch0)
    assert 0.35 < korean / len(epoch0) < 0.65  # 'both' mixes the languages


@pytest.mark.parametrize("name", ["emoji", "shapes"])
def test_both_shipped_sets_expose_captions_the_same_way(name):
    """`captions` is a list of the current epoch's captions, `epoch_captions(epoch)` any epoch's, on both sets: the
    emoji set draws new training captions each epoch, the shapes set keeps its own."""
    from minclip.shapes import ShapesDataset

    dataset = EmojiDataset("val", lang="both", image_size=8) if name == "emoji" else \
        ShapesDataset("val", lang="both", image_size=24, num_images=40)
    assert isinstance(dataset.captions, list) and all(isinstance(c, str) for c in dataset.captions)
    assert dataset.captions == [dataset[i][1] for i in range(len(dataset))] == dataset.epoch_captions(0)
    assert torch.equal(dataset.images, dataset.epoch_images(0))
    later = dataset.epoch_captions(1)
    assert len(later) == len(dataset) and (later == dataset.captions) == (name == "shapes")


# --------------------------------------------------------------------------------------------- model input
def test_to_model_input_matches_a_float64_reference():
    images = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    x = to_model_input(images)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    reference = torch.empty(2, 3, 5, 7, dtype=torch.float64)
    for c in range(3):
        reference[:, c] = (images[..., c].double() / 255 - CLIP_MEAN[c]) / CLIP_STD[c]
    torch.testing.assert_close(x.double(), reference, rtol=1e-6, atol=1e-6)
    assert torch.equal(from_model_input(x), images)
    assert CLIP_MEAN is model.CLIP_MEAN and CLIP_STD is model.CLIP_STD  # one definition, beside the model


@pytest.mark.parametrize("bad", [torch.zeros(5, 7, 3, dtype=torch.uint8), torch.zeros(2, 3, 5, 7, dtype=torch.uint8),
                                 torch.zeros(2, 5, 7, 3)])
def test_to_model_input_rejects_bad_images(bad):
    with pytest.raises(ValueError, match=r"images must be a uint8 tensor \(N, H, W, 3\), got"):
        to_model_input(bad)


# --------------------------------------------------------------------------------------------- augmentation
def test_flip_is_vetoed_for_sides_directions_and_clocks_in_both_languages(shipped):
    records, _ = shipped
    direction = re.compile(r"\b(left|right|leftwards|rightwards|arrows?|clockwise|counterclockwise|o’clock|thirty)\b")
    vetoed = [r for r in records if direction.search(r["name_en"]) and r["name_en"] != "left luggage"]  # left behind
    assert len(vetoed) > 100
    for r in vetoed:
        assert not flip_allowed(r["name_en"]), r["name_en"]
        assert not flip_allowed(r["name_ko"]), (r["name_en"], r["name_ko"])
    for r in records:
        if r["group"] == "Flags" or r["subgroup"] == "keycap":
            assert not flip_allowed(r["name_en"]) and not flip_allowed(r["name_ko"]), r["name_en"]
    assert flip_allowed("grinning face") and flip_allowed("활짝 웃는 얼굴")
    assert flip_allowed("a red circle above a blue square")
    assert not flip_allowed("a red circle left of a blue square")


def test_augment_mirrors_only_when_the_caption_allows():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 6, 6, 3), dtype=torch.uint8)
    captions = ["left arrow", "grinning face"] * 32
    out = augment(images, captions, max_shift=0, generator=g)
    mirrored = [not torch.equal(o, i) for o, i in zip(out, images)]
    for o, i, caption, m in zip(out, images, captions, mirrored):
        assert torch.equal(o, i.flip(1) if m else i)
    assert not any(m for m, c in zip(mirrored, captions) if c == "left arrow")
    assert 8 < sum(mirrored) < 24  # about half of the 32 allowed
    assert torch.equal(augment(images, captions, max_shift=0, flip=False, generator=g), images)


def test_augment_shifts_are_small_translations():
    images = torch.randint(0, 256, (16, 8, 8, 3), dtype=torch.uint8)
    out = augment(images, ["left"] * 16, max_shift=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2), [2] * 4, mode="replicate").permute(0, 2, 3, 1)
    for b in range(16):
        shifts = [padded[b, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], s) for s in shifts)
    assert sum(not torch.equal(o, i) for o, i in zip(out, images)) > 8


def test_augment_shifts_then_mirrors_and_leaves_its_input_alone():
    images = torch.randint(0, 256, (32, 8, 8, 3), dtype=torch.uint8)
    before = images.clone()
    out = augment(images, ["grinning face"] * 32, max_shift=1, generator=torch.Generator().manual_seed(2))
    assert torch.equal(images, before)
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2), [1] * 4, mode="replicate").permute(0, 2, 3, 1)
    kinds = []
    for b in range(32):
        shifts = [padded[b, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
        plain = any(torch.equal(out[b], s) for s in shifts)
        mirrored = any(torch.equal(out[b], s.flip(1)) for s in shifts)
        assert plain or mirrored
        kinds.append(mirrored and not plain)
    assert 4 < sum(kinds) < 28  # about half are mirror images of a shifted copy


def test_restyle_shrinks_the_drawing_about_the_centre_and_keeps_its_colours():
    images = torch.full((8, 32, 32, 3), 255, dtype=torch.uint8)
    images[:, 4:28, 4:28] = torch.tensor([200, 30, 40], dtype=torch.uint8)  # a red square filling most of the frame
    out = restyle(images, min_scale=0.5, min_side=32, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    red = (out == torch.tensor([200, 30, 40], dtype=torch.uint8)).all(-1)  # (8, 32, 32): pure red pixels
    assert (red.sum((1, 2)) < 24 * 24).all() and (red.sum((1, 2)) > 11 * 11).all()  # shrunk to 50..100 % a side
    assert red[:, 16, 16].all() and not red[:, 2, 2].any()  # about the centre; the corners stay white
    assert len(set(red.sum((1, 2)).tolist())) > 4  # each image its own size
    softened = restyle(images, min_scale=1.0, min_side=8, generator=torch.Generator().manual_seed(3))
    assert (softened.int() - images.int()).abs()[:, 14:18, 14:18].max() <= 1  # the inside keeps its colour
    untouched = restyle(images, min_scale=1.0, min_side=32)
    torch.testing.assert_close(untouched, images, rtol=0, atol=0)  # full size, full resolution: nothing changes
    with pytest.raises(ValueError, match=r"images must be uint8 \(B, H, W, 3\)"):
        restyle(images.float())


# --------------------------------------------------------------------------------------------- sampler
def collate(batch):
    """(uint8 image, caption) items -> model input (B, 3, S, S) and tokens (B, 40), as a DataLoader's collate_fn."""
    images = torch.stack([torch.as_tensor(image) for image, _ in batch])  # (B, S, S, 3)
    return to_model_input(images), WhitespaceTokenizer().tokenize([caption for _, caption in batch], 40)


def _assert_valid_batches(batches, captions, groups, n, batch_size):
    assert sorted(i for b in batches for i in b) == list(range(n))  # every item exactly once
    for b in batches:
        assert 1 <= len(b) <= batch_size
        assert len({" ".join(captions[i].casefold().split()) for i in b}) == len(b)
        if groups is not None:
            assert len({groups[i] for i in b}) == len(b)


def test_sampler_keeps_equal_captions_and_duplicate_images_apart():
    train = EmojiDataset("train", lang="en", image_size=8, caption_mode="eval")
    for batch_size in (64, 256):
        sampler = DistinctBatchSampler(train.epoch_captions, batch_size, groups=train.duplicate_groups, seed=3)
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            _assert_valid_batches(batches, train.captions, train.duplicate_groups, len(train), batch_size)
            assert len(batches) == -(-len(train) // batch_size)  # no extra batches needed on this set
    names = {r["name_en"]: i for i, r in enumerate(train.records)}
    norway, svalbard = names["flag: Norway"], names["flag: Svalbard & Jan Mayen"]
    assert all(not {norway, svalbard} <= set(b) for b in DistinctBatchSampler(train.captions, 3000,
                                                                              groups=train.duplicate_groups))


def test_sampler_keeps_families_together_as_hard_negatives():
    train = EmojiDataset("train", lang="en", image_size=8, caption_mode="eval")
    families = [r["family"] for r in train.records]
    sampler = DistinctBatchSampler(train.epoch_captions, 128, groups=train.duplicate_groups, families=families,
                                   seed=0)
    batches = list(sampler)
    _assert_valid_batches(batches, train.captions, train.duplicate_groups, len(train), 128)
    batch_of = {i: b for b, batch in enumerate(batches) for i in batch}
    members = collections.defaultdict(list)
    for i, family in enumerate(families):
        members[family].append(i)
    for family, items in members.items():  # a family that fits in a batch is split over at most two batches
        identical_images = len({train.duplicate_groups[i] for i in items}) < len(items)  # (the snowboarders)
        if len(items) <= 128 and not identical_images:
            assert len({batch_of[i] for i in items}) <= 2, family
    siblings_per_batch = [len(b) - len({families[i] for i in b}) for b in batches]
    random_batches = DistinctBatchSampler(train.epoch_captions, 128, groups=train.duplicate_groups, seed=0)
    random_siblings = [len(b) - len({families[i] for i in b}) for b in random_batches]
    assert sum(siblings_per_batch) > 2 * sum(random_siblings)  # many more siblings meet in a batch
    with pytest.raises(ValueError, match="got 3032 captions but 2 families"):
        DistinctBatchSampler(train.epoch_captions, 128, families=["a", "b"]).batches()


def test_sampler_with_many_repeated_captions():
    captions = [f"a {c} circle" for c in ("red", "blue", "green")] * 40 + [f"shape {i}" for i in range(200)]
    sampler = DistinctBatchSampler(captions, batch_size=16, seed=0)
    batches = list(sampler)
    _assert_valid_batches(batches, captions, None, len(captions), 16)
    assert len(batches) == 40  # 40 copies of a caption need 40 batches
    assert list(sampler) == batches and DistinctBatchSampler(captions, 16, seed=1).batches() != batches
    assert all(len(b) == 16 for b in DistinctBatchSampler(captions, 16, drop_last=True))


def test_sampler_changes_training_captions_per_epoch_and_works_with_a_dataloader():
    train = EmojiDataset("train", lang="both", image_size=8, seed=0)
    sampler = DistinctBatchSampler(train.epoch_captions, 128, groups=train.duplicate_groups)
    loader = DataLoader(train, batch_sampler=sampler, collate_fn=collate)
    for epoch in (0, 1):
        train.set_epoch(epoch)
        sampler.set_epoch(epoch)
        _assert_valid_batches(sampler.batches(), train.captions, train.duplicate_groups, len(train), 128)
    images, tokens = next(iter(loader))
    assert images.shape == (128, 3, 8, 8) and tokens.shape == (128, 40)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DistinctBatchSampler(["a"], 0)
    with pytest.raises(ValueError, match="got 2 captions but 1 groups"):
        DistinctBatchSampler(["a", "b"], 2, groups=[0]).batches()


# --------------------------------------------------------------------------------------------- gallery, docs
def test_gallery_draws_korean_without_missing_glyphs():
    import matplotlib.pyplot as plt

    test = EmojiDataset("test", lang="ko", image_size=16, caption_mode="eval")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for each missing glyph
        fig = show_gallery(test.images[:5], test.captions[:5], ncols=3, colors=["green"] * 5, title="시험")
        fig.canvas.draw()
    assert len([ax for ax in fig.axes if ax.images]) == 5
    assert fig.axes[0].get_title() != ""
    plt.close(fig)
    fig = show_gallery(to_model_input(test.images[:2]), ["왼쪽 말풍선", "grinning face"])
    torch.testing.assert_close(torch.as_tensor(fig.axes[0].images[0].get_array().data), test.images[0])
    plt.close(fig)
    with pytest.raises(ValueError, match="got 2 images but 1 captions"):
        show_gallery(test.images[:2], ["one"])


def test_docstring_examples():
    result = doctest.testmod(data, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0


# --------------------------------------------------------------------------------------------- several artists
def test_several_artists_show_one_drawing_per_emoji_and_epoch(shipped):
    records, noto = shipped
    mixed = EmojiDataset("train", image_size=16, artists=("noto", "fluent"), seed=1)
    rows = [r["index"] for r in mixed.records]
    assert rows == [r["index"] for r in records if r["split"] == "train"]  # Noto draws every emoji
    noto, (fluent, drawn) = resize_images(noto, 16)[rows], load_artist("fluent", 16)
    fluent, drawn = fluent[rows], drawn[rows]
    assert mixed.artist_images.shape == (2, len(rows), 16, 16, 3) and torch.equal(mixed.drawn[1], drawn)
    for epoch in (0, 1):
        chosen = mixed.artist_of(epoch)  # (N,): 0 = noto, 1 = fluent
        expected = torch.where((chosen == 0)[:, None, None, None], noto, fluent)
        assert torch.equal(mixed.epoch_images(epoch), expected)
        assert drawn[chosen == 1].all()  # Fluent's drawing only where Fluent draws the emoji
        assert 0.4 < (chosen[drawn] == 1).float().mean() < 0.6  # otherwise a fair pick between the two
        other_view = mixed.artist_of(epoch, view=1)
        assert (other_view[drawn] != chosen[drawn]).all() and (other_view[~drawn] == 0).all()
    assert (mixed.artist_of(0) != mixed.artist_of(1)).any()
    again = EmojiDataset("train", image_size=16, artists=("noto", "fluent"), seed=1)
    assert torch.equal(again.artist_of(1), mixed.artist_of(1))  # seeded by (seed, epoch, emoji)
    mixed.set_epoch(1)
    image, caption = mixed[7]
    assert torch.equal(image, mixed.images[7]) and torch.equal(mixed.images, mixed.epoch_images(1))
    assert caption == mixed.caption(7, 1)


def test_artists_leave_out_the_emoji_none_of_them_draws():
    fluent_only = EmojiDataset("all", image_size=8, artists=("fluent",))
    images, drawn = load_artist("fluent", 8)
    assert len(fluent_only) == int(drawn.sum()) < 3655
    assert torch.equal(fluent_only.images, images[drawn])


def test_a_batch_never_holds_two_drawings_of_one_caption():
    mixed = EmojiDataset("train", image_size=8, artists=("noto", "openmoji", "emojione"))
    sampler = DistinctBatchSampler(mixed.epoch_captions, 128, groups=mixed.duplicate_groups, drop_last=True)
    for epoch in (0, 3):
        for batch in sampler.batches(epoch):
            names = [mixed.records[i]["name_en"] for i in batch]
            assert len(set(names)) == len(names)  # one item per emoji, and an item is one drawing
        assert sum(map(len, sampler.batches(epoch))) > len(mixed) - 128  # every emoji, once


def test_emoji_some_artist_draws_alike_share_a_duplicate_group(shipped):
    records, _ = shipped
    noto_only = EmojiDataset("all", image_size=64, caption_mode="eval")
    expected = [r["index"] if r["duplicate_group"] is None else r["duplicate_group"] for r in records]
    assert noto_only.duplicate_groups == expected  # Noto's own copies, as captions.jsonl records them
    mixed = EmojiDataset("all", image_size=64, caption_mode="eval", artists=("noto", "openmoji"))
    group = dict(zip((r["name_en"] for r in mixed.records), mixed.duplicate_groups))
    assert group["farmer"] == group["man farmer"] != group["woman farmer"]  # OpenMoji draws the first two alike
    assert group["flag: Norway"] == group["flag: Svalbard & Jan Mayen"]  # Noto's pairs stay together


@pytest.mark.parametrize("artists", ["noto", (), ("noto", "noto"), ("twemoji",)])
def test_dataset_rejects_bad_artists(artists):
    with pytest.raises(ValueError, match="artists must be a non-empty list of distinct names from"):
        EmojiDataset(artists=artists)

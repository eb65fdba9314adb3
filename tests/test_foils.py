"""Tests for minclip/foils.py: hard negative captions are word swaps of the true caption, never name a held-out emoji,
replay with the seed, and never equal a true caption of their batch."""

import collections
import doctest
import random

import pytest

import minclip.foils as foils_module
from minclip.data import DistinctBatchSampler, EmojiDataset
from minclip.foils import batch_foils, emoji_foil, emoji_siblings, epoch_foils, shapes_foil
from minclip.shapes import Scene, SceneObject, ShapesDataset


def test_doctests():
    assert doctest.testmod(foils_module).failed == 0


# ----------------------------------------------------------------------------------------------------------------- shapes
RED = SceneObject("circle", "red", "small", 0.3, 0.5)
BLUE = SceneObject("square", "blue", "large", 0.7, 0.5)


def test_shapes_foil_is_one_of_the_scene_swaps_and_every_kind_comes_up():
    scene = Scene((RED, BLUE), "left of")
    swaps = scene.foils("en")
    assert swaps == {  # the scene description decides every swap
        "colour": "a small blue circle to the left of a large red square",
        "shape": "a small red square to the left of a large blue circle",
        "size": "a large red circle to the left of a small blue square",
        "role": "a large blue square to the left of a small red circle",
    }
    drawn = collections.Counter(shapes_foil(scene, "en", random.Random(seed)) for seed in range(400))
    assert set(drawn) == set(swaps.values())
    assert min(drawn.values()) > 60  # uniform over the four kinds: about 100 each
    assert shapes_foil(scene, "ko", random.Random(0)) in scene.foils("ko").values()
    assert shapes_foil(Scene((RED,)), "en", random.Random(0)) is None  # one object: nothing to swap


def test_shapes_epoch_foils_use_the_caption_words_in_other_places_and_replay():
    dataset = ShapesDataset("train", lang="both", image_size=24, num_images=300, seed=3)
    epoch0 = epoch_foils(dataset, 0)
    assert epoch0 == epoch_foils(ShapesDataset("train", lang="both", image_size=24, num_images=300, seed=3), 0)
    assert epoch0 != epoch_foils(dataset, 1)  # another kind of swap next epoch
    for scene, language, caption, foil in zip(dataset.records, dataset.languages, dataset.captions, epoch0):
        if not scene.foils(language):  # one object, or two identical ones: nothing to swap
            assert foil is None
            continue
        assert foil in scene.foils(language).values() and foil != caption
        assert sorted(foil.replace(",", "").split()) == sorted(caption.replace(",", "").split())  # same words
    assert 0.15 < sum(foil is None for foil in epoch0) / len(epoch0) < 0.25  # about the 20 % one-object scenes


# ----------------------------------------------------------------------------------------------------------------- emoji
@pytest.fixture(scope="module")
def emoji_train():
    return EmojiDataset("train", lang="both", image_size=8, seed=1)


def test_emoji_siblings_share_the_family_and_leave_out_identical_drawings():
    records = [{"family": "f", "name_en": n, "name_ko": n + "k"} for n in ("farmer", "man farmer", "woman farmer")]
    records.append({"family": "g", "name_en": "ghost", "name_ko": "유령"})
    assert emoji_siblings(records) == [[1, 2], [0, 2], [0, 1], []]
    assert emoji_siblings(records, duplicate_groups=[0, 0, 2, 3]) == [[2], [2], [0, 1], []]
    with pytest.raises(ValueError, match="duplicate_groups must give one id per record .4., got 2"):
        emoji_siblings(records, [0, 1])


def test_emoji_foil_is_the_caption_with_a_training_siblings_name(emoji_train):
    records = emoji_train.records
    siblings = emoji_siblings(records, emoji_train.duplicate_groups)
    train_names = {record[f"name_{lang}"] for record in records for lang in ("en", "ko")}
    foils = epoch_foils(emoji_train, 2)
    assert foils == epoch_foils(EmojiDataset("train", lang="both", image_size=8, seed=1), 2)  # replays
    captions = emoji_train.epoch_captions(2)
    with_foil = 0
    for i, (caption, foil) in enumerate(zip(captions, foils)):
        if not siblings[i]:
            assert foil is None
            continue
        with_foil += 1
        assert foil != caption
        lang = "ko" if records[i]["name_ko"] in caption and records[i]["name_en"] not in caption else "en"
        # exactly one sibling's name, written where the item's own name was: only the tone/gender words differ
        matches = [j for j in siblings[i]
                   if caption.replace(records[i][f"name_{lang}"], records[j][f"name_{lang}"], 1) == foil]
        assert matches, (caption, foil)
        assert all(records[j]["family"] == records[i]["family"] for j in matches)
    assert with_foil > 1000  # most people and hands have training siblings
    # the foils name training emoji only: no held-out (val/test) name ever appears in training, even as a negative
    eval_set = EmojiDataset("train", lang="en", image_size=8, caption_mode="eval")
    assert {foil for foil in epoch_foils(eval_set, 0) if foil is not None} <= train_names
    assert all(record["split"] == "train" for record in records)


def test_emoji_foil_swaps_tone_and_gender_words():
    dataset = EmojiDataset("train", lang="en", image_size=8, caption_mode="eval")
    row = [record["name_en"] for record in dataset.records].index("man feeding baby: dark skin tone")
    drawn = {emoji_foil(dataset, row, epoch) for epoch in range(60)}
    assert "man feeding baby: medium-dark skin tone" in drawn and "woman feeding baby: dark skin tone" in drawn
    assert all(foil.endswith("feeding baby") or "skin tone" in foil for foil in drawn)
    held_out = {r["name_en"] for r in EmojiDataset("test", image_size=8, caption_mode="eval").records}
    assert "man feeding baby: medium skin tone" in held_out and "man feeding baby: medium skin tone" not in drawn


def test_epoch_foils_refuses_other_datasets():
    with pytest.raises(TypeError, match="a ShapesDataset or an EmojiDataset, got list"):
        epoch_foils([], 0)


# ----------------------------------------------------------------------------------------------------------------- batches
def test_a_foil_equal_to_another_true_caption_of_the_batch_is_left_out():
    left = Scene((RED, BLUE), "left of")
    swapped = Scene((BLUE, RED), "left of")  # its role swap, also a true caption of the batch
    captions = [left.caption(), swapped.caption(), "a small red circle"]
    foils = [left.foils()["role"], left.foils()["colour"], None]
    assert foils[0] == captions[1]
    assert batch_foils(captions, foils) == [1]
    assert batch_foils(captions, [foils[1], foils[1].upper(), None]) == [0]  # a repeat counts once
    with pytest.raises(ValueError, match="got 3 captions but 2 foils"):
        batch_foils(captions, foils[:2])


@pytest.mark.parametrize("data", ["shapes", "emoji"])
def test_foils_never_equal_a_true_caption_of_their_batch(data, emoji_train):
    dataset = ShapesDataset("train", image_size=24, num_images=2000) if data == "shapes" else emoji_train
    for epoch in range(2):
        captions = dataset.epoch_captions(epoch)
        foils = epoch_foils(dataset, epoch)
        sampler = DistinctBatchSampler(captions, 128, seed=epoch, drop_last=True)
        used = dropped = 0
        for batch in sampler.batches(epoch):
            rows = batch_foils([captions[i] for i in batch], [foils[i] for i in batch])
            truths = {" ".join(captions[i].casefold().split()) for i in batch}
            kept = [" ".join(foils[batch[r]].casefold().split()) for r in rows]
            assert truths.isdisjoint(kept) and len(set(kept)) == len(kept)
            used += len(rows)
            dropped += sum(foils[i] is not None for i in batch) - len(rows)
        assert used > 10 * max(dropped, 1)  # dropping is the exception

"""Hard negative captions ("foils") for training: a true caption with some of its words swapped.

NegCLIP (Yuksekgonul et al., 2023, "When and why vision-language models behave like bags-of-words, and what to do
about it?") teaches a contrastive model word order and attributes by adding, for each caption, a foil that uses the
caption's own words in the wrong places, scored against every image of the batch as one more wrong caption
(`minclip.loss.clip_loss(..., foil_features)`). A batch of random pairs seldom holds a caption's role swap, so without
foils the loss never has to tell "a red circle left of a blue square" from "a blue square left of a red circle".

    shapes_foil(scene, lang, rng)       one of the scene's word swaps (role, colour, shape, size), chosen by `rng`
    emoji_siblings(records, groups)     for each emoji, the emoji of its family that a foil may name
    emoji_foil(dataset, i, epoch)       item i's training caption with the name of a sibling (another tone or gender)
    epoch_foils(dataset, epoch)         one foil (or None) per item of a shapes or emoji dataset
    batch_foils(captions, foils)        the foils a batch may use: never a true caption of the same batch

Shapes. `Scene.foils` (minclip/shapes.py) builds the false captions from the scene description: swap the colours,
the shapes or the sizes of two objects, or the objects themselves (the role swap, "A left of B" -> "B left of A").
A one-object scene has none.

Emoji. An emoji's family holds its skin-tone and gender variants ("woman farmer: dark skin tone", "man farmer", ...).
The foil is the item's training caption, drawn exactly as the dataset draws it (same template, same keywords), with
the name of another member of its family: the two differ only in the tone and gender words. Only siblings in the
dataset itself are used, so a training run never names a held-out (val or test) emoji, even as a negative; siblings
whose drawings are identical to the item's (some artist draws "farmer" and "man farmer" alike) are left out, since
telling those apart is impossible.

Every foil is a pure function of (dataset seed, epoch, item), like the captions, so a resumed run replays its foils.
How it fits: train.py asks `epoch_foils` once per epoch and `batch_foils` per step; data.py and shapes.py give the
captions the foils are made from; evaluate.py measures what they buy (binding and within-family accuracy).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .data import CAPTION_LANGS, EmojiDataset, _normalise, make_caption
from .shapes import Scene, ShapesDataset


def shapes_foil(scene: Scene, lang: str, rng: random.Random) -> str | None:
    """One false caption of `scene` in `lang` ('en' or 'ko'), picked uniformly among `scene.foils(lang)`; None for a
    one-object scene (nothing to swap).

        >>> from minclip.shapes import SceneObject
        >>> red, blue = SceneObject("circle", "red", "small", 0.3, 0.5), SceneObject("square", "blue", "large", 0.7, 0.5)
        >>> shapes_foil(Scene((red, blue), "left of"), "en", random.Random(1))
        'a large blue square to the left of a small red circle'
    """
    foils = scene.foils(lang)
    if not foils:
        return None
    return foils[rng.choice(sorted(foils))]  # sorted kinds: the choice does not depend on dict order


def emoji_siblings(records: Sequence[dict], duplicate_groups: Sequence | None = None) -> list[list[int]]:
    """For each record, the indices of the records a foil may name: same family, another name, another drawing.

    `duplicate_groups` (e.g. `EmojiDataset.duplicate_groups`): equal ids mark emoji drawn identically by some artist;
    they are never each other's foils.

        >>> records = [{"family": "f", "name_en": "farmer", "name_ko": "농부"},
        ...            {"family": "f", "name_en": "man farmer", "name_ko": "남자 농부"},
        ...            {"family": "g", "name_en": "ghost", "name_ko": "유령"}]
        >>> emoji_siblings(records), emoji_siblings(records, duplicate_groups=[0, 0, 2])
        ([[1], [0], []], [[], [], []])
    """
    groups = list(range(len(records))) if duplicate_groups is None else list(duplicate_groups)
    if len(groups) != len(records):
        raise ValueError(f"duplicate_groups must give one id per record ({len(records)}), got {len(groups)}")
    members: dict = {}
    for i, record in enumerate(records):
        members.setdefault(record["family"], []).append(i)
    return [[j for j in members[record["family"]]
             if groups[j] != groups[i] and record["name_en"] != records[j]["name_en"]
             and record["name_ko"] != records[j]["name_ko"]]
            for i, record in enumerate(records)]


def _foil_rng(seed: int, epoch: int, key) -> random.Random:
    """The generator of one item's foil: its own stream, apart from the caption's (which the foil must replay)."""
    return random.Random(f"{seed}:{epoch}:{key}:foil")


def emoji_foil(dataset: EmojiDataset, i: int, epoch: int, siblings: Sequence[int] | None = None) -> str | None:
    """Item `i`'s caption at `epoch` with a sibling's name in place of its own (None if it has no sibling).

    The caption is drawn as `dataset.caption(i, epoch)` draws it (language, template, keywords), then the name of a
    sibling picked by a separate seeded generator is written in; `siblings` defaults to `emoji_siblings(...)[i]`.
    """
    if siblings is None:
        siblings = emoji_siblings(dataset.records, dataset.duplicate_groups)[i]
    if not siblings:
        return None
    record = dataset.records[i]
    sibling = dataset.records[_foil_rng(dataset.seed, epoch, record["index"]).choice(list(siblings))]
    if dataset.caption_mode == "eval":
        return sibling[f"name_{dataset.lang}"]
    rng = random.Random(f"{dataset.seed}:{epoch}:{record['index']}")  # EmojiDataset.caption's generator, replayed
    lang = dataset.lang if dataset.lang != "both" else rng.choice(CAPTION_LANGS)
    return make_caption(record, lang, rng, name_override=sibling[f"name_{lang}"])


def epoch_foils(dataset, epoch: int) -> list[str | None]:
    """One foil per item of `dataset` at `epoch` (None where there is none): shapes or emoji.

    Shapes captions are fixed, so only the kind of swap changes from epoch to epoch; emoji foils follow the item's
    caption of that epoch.
    """
    if isinstance(dataset, ShapesDataset):
        return [shapes_foil(scene, lang, _foil_rng(dataset.seed, epoch, i))
                for i, (scene, lang) in enumerate(zip(dataset.records, dataset.languages))]
    if isinstance(dataset, EmojiDataset):
        siblings = emoji_siblings(dataset.records, dataset.duplicate_groups)
        return [emoji_foil(dataset, i, epoch, siblings[i]) for i in range(len(dataset))]
    raise TypeError(f"foils are built for a ShapesDataset or an EmojiDataset, got {type(dataset).__name__}")


def batch_foils(captions: Sequence[str], foils: Sequence[str | None]) -> list[int]:
    """The rows of a batch whose foil the loss may use: those with a foil that is no true caption of the batch.

    `captions[r]` and `foils[r]` belong to row r. A foil equal to another row's true caption (compared as the
    sampler compares captions: case and spacing ignored) would tell that row's image its own caption is wrong, so it
    is left out, and so is a repeat of an earlier row's foil (it would count one wrong caption twice).

        >>> batch_foils(["a red circle", "a blue square", "a red square"], ["a blue circle", "A red  square", None])
        [0]
    """
    if len(captions) != len(foils):
        raise ValueError(f"got {len(captions)} captions but {len(foils)} foils: one foil (or None) per row")
    taken = {_normalise(caption) for caption in captions}
    rows = []
    for row, foil in enumerate(foils):
        if foil is None or _normalise(foil) in taken:
            continue
        taken.add(_normalise(foil))
        rows.append(row)
    return rows

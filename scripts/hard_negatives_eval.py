"""Measure what hard negative captions (NegCLIP, `--hard-negatives`) buy: the same recipe with and without foils, at
the same compute (same data, epochs, steps and batch size), over several seeds; print the table the README and
notebook 09 quote, and write it to docs/hard_negatives.json.

    python scripts/hard_negatives_eval.py                        # shapes and emoji, seeds 0 and 1 (about 1.5 h)
    python scripts/hard_negatives_eval.py --data shapes --seeds 0 1 2
    python scripts/hard_negatives_eval.py --data shapes --seeds 0 --shapes-epochs 12 --arms "hard negatives"
    python scripts/hard_negatives_eval.py --data emoji --seeds 0 --arms "hard negatives + family batches"
    python scripts/hard_negatives_eval.py --table                # print the table of docs/hard_negatives.json only

Runs (trained with one thread if missing, reused otherwise, in runs/hardneg/<data>-<arm>-seed<k>):
    shapes   notebook 09's shapes model: the tiny preset, 4 epochs (312 steps), vocab_size 588
    emoji    the main job (TrainConfig defaults: tiny, 44 epochs); --emoji-epochs shortens both arms alike

Measured on the held-out test split of each set (English captions):
    shapes   binding accuracy against the role, colour and shape foil of every test caption (chance 50 %), image
             search among the 1,000 test images (R@1), the text tower's cosine between each test caption and
             each of its foils (1.0: the text tower cannot tell them apart, so no image can), and the image tower's
             cosine between each test image and the drawing of its foil (the scene with the swap applied)
    emoji    within-family accuracy (the right tone/gender among its siblings; also apart for the held-out tones
             of known people and the held-out genders of known roles), image search among all 3,655
             images (R@1, R@5), the text tower's cosine between each test name and its siblings' names, and the
             image tower's between each test image and its siblings' images
Foils are only ever made from training captions, so the held-out captions stay unseen in both arms.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from minclip.evaluate import (binding_accuracy, binding_scores, encode_images, encode_texts,  # noqa: E402
                              heldout_pairs, retrieval_recall, within_family_accuracy)
from minclip.data import EmojiDataset, to_model_input  # noqa: E402
from minclip.shapes import generate_scene, render_scenes  # noqa: E402
from minclip.train import TrainConfig, train, trained_with  # noqa: E402

RESULTS = ROOT / "docs" / "hard_negatives.json"
KINDS = ("role", "colour", "shape")
ARMS = {  # name -> (hard_negatives, family_batches); family batches hold hard negative images: emoji siblings,
    "plain": (False, False),  # or a shapes scene beside its role twin (the same objects in the opposite order)
    "hard negatives": (True, False),
    "hard negatives + family batches": (True, True),  # NegCLIP's hard negative images as well
    "family batches": (False, True),  # the hard negative images alone
}
DEFAULT_ARMS = ("plain", "hard negatives")


SHAPES_EPOCHS = 4  # notebook 09's shapes model
EMOJI_EPOCHS = TrainConfig().epochs  # the main job


def recipe(data: str, seed: int, arm: str, epochs: int) -> TrainConfig:
    hard_negatives, family_batches = ARMS[arm]
    if data == "shapes":  # notebook 09's shapes model (notebook 12's with 12 epochs)
        return TrainConfig(data="shapes", epochs=epochs, eval_every=0, vocab_size=588, seed=seed,
                           hard_negatives=hard_negatives, family_batches=family_batches)
    return TrainConfig(epochs=epochs, seed=seed, hard_negatives=hard_negatives,  # the main job's recipe
                       family_batches=family_batches)


def run_folder(data: str, seed: int, arm: str, epochs: int) -> Path:
    arm = {"plain": "plain", "hard negatives": "hard", "hard negatives + family batches": "hard-family",
           "family batches": "family"}[arm]
    length = "" if epochs == {"shapes": SHAPES_EPOCHS, "emoji": EMOJI_EPOCHS}[data] else f"-{epochs}ep"
    return ROOT / "runs" / "hardneg" / f"{data}{length}-{arm}-seed{seed}"


def swapped_scene(scene, kind: str):
    """The two-object `scene` with its foil's swap applied to the picture: what the foil caption describes."""
    first, second = scene.objects
    if kind == "role":  # the objects trade places, the places stay
        first, second = replace(second, x=first.x, y=first.y), replace(first, x=second.x, y=second.y)
    else:  # "colour" or "shape": the two objects trade that attribute
        first, second = replace(first, **{kind: getattr(second, kind)}), replace(second, **{kind: getattr(first, kind)})
    return type(scene)((first, second), scene.relation)


@torch.no_grad()
def measure_shapes(model, tokenizer, seed: int) -> dict:
    heldout = heldout_pairs("shapes", "en", model.config.image_size, seed)
    image_features = encode_images(model, heldout.model_input)  # (N, E)
    true_text = encode_texts(model, tokenizer, heldout.test_captions)  # (N, E)
    row = {"R@1": retrieval_recall(true_text @ image_features.T, heldout.test_indices, ks=(1,))["text_to_image"]["R@1"]}
    for kind in KINDS:
        foil_text = encode_texts(model, tokenizer, [foils[kind] for foils in heldout.foils])  # (N, E)
        scores = binding_scores(image_features, true_text, foil_text[:, None])  # (N,), (N, 1)
        row[f"binding {kind}"] = binding_accuracy(*scores)["accuracy"]
        row[f"text cosine {kind}"] = (true_text * foil_text).sum(dim=1).mean().item()
    scenes = [generate_scene("test", seed, i) for i in range(len(heldout.test_captions))]  # the test split's scenes
    size = model.config.image_size
    for kind in KINDS:
        drawn = to_model_input(torch.from_numpy(render_scenes([swapped_scene(s, kind) for s in scenes], size)))
        row[f"image cosine {kind}"] = (image_features * encode_images(model, drawn)).sum(dim=1).mean().item()
    return row


@torch.no_grad()
def measure_emoji(model, tokenizer) -> dict:
    heldout = heldout_pairs("emoji", "en", model.config.image_size)
    image_features = encode_images(model, heldout.model_input)  # (3655, E)
    text_features = encode_texts(model, tokenizer, heldout.test_captions)  # (Q, E)
    similarity = text_features @ image_features.T  # (Q, 3655)
    recall = retrieval_recall(similarity, heldout.test_indices, ks=(1, 5))["text_to_image"]
    row = {"within family": within_family_accuracy(similarity, heldout.test_indices, heldout.families)["accuracy"],
           "R@1": recall["R@1"], "R@5": recall["R@5"]}
    records = EmojiDataset("all", image_size=8, caption_mode="eval").records
    for holdout in ("skin-tone", "gender-role"):  # a new tone of a known person; a new gender of a known role
        queries = [q for q, target in enumerate(heldout.test_indices) if records[target]["holdout"] == holdout]
        targets = [heldout.test_indices[q] for q in queries]
        row[f"within family, {holdout}"] = within_family_accuracy(similarity[queries], targets,
                                                                  heldout.families)["accuracy"]
    # the text side: each held-out name against the names of its siblings (the foils of the test)
    names = [record["name_en"] for record in records]
    name_features = encode_texts(model, tokenizer, names)  # (3655, E)
    text_cosines, image_cosines = [], []
    for query, target in zip(text_features, heldout.test_indices):
        family = heldout.families[target]
        siblings = [j for j, other in enumerate(heldout.families) if other == family and j != target]
        text_cosines += (name_features[siblings] @ query).tolist()
        image_cosines += (image_features[siblings] @ image_features[target]).tolist()  # the image side, alike
    row["text cosine siblings"] = statistics.fmean(text_cosines)
    row["image cosine siblings"] = statistics.fmean(image_cosines)
    return row


def one_run(data: str, seed: int, arm: str, epochs: int) -> dict:
    config, out = recipe(data, seed, arm, epochs), run_folder(data, seed, arm, epochs)
    reused = trained_with(out / "checkpoint.pt", config)
    start = time.time()
    result = train(config, out=out, resume=reused, progress=False)
    model = result.model.eval()
    row = measure_shapes(model, result.tokenizer, seed) if data == "shapes" else measure_emoji(model, result.tokenizer)
    row.update(data=data, seed=seed, arm=arm, steps=result.history["step"][-1],
               epochs=config.epochs, train_seconds=None if reused else round(time.time() - start))
    return row


def table(rows: list[dict]) -> str:
    """Mean over seeds per (data, epochs, arm), with each seed's value in brackets."""
    lines = []
    groups = sorted({(row["data"], row["epochs"]) for row in rows}, key=lambda key: (key[0] != "shapes", key))
    for data, epochs in groups:
        chosen = [row for row in rows if (row["data"], row["epochs"]) == (data, epochs)]
        metrics = list(dict.fromkeys(key for row in chosen for key in row
                                     if key not in ("data", "seed", "arm", "steps", "epochs", "train_seconds")))
        arms = [arm for arm in ARMS if any(row["arm"] == arm for row in chosen)]
        lines += [f"{data} ({chosen[0]['epochs']} epochs, {chosen[0]['steps']} steps per run)",
                  "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for metric in metrics:
            cells = []
            for arm in arms:
                values = [row[metric] for row in sorted(chosen, key=lambda r: r["seed"])
                          if row["arm"] == arm and metric in row]
                if not values:
                    cells.append("not run")
                    continue
                percent = "cosine" not in metric
                shown = [f"{100 * v:.1f}" if percent else f"{v:.3f}" for v in values]
                mean = statistics.fmean(values) if values else float("nan")
                cells.append(f"{100 * mean:.1f} % ({', '.join(shown)})" if percent else
                             f"{mean:.3f} ({', '.join(shown)})")
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        seeds = {arm: sorted(row["seed"] for row in chosen if row["arm"] == arm) for arm in arms}
        lines.append("seeds " + ", ".join(f"{arm}: {seeds[arm]}" for arm in arms) + "; each cell: mean (per seed)")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["shapes", "emoji"], choices=["shapes", "emoji"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--shapes-epochs", type=int, default=SHAPES_EPOCHS)
    parser.add_argument("--emoji-epochs", type=int, default=EMOJI_EPOCHS)
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS),
                        help="which arms to train (default: plain and hard negatives)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help=f"print the table of {RESULTS.name} and stop")
    args = parser.parse_args(argv)
    stored = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": []}
    if args.table:
        print(table(stored["runs"]))
        return 0
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        for data in args.data:
            for arm in args.arms:
                epochs = args.shapes_epochs if data == "shapes" else args.emoji_epochs
                row = one_run(data, seed, arm, epochs)
                key = (row["data"], row["seed"], row["arm"], row["epochs"])
                if row["train_seconds"] is None:  # a reused run keeps the training time it was measured with
                    row["train_seconds"] = next((r.get("train_seconds") for r in stored["runs"]
                                                 if (r["data"], r["seed"], r["arm"], r["epochs"]) == key), None)
                print(json.dumps(row), flush=True)
                stored["runs"] = [r for r in stored["runs"]
                                  if (r["data"], r["seed"], r["arm"], r["epochs"]) != key] + [row]
                stored["machine"] = f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"
                RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
    print(table(stored["runs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the three uses of CLIP as a guide (minclip/guidance.py) with the models notebook 12 uses; print the figures
docs/guidance.md quotes and write them to runs/12_guidance/results.json.

    python scripts/guidance_eval.py            # trains the models first if runs/ lacks them (about 35 min)
    python scripts/guidance_eval.py --quick    # a few captions only, to check that everything runs
    python scripts/guidance_eval.py --judge 12_shapes_twins
                                               # reranking and guidance judged by the model that sees order
    python scripts/guidance_eval.py --shapes-model runs/some_run/checkpoint.pt
                                               # reranking and guidance only, judged by any shapes checkpoint
    python scripts/guidance_eval.py --only gradient --split val --captions 16
                                               # guidance alone, on validation captions (tune there, not on test)
    python scripts/guidance_eval.py --only gradient --search none --start random
                                               # an ablation: guide's options, as python -m minclip generate has them

The models (trained here with one thread if missing, reused otherwise; notebook 12 reuses the same folders):
    runs/12_shapes        the tiny preset on the shapes set, 12 epochs (python -m minclip train --data shapes ...)
    runs/12_shapes_twins  the same for 36 epochs, each scene beside its role twin in the batch (--family-batches)
    runs/12_emoji_seed0   the tiny preset on the emoji set, 16 epochs, seed 0: the model pixels are optimised for
    runs/12_emoji_seed1   the same recipe with seed 1: the second opinion
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import minclip  # noqa: E402
from minclip import guidance  # noqa: E402
from minclip.data import EmojiDataset  # noqa: E402
from minclip.shapes import generate_scene  # noqa: E402
from minclip.train import TrainConfig, train, trained_with  # noqa: E402

MODELS = {  # folder under runs/ -> the run's options (the same objects as notebook 12's)
    "12_shapes": TrainConfig(data="shapes", epochs=12, eval_every=0, vocab_size=588),
    "12_shapes_twins": TrainConfig(data="shapes", epochs=36, eval_every=0, vocab_size=588, family_batches=True),
    "12_emoji_seed0": TrainConfig(epochs=16, eval_every=0, seed=0),
    "12_emoji_seed1": TrainConfig(epochs=16, eval_every=0, seed=1),
}
RERANK_CAPTIONS = 120  # the first 120 held-out test scenes: one per held-out combination
GUIDE_CAPTIONS = 24  # scenes 0, 5, 10, ... of the split: five apart (so not four members of one swap group)
HEARTS = ("red heart", "orange heart", "yellow heart", "green heart", "blue heart", "purple heart")


def trained(name: str):
    config, out = MODELS[name], ROOT / "runs" / name
    result = train(config, out=out, resume=trained_with(out / "checkpoint.pt", config), progress=False)
    return result.model.eval(), result.tokenizer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few captions per part")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--judge", choices=("12_shapes", "12_shapes_twins"), default="12_shapes",
                        help="which of notebook 12's shapes models judges reranking and guidance (trained if missing; "
                             "default 12_shapes)")
    parser.add_argument("--shapes-model", type=Path, default=None,
                        help="any shapes checkpoint to judge reranking and guidance with (instead of --judge); "
                             "the pixel-prior part is skipped and the results go to results_<folder>[_...].json")
    parser.add_argument("--split", choices=("val", "test"), default="test",
                        help="which scenes' captions guidance draws: test (held-out combinations, the reported "
                             "numbers) or val (seen combinations, one to three objects: for tuning); default test")
    parser.add_argument("--captions", type=int, default=GUIDE_CAPTIONS,
                        help=f"how many captions guidance draws (default {GUIDE_CAPTIONS}; 3 with --quick)")
    parser.add_argument("--only", choices=("rerank", "gradient", "prior"), default=None,
                        help="run one part: reranking, gradient guidance, or the pixel prior (emoji models)")
    parser.add_argument("--relaxation", choices=guidance.RELAXATIONS, default="softmax")
    parser.add_argument("--start", choices=guidance.STARTS, default="row")
    parser.add_argument("--no-prior", action="store_true", help="let objects leave the row during the ascent")
    parser.add_argument("--steps", type=int, default=150,
                        help="Adam steps per caption (default 150; 30 with --quick; 1: little more than the search)")
    parser.add_argument("--search", choices=(*guidance.SEARCH_STEPS, "none"), default="all",
                        help="the search after the ascent: every combination of an object's attributes (all), "
                             "colour and shape pairs then size (pairs), one attribute at a time (one), or none")
    args = parser.parse_args(argv)
    if args.captions < 1:
        parser.error(f"--captions must be at least 1, got {args.captions}")
    torch.set_num_threads(args.threads)
    start = time.time()
    results = {"machine": f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}"}
    run = {part: args.only in (None, part) for part in ("rerank", "gradient", "prior")}

    if run["rerank"] or run["gradient"]:
        if args.shapes_model is None:
            shapes_model, shapes_tokenizer = trained(args.judge)
            results["shapes_model"] = f"runs/{args.judge}"
        else:
            shapes_model, _, shapes_tokenizer = minclip.load(args.shapes_model, fast_path=True)  # as trained()'s
            shapes_model.eval()
            results["shapes_model"] = str(args.shapes_model)
    if run["rerank"]:
        count = 8 if args.quick else RERANK_CAPTIONS
        captions = [generate_scene("test", 0, i).caption() for i in range(count)]
        results["rerank"] = guidance.rerank_curve(shapes_model, shapes_tokenizer, captions)
        print("reranking, held-out captions:", json.dumps(results["rerank"]), flush=True)

    if run["gradient"]:
        options = {"steps": 30 if args.quick else args.steps, "relaxation": args.relaxation, "start": args.start,
                   "prior": not args.no_prior,
                   "search": None if args.search == "none" else args.search}
        rows, seconds = [], time.time()
        for i in range(0, 5 * (3 if args.quick else args.captions), 5):
            caption = generate_scene(args.split, 0, i).caption()
            result = guidance.guide(shapes_model, shapes_tokenizer, caption, seed=i, **options)
            key = guidance.parse_caption(caption)
            objects = result.scene is not None and sorted(guidance.describe(result.scene)[1]) == sorted(key[1])
            rows.append({"caption": caption, "drawn": result.scene.caption() if result.scene else None,
                         "exact": guidance.matches(result.scene, caption), "objects": bool(objects),
                         "score": result.scores[result.best].item()})
            print(f"  {'yes' if rows[-1]['exact'] else 'no ':3} {caption} -> {rows[-1]['drawn']}", flush=True)
        exact = sum(r["exact"] for r in rows)
        results["guide"] = {"split": args.split, "options": options, "exact": exact / len(rows),
                            "objects": sum(r["objects"] for r in rows) / len(rows),
                            "seconds_per_caption": (time.time() - seconds) / len(rows), "rows": rows}
        print(f"guidance ({args.split} split, {options}): exact {exact} of {len(rows)} ({exact / len(rows):.1%}), "
              f"objects right {results['guide']['objects']:.1%}, "
              f"{results['guide']['seconds_per_caption']:.1f} s per caption", flush=True)

    if not run["prior"] or (args.shapes_model is not None and args.only is None):  # the emoji part: no shapes judge
        return write(results, start, result_name(args))
    a, a_tokenizer = trained("12_emoji_seed0")
    b, b_tokenizer = trained("12_emoji_seed1")
    emoji = EmojiDataset("all", caption_mode="eval")
    names = [record["name_en"] for record in emoji.records]
    results["prior"] = {}
    for caption in HEARTS[:2] if args.quick else HEARTS:
        real = emoji.images[names.index(caption)]
        out = guidance.prior_experiment(a, a_tokenizer, b, b_tokenizer, caption, real, steps=30 if args.quick else 150)
        results["prior"][caption] = {"score": out["score"], "other": out["other"]}
        print(caption, {k: f"{out['score'][k]:.2f}/{out['other'][k]:.2f}" for k in out["score"]}, flush=True)
    mean = {k: [sum(r[which][k] for r in results["prior"].values()) / len(results["prior"]) for which in
                ("score", "other")] for k in next(iter(results["prior"].values()))["score"]}
    results["prior_mean"] = mean
    print("mean cosine, model A (optimised for) / model B (seed 1):",
          {k: f"{v[0]:.3f}/{v[1]:.3f}" for k, v in mean.items()})
    return write(results, start, result_name(args))


def result_name(args) -> str:
    """results.json for the full default run; otherwise a name that says what differs, e.g.
    results_12_shapes_twins_gradient_val_search-none.json, so that no run overwrites another's numbers."""
    parts = [args.shapes_model.parent.name] if args.shapes_model else [args.judge] * (args.judge != "12_shapes")
    parts += [args.only] if args.only else []
    parts += [args.split] if args.split != "test" else []
    parts += [f"start-{args.start}"] if args.start != "row" else []
    parts += ["straight-through"] if args.relaxation != "softmax" else []
    parts += [f"search-{args.search}"] if args.search != "all" else []
    parts += [f"steps-{args.steps}"] if args.steps != 150 else []
    parts += ["no-prior"] * args.no_prior + ["quick"] * args.quick
    return "_".join(["results", *parts]) + ".json"


def write(results: dict, start: float, name: str) -> int:
    results["seconds"] = time.time() - start
    out = ROOT / "runs" / "12_guidance" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"{results['seconds']:.0f} s; wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `python -m minclip train | eval | search | classify | export | tokenize | generate`.

    python -m minclip train --out runs/tiny            # the main job: the tiny preset on the emoji set, a few minutes
    python -m minclip eval runs/tiny/checkpoint.pt     # the held-out report again
    python -m minclip search runs/tiny/checkpoint.pt "red heart" [--images FOLDER]
    python -m minclip classify ViT-B-32.pt photos/ --labels "cat,dog,bird"   # zero-shot, with your own labels
    python -m minclip export runs/tiny/checkpoint.pt exported/ --open-clip  # (or an OpenAI-format .pt without it)
    python -m minclip tokenize "고양이가 나무 위에 있다" [--checkpoint CKPT]
    python -m minclip generate runs/12_shapes/checkpoint.pt "a small red circle to the left of a large blue square"
    torchrun --standalone --nproc_per_node=2 -m minclip train --out runs/two   # two processes share every batch
    python -m minclip train --data pairs.csv --split-key split --out runs/mine  # your own captioned images

Bad input (a missing, empty, damaged or foreign checkpoint, an option out of range, an output path that cannot be
written, an empty or too long query, a folder without readable images, empty --labels, an unknown preset) ends with
a one-line `error: ...` and exit status 2, never a traceback; a bug in minclip still shows its traceback. Ctrl-C or
SIGTERM stops training between two steps after writing the checkpoint, and says how to resume (exit status 130 or
143). eval, search, classify, export and tokenize also take OpenAI's released weights (`minclip.load`); eval,
search, classify and generate run the towers with training's shortcuts (`minclip.load(..., fast_path=True)`: the
same features for less work, so eval prints the report training printed). How it fits: a thin layer over
train.py, evaluate.py, plots.py and tokenizer.py; all the work happens there. What happens in each case, and the
test that shows it: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import sys
import warnings
from pathlib import Path


class UsageError(Exception):
    """A problem with the user's input, reported as one line."""


def _parser() -> argparse.ArgumentParser:
    from .data import ARTISTS, LANGS
    from .guidance import RELAXATIONS, SEARCH_STEPS, STARTS
    from .model import PRESETS
    from .train import DATASETS, LOSSES, PRECISIONS

    parser = argparse.ArgumentParser(prog="python -m minclip", description="Train, evaluate and use a small CLIP.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a CLIP and write checkpoint, metrics and plots",
        description="Train a CLIP; writes OUT/checkpoint.pt, OUT/metrics.json and PNG plots. Under torchrun "
                    "(torchrun --standalone --nproc_per_node=N -m minclip train ...) N processes train one model: each "
                    "encodes 1/N of every batch, the loss covers the whole batch (features gathered), gradients are "
                    "averaged (DistributedDataParallel; NCCL on GPUs, gloo on the CPU), and only rank 0 shows "
                    "progress and writes files. The result is that of one process with the same options.")
    train.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model size (default: tiny)")
    train.add_argument("--data", default="emoji", metavar="DATA",
                       help=f"{' or '.join(DATASETS)} (shipped), or your own pairs: a .csv/.tsv file with a header, a "
                            ".jsonl file, a folder of images each with a .txt caption, or tar shards such as "
                            "'shards-{000..009}.tar' (default: emoji)")
    train.add_argument("--lang", default="en", choices=list(LANGS), help="caption language (default: en)")
    train.add_argument("--artists", nargs="+", default=["noto"], choices=list(ARTISTS), metavar="ARTIST",
                       help=f"emoji: train on these artists' drawings, one per emoji and epoch; the report tests "
                            f"the others as unseen artists (choices: {', '.join(ARTISTS)}; default: noto)")
    train.add_argument("--epochs", type=int, help="passes over the training split (default: the recipe's)")
    train.add_argument("--batch-size", type=int,
                       help="pairs per step, over all processes: a multiple of their number (default: the recipe's)")
    train.add_argument("--loss", default="clip", choices=list(LOSSES),
                       help="'clip': InfoNCE, a softmax over the batch; 'siglip': a sigmoid per pair with a learned "
                            "bias (Zhai et al., 2023) (default: clip)")
    train.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    train.add_argument("--hard-negatives", action="store_true",
                       help="NegCLIP (Yuksekgonul et al., 2023): each caption brings a foil with its words swapped "
                            "(shapes: role, colour, shape or size; emoji: a sibling's tone or gender), scored against "
                            "every image as one more wrong caption")
    train.add_argument("--family-batches", action="store_true",
                       help="hard negative images: each batch holds an emoji's siblings together (its other skin "
                            "tones and genders), or each shapes scene beside its role twin (the same objects in "
                            "the opposite order)")
    train.add_argument("--artist-pairs", action="store_true",
                       help="emoji, two or more --artists: each caption comes drawn by two of them, positives of "
                            "each other (an image-image InfoNCE term beside the caption's)")
    train.add_argument("--anchor-artist", action="store_true",
                       help="with --artist-pairs: the first of --artists draws one drawing of every pair (where it "
                            "draws the emoji), so each epoch shows every caption in its hand")
    train.add_argument("--max-shift", type=int, metavar="PIXELS",
                       help="augmentation: move each image by up to this many pixels in x and in y (default: 2; 0: "
                            "no shifts)")
    train.add_argument("--no-mirror", dest="mirror", action="store_false",
                       help="augmentation: never mirror an image (by default, half of the images whose caption "
                            "survives it are mirrored left-right)")
    train.add_argument("--restyle", action="store_true",
                       help="emoji: also shrink each drawing to 70-100 %% of its size and soften it through a lower "
                            "resolution, two habits that differ between artists")
    train.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                       help="forward pass: 'auto' = bf16 autocast on a GPU, float32 elsewhere; 'bf16' also on a CPU "
                            "with bf16 matrix units (Intel AMX), where it is faster (default: auto)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (quick looks, tests)")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUT/checkpoint.pt, with the options it was trained with: an interrupted "
                            "run replays exactly; --epochs or --max-steps larger than before extends a run, and the "
                            "learning-rate schedule is recomputed for the new total (from the step reached the rate "
                            "follows the longer run's warm-up + cosine, down to zero at its new end). Without them "
                            "the checkpoint's are used")
    train.add_argument("--save-every-minutes", type=float, metavar="MINUTES",
                       help="write the checkpoint after every epoch, and within an epoch after this many minutes "
                            "(default: 10); Ctrl-C or SIGTERM also writes it before stopping")
    train.add_argument("--out", default=None, help="output folder (default: runs/PRESET-DATA-LANG)")
    review = train.add_argument_group("the review's recipe (to measure what it costs)")
    review.add_argument("--fixed-temperature", type=float, metavar="T",
                        help="a constant temperature instead of a learned one (the review: 1, raw cosine logits)")
    review.add_argument("--freeze-image-tower", action="store_true",
                        help="train only the image tower's final projection (the review's frozen backbone)")
    review.add_argument("--text-pooling", choices=["eot", "first"],
                        help="'first': bidirectional text attention pooled at the first token (BERT-style [CLS])")
    shape = train.add_argument_group("the model's shape (changes the preset's; docs/generalization.md measures them)")
    shape.add_argument("--image-size", type=int, metavar="S", help="input images are S x S pixels (tiny: 64)")
    shape.add_argument("--patch-size", type=int, metavar="P", help="ViT patches of P x P pixels, dividing S (tiny: 16)")
    shape.add_argument("--vision-layers", type=int, metavar="N", help="residual blocks of the image tower (tiny: 4)")
    shape.add_argument("--text-layers", type=int, metavar="N", help="residual blocks of the text tower (tiny: 4)")
    own = train.add_argument_group("your own data (--data PATH; see minclip/captioned.py)")
    own.add_argument("--image-key", metavar="NAME",
                     help="the image-path column of a CSV/TSV (default: filepath) or key of a JSONL file (image)")
    own.add_argument("--caption-key", metavar="NAME", help="the caption column (default: title) or key (caption)")
    own.add_argument("--split-key", metavar="NAME",
                     help="a column (key) saying train or val/test for each row: the val/test rows are held out")
    own.add_argument("--val-fraction", type=float, metavar="F",
                     help="share of the images (of tar shards: of the shards) held out for recall@K "
                          "(default: 0.05, or 0 with --split-key)")
    own.add_argument("--tokenizer", choices=["learn", "openai"], default="learn",
                     help="'learn': a BPE vocabulary learned from your captions; 'openai': OpenAI's 49,408 tokens "
                          "(default: learn)")
    own.add_argument("--workers", type=int, default=0,
                     help="processes decoding images beside training (default: 0, decode in the training process)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="print the held-out report of a checkpoint",
                                   description="Print the held-out report of a trained checkpoint. Given OpenAI's "
                                               "weights (ViT-B-32.pt, ...), their zero-shot report on the shipped "
                                               "emoji's held-out captions (English), which they never trained on.")
    evaluate.add_argument("checkpoint")

    search = commands.add_parser("search", help="rank images for a text query and save a gallery",
                                 description="Rank the shipped emoji (Noto's drawings, or --artist's) or the images "
                                             "in FOLDER for a text query.")
    search.add_argument("checkpoint")
    search.add_argument("query")
    search.add_argument("--images", metavar="FOLDER", help="a folder of image files (default: the shipped emoji)")
    search.add_argument("--artist", choices=ARTISTS, default=None,
                        help="search this artist's shipped drawings (default: noto), e.g. one the model never saw")
    search.add_argument("--top", type=int, default=8, help="how many images to show (default: 8)")
    search.add_argument("--gallery", default="search.png", help="where to save the gallery (default: search.png)")
    search.add_argument("--truncate", action="store_true",
                        help="cut a query longer than the model's context to its first tokens instead of refusing it")

    classify = commands.add_parser(
        "classify", help="zero-shot: label images with your own class names",
        description="Zero-shot classification: each label becomes captions (a prompt ensemble, averaged), and each "
                    "image gets the labels whose captions it matches best, with CLIP's probabilities. Works with "
                    "minclip checkpoints and OpenAI's weights (ViT-B-32.pt, RN50.pt, ...).")
    classify.add_argument("checkpoint")
    classify.add_argument("images", metavar="IMAGE_OR_DIR", help="an image file, or a folder of image files")
    classify.add_argument("--labels", required=True, help='class names separated by commas, e.g. "cat,dog,bird"')
    classify.add_argument("--template", action="append", metavar="TEMPLATE",
                          help='a caption with {} for the label, e.g. "a photo of a {}."; repeat it for an ensemble '
                               "(default: photo captions for OpenAI's weights, the training templates for minclip's)")
    classify.add_argument("--top", type=int, default=3, help="labels shown per image (default: 3)")

    export = commands.add_parser(
        "export", help="write a checkpoint's weights for OpenAI's or open_clip's code",
        description="Write the weights in OpenAI's layout (one .pt file that OpenAI's clip.load, open_clip and "
                    "minclip read), or with --open-clip a folder open_clip's create_model loads: its model config "
                    "(which, unlike OpenAI's layout, states the heads) and the state dict.")
    export.add_argument("checkpoint", help="a minclip checkpoint or OpenAI's weights")
    export.add_argument("out", help="the .pt file to write (a folder with --open-clip)")
    export.add_argument("--open-clip", action="store_true",
                        help="write OUT/NAME.json, OUT/open_clip_config.json and OUT/open_clip_pytorch_model.bin, "
                             "NAME being the folder's name")

    tokenize = commands.add_parser("tokenize", help="show how a text is split into tokens",
                                   description="Show the tokens of a text (OpenAI's vocabulary by default).")
    tokenize.add_argument("text")
    tokenize.add_argument("--checkpoint", help="use the vocabulary learned by this checkpoint instead of OpenAI's")

    generate = commands.add_parser(
        "generate", help="draw a shapes caption by steering a renderer with CLIP's gradient",
        description="Draw a caption of the shapes set (e.g. \"a small red circle to the left of a large blue square\") "
                    "by gradient ascent of a shapes-trained CLIP's score through a differentiable shapes renderer, "
                    "then a search over each object's colour, shape and size (minclip/guidance.py); saves the "
                    "optimisation as frames and prints the scene it ended on.")
    generate.add_argument("checkpoint")
    generate.add_argument("caption")
    generate.add_argument("--out", default="frames.png", help="where to save the frames (default: frames.png)")
    generate.add_argument("--steps", type=int, default=150, help="gradient steps (default: 150)")
    generate.add_argument("--restarts", type=int, default=4,
                          help="starting scenes optimised together (rows on the caption's axis, each jittered "
                               "differently, or random with --start random); the one CLIP scores highest over 8 "
                               "shifted views is kept (default: 4)")
    generate.add_argument("--relaxation", choices=RELAXATIONS, default="softmax",
                          help="how colours and shapes are drawn during the ascent: softmax mixtures whose "
                               "temperature falls from 1 to 0.1, or the arg-max with straight-through gradients "
                               "(default: softmax)")
    generate.add_argument("--start", choices=STARTS, default="row",
                          help="where the restarts begin: a row on the caption's axis, or anywhere (default: row)")
    generate.add_argument("--no-prior", action="store_true",
                          help="let the objects leave the row during the ascent (default: kept in a row)")
    generate.add_argument("--search", choices=(*SEARCH_STEPS, "none"), default="all",
                          help="after the ascent, try every colour, shape and size of each object (all), its colour "
                               "and shape pairs then sizes (pairs), one attribute at a time (one), or nothing (none); "
                               "CLIP keeps its favourite (default: all)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from .train import TrainingInterrupted

    try:
        return {"train": _train, "eval": _eval, "search": _search, "classify": _classify, "export": _export,
                "tokenize": _tokenize, "generate": _generate}[args.command](args)
    except (UsageError, ValueError, TypeError, OSError) as error:  # OSError: files, folders, disks
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        again = f"; continue with the same command and --resume" if stop.checkpoint is not None else ""
        print(f"interrupted: {stop}{again}", file=sys.stderr)
        return 128 + stop.signal_number
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _train(args) -> int:
    from . import plots
    from .checkpoint import read_checkpoint
    from .data import DATASETS
    from .evaluate import format_report
    from .train import TrainConfig, check_output_folder, train

    temperature = args.fixed_temperature
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0.01):
        raise UsageError(f"--fixed-temperature must be a finite number >= 0.01 (CLIP clamps the temperature there), "
                         f"got {temperature}")
    own_data = args.data not in DATASETS
    if not own_data and any(value is not None for value in (args.image_key, args.caption_key, args.split_key,
                                                            args.val_fraction)):
        raise UsageError(f"--image-key, --caption-key, --split-key and --val-fraction are for your own data "
                         f"(--data PATH); the shipped {args.data!r} set has its own splits")
    data_name = re.sub(r"[^\w.-]+", "-", Path(args.data.split("{")[0]).stem).strip("-") or "data"
    out = Path(args.out or f"runs/{args.preset.replace('/', '-')}-{data_name}-{args.lang}")
    check_output_folder(out)
    stored = None
    if args.resume:
        stored = read_checkpoint(out / "checkpoint.pt")
    elif (out / "checkpoint.pt").exists():
        raise UsageError(f"{out}/checkpoint.pt exists; pass --resume to continue it or choose another --out")
    inherited = stored["train_config"] if stored is not None else {}  # --resume: the run's length unless given
    overrides = {name: value for name, value in (
        ("epochs", args.epochs if args.epochs is not None else inherited.get("epochs")),
        ("batch_size", args.batch_size), ("lr", args.lr), ("save_every_minutes", args.save_every_minutes),
        ("max_shift", args.max_shift),
        ("max_steps", args.max_steps if args.max_steps is not None or args.epochs is not None
         else inherited.get("max_steps")),
        ("fixed_logit_scale", None if temperature is None else 1 / temperature)) if value is not None}
    model_overrides = {name: getattr(args, name) for name in MODEL_FLAGS if getattr(args, name) is not None}
    if own_data:
        overrides.update(image_key=args.image_key, caption_key=args.caption_key, split_key=args.split_key,
                         val_fraction=args.val_fraction if args.val_fraction is not None
                         else 0.0 if args.split_key else 0.05, tokenizer=args.tokenizer, workers=args.workers)
    elif args.tokenizer != "learn" or args.workers:
        raise UsageError("--tokenizer and --workers are for your own data (--data PATH); the shipped sets learn "
                         "their vocabulary and are read from memory")
    try:
        config = TrainConfig(preset=args.preset, data=args.data, lang=args.lang, artists=tuple(args.artists),
                             seed=args.seed, loss=args.loss, hard_negatives=args.hard_negatives,
                             family_batches=args.family_batches, artist_pairs=args.artist_pairs,
                             anchor_artist=args.anchor_artist, restyle=args.restyle, mirror=args.mirror,
                             precision=args.precision, freeze_image_tower=args.freeze_image_tower,
                             model=model_overrides, **overrides)
    except ValueError as error:
        raise UsageError(_as_flags(str(error))) from None
    if stored is not None:
        _check_resume(stored, config, out)
    result = train(config, out=out, resume=args.resume, progress=not args.quiet)
    if result.rank != 0:  # several processes (torchrun): rank 0 reports and writes the files
        return 0

    (out / "metrics.json").write_text(json.dumps(result.report, indent=2, ensure_ascii=False) + "\n")
    plots.save(plots.training_curves(result.history, title=f"{args.preset} on {args.data} ({args.lang})"),
               out / "training_curves.png")
    if not own_data:  # the galleries rank the shipped sets' held-out pairs
        for name, figure in plots.report_figures(result.model, result.tokenizer, config.data, config.lang,
                                                 seed=config.seed).items():
            plots.save(figure, out / f"{name}.png")
    print(format_report(result.report) if result.report else "no held-out report: nothing was held out")
    print(f"trained in {result.seconds:.0f} s; wrote {out}/checkpoint.pt, metrics.json and plots")
    return 0


# TrainConfig fields and the options that set them (the others are set from Python only)
FLAGS = {"preset": "--preset", "data": "--data", "lang": "--lang", "artists": "--artists", "epochs": "--epochs",
         "batch_size": "--batch-size", "loss": "--loss", "lr": "--lr", "precision": "--precision", "seed": "--seed",
         "max_steps": "--max-steps", "save_every_minutes": "--save-every-minutes",
         "fixed_logit_scale": "--fixed-temperature",
         "freeze_image_tower": "--freeze-image-tower", "hard_negatives": "--hard-negatives",
         "family_batches": "--family-batches", "artist_pairs": "--artist-pairs", "anchor_artist": "--anchor-artist",
         "max_shift": "--max-shift", "mirror": "--no-mirror", "restyle": "--restyle",
         "image_key": "--image-key", "caption_key": "--caption-key", "split_key": "--split-key",
         "val_fraction": "--val-fraction", "tokenizer": "--tokenizer", "workers": "--workers"}
# CLIPConfig fields (TrainConfig.model) and the options that set them
MODEL_FLAGS = {"text_pooling": "--text-pooling", "image_size": "--image-size", "patch_size": "--patch-size",
               "vision_layers": "--vision-layers", "text_layers": "--text-layers"}


def _as_flags(message: str) -> str:
    """A TrainConfig error in the command line's words: `batch_size must...` -> `--batch-size must...`, and
    `CLIPConfig.image_size=30 must...` -> `--image-size=30 must...`."""
    for name, flag in MODEL_FLAGS.items():
        message = message.replace(f"CLIPConfig.{name}", flag)
    name = message.split(" ", 1)[0]
    return FLAGS[name] + message[len(name):] if name in FLAGS else message


def _flag(name: str, value) -> str:
    """The command-line words that set the TrainConfig field `name` to `value`, a value other than the field's default
    (`_check_resume` asks only for those; "" where no word is needed)."""
    if name == "fixed_logit_scale":
        return "" if value is None else f"--fixed-temperature {1 / value:g}"
    if isinstance(value, bool):  # a switch, which flips its default: --artist-pairs, --no-mirror
        return FLAGS[name]
    if name == "model":  # only the fields MODEL_FLAGS names (see _check_resume)
        return " ".join(f"{MODEL_FLAGS[field]} {setting}" for field, setting in value.items() if field in MODEL_FLAGS)
    if name == "artists":
        return f"--artists {' '.join(value)}"
    if name == "data":  # a path may hold spaces, and the braces of shard patterns, which a shell would expand
        return f"--data {shlex.quote(value)}"
    return "" if value is None else f"{FLAGS[name]} {value}"


def _check_resume(state: dict, config, out: Path) -> None:
    """Refuse a --resume whose options differ from the checkpoint's, naming them and the command that continues."""
    from .train import CONTINUABLE, TrainConfig, option_differences

    differ = {name: values for name, values in option_differences(state, config).items() if name not in CONTINUABLE}
    if not differ:
        return
    named = ", ".join(f"{FLAGS.get(name, name)} {_shown(name, stored)} (this command: {_shown(name, given)})"
                      for name, (stored, given) in differ.items())
    stored = {**state["train_config"]}
    expressible = set(stored.get("model", {})) <= set(MODEL_FLAGS)  # the command line sets these model fields
    settable = [name for name in differ if name in FLAGS or (name == "model" and expressible)]
    defaults = dataclasses.asdict(TrainConfig())  # the command line's defaults too: only other values need a flag
    words = [_flag(name, stored[name]) for name in ("preset", "data", "lang", "artists", "batch_size", "loss", "lr",
                                                    "precision", "seed", "fixed_logit_scale", "freeze_image_tower",
                                                    "hard_negatives", "family_batches", "artist_pairs",
                                                    "anchor_artist", "max_shift", "mirror", "restyle",
                                                    "model", "image_key", "caption_key", "split_key", "val_fraction",
                                                    "tokenizer")
             if name in stored and stored[name] != defaults[name]]
    command = " ".join(["python -m minclip train --out", str(out), "--resume", *filter(None, words)])
    advice = f"continue it with: {command}" if len(settable) == len(differ) else \
        "those options are set from Python only (TrainConfig): resume it with minclip.train.train"
    raise UsageError(f"{out}/checkpoint.pt was trained with other options: {named}; {advice}; "
                     "or choose another --out for a new run")


def _shown(name: str, value) -> str:
    return f"{1 / value:g}" if name == "fixed_logit_scale" and value else repr(value)


def _eval(args) -> int:
    from .checkpoint import is_openai_file, load, read_checkpoint
    from .evaluate import format_report, heldout_report
    from .preprocess import CLIPPreprocess
    from .train import unseen_artists

    model, preprocess, tokenizer = load(args.checkpoint, fast_path=True)
    if isinstance(preprocess, CLIPPreprocess) and is_openai_file(args.checkpoint):
        # OpenAI's weights: zero-shot on the shipped set's held-out captions
        print(f"OpenAI's weights, zero-shot: the shipped emoji resized to {model.config.image_size} pixels, English "
              "captions")
        trained_with = {}
    else:
        trained_with = read_checkpoint(args.checkpoint)["train_config"]
    config = {"data": "emoji", "lang": "en", "seed": 0, "artists": ("noto",), **trained_with}
    if config["data"] not in ("emoji", "shapes"):  # your own data: its held-out part, read again from disk
        from .captioned import CaptionedData

        own = CaptionedData(config["data"], model.config.image_size, config["batch_size"], seed=config["seed"],
                            val_fraction=config.get("val_fraction", 0.0), split_key=config.get("split_key"),
                            image_key=config.get("image_key"), caption_key=config.get("caption_key"))
        report = own.heldout_report(model, tokenizer)
        if not report:
            raise UsageError(f"{args.checkpoint} was trained on {config['data']} with nothing held out: there is "
                             "no held-out report (train with --val-fraction or --split-key)")
        print(format_report(report))
        return 0
    report = heldout_report(model, tokenizer, config["data"], config["lang"], model.config.image_size,
                            seed=config["seed"], unseen_artists=unseen_artists(config["data"], config["artists"]))
    print(format_report(report))
    return 0


def _search(args) -> int:
    import torch

    from . import plots
    from .checkpoint import load
    from .data import EmojiDataset
    from .evaluate import encode_images

    if not args.query.strip():
        raise UsageError("the query is empty; give a text such as \"red heart\"")
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    if args.images and args.artist:
        raise UsageError("--artist picks the shipped drawings to search and --images a folder instead; give one")
    gallery = _writable_file(Path(args.gallery), "--gallery")  # before the work, not after it
    model, preprocess, tokenizer = load(args.checkpoint, fast_path=True)
    tokens = _query_tokens(tokenizer, args.query, model.config.context_length, args.truncate)  # (1, T)
    if args.images:
        images, names = _read_image_folder(Path(args.images), *_reading(model, preprocess))
    else:
        emoji = EmojiDataset("all", caption_mode="eval", artists=(args.artist or "noto",))  # the emoji it draws
        images, names = emoji.images, [record["name_en"] for record in emoji.records]
    image_features = encode_images(model, images, preprocess=preprocess)  # (N, E), unit length
    with torch.no_grad():
        query_features = model.encode_text(tokens, normalize=True).float()  # (1, E)
    scores = (query_features @ image_features.T)[0]  # (N,)
    top = scores.topk(min(args.top, len(scores)))
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:2d}. {score:.3f}  {names[index]}")
    among = f" ({args.artist}'s drawings)" if args.artist else ""
    figure = plots.retrieval_gallery([args.query], [images[top.indices]], [top.values.tolist()],
                                     title=f"search: {args.query}{among}")
    print(f"gallery saved to {plots.save(figure, gallery)}")
    return 0


def _query_tokens(tokenizer, query: str, context_length: int, truncate: bool):
    """The query as a (1, context_length) token row; a query too long for the context is an error unless `truncate`."""
    length = len(tokenizer.encode(query)) + 2  # with the start and end tokens
    if length > context_length:
        if not truncate:
            raise UsageError(f"the query has {length - 2} tokens, more than the {context_length - 2} this model reads; "
                             f"shorten it to {context_length - 2} tokens or pass --truncate to keep its first ones")
        print(f"warning: the query has {length - 2} tokens; only its first {context_length - 2} are used",
              file=sys.stderr)
    return tokenizer.tokenize([query], context_length, truncate=truncate)


def _writable_file(path: Path, option: str) -> Path:
    """`path` if a file can be written there (its folder is created); UsageError naming `option` otherwise."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise UsageError(f"{option} {path}: cannot save a {path.suffix} file; use one of "
                         f"{', '.join('.' + name for name in sorted(formats))}")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name such as {path / 'search.png'}")
    from .train import probe_writable

    try:
        probe_writable(path.parent)
    except OSError as error:
        raise UsageError(f"cannot write {option} {path} ({error.strerror or error}); choose a path in a folder you "
                         "can write to") from None
    return path


def _reading(model, preprocess) -> tuple[int, bool]:
    """How to read image files for `model`: (size, crop). OpenAI's weights: at their input size, shorter side resized
    and centre-cropped as their preprocess does; minclip's: 64 x 64, the whole image, as the shipped emoji."""
    from .data import SHIPPED_SIZE
    from .preprocess import CLIPPreprocess

    return (model.config.image_size, True) if isinstance(preprocess, CLIPPreprocess) else (SHIPPED_SIZE, False)


def _read_image_folder(folder: Path, size: int, crop: bool = False):
    """uint8 (N, size, size, 3) images from the image files in `folder` (read by `_read_image`); other files, files
    that fail to decode and images too large to decode safely (PIL's guard against decompression bombs) are skipped
    with a warning."""
    import numpy as np
    import torch
    from PIL import Image

    from .captioned import IMAGE_SUFFIXES

    if not folder.is_dir():
        raise UsageError(f"--images {folder} is not a folder")
    images, names, unreadable = [], [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            images.append(_read_image(path, size, crop))
            names.append(path.name)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            print(f"warning: skipping {path.name}: too large to decode safely ({error})", file=sys.stderr)
            unreadable.append(path.name)
        except (OSError, ValueError, EOFError, SyntaxError) as error:  # what PIL raises for undecodable files
            looks_like_image = path.suffix.lower().lstrip(".") in IMAGE_SUFFIXES
            print(f"warning: skipping {path.name}: " + (f"could not be decoded ({type(error).__name__}: {error})"
                                                        if looks_like_image else "not an image file"),
                  file=sys.stderr)
            if looks_like_image:
                unreadable.append(path.name)
    if not images and unreadable:
        shown = ", ".join(unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
        raise UsageError(f"none of the {len(unreadable)} image files in {folder} could be read ({shown}): damaged, "
                         "too large or not images")
    if not images:
        raise UsageError(f"no image files in {folder} (looked for {', '.join('.' + s for s in IMAGE_SUFFIXES)})")
    return torch.from_numpy(np.stack(images)), names


def _read_image(path: Path, size: int, crop: bool = False):
    """One image file as uint8 (size, size, 3), transparent parts white; PIL's decompression-bomb warning is an error.

    The whole image is resized to a square, or with `crop` its shorter side is resized and the centre kept
    (`minclip.preprocess.resize_and_crop`, OpenAI's preprocessing: the same pixels as theirs for RGB files).
    """
    import numpy as np
    from PIL import Image

    from .preprocess import resize_and_crop

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(canvas, image).convert("RGB")
            image = resize_and_crop(image, size) if crop else image.resize((size, size), Image.LANCZOS)
            return np.asarray(image)


def _classify(args) -> int:
    import torch

    from .checkpoint import load, read_checkpoint
    from .evaluate import EMOJI_TEMPLATES, PHOTO_TEMPLATES, encode_images, zero_shot_classifier
    from .preprocess import CLIPPreprocess

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if len(labels) < 2:
        raise UsageError(f"--labels needs at least two class names separated by commas, got {args.labels!r}; "
                         'e.g. --labels "cat,dog,bird"')
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise UsageError(f"--labels names {', '.join(repeated)} more than once; give each class once")
    for template in args.template or ():
        if template.count("{}") != 1:
            raise UsageError(f"--template {template!r} needs exactly one {{}} where the label goes, e.g. "
                             "\"a photo of a {}.\"")
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    target = Path(args.images)
    if not target.exists():
        raise UsageError(f"{target} does not exist; give an image file or a folder of images")
    model, preprocess, tokenizer = load(args.checkpoint, fast_path=True)
    openai = isinstance(preprocess, CLIPPreprocess)
    if args.template:
        templates = args.template
    elif openai:
        templates = PHOTO_TEMPLATES
    else:  # a minclip model knows the captions of its data set: the emoji templates, or the shapes' plain captions
        templates = EMOJI_TEMPLATES if read_checkpoint(args.checkpoint)["train_config"]["data"] == "emoji" else ["{}"]
    readable = model.config.context_length - 2  # tokens besides the start and end tokens
    longest = max((template.format(label) for template in templates for label in labels),
                  key=lambda caption: len(tokenizer.encode(caption)))
    if len(tokenizer.encode(longest)) > readable:
        raise UsageError(f"the caption {longest[:60]!r}... has {len(tokenizer.encode(longest))} tokens, more than "
                         f"the {readable} this model reads; shorten that label or template")
    size, crop = _reading(model, preprocess)
    if target.is_dir():
        images, names = _read_image_folder(target, size, crop)
    else:
        try:
            images, names = torch.from_numpy(_read_image(target, size, crop)[None].copy()), [target.name]
        except (OSError, ValueError, EOFError, SyntaxError) as error:  # what PIL raises for undecodable files
            raise UsageError(f"{target} could not be read as an image ({type(error).__name__}: {error})") from None
    classes = zero_shot_classifier(model, tokenizer, labels, templates)  # (C, E), one unit vector per label
    image_features = encode_images(model, images, preprocess=preprocess)  # (N, E), unit length
    with torch.no_grad():
        probabilities = (model.logit_scale.exp() * image_features @ classes.T).softmax(dim=-1)  # (N, C)
    shown = min(args.top, len(labels))
    for name, row in zip(names, probabilities):
        best = row.topk(shown)
        print(f"{name}: " + ", ".join(f"{labels[i]} {100 * p:.1f}%" for p, i in zip(best.values.tolist(),
                                                                                best.indices.tolist())))
    return 0


def _export(args) -> int:
    import torch

    from .checkpoint import load

    model, _, _ = load(args.checkpoint)
    out = Path(args.out)
    if args.open_clip:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} is a file; --open-clip writes a folder of three files, give a folder name")
        name = out.resolve().name or "minclip"
        paths = model.save_open_clip(out, name=name)
        print(f"wrote {paths['config']}, {paths['local_dir_config']} and {paths['weights']}")
        print(f"open_clip loads them with create_model('local-dir:{out}'), or after "
              f"add_model_config('{paths['config']}') with create_model('{name}', pretrained='{paths['weights']}')")
        return 0
    if out.is_dir():
        raise UsageError(f"{out} is a folder; give a file name such as {out / 'model.pt'} (or pass --open-clip)")
    with warnings.catch_warnings(record=True) as caught:  # the heads warning, shown as one line
        warnings.simplefilter("always")
        state_dict = model.to_openai_state_dict()
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if "logit_bias" in state_dict:
        print("warning: this SigLIP model's logit_bias has no place in OpenAI's CLIP; delete that key before loading "
              "the file with OpenAI's code (open_clip's SigLIP models keep it)", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state_dict, out)
    print(f"wrote {out} in OpenAI's layout: OpenAI's clip.load(path) and open_clip read it")
    return 0


def _tokenize(args) -> int:
    from .checkpoint import load
    from .tokenizer import BPETokenizer

    tokenizer = load(args.checkpoint)[2] if args.checkpoint else BPETokenizer.openai()
    ids = tokenizer.encode(args.text)
    print(f"{len(ids)} tokens (+ start and end tokens {tokenizer.sot_token_id}, {tokenizer.eot_token_id})")
    for token_id in ids:
        print(f"{token_id:6d}  {tokenizer.vocab[token_id]!r:24}  {tokenizer.decode([token_id])!r}")
    return 0


def _generate(args) -> int:
    from . import plots
    from .checkpoint import load
    from .guidance import guide, matches, parse_caption, render, to_uint8

    parse_caption(args.caption)  # a caption the shapes set can say, before the model is loaded
    if args.steps < 1 or args.restarts < 1:
        raise UsageError(f"--steps and --restarts must be at least 1, got {args.steps} and {args.restarts}")
    model, _, tokenizer = load(args.checkpoint, fast_path=True)
    result = guide(model, tokenizer, args.caption, steps=args.steps, restarts=args.restarts, seed=args.seed,
                   relaxation=args.relaxation, start=args.start, prior=not args.no_prior,
                   search=None if args.search == "none" else args.search)
    final = to_uint8(render(result.params, model.config.image_size, hard=True))[result.best]  # (S, S, 3)
    steps = [round(i * (args.steps - 1) / max(1, len(result.frames) - 1)) for i in range(len(result.frames))]
    labels = [f"step {s}\n{result.history[s, result.best]:.2f}" for s in steps] + \
             [f"drawn\n{result.scores[result.best]:.2f}"]
    figure = plots.image_row(list(result.frames) + [final], labels, title=args.caption)
    drawn = result.scene.caption() if result.scene is not None else "no row or column (objects overlap)"
    print(f"drew: {drawn}")
    print(f"CLIP score {result.scores[result.best]:.3f}; "
          f"{'matches' if matches(result.scene, args.caption) else 'does not match'} the caption")
    print(f"frames saved to {plots.save(figure, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

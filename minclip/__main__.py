"""The command line: `python -m minclip train | eval | search | tokenize | generate`.

    python -m minclip train --out runs/tiny            # the main job: the tiny preset on the emoji set, a few minutes
    python -m minclip eval runs/tiny/checkpoint.pt     # the held-out report again
    python -m minclip search runs/tiny/checkpoint.pt "red heart" [--images FOLDER]
    python -m minclip tokenize "고양이가 나무 위에 있다" [--checkpoint CKPT]
    python -m minclip generate runs/12_shapes/checkpoint.pt "a small red circle to the left of a large blue square"
    torchrun --standalone --nproc_per_node=2 -m minclip train --out runs/two   # two processes share every batch

Bad input (a missing, empty, damaged or foreign checkpoint, an option out of range, an output path that cannot be
written, an empty or too long query, a folder without readable images, an unknown preset) ends with a one-line
`error: ...` and exit status 2, never a traceback; a bug in minclip still shows its traceback. Ctrl-C or SIGTERM stops
training between two steps after writing the checkpoint, and says how to resume (exit status 130 or 143). How it
fits: a thin layer over train.py, evaluate.py, plots.py and tokenizer.py; all the work happens there. What happens
in each case, and the test that shows it: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class UsageError(Exception):
    """A problem with the user's input, reported as one line."""


def _parser() -> argparse.ArgumentParser:
    from .data import ARTISTS, LANGS
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
    train.add_argument("--data", default="emoji", choices=list(DATASETS), help="data set (default: emoji)")
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
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="print the held-out report of a checkpoint",
                                   description="Print the held-out report of a trained checkpoint.")
    evaluate.add_argument("checkpoint")

    search = commands.add_parser("search", help="rank images for a text query and save a gallery",
                                 description="Rank the shipped images (or the images in FOLDER) for a text query.")
    search.add_argument("checkpoint")
    search.add_argument("query")
    search.add_argument("--images", metavar="FOLDER", help="a folder of image files (default: the shipped emoji)")
    search.add_argument("--top", type=int, default=8, help="how many images to show (default: 8)")
    search.add_argument("--gallery", default="search.png", help="where to save the gallery (default: search.png)")
    search.add_argument("--truncate", action="store_true",
                        help="cut a query longer than the model's context to its first tokens instead of refusing it")

    tokenize = commands.add_parser("tokenize", help="show how a text is split into tokens",
                                   description="Show the tokens of a text (OpenAI's vocabulary by default).")
    tokenize.add_argument("text")
    tokenize.add_argument("--checkpoint", help="use the vocabulary learned by this checkpoint instead of OpenAI's")

    generate = commands.add_parser(
        "generate", help="draw a shapes caption by steering a renderer with CLIP's gradient",
        description="Draw a caption of the shapes set (e.g. \"a small red circle to the left of a large blue square\") "
                    "by gradient ascent of a shapes-trained CLIP's score through a differentiable shapes renderer "
                    "(minclip/guidance.py); saves the optimisation as frames and prints the scene it ended on.")
    generate.add_argument("checkpoint")
    generate.add_argument("caption")
    generate.add_argument("--out", default="frames.png", help="where to save the frames (default: frames.png)")
    generate.add_argument("--steps", type=int, default=150, help="gradient steps (default: 150)")
    generate.add_argument("--restarts", type=int, default=4,
                          help="random starting points optimised together; CLIP keeps the best (default: 4)")
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
        return {"train": _train, "eval": _eval, "search": _search, "tokenize": _tokenize,
                "generate": _generate}[args.command](args)
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
    from .evaluate import format_report
    from .train import TrainConfig, check_output_folder, read_checkpoint, train

    temperature = args.fixed_temperature
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0.01):
        raise UsageError(f"--fixed-temperature must be a finite number >= 0.01 (CLIP clamps the temperature there), "
                         f"got {temperature}")
    out = Path(args.out or f"runs/{args.preset.replace('/', '-')}-{args.data}-{args.lang}")
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
        ("max_steps", args.max_steps if args.max_steps is not None or args.epochs is not None
         else inherited.get("max_steps")),
        ("fixed_logit_scale", None if temperature is None else 1 / temperature)) if value is not None}
    model_overrides = {"text_pooling": args.text_pooling} if args.text_pooling else {}
    try:
        config = TrainConfig(preset=args.preset, data=args.data, lang=args.lang, artists=tuple(args.artists),
                             seed=args.seed, loss=args.loss, hard_negatives=args.hard_negatives,
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
    for name, figure in plots.report_figures(result.model, result.tokenizer, config.data, config.lang, seed=config.seed).items():
        plots.save(figure, out / f"{name}.png")
    print(format_report(result.report))
    print(f"trained in {result.seconds:.0f} s; wrote {out}/checkpoint.pt, metrics.json and plots")
    return 0


# TrainConfig fields and the options that set them (the others are set from Python only)
FLAGS = {"preset": "--preset", "data": "--data", "lang": "--lang", "artists": "--artists", "epochs": "--epochs",
         "batch_size": "--batch-size", "loss": "--loss", "lr": "--lr", "precision": "--precision", "seed": "--seed", "max_steps": "--max-steps",
         "save_every_minutes": "--save-every-minutes", "fixed_logit_scale": "--fixed-temperature",
         "freeze_image_tower": "--freeze-image-tower", "hard_negatives": "--hard-negatives"}


def _as_flags(message: str) -> str:
    """A TrainConfig error in the command line's words: `batch_size must...` -> `--batch-size must...`."""
    name = message.split(" ", 1)[0]
    return FLAGS[name] + message[len(name):] if name in FLAGS else message


def _flag(name: str, value) -> str:
    """The command-line words that set the TrainConfig field `name` to `value` ("" when the default needs none)."""
    if name == "fixed_logit_scale":
        return "" if value is None else f"--fixed-temperature {1 / value:g}"
    if name in ("freeze_image_tower", "hard_negatives"):
        return FLAGS[name] if value else ""
    if name == "model":
        return f"--text-pooling {value['text_pooling']}" if value.get("text_pooling") else ""
    if name == "artists":
        return f"--artists {' '.join(value)}"
    return "" if value is None else f"{FLAGS[name]} {value}"


def _check_resume(state: dict, config, out: Path) -> None:
    """Refuse a --resume whose options differ from the checkpoint's, naming them and the command that continues."""
    from .train import CONTINUABLE, TrainConfig, option_differences

    differ = {name: values for name, values in option_differences(state, config).items() if name not in CONTINUABLE}
    if not differ:
        return
    named = ", ".join(f"{FLAGS.get(name, name)} {_shown(name, stored)} (this command: {_shown(name, given)})"
                      for name, (stored, given) in differ.items())
    settable = [name for name in differ if name in FLAGS or name == "model"]
    stored = {**state["train_config"]}
    defaults = dataclasses.asdict(TrainConfig())  # the command line's defaults too: only other values need a flag
    words = [_flag(name, stored[name]) for name in ("preset", "data", "lang", "artists", "batch_size", "loss", "lr",
                                                    "precision", "seed", "fixed_logit_scale", "freeze_image_tower",
                                                    "hard_negatives", "model")
             if name in stored and stored[name] != defaults[name]]
    command = " ".join(["python -m minclip train --out", str(out), "--resume", *filter(None, words)])
    advice = f"continue it with: {command}" if len(settable) == len(differ) else \
        "those options are set from Python only (TrainConfig): resume it with minclip.train.train"
    raise UsageError(f"{out}/checkpoint.pt was trained with other options: {named}; {advice}; "
                     "or choose another --out for a new run")


def _shown(name: str, value) -> str:
    return f"{1 / value:g}" if name == "fixed_logit_scale" and value else repr(value)


def _eval(args) -> int:
    from .evaluate import format_report, heldout_report
    from .train import load, read_checkpoint, unseen_artists

    state = read_checkpoint(args.checkpoint)
    model, _, tokenizer = load(args.checkpoint)
    config = {"data": "emoji", "lang": "en", "seed": 0, "artists": ("noto",), **state["train_config"]}
    report = heldout_report(model, tokenizer, config["data"], config["lang"], model.config.image_size,
                            seed=config["seed"], unseen_artists=unseen_artists(config["data"], config["artists"]))
    print(format_report(report))
    return 0


def _search(args) -> int:
    import torch

    from . import plots
    from .data import EmojiDataset
    from .evaluate import encode_images
    from .train import load

    if not args.query.strip():
        raise UsageError("the query is empty; give a text such as \"red heart\"")
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    gallery = _writable_file(Path(args.gallery), "--gallery")  # before the work, not after it
    model, preprocess, tokenizer = load(args.checkpoint)
    tokens = _query_tokens(tokenizer, args.query, model.config.context_length, args.truncate)  # (1, T)
    if args.images:
        images, names = _read_image_folder(Path(args.images))
    else:
        emoji = EmojiDataset("all", image_size=64, captions="eval")
        images, names = emoji.images, [record["name_en"] for record in emoji.records]
    image_features = encode_images(model, images, preprocess=preprocess)  # (N, E), unit length
    with torch.no_grad():
        query_features = model.encode_text(tokens, normalize=True).float()  # (1, E)
    scores = (query_features @ image_features.T)[0]  # (N,)
    top = scores.topk(min(args.top, len(scores)))
    for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        print(f"{rank:2d}. {score:.3f}  {names[index]}")
    figure = plots.retrieval_gallery([args.query], [images[top.indices]], [top.values.tolist()],
                                     title=f"search: {args.query}")
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


def _read_image_folder(folder: Path):
    """uint8 (N, 64, 64, 3) images from the image files in `folder`; other files, files that fail to decode and images
    too large to decode safely (PIL's guard against decompression bombs) are skipped with a warning."""
    import numpy as np
    import torch
    from PIL import Image

    if not folder.is_dir():
        raise UsageError(f"--images {folder} is not a folder")
    images, names, unreadable = [], [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        try:
            images.append(_read_image(path))
            names.append(path.name)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            print(f"warning: skipping {path.name}: too large to decode safely ({error})", file=sys.stderr)
            unreadable.append(path.name)
        except (OSError, ValueError, EOFError, SyntaxError) as error:  # what PIL raises for undecodable files
            looks_like_image = path.suffix.lower() in IMAGE_SUFFIXES
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
        raise UsageError(f"no image files in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return torch.from_numpy(np.stack(images)), names


def _read_image(path: Path):
    """One image file as uint8 (64, 64, 3), transparent parts white; PIL's decompression-bomb warning is an error."""
    import numpy as np
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(canvas, image).convert("RGB").resize((64, 64), Image.LANCZOS)
            return np.asarray(image)


def _tokenize(args) -> int:
    from .tokenizer import BPETokenizer
    from .train import load

    tokenizer = load(args.checkpoint)[2] if args.checkpoint else BPETokenizer.openai()
    ids = tokenizer.encode(args.text)
    print(f"{len(ids)} tokens (+ start and end tokens {tokenizer.sot_token_id}, {tokenizer.eot_token_id})")
    for token_id in ids:
        print(f"{token_id:6d}  {tokenizer.vocab[token_id]!r:24}  {tokenizer.decode([token_id])!r}")
    return 0


def _generate(args) -> int:
    from . import plots
    from .guidance import guide, matches, parse_caption, render, to_uint8
    from .train import load

    parse_caption(args.caption)  # a caption the shapes set can say, before the model is loaded
    if args.steps < 1 or args.restarts < 1:
        raise UsageError(f"--steps and --restarts must be at least 1, got {args.steps} and {args.restarts}")
    model, _, tokenizer = load(args.checkpoint)
    result = guide(model, tokenizer, args.caption, steps=args.steps, restarts=args.restarts, seed=args.seed)
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

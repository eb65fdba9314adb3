"""The command line end to end on the nano preset: outputs written, reports printed, one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minclip.__main__ import main

TRAIN = ["train", "--preset", "nano", "--max-steps", "3", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def test_train_writes_checkpoint_metrics_and_plots(run, capsys):
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "metrics.json", "training_curves.png",
                                               "similarity_matrix.png", "retrieval_gallery.png"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"] == "emoji" and metrics["candidate_images"] == 3655
    assert 0 <= metrics["among_all_images"]["text_to_image"]["R@1"] <= 1


def test_train_refuses_to_overwrite_without_resume(run, capsys):
    assert main([*TRAIN, "--out", str(run)]) == 2
    assert "checkpoint.pt exists; pass --resume" in capsys.readouterr().err


def test_eval_prints_the_report(run, capsys):
    assert main(["eval", str(run / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "held-out report: emoji (en), 393 test captions, 3655 candidate images" in out
    assert "within_family.accuracy" in out


def test_search_ranks_shipped_images_and_saves_a_gallery(run, tmp_path, capsys):
    gallery = tmp_path / "gallery.png"
    assert main(["search", str(run / "checkpoint.pt"), "red heart", "--top", "3", "--gallery", str(gallery)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(".")[0].strip() for line in lines[:3]] == ["1", "2", "3"] and gallery.is_file()


def test_search_another_artists_drawings(run, tmp_path, capsys):
    from minclip.data import load_artist

    drawn = load_artist("emojione")[1]  # (3655,) bool: the emoji EmojiOne draws
    assert main(["search", str(run / "checkpoint.pt"), "red heart", "--artist", "emojione", "--top", "5000",
                 "--gallery", str(tmp_path / "gallery.png")]) == 0
    ranks = capsys.readouterr().out.splitlines()[:-1]  # one line per image, then where the gallery went
    assert len(ranks) == int(drawn.sum()) < 3655  # every one of EmojiOne's drawings, and nothing else


def test_search_in_a_folder_skips_non_images_with_a_warning(run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, colour in (("red.png", (255, 0, 0)), ("blue.jpg", (0, 0, 255))):
        Image.fromarray(np.full((20, 30, 3), colour, dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert main(["search", str(run / "checkpoint.pt"), "red", "--images", str(folder),
                 "--gallery", str(tmp_path / "g.png")]) == 0
    captured = capsys.readouterr()
    assert "warning: skipping notes.txt: not an image file" in captured.err
    assert {line.split()[-1] for line in captured.out.splitlines()[:2]} == {"red.png", "blue.jpg"}


@pytest.mark.parametrize("argv, message", [
    (["eval", "missing.pt"], "error: no checkpoint at missing.pt"),
    (["search", "CKPT", "   "], "error: the query is empty"),
    (["search", "CKPT", "cat", "--images", "EMPTY"], "error: no image files in"),
    (["search", "CKPT", "cat", "--images", "NOWHERE"], "is not a folder"),
    (["search", "CKPT", "cat", "--images", "EMPTY", "--artist", "openmoji"], "error: --artist picks the shipped"),
    (["eval", "FOREIGN"], "is not a minclip checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    replace = {"CKPT": str(run / "checkpoint.pt"), "EMPTY": str(tmp_path / "empty"),
               "NOWHERE": str(tmp_path / "nowhere"), "FOREIGN": str(tmp_path / "foreign.pt")}
    assert main([replace.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_unknown_preset_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "huge"])
    assert exit_info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_tokenize_shows_openai_tokens(capsys):
    assert main(["tokenize", "a cat is on a tree"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 tokens (+ start and end tokens 49406, 49407)") and "'cat</w>'" in out


def test_every_subcommand_has_help(capsys):
    for command in ("train", "eval", "search", "classify", "export", "tokenize"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--fixed-temperature" in capsys.readouterr().out


def test_train_precision_flag(tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(["train", "--preset", "nano", "--max-steps", "2", "--batch-size", "16", "--quiet", "--precision",
                 "bf16", "--out", str(out)]) == 0
    assert main(["eval", str(out / "checkpoint.pt")]) == 0
    with pytest.raises(SystemExit):
        main(["train", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# No path the user controls ends in a traceback; real bugs still do
def one_line_error(capsys, argv, message) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("options, message", [
    (["--max-steps", "0"], "error: --max-steps must be a positive int"),
    (["--max-steps", "-2"], "error: --max-steps must be a positive int"),
    (["--lr", "1e6"], "error: --lr must be a finite number in (0, 1], got 1000000.0"),
    (["--lr", "inf"], "error: --lr must be a finite number in (0, 1], got inf"),
    (["--lr", "nan"], "error: --lr must be a finite number in (0, 1], got nan"),
    (["--fixed-temperature", "0"], "error: --fixed-temperature must be a finite number >= 0.01"),
    (["--fixed-temperature", "-1"], "error: --fixed-temperature must be a finite number >= 0.01"),
    (["--save-every-minutes", "0"], "error: --save-every-minutes must be a finite number"),
    (["--batch-size", "5000"], "error: batch_size=5000 leaves no full batch"),
    (["--artist-pairs"], "error: --artist-pairs pairs two artists' drawings of each emoji: it needs data='emoji' and "
                         "at least two artists"),
    (["--data", "shapes", "--restyle"], "error: --restyle shrinks and softens emoji drawings"),
    (["--artists", "noto", "openmoji", "--anchor-artist"], "error: --anchor-artist keeps the first artist in every "
                                                           "pair of drawings: it needs artist_pairs=True (--artist-pairs)"),
    (["--image-size", "30"], "error: --image-size=30 must be divisible by patch_size=4 (preset='nano', "
                             "model={'image_size': 30})"),
    (["--vision-layers", "0"], "error: --vision-layers must be a positive int, got 0"),
])
def test_train_options_out_of_range_are_one_line_errors(tmp_path, capsys, options, message):
    one_line_error(capsys, ["train", "--preset", "nano", "--quiet", "--out", str(tmp_path / "run"), *options], message)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_an_out_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    one_line_error(capsys, [*TRAIN, "--out", str(tmp_path / "a_file")], "a_file is a file; choose a folder")
    if Path("/sys").is_dir():  # not writable, even by root
        one_line_error(capsys, [*TRAIN, "--out", "/sys/minclip-test"], "cannot write in the output folder")


def test_ctrl_c_writes_the_checkpoint_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import os
    import signal
    import sys

    train_module = sys.modules["minclip.train"]
    real = train_module.train_step
    steps = []

    def step(*args, **kwargs):
        steps.append(real(*args, **kwargs))
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return steps[-1]

    monkeypatch.setattr(train_module, "train_step", step)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: SIGINT at step 2: checkpoint written to {out}/checkpoint.pt; continue with the same " \
           "command and --resume" in err and "Traceback" not in err
    assert train_module.read_checkpoint(out / "checkpoint.pt")["step"] == 2


def test_resume_with_other_options_names_them_and_the_command_that_continues(run, capsys):
    one_line_error(capsys, ["train", "--preset", "nano", "--batch-size", "32", "--lr", "0.002", "--resume",
                            "--out", str(run)],
                   f"error: {run}/checkpoint.pt was trained with other options: --batch-size 16 (this command: 32), "
                   f"--lr 0.001 (this command: 0.002); continue it with: python -m minclip train --out {run} "
                   "--resume --preset nano --batch-size 16; or choose another --out for a new run")


def test_the_shape_flags_build_that_model_and_a_resume_names_them(tmp_path, capsys):
    from minclip.checkpoint import read_checkpoint

    out = tmp_path / "shallow"
    shape = ["--image-size", "32", "--patch-size", "8", "--vision-layers", "1", "--text-layers", "1"]
    assert main([*TRAIN, *shape, "--out", str(out)]) == 0
    built = read_checkpoint(out / "checkpoint.pt")["model_config"]
    assert (built["image_size"], built["patch_size"], built["vision_layers"], built["text_layers"]) == (32, 8, 1, 1)
    one_line_error(capsys, ["train", "--preset", "nano", "--batch-size", "16", "--resume", "--out", str(out)],
                   f"continue it with: python -m minclip train --out {out} --resume --preset nano --batch-size 16 "
                   "--image-size 32 --patch-size 8 --vision-layers 1 --text-layers 1; or choose another --out")


def test_the_augmentation_flags_set_the_options_and_a_resume_names_them(tmp_path, capsys):
    from minclip.checkpoint import read_checkpoint

    out = tmp_path / "augmented"
    assert main([*TRAIN, "--max-shift", "1", "--no-mirror", "--out", str(out)]) == 0
    options = read_checkpoint(out / "checkpoint.pt")["train_config"]
    assert (options["max_shift"], options["mirror"]) == (1, False)
    one_line_error(capsys, ["train", "--preset", "nano", "--batch-size", "16", "--resume", "--out", str(out)],
                   f"continue it with: python -m minclip train --out {out} "
                   "--resume --preset nano --batch-size 16 --max-shift 1 --no-mirror; or choose another --out")
    one_line_error(capsys, [*TRAIN, "--max-shift", "-1", "--out", str(tmp_path / "other")],
                   "error: --max-shift must be an int >= 0 (0: no shifts), got -1")


def main_job_flags() -> list[str]:
    """The flags `make train` passes to `python -m minclip train` (the Makefile's MAIN_JOB, continued lines joined)."""
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    value = makefile.split("MAIN_JOB ?=", 1)[1]
    lines = []
    for line in value.splitlines():
        lines.append(line.rstrip().removesuffix("\\"))
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(lines).split()


def test_the_main_job_holds_out_an_artist_and_reports_it(tmp_path, capsys):
    from minclip.checkpoint import read_checkpoint
    from minclip.data import ARTISTS

    flags = main_job_flags()
    readme = (Path(__file__).parent.parent / "README.md").read_text().replace("\\\n", " ")  # continued lines joined
    readme = " ".join(readme.split())
    assert "python -m minclip train " + " ".join(flags) in readme  # the README quotes the command make train runs
    out = tmp_path / "main"
    flags[flags.index("--out") + 1] = str(out)
    assert main(["train", *flags, "--max-steps", "2", "--quiet"]) == 0  # the main job's own options, two steps
    trained_on = read_checkpoint(out / "checkpoint.pt")["train_config"]["artists"]
    unseen = [artist for artist in ARTISTS if artist not in trained_on]
    assert len(trained_on) >= 2 and unseen  # several artists train; at least one is left out
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics["unseen_artists"]) == sorted(unseen)  # and the report measures every one left out
    assert "unseen_artists." + unseen[0] + ".training_captions.R@1" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--hard-negatives", "--family-batches", "--restyle"])
def test_resume_with_hard_negatives_names_the_flag(run, capsys, flag):
    one_line_error(capsys, ["train", "--preset", "nano", "--batch-size", "16", flag, "--resume",
                            "--out", str(run)],
                   f"error: {run}/checkpoint.pt was trained with other options: {flag} False (this command: "
                   f"True); continue it with: python -m minclip train --out {run} --resume --preset nano "
                   "--batch-size 16; or choose another --out for a new run")


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    ("HALF", "is not a readable minclip checkpoint: truncated, damaged or another kind of file"),
    ("FOREIGN", "is not a minclip checkpoint"),  # a readable file of tensors, but not ours
])
def test_empty_truncated_and_foreign_checkpoints_are_one_line_errors(run, tmp_path, capsys, content, message):
    import torch

    data = (run / "checkpoint.pt").read_bytes()
    if content == "FOREIGN":
        torch.save({"weights": torch.zeros(2)}, tmp_path / "bad.pt")
    else:
        (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2] if content == "HALF" else content)
    for argv in (["eval", "BAD"], ["search", "BAD", "cat"], ["tokenize", "cat", "--checkpoint", "BAD"]):
        one_line_error(capsys, [str(tmp_path / "bad.pt") if a == "BAD" else a for a in argv], message)


def test_a_query_longer_than_the_context_says_how_to_shorten_it_or_truncate(run, tmp_path, capsys):
    query = " ".join(["red heart"] * 40)
    assert main(["search", str(run / "checkpoint.pt"), query, "--gallery", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "more than the 30 this model reads; shorten it to 30 tokens or pass --truncate" in err
    assert "truncate=True" not in err and err.count("\n") == 1
    assert main(["search", str(run / "checkpoint.pt"), query, "--truncate", "--top", "2",
                 "--gallery", str(tmp_path / "g.png")]) == 0
    assert "only its first 30 are used" in capsys.readouterr().err


def test_a_gallery_that_cannot_be_written_is_refused_before_searching(run, tmp_path, capsys):
    checkpoint = str(run / "checkpoint.pt")
    if Path("/sys").is_dir():
        one_line_error(capsys, ["search", checkpoint, "cat", "--gallery", "/sys/minclip-test/g.png"],
                       "error: cannot write --gallery /sys/minclip-test/g.png")
    one_line_error(capsys, ["search", checkpoint, "cat", "--gallery", str(tmp_path)], "is a folder; give a file name")
    one_line_error(capsys, ["search", checkpoint, "cat", "--gallery", str(tmp_path / "g.xyz")],
                   "cannot save a .xyz file; use one of")


def test_undecodable_and_oversized_images_are_skipped_with_a_warning(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # so that small files play decompression bombs
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(folder / "small.png")  # 64 pixels: fine
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(folder / "large.png")  # over the limit: PIL warns
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(folder / "bomb.png")  # over twice: PIL refuses
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["search", str(run / "checkpoint.pt"), "red", "--images", str(folder),
                 "--gallery", str(tmp_path / "g.png")]) == 0
    captured = capsys.readouterr()
    for name in ("large.png", "bomb.png"):
        assert f"warning: skipping {name}: too large to decode safely" in captured.err
    assert "warning: skipping broken.png: could not be decoded" in captured.err
    assert captured.out.splitlines()[0].endswith("small.png")


def test_a_folder_of_only_unreadable_images_says_they_could_not_be_read(run, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"not a png")
    assert main(["search", str(run / "checkpoint.pt"), "red", "--images", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"error: none of the 2 image files in {folder} could be read (a.png, b.png)" in err
    assert "no image files" not in err


def test_a_bug_still_shows_its_traceback(run, monkeypatch):
    import minclip.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in minclip")

    monkeypatch.setattr(minclip.evaluate, "encode_images", broken)
    with pytest.raises(RuntimeError, match="a bug in minclip"):
        main(["search", str(run / "checkpoint.pt"), "red"])


# ------------------------------------------------------------------------------------------------------------------
# classify and export, with minclip's checkpoints and with OpenAI's weights
@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(np.full((40, 60, 3), (255, 0, 0), dtype=np.uint8)).save(folder / "red.png")
    Image.fromarray(np.full((50, 30, 3), (0, 0, 255), dtype=np.uint8)).save(folder / "blue.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def openai_weights(tmp_path_factory):
    """A tiny model with OpenAI's vocabulary and context, saved as an OpenAI-format state dict."""
    import torch

    from minclip.model import CLIP, CLIPConfig

    torch.manual_seed(0)
    config = CLIPConfig(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=1, vision_heads=1,
                        vocab_size=49408, context_length=77, text_width=64, text_layers=1, text_heads=1)
    path = tmp_path_factory.mktemp("openai") / "ViT-tiny.pt"
    torch.save(CLIP(config).to_openai_state_dict(), path)
    return path


def classified(out: str) -> dict:
    """`name: label p%, label p%` lines -> {name: [(label, p), ...]}"""
    result = {}
    for line in out.splitlines():
        name, ranked = line.split(": ", 1)
        result[name] = [(item.rsplit(" ", 1)[0], float(item.rsplit(" ", 1)[1].rstrip("%")))
                        for item in ranked.split(", ")]
    return result


@pytest.mark.parametrize("kind", ["minclip", "openai"])
def test_classify_a_folder_and_a_file(run, openai_weights, images, capsys, kind):
    checkpoint = str(run / "checkpoint.pt") if kind == "minclip" else str(openai_weights)
    assert main(["classify", checkpoint, str(images), "--labels", "red heart, blue circle,green apple"]) == 0
    captured = capsys.readouterr()
    result = classified(captured.out)
    assert set(result) == {"red.png", "blue.jpg"} and "skipping notes.txt" in captured.err
    for ranked in result.values():
        assert {label for label, _ in ranked} == {"red heart", "blue circle", "green apple"}  # --top 3
        assert [p for _, p in ranked] == sorted((p for _, p in ranked), reverse=True)
        assert abs(sum(p for _, p in ranked) - 100) < 0.2
    assert main(["classify", checkpoint, str(images / "red.png"), "--labels", "cat,dog,bird", "--top", "1",
                 "--template", "a photo of a {}.", "--template", "a {} in a picture"]) == 0
    ((name, ranked),) = classified(capsys.readouterr().out).items()
    assert name == "red.png" and len(ranked) == 1


def test_classify_uses_the_prompt_ensemble_of_the_model(run, openai_weights, images, capsys, monkeypatch):
    import minclip.evaluate as evaluate

    used = []
    real = evaluate.zero_shot_classifier
    monkeypatch.setattr(evaluate, "zero_shot_classifier",
                        lambda model, tokenizer, labels, templates: used.append(tuple(templates)) or
                        real(model, tokenizer, labels, templates))
    for checkpoint in (run / "checkpoint.pt", openai_weights):
        assert main(["classify", str(checkpoint), str(images), "--labels", "cat,dog"]) == 0
    assert used == [evaluate.EMOJI_TEMPLATES, evaluate.PHOTO_TEMPLATES]


@pytest.mark.parametrize("argv, message", [
    (["classify", "missing.pt", "IMAGES", "--labels", "a,b"], "error: no checkpoint at missing.pt"),
    (["classify", "CKPT", "nowhere", "--labels", "a,b"], "error: nowhere does not exist; give an image file or a "
                                                         "folder of images"),
    (["classify", "CKPT", "IMAGES", "--labels", " , "], "error: --labels needs at least two class names separated by "
                                                       "commas, got ' , '"),
    (["classify", "CKPT", "IMAGES", "--labels", "cat"], "error: --labels needs at least two class names"),
    (["classify", "CKPT", "IMAGES", "--labels", "cat,dog,cat"], "error: --labels names cat more than once"),
    (["classify", "CKPT", "IMAGES", "--labels", "a,b", "--template", "a photo"], "needs exactly one {} where the "
                                                                                  "label goes"),
    (["classify", "CKPT", "IMAGES", "--labels", "a,b", "--top", "0"], "error: --top must be at least 1, got 0"),
    (["classify", "CKPT", "EMPTY", "--labels", "a,b"], "error: no image files in"),
    (["classify", "CKPT", "NOTES", "--labels", "a,b"], "notes.txt could not be read as an image"),
    (["classify", "OPENAI", "RED", "--labels", "a,b", "--template", "{}" + " word" * 80],
     "error: the caption 'a word word word word word word word word word word word wor'... has 81 tokens, more than "
     "the 75 this model reads; shorten that label or template"),
    (["export", "CKPT", "IMAGES"], "is a folder; give a file name such as"),
    (["export", "CKPT", "NOTES", "--open-clip"], "notes.txt is a file; --open-clip writes a folder"),
    (["export", "missing.pt", "out.pt"], "error: no checkpoint at missing.pt"),
])
def test_classify_and_export_bad_input_is_one_line(run, openai_weights, images, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    replace = {"CKPT": str(run / "checkpoint.pt"), "OPENAI": str(openai_weights), "IMAGES": str(images),
               "EMPTY": str(tmp_path / "empty"), "NOTES": str(images / "notes.txt"), "RED": str(images / "red.png")}
    one_line_error(capsys, [replace.get(a, a) for a in argv], message)


def test_search_and_eval_with_openai_weights(openai_weights, images, tmp_path, capsys, monkeypatch):
    import minclip.evaluate as evaluate

    assert main(["search", str(openai_weights), "a red square", "--images", str(images),
                 "--gallery", str(tmp_path / "g.png")]) == 0
    assert {line.split()[-1] for line in capsys.readouterr().out.splitlines()[:2]} == {"red.png", "blue.jpg"}
    calls = []  # the report itself is tested with minclip's checkpoints; here: what eval asks of it
    monkeypatch.setattr(evaluate, "heldout_report", lambda model, tokenizer, *args, **kwargs:
                        calls.append((model.config.vocab_size, tokenizer.vocab_size, args)) or {})
    monkeypatch.setattr(evaluate, "format_report", lambda report: "REPORT")
    assert main(["eval", str(openai_weights)]) == 0
    out = capsys.readouterr().out
    assert out == "OpenAI's weights, zero-shot: the shipped emoji resized to 32 pixels, English captions\nREPORT\n"
    assert calls == [(49408, 49408, ("emoji", "en", 32))]


def test_export_for_openai_and_open_clip(run, openai_weights, tmp_path, capsys):
    import torch

    from minclip.model import load_openai_checkpoint
    from minclip.checkpoint import load

    model = load(run / "checkpoint.pt")[0]
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "nano.pt")]) == 0
    captured = capsys.readouterr()
    assert "warning: this model has vision 2 heads (OpenAI's loader assumes vision_width 32 // 64 = 0)" in \
        captured.err and captured.err.count("\n") == 1
    assert f"wrote {tmp_path / 'nano.pt'} in OpenAI's layout" in captured.out
    exported = load_openai_checkpoint(tmp_path / "nano.pt", vision_heads=2, text_heads=2,
                                      eot_token_id=model.config.eot_token_id)
    tokens = torch.tensor([[model.config.sot_token_id, 5, 6, model.config.eot_token_id]])
    torch.testing.assert_close(exported.encode_text(tokens), model.encode_text(tokens))

    assert main(["export", str(openai_weights), str(tmp_path / "tiny"), "--open-clip"]) == 0
    captured = capsys.readouterr()
    assert {path.name for path in (tmp_path / "tiny").iterdir()} == \
           {"tiny.json", "open_clip_config.json", "open_clip_pytorch_model.bin"}
    assert f"create_model('local-dir:{tmp_path / 'tiny'}')" in captured.out and captured.err == ""
    config = json.loads((tmp_path / "tiny" / "tiny.json").read_text())
    assert config["vision_cfg"]["head_width"] == 64 and config["text_cfg"]["heads"] == 1

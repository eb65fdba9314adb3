"""The command line end to end on the nano preset: outputs written, reports printed, one-line errors."""

import json

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
    for command in ("train", "eval", "search", "tokenize"):
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

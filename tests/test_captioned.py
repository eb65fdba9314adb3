"""Your own captioned images (minclip/captioned.py): every layout read alike, shards streamed without duplicates over
processes and workers, exact resumes, unusable rows counted in one warning, unusable data sets refused up front.

All data is generated here: small PIL images of different sizes, each with its own caption, written as CSV, TSV,
JSONL, a folder with .txt files, and tar shards in WebDataset's layout (by `tarfile`, and by the `webdataset` package
when it is installed).
"""

import csv
import importlib
import io
import json
import os
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from minclip.__main__ import main
from minclip.captioned import CaptionedData, data_format, decode_image, expand_braces, read_index
from minclip.checkpoint import load, read_checkpoint
from minclip.preprocess import CLIPPreprocess
from minclip.train import TrainConfig, train

train_module = importlib.import_module("minclip.train")
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
SIZE = 16  # the nano preset's images
NANO = dict(preset="nano", epochs=2, batch_size=4, eval_every=0, vocab_size=540, augment=False)  # 26 merges


def _image(k: int) -> Image.Image:
    """Image k: a colour and a stripe position of its own, at one of a few sizes and aspect ratios."""
    rng = np.random.default_rng(k)
    width, height = [(40, 30), (24, 48), (17, 17), (64, 20)][k % 4]
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _caption(k: int) -> str:
    return f"a {COLOURS[k % len(COLOURS)]} picture number {k}"


def _png(k: int) -> bytes:
    buffer = io.BytesIO()
    _image(k).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_images(folder, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        (folder / f"{k:04d}.png").write_bytes(_png(k))
        names.append(f"{k:04d}.png")
    return names


def write_csv(root, n: int, delimiter: str = ",", suffix: str = "csv", columns=("filepath", "title"), extra=None):
    names = _write_images(root / "images", n)
    path = root / f"pairs.{suffix}"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(list(columns) + ([extra[0]] if extra else []))
        for k, name in enumerate(names):
            writer.writerow([f"images/{name}", _caption(k)] + ([extra[1](k)] if extra else []))
    return path


def write_jsonl(root, n: int):
    names = _write_images(root / "images", n)
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps({"image": f"images/{name}", "caption": _caption(k)}) + "\n"
                            for k, name in enumerate(names)))
    return path


def write_folder(root, n: int):
    folder = root / "photos"
    for k, name in enumerate(_write_images(folder, n)):
        (folder / name).with_suffix(".txt").write_text(_caption(k))
    return folder


def write_shards(root, n: int, shards: int, first: int = 0):
    """WebDataset's layout, by hand: per sample, members KEY.png then KEY.txt, consecutive, in shard-NNN.tar."""
    root.mkdir(parents=True, exist_ok=True)
    per_shard = -(-n // shards)
    for s in range(shards):
        with tarfile.open(root / f"shard-{s:03d}.tar", "w") as tar:
            for k in range(s * per_shard, min(n, (s + 1) * per_shard)):
                for extension, payload in (("png", _png(first + k)), ("txt", _caption(first + k).encode())):
                    member = tarfile.TarInfo(f"{first + k:06d}.{extension}")
                    member.size = len(payload)
                    tar.addfile(member, io.BytesIO(payload))
    return str(root / f"shard-{{000..{shards - 1:03d}}}.tar")


def _pairs(data: CaptionedData, epoch: int = 0, position: int = 0, workers: int = 0) -> list[tuple[str, bytes]]:
    """(caption, image bytes) of a process's samples of an epoch, in order."""
    return [(caption, image.numpy().tobytes()) for image, caption, _ in data.items(epoch, position, workers)]


def _expected(k: int) -> tuple[str, bytes]:
    return _caption(k), CLIPPreprocess(SIZE).pixels(_image(k)).tobytes()


# ------------------------------------------------------------------------------------------------------------------
# Formats


def test_brace_patterns_expand_as_webdataset_names_shards():
    assert expand_braces("shards-{000..002}.tar") == ["shards-000.tar", "shards-001.tar", "shards-002.tar"]
    assert expand_braces("{a,b}-{8..10}.tar") == ["a-8.tar", "a-9.tar", "a-10.tar", "b-8.tar", "b-9.tar", "b-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    with pytest.raises(ValueError, match="write a range"):
        expand_braces("x-{1-3}.tar")


def test_images_of_any_size_are_read_as_clips_preprocess_prepares_them():
    for k in range(4):  # wide, tall, square, very wide; decoded from PNG bytes
        pixels = decode_image(_png(k), SIZE)
        assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == torch.uint8
        np.testing.assert_array_equal(pixels.numpy(), CLIPPreprocess(SIZE).pixels(_image(k)))
    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 10:50] = 255  # a white middle between black side bands
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    assert (decode_image(buffer.getvalue(), 10) == 255).all()  # cropped, not stretched: the bands are gone
    rgba = io.BytesIO()
    Image.new("RGBA", (30, 12), (10, 20, 30, 0)).save(rgba, format="PNG")
    assert decode_image(rgba.getvalue(), 6).shape == (6, 6, 3)  # any mode becomes RGB, as OpenAI converts it


@pytest.mark.parametrize("layout", ["csv", "tsv", "jsonl", "folder", "shards"])
def test_every_layout_gives_the_same_pairs(tmp_path, layout):
    n = 10
    data = {"csv": lambda: write_csv(tmp_path, n), "tsv": lambda: write_csv(tmp_path, n, "\t", "tsv"),
            "jsonl": lambda: write_jsonl(tmp_path, n), "folder": lambda: write_folder(tmp_path, n),
            "shards": lambda: write_shards(tmp_path / "shards", n, 3)}[layout]()
    assert data_format(str(data)) == layout
    dataset = CaptionedData(str(data), SIZE, batch_size=2, seed=0)
    assert dataset.train_pairs == n and dataset.steps_per_epoch == n // 2
    assert sorted(_pairs(dataset)) == sorted(_expected(k) for k in range(n))


def test_relative_paths_resolve_against_the_files_folder_and_columns_can_be_renamed(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "set", 4, columns=("image", "text"))
    monkeypatch.chdir(tmp_path)  # elsewhere: images/0000.png is relative to set/, not to here
    pairs, problems = read_index(str(path), image_key="image", caption_key="text")
    assert [p.image for p in pairs] == [str(tmp_path / "set" / "images" / f"{k:04d}.png") for k in range(4)]
    assert problems.total() == 0
    with pytest.raises(ValueError, match=r"has no column 'filepath' \(its columns: image, text\); name the right one"):
        read_index(str(path))


def test_a_split_column_holds_rows_out_and_a_fraction_holds_whole_images_out(tmp_path):
    path = write_csv(tmp_path, 10, extra=("split", lambda k: "val" if k % 5 == 0 else "train"))
    dataset = CaptionedData(str(path), SIZE, batch_size=2, split_key="split")
    images, captions, index = dataset.heldout()
    assert captions == [_caption(0), _caption(5)] and index == [0, 1]
    assert dataset.train_pairs == 8 and _caption(0) not in {caption for caption, _ in _pairs(dataset)}
    rows = [[f"images/{k % 5:04d}.png", f"caption {k}"] for k in range(10)]  # five photos, two captions each
    _write_images(tmp_path / "images", 5)
    (tmp_path / "two.csv").write_text("filepath,title\n" + "".join(f"{a},{b}\n" for a, b in rows))
    dataset = CaptionedData(str(tmp_path / "two.csv"), SIZE, batch_size=2, val_fraction=0.4)
    held = {p.image for p in dataset.heldout_list}
    assert len(held) == 2 and not held & {p.image for p in dataset.train}  # a photo is held out with all captions
    bad = write_csv(tmp_path / "bad", 3, extra=("split", lambda k: "dev"))
    with pytest.raises(ValueError, match="split=.dev.; the split column holds 'train' or one of val"):
        CaptionedData(str(bad), SIZE, batch_size=2, split_key="split")


def test_a_tar_shard_written_by_the_webdataset_package_reads_the_same(tmp_path):
    wds = pytest.importorskip("webdataset", reason="the webdataset package is a test-only reference (make setup)")
    with wds.TarWriter(str(tmp_path / "wds-000.tar")) as sink:
        for k in range(6):
            sink.write({"__key__": f"sample{k:04d}", "png": _png(k), "txt": _caption(k)})
    dataset = CaptionedData(str(tmp_path / "wds-{000..000}.tar"), SIZE, batch_size=2)
    assert _pairs(dataset) == [_expected(k) for k in range(6)]  # one shard: its own order


# ------------------------------------------------------------------------------------------------------------------
# Streaming: processes and workers, resuming


def test_shards_are_split_over_processes_and_workers_without_duplicates_and_resume_in_place(tmp_path):
    pattern = write_shards(tmp_path, 24, 5)  # uneven shards: 5, 5, 5, 5, 4 samples
    ranks = [CaptionedData(pattern, SIZE, batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == ranks[1].steps_per_epoch == 5  # shards 0, 2, 4 | 1, 3: min(14, 10) // 2
    for epoch in (0, 1):
        seen = [_pairs(rank, epoch) for rank in ranks]
        everything = seen[0] + seen[1]
        assert len(set(everything)) == len(everything) == 24  # disjoint, complete
        assert set(everything) == {_expected(k) for k in range(24)}
        for rank, full in zip(ranks, seen):
            assert _pairs(rank, epoch, workers=2) == full  # workers take turns: the same order with any number
            for position, workers in ((3, 0), (3, 2), (1, 2)):  # resuming at a step reads on where the epoch is
                assert _pairs(rank, epoch, position, workers) == full[position * rank.local_batch:]
    assert _pairs(ranks[0], 0) != _pairs(ranks[0], 1)  # shards reshuffled every epoch


def test_index_formats_are_split_over_processes_and_resume_in_place(tmp_path):
    path = write_jsonl(tmp_path, 12)
    ranks = [CaptionedData(str(path), SIZE, batch_size=4, rank=r, world_size=2) for r in range(2)]
    full = [_pairs(rank, 1, workers=2) for rank in ranks]
    assert sorted(full[0] + full[1]) == sorted(_expected(k) for k in range(12))
    assert _pairs(ranks[1], 1, position=2) == full[1][4:]


# ------------------------------------------------------------------------------------------------------------------
# Bad rows and unusable data


def test_unusable_rows_are_skipped_and_counted_in_one_warning(tmp_path):
    path = write_csv(tmp_path, 12)
    (tmp_path / "images" / "0003.png").unlink()  # a missing file
    (tmp_path / "images" / "0004.png").write_bytes(b"not a png")  # an unreadable image
    text = path.read_text().replace(_caption(5), "  ")  # an empty caption
    path.write_text(text + "images/0006.png,\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(TrainConfig(data=str(path), **{**NANO, "batch_size": 2}), progress=False)
    ours = [str(w.message) for w in caught if "unusable" in str(w.message)]
    assert len(ours) == 1, ours
    assert ours[0].startswith("skipped 4 unusable samples of the data (2 empty caption, 1 missing file, "
                              "1 unreadable image)")
    assert len(result.history["loss"]) == 2 * 5  # 13 rows, 10 listed (the unreadable one too) // 2 per step


def test_a_batch_without_a_usable_sample_is_passed_over_by_every_process(tmp_path):
    write_shards(tmp_path, 6, 1)  # one shard: its own order, samples 0..5
    with tarfile.open(tmp_path / "shard-000.tar") as tar:  # rewrite it with the images of samples 2 and 3 damaged
        members = [(member, tar.extractfile(member).read()) for member in tar]
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for member, payload in members:
            if member.name in ("000002.png", "000003.png"):
                payload = b"damaged"
                member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    with pytest.warns(UserWarning, match=r"skipped 2 unusable samples of the data \(2 unreadable image\)"):
        result = train(TrainConfig(data=str(tmp_path / "shard-{000..000}.tar"), **{**NANO, "batch_size": 2}),
                       progress=False)
    assert len(result.history["loss"]) == 2 * 2  # 3 steps per epoch; the second one had nothing to learn from
    assert result.history["step"] == [1, 3, 4, 6]


def test_empty_or_unusable_data_sets_are_refused_before_training(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty: it needs a header row"):
        CaptionedData(str(tmp_path / "empty.csv"), SIZE, batch_size=2)
    (tmp_path / "gone.csv").write_text("filepath,title\nnowhere.png,a cat\n")
    with pytest.raises(ValueError, match=r"holds no usable image-caption pair \(1 missing file\)"):
        CaptionedData(str(tmp_path / "gone.csv"), SIZE, batch_size=2)
    for k in range(4):
        (tmp_path / f"{k}.png").write_bytes(b"garbage")
    (tmp_path / "junk.csv").write_text("filepath,title\n" + "".join(f"{k}.png,caption {k}\n" for k in range(4)))
    with pytest.raises(ValueError, match=r"none of the first 4 training pairs .* \(4 unreadable image\)"):
        CaptionedData(str(tmp_path / "junk.csv"), SIZE, batch_size=2)
    with pytest.raises(ValueError, match="no such file or folder"):
        CaptionedData(str(tmp_path / "missing.jsonl"), SIZE, batch_size=2)
    with pytest.raises(ValueError, match=r"shard .*shard-002.tar does not exist; check the name and the \{000"):
        CaptionedData(write_shards(tmp_path / "s", 4, 2).replace("001", "009"), SIZE, batch_size=2)
    with pytest.raises(ValueError, match="2 training shards cannot be shared by 3 processes"):
        CaptionedData(write_shards(tmp_path / "t", 6, 2), SIZE, batch_size=3, world_size=3)
    with pytest.raises(ValueError, match="batch_size=16 leaves no full batch in the 4 training pairs"):
        CaptionedData(str(write_jsonl(tmp_path / "j", 4)), SIZE, batch_size=16)


def test_own_data_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="tokenizer must be one of"):
        TrainConfig(data="x.csv", tokenizer="gpt2")
    with pytest.raises(ValueError, match="val_fraction is an option of your own data"):
        TrainConfig(val_fraction=0.1)
    with pytest.raises(ValueError, match="split_key='split' already says which rows are held out"):
        TrainConfig(data="x.csv", split_key="split", val_fraction=0.1)
    with pytest.raises(ValueError, match=r"val_fraction must be a finite number in \[0, 0.9\]"):
        TrainConfig(data="x.csv", val_fraction=1.0)
    with pytest.raises(ValueError, match="workers must be an int >= 0"):
        TrainConfig(data="x.csv", workers=-1)
    with pytest.raises(ValueError, match="lang and family_batches are options of the shipped sets"):
        TrainConfig(data="x.csv", lang="ko")


# ------------------------------------------------------------------------------------------------------------------
# Training


def test_training_on_shards_resumes_exactly_and_loads_with_minclip_load(tmp_path):
    pattern = write_shards(tmp_path / "shards", 16, 4)
    config = TrainConfig(data=pattern, val_fraction=0.25, **{**NANO, "augment": True})  # 3 shards train, 1 held out
    whole = train(config, out=tmp_path / "whole", progress=False)
    assert len(whole.history["loss"]) == 2 * 3  # 12 training pairs // 4
    assert set(whole.report["among_test_images"]["text_to_image"]) >= {"R@1", "R@5", "R@10"}
    assert whole.report["test_captions"] == 4
    train(config, out=tmp_path / "cut", progress=False, stop_after=4)  # stopped mid-epoch 2, as Ctrl-C would
    resumed = train(config, out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.history["loss"] == whole.history["loss"]  # the same pairs in the same order: the same losses
    model, preprocess, tokenizer = load(tmp_path / "cut" / "checkpoint.pt")
    assert isinstance(preprocess, CLIPPreprocess)  # new photos are prepared as training read them
    features = model.encode_image(preprocess([_image(0), _image(1)]))
    assert features.shape == (2, model.config.embed_dim)
    assert read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["data_index"] == {"train_pairs": 12,
                                                                                 "steps_per_epoch": 3}


def test_ctrl_c_with_loader_workers_saves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    import multiprocessing
    import signal

    from minclip.train import TrainingInterrupted

    config = TrainConfig(data=write_shards(tmp_path / "shards", 16, 4), workers=2, **{**NANO, "batch_size": 8})
    straight = train(config, out=tmp_path / "straight", progress=False)
    real, calls = train_module.train_step, []

    def step_then_ctrl_c(*args, **kwargs):  # a terminal's Ctrl-C reaches the loader's workers too
        calls.append(real(*args, **kwargs))
        if len(calls) == 1:  # the next batch is more than the workers have fetched ahead
            for process in multiprocessing.active_children():
                os.kill(process.pid, signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return calls[-1]

    monkeypatch.setattr(train_module, "train_step", step_then_ctrl_c)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 1: checkpoint written to"):
        train(config, out=tmp_path / "cut", progress=False)
    monkeypatch.undo()
    resumed = train(config, out=tmp_path / "cut", resume=True, progress=False)
    assert resumed.history["loss"] == straight.history["loss"]


def test_changed_data_is_refused_on_resume(tmp_path):
    path = write_jsonl(tmp_path, 8)
    config = TrainConfig(data=str(path), **{**NANO, "epochs": 1})
    train(config, out=tmp_path / "run", progress=False, stop_after=1)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:4]))
    with pytest.raises(ValueError, match="has changed since .* was written"):
        train(config, out=tmp_path / "run", resume=True, progress=False)


def test_openais_tokenizer_can_replace_the_learned_one(tmp_path):
    result = train(TrainConfig(data=str(write_folder(tmp_path, 4)), tokenizer="openai", max_steps=1, **NANO),
                   progress=False)
    assert result.model.config.vocab_size == 49408
    assert result.tokenizer.encode("a cat") == [320, 2368]  # OpenAI's ids


def test_command_line_trains_on_a_csv_and_explains_bad_data(tmp_path, capsys):
    path = write_csv(tmp_path, 8)
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--preset", "nano", "--batch-size", "4", "--epochs", "1",
                 "--val-fraction", "0.25", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "held-out report" in printed and (out / "checkpoint.pt").is_file() and (out / "metrics.json").is_file()
    assert main(["eval", str(out / "checkpoint.pt")]) == 0
    assert "among_test_images" in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such file or folder" in error
    assert main(["train", "--data", str(path), "--caption-key", "text", "--out", str(tmp_path / "y")]) == 2
    assert "has no column 'text'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------------
# Two processes (gloo), each reading its own shards


def _two_process_worker(rank, rendezvous, data, results):
    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    seen = []
    original = train_module.CaptionedData.batches

    def recording(self, epoch, position):  # what this process trains on
        for images, captions in original(self, epoch, position):
            seen.extend(captions)
            yield images, captions

    train_module.CaptionedData.batches = recording
    result = train(TrainConfig(data=data, **{**NANO, "epochs": 1}), out=results / "run", progress=False)
    dist.destroy_process_group()
    torch.save({"seen": seen, "model": result.model.state_dict(), "steps": len(result.history["loss"])},
               results / f"rank{rank}.pt")


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
@pytest.mark.parametrize("layout", ["shards", "csv"])
def test_two_processes_train_on_disjoint_shares(tmp_path, layout):
    data = write_shards(tmp_path / "shards", 16, 4) if layout == "shards" else str(write_csv(tmp_path / "csv", 16))
    mp.start_processes(_two_process_worker, args=(tmp_path / "rendezvous", data, tmp_path), nprocs=2,
                       start_method="fork" if sys.platform.startswith("linux") else "spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4  # 8 pairs per process, 2 per process and step
    assert not set(ranks[0]["seen"]) & set(ranks[1]["seen"])
    assert sorted(ranks[0]["seen"] + ranks[1]["seen"]) == sorted(_caption(k) for k in range(16))
    torch.testing.assert_close(ranks[0]["model"], ranks[1]["model"], rtol=0, atol=0)  # one model
    load(tmp_path / "run" / "checkpoint.pt")
    assert os.path.getsize(tmp_path / "run" / "checkpoint.pt") > 0

"""Several processes training one model (minclip/train.py under torchrun): two CPU processes talking through gloo
must compute what one process computes on the global batch, and only rank 0 may write files.

The workers are started with fork on Linux (they inherit the already imported torch and the loaded data, so they start
in a fraction of a second) and meet through a file in tmp_path, or, for the command line, through the environment
variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) with a free port on 127.0.0.1.
"""

import contextlib
import importlib
import io
import os
import socket
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

train_module = importlib.import_module("minclip.train")  # the module (minclip.train is also the function)
from minclip.loss import SIGLIP_INIT_BIAS, SIGLIP_INIT_LOG_SCALE
from minclip.model import CLIP, CLIPConfig
from minclip.checkpoint import read_checkpoint
from minclip.processes import Processes, start_processes
from minclip.train import TrainConfig, Towers, parameter_groups, train, train_step

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="needs torch.distributed with gloo")
WORLD_SIZE = 2
GLOBAL_BATCH = 8
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"  # spawn (macOS, Windows) re-imports torch
NANO = dict(preset="nano", batch_size=16, epochs=1, eval_every=0, vocab_size=600, max_steps=3)


def _join(rank: int, init_method: str | None = None) -> None:
    """Set a worker up: one thread (a forked child must not reuse the parent's OpenMP pool), gloo on loopback."""
    torch.set_num_threads(1)
    loopback = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if loopback:  # keep gloo's own connections on 127.0.0.1
        os.environ["GLOO_SOCKET_IFNAME"] = loopback[0]
    if init_method is not None:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE,
                                timeout=timedelta(seconds=60))


def _record_saves(rank: int, folder) -> None:
    """Make this worker leave a mark in `folder` whenever it writes a checkpoint."""
    original = train_module.save_checkpoint

    def save_and_mark(path, state):
        (folder / f"saved-by-rank{rank}").touch()
        original(path, state)

    train_module.save_checkpoint = save_and_mark  # only in this (forked) worker


# ------------------------------------------------------------------------------------------------------------------
# One step: DDP on each process's shard equals one process on the global batch


def _problem(loss: str):
    """The same nano model (float64) and global batch in every process: random images and captions of 1 to 9 tokens."""
    torch.manual_seed(0)
    siglip = dict(init_logit_scale=SIGLIP_INIT_LOG_SCALE, init_logit_bias=SIGLIP_INIT_BIAS) if loss == "siglip" else {}
    model = CLIP(CLIPConfig.preset("nano", **siglip)).double()
    images = torch.randn(GLOBAL_BATCH, 3, 16, 16, dtype=torch.float64)
    tokens = torch.zeros(GLOBAL_BATCH, 12, dtype=torch.long)
    for row, length in enumerate(torch.randint(1, 10, (GLOBAL_BATCH,)).tolist()):
        ids = torch.randint(1, model.config.sot_token_id, (length,))
        tokens[row, : length + 2] = torch.cat([torch.tensor([model.config.sot_token_id]), ids,
                                               torch.tensor([model.config.eot_token_id])])
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6)
    return model, images, tokens, optimizer


def _step(loss: str, shard=slice(None), towers=None):
    """One train_step; returns the loss, the (clipped) gradients and the updated weights."""
    model, images, tokens, optimizer = _problem(loss)
    towers = towers(model) if towers is not None else None
    value = train_step(model, images[shard], tokens[shard], optimizer, grad_clip=0.5, loss=loss, towers=towers)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return value, grads, {name: p.detach().clone() for name, p in model.named_parameters()}


def _step_worker(rank, rendezvous, results):
    _join(rank, f"file://{rendezvous}")
    shard = Processes(rank, WORLD_SIZE).shard(GLOBAL_BATCH)
    out = {loss: _step(loss, shard, towers=lambda model: DistributedDataParallel(Towers(model)))
           for loss in ("clip", "siglip")}
    dist.destroy_process_group()
    torch.save(out, results / f"rank{rank}.pt")


def test_one_step_on_two_processes_equals_one_process_on_the_global_batch(tmp_path):
    expected = {loss: _step(loss) for loss in ("clip", "siglip")}  # first: the workers inherit what it imported
    mp.start_processes(_step_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE,
                       start_method=START_METHOD)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    for loss in ("clip", "siglip"):
        expected_loss, expected_grads, expected_weights = expected[loss]
        assert expected_grads.keys() == ranks[0][loss][1].keys()
        assert ("logit_bias" in expected_grads) == (loss == "siglip")
        for value, grads, weights in (rank[loss] for rank in ranks):
            # the global batch's loss, gradients (after clipping) and updated weights, to float64 rounding
            assert value == pytest.approx(expected_loss, rel=1e-12)
            torch.testing.assert_close(grads, expected_grads, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-12)
        # every process holds the very same model afterwards
        torch.testing.assert_close(ranks[0][loss][2], ranks[1][loss][2], rtol=0, atol=0)
    # the clipping was active: the gradient norm was above grad_clip=0.5 and was scaled down to it
    clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in expected_grads.values()]))
    assert clipped.item() == pytest.approx(0.5, rel=1e-5)


# Hard negatives: each process encodes the foils of its own rows (here 3 and 2), the loss gathers them all
FOIL_SHARDS = (slice(0, 3), slice(3, 5))


def _foil_tokens(model):
    generator = torch.Generator().manual_seed(5)
    tokens = torch.zeros(5, 9, dtype=torch.long)
    tokens[:, 0] = model.config.sot_token_id
    tokens[:, 1:8] = torch.randint(1, model.config.sot_token_id, (5, 7), generator=generator)
    tokens[:, 8] = model.config.eot_token_id
    return tokens


def _step_with_foils(loss: str, shard=slice(None), foil_shard=slice(None), towers=None):
    model, images, tokens, optimizer = _problem(loss)
    towers = towers(model) if towers is not None else None
    value = train_step(model, images[shard], tokens[shard], optimizer, grad_clip=0.5, loss=loss, towers=towers,
                       foil_tokens=_foil_tokens(model)[foil_shard])
    return value, {name: p.detach().clone() for name, p in model.named_parameters()}


def _foil_step_worker(rank, rendezvous, results):
    _join(rank, f"file://{rendezvous}")
    shard = Processes(rank, WORLD_SIZE).shard(GLOBAL_BATCH)
    out = {loss: _step_with_foils(loss, shard, FOIL_SHARDS[rank],
                                  towers=lambda model: DistributedDataParallel(Towers(model)))
           for loss in ("clip", "siglip")}
    dist.destroy_process_group()
    torch.save(out, results / f"rank{rank}.pt")


def test_one_step_with_foils_on_two_processes_equals_one_process_with_every_foil(tmp_path):
    expected = {loss: _step_with_foils(loss) for loss in ("clip", "siglip")}
    plain = _step("clip")
    assert expected["clip"][0] > plain[0]  # the foils took part: more wrong captions, a higher loss
    mp.start_processes(_foil_step_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE,
                       start_method=START_METHOD)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    for loss in ("clip", "siglip"):
        expected_loss, expected_weights = expected[loss]
        for value, weights in (rank[loss] for rank in ranks):
            assert value == pytest.approx(expected_loss, rel=1e-12)
            torch.testing.assert_close(weights, expected_weights, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# The training loop: sharding, augmentation, logging and checkpoints


def _train_worker(rank, rendezvous, results):
    _join(rank, f"file://{rendezvous}")
    _record_saves(rank, results)
    try:
        train(TrainConfig(**{**NANO, "batch_size": 15}), progress=False)
    except ValueError as error:
        (results / f"error{rank}.txt").write_text(str(error))
    result = train(TrainConfig(**NANO), out=results / "run", progress=False, stop_after=2)
    assert dist.is_initialized()  # a group set up by the caller stays open
    dist.destroy_process_group()
    torch.save({"history": result.history, "model": result.model.state_dict(), "rank": result.rank},
               results / f"rank{rank}.pt")


def test_two_process_training_replays_the_single_process_run(tmp_path):
    single = train(TrainConfig(**NANO), progress=False, stop_after=2)
    mp.start_processes(_train_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE,
                       start_method=START_METHOD)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    assert [rank["rank"] for rank in ranks] == [0, 1]
    for rank in ranks:  # the same batches, augmentations and steps: equal up to float32 rounding of the sums
        assert len(rank["history"]["loss"]) == 2
        torch.testing.assert_close(rank["history"]["loss"], single.history["loss"], rtol=1e-5, atol=1e-6)
        assert rank["history"]["lr"] == single.history["lr"]
        torch.testing.assert_close(rank["model"], single.model.state_dict(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["model"], ranks[1]["model"], rtol=0, atol=0)
    assert read_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    assert sorted(p.name for p in tmp_path.glob("saved-by-*")) == ["saved-by-rank0"]  # rank 1 never wrote
    for rank in range(WORLD_SIZE):  # an unshareable batch is refused by every process, with the fix
        assert (tmp_path / f"error{rank}.txt").read_text().startswith(
            "batch_size=15 must be divisible by the 2 processes")


PAIRS = {**NANO, "artists": ("noto", "openmoji"), "artist_pairs": True}


def _pairs_worker(rank, rendezvous, results):
    _join(rank, f"file://{rendezvous}")
    result = train(TrainConfig(**PAIRS), progress=False, stop_after=2)
    dist.destroy_process_group()
    torch.save({"loss": result.history["loss"], "model": result.model.state_dict()}, results / f"rank{rank}.pt")


def test_two_process_training_with_artist_pairs_replays_the_single_process_run(tmp_path):
    # each process keeps its rows of both drawings; the drawing-drawing term gathers both like image and text
    single = train(TrainConfig(**PAIRS), progress=False, stop_after=2)
    mp.start_processes(_pairs_worker, args=(tmp_path / "rendezvous", tmp_path), nprocs=WORLD_SIZE,
                       start_method=START_METHOD)
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["loss"], single.history["loss"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["model"], single.model.state_dict(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# The command line, started as torchrun starts it: environment variables, then `python -m minclip train`


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cli_worker(rank, port, results):
    from minclip.__main__ import main

    _join(rank)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    _record_saves(rank, results)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--preset", "nano", "--max-steps", "2", "--batch-size", "16", "--loss", "siglip",
                     "--quiet", "--out", str(results / "run")])
    (results / f"stdout{rank}.txt").write_text(stdout.getvalue())
    (results / f"exit{rank}.txt").write_text(f"{code} {dist.is_initialized()}")


def test_command_line_under_torchrun_variables_writes_only_from_rank_0(tmp_path):
    mp.start_processes(_cli_worker, args=(_free_port(), tmp_path), nprocs=WORLD_SIZE, start_method=START_METHOD)
    for rank in range(WORLD_SIZE):
        assert (tmp_path / f"exit{rank}.txt").read_text() == "0 False"  # success, and the group was closed
    assert "held-out report: emoji (en)" in (tmp_path / "stdout0.txt").read_text()
    assert (tmp_path / "stdout1.txt").read_text() == ""  # rank 1 prints nothing
    assert sorted(p.name for p in tmp_path.glob("saved-by-*")) == ["saved-by-rank0"]
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"checkpoint.pt", "metrics.json", "training_curves.png",
                                                               "similarity_matrix.png", "retrieval_gallery.png"}
    state = read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 2 and state["train_config"]["loss"] == "siglip"
    assert state["model"]["logit_bias"] != SIGLIP_INIT_BIAS and len(state["history"]["bias"]) == 2


# ------------------------------------------------------------------------------------------------------------------
# Pieces


def test_shards_tile_the_global_batch_in_rank_order():
    shards = [Processes(rank, 4).shard(12) for rank in range(4)]
    assert [list(range(12))[s] for s in shards] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert Processes().shard(12) == slice(0, 12)  # alone: the whole batch


def test_start_processes_alone_and_bad_devices(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = start_processes("cpu")
    assert (alone.rank, alone.world_size, alone.device, alone.owns_group) == (0, 1, torch.device("cpu"), False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="several processes train on CUDA GPUs .NCCL. or on the CPU .gloo., not on "
                                         "'mps'"):
        start_processes("mps")

"""Processes: where this one computes, and how several processes train one model together; stopping between steps.

`torchrun --nproc_per_node=N -m minclip train` starts N copies of the program. Each finds its place with
`start_processes` (a `Processes`: rank, world size, device), keeps its slice of every global batch (`Processes.shard`)
and agrees with the others on when to stop (`any_process`). `StopSignals` turns Ctrl-C and SIGTERM into a request
that the loop honours between two steps, so the checkpoint written on the way out is exact.

How it fits: train.py's loop uses all of it; loss.py gathers the features across the same process group. Nothing
here knows about models or data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> CUDA if available, else Apple's MPS, else the CPU; any other name is used as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Processes:
    """Where this process stands: alone (rank 0 of 1), or one of `world_size` processes training one model."""

    rank: int = 0  # 0 .. world_size - 1; rank 0 shows progress, evaluates and writes files
    world_size: int = 1  # processes sharing every batch
    device: torch.device = torch.device("cpu")  # where this process computes (GPU r for the r-th on a machine)
    owns_group: bool = False  # this run initialised the process group, so it also destroys it at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch_size: int) -> slice:
        """This process's rows of a global batch: rank r of W keeps the r-th of W equal, contiguous slices.

        Why not torch's `DistributedSampler`: it deals the *items* out to the processes, and each process then batches
        its own share, so a global batch would be W local batches drawn apart. `DistinctBatchSampler` builds every
        global batch so that no caption and no duplicate image occurs twice in it, which keeps false negatives out of
        the loss, and the loss sees the whole global batch through the gathered features. So every process runs the
        same seeded sampler (the same global batches) and keeps its slice, in rank order, which is where
        `gather_features` puts it. Each process still sees a disjoint 1/W of every epoch, as with a
        DistributedSampler, and the run is the single-process run, step for step.

            >>> Processes(rank=1, world_size=2).shard(8)
            slice(4, 8, None)
        """
        size = batch_size // self.world_size
        return slice(self.rank * size, (self.rank + 1) * size)

    def barrier(self) -> None:
        """Wait until every process gets here (while rank 0 evaluates and writes, for example)."""
        if self.world_size > 1 and self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])  # NCCL: on this process's GPU
        elif self.world_size > 1:
            dist.barrier()


def start_processes(device: str = "auto") -> Processes:
    """Join the process group that torchrun describes in the environment (or one already set up), else run alone.

    `torchrun --nproc_per_node=N` starts N copies of the program and tells each who it is in environment variables:
    `WORLD_SIZE` (N times the machines), `RANK` (0 .. WORLD_SIZE - 1), `LOCAL_RANK` (0 .. N - 1 on this machine: which
    GPU to use) and `MASTER_ADDR`/`MASTER_PORT`, where they meet. Processes on GPUs talk through NCCL, one GPU each
    (`cuda:LOCAL_RANK`); on the CPU through gloo. With `device="auto"` they take the GPUs if there are any, else the
    CPU (gloo cannot exchange tensors on Apple's MPS). A group initialised by the caller (a test, a notebook) is used
    as it is and left open; without either, this is one process on `pick_device(device)`.
    """
    owns_group = not (dist.is_available() and dist.is_initialized())
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if owns_group else dist.get_world_size()
    if world_size == 1:
        return Processes(device=pick_device(device))
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} asks for several processes, but this PyTorch build has no "
                           "torch.distributed; run a single process")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type not in ("cuda", "cpu"):
        raise ValueError(f"several processes train on CUDA GPUs (NCCL) or on the CPU (gloo), not on {device!r}")
    if chosen.type == "cuda":
        if chosen.index is None:
            chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)  # NCCL uses the current device; each process must own a different one
    if owns_group:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")  # reads torchrun's variables
    return Processes(dist.get_rank(), world_size, chosen, owns_group)


@contextlib.contextmanager
def process_group(device: str = "auto"):
    """`start_processes` for the length of a `with` block; a group this run initialised is destroyed at its end."""
    processes = start_processes(device)
    try:
        yield processes
    finally:
        if processes.owns_group:
            dist.destroy_process_group()


def global_mean(value: torch.Tensor) -> float:
    """The mean of a scalar over all processes (its own value when alone): the loss of the whole global batch."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)  # sum over processes
        value /= dist.get_world_size()
    return value.item()

def sum_over_processes(counts: torch.Tensor, device: torch.device) -> None:
    """Add `counts` over all processes, in place (NCCL adds tensors on the GPU only, hence `device`)."""
    on_device = counts.to(device)
    dist.all_reduce(on_device)
    counts.copy_(on_device.cpu())


# ------------------------------------------------------------------------------------------------------- stopping
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a run between two steps, after writing its checkpoint.

    A KeyboardInterrupt, so code that stops on Ctrl-C still does; `step` is the number of steps done, `checkpoint`
    the file that resumes the run (None without an out folder), `signal_number` the signal that asked to stop.
    """

    def __init__(self, step: int, checkpoint: Path | None, signal_number: int):
        saved = f"checkpoint written to {checkpoint}" if checkpoint is not None else "nothing saved (no out folder)"
        super().__init__(f"{signal.Signals(signal_number).name} at step {step}: {saved}")
        self.step, self.checkpoint, self.signal_number = step, checkpoint, signal_number


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM only *ask* the run to stop; the loop stops between two steps.

    An interrupt in the middle of a step could leave the weights updated and the step count not (or a checkpoint
    half-assembled); deferring it to the step boundary is what makes the checkpoint written on the way out exact. A
    second Ctrl-C while one is pending stops at once (the default behaviour). Only the main thread can own signal
    handlers: elsewhere (a notebook's worker thread, say) this does nothing and signals behave as usual.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None  # the first signal that asked to stop
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None:  # asked twice: stop now
            self._restore()
            raise KeyboardInterrupt
        self.received = signum

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true in any process (its own value when alone): every process stops at the same step.

    `device` is this process's: NCCL exchanges only tensors on the GPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())
    return flag

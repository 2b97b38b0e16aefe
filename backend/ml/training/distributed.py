"""The one place that knows the process's rank and world size.

A plain ``python run_experiment.py CONFIG.yaml`` is a world of one. Started by a launcher
(``torchrun --nproc_per_node 4 run_experiment.py CONFIG.yaml``, or on GPUs ``accelerate launch
--multi_gpu``), each process joins the process group through accelerate's ``PartialState``, which
reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR ...) and picks NCCL on
GPUs, gloo on CPUs.
Everything else asks a :class:`World` and reads like single-device code.

>>> world = start_world("auto")
>>> world.size, world.is_main
(1, True)
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import UserError

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes the run directory, trackers, plots and checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, in rank order, on every process."""
        if not self.is_distributed:
            return [value]
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every process."""
        if not self.is_distributed:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def launched_by_a_launcher() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Whether this process is the launcher's rank 0 (or not launched by one): the one that
    reports, for code that holds no ``World``."""
    return int(os.environ.get("RANK", "0")) == 0


def pick_device(requested: str) -> torch.device:
    """auto → cuda, then mps, then cpu; an explicit choice must exist on this machine."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("training.device is cuda but torch sees no GPU here (torch "
                        f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use "
                        "training.device: auto or cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UserError("training.device is mps but this machine has no Apple GPU; use "
                        "training.device: auto or cpu")
    return torch.device(requested)


def start_world(requested_device: str) -> World:
    """Join the launcher's process group (if any) and return this process's place in it."""
    device = pick_device(requested_device)
    if not launched_by_a_launcher():
        return World(rank=0, size=1, device=device)
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    # A process that ends with its process group alive can abort in gloo's teardown
    # ("terminate called without an active exception") while another rank is still writing
    # the run directory; leaving the group first ends every rank cleanly.
    atexit.unregister(_leave_process_group)  # once, however many runs this process starts
    atexit.register(_leave_process_group)
    if device.type == "cuda":
        device = torch.device("cuda", state.local_process_index)
        torch.cuda.set_device(device)
    return World(rank=state.process_index, size=state.num_processes, device=device)


def _leave_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

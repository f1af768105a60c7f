"""Scoring under ``accelerate launch``: every rank takes whole chunks of rows (global chunks r,
r + world, ... so a chunk's rows and seeds do not depend on the number of processes), the results
are gathered with accelerate, and the first rank writes. One process is rank 0 of 1."""
from __future__ import annotations

import os
from typing import Any


def process_shard() -> tuple[int, int]:
    """(rank, world size) under ``accelerate launch`` (or torchrun); (0, 1) otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())  # gloo ranks on a CPU machine
        return state.process_index, state.num_processes
    return 0, 1


def end_distributed() -> None:
    """Tear the process group down (gloo aborts at exit otherwise); a no-op in one process."""
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def is_main_process() -> bool:
    return process_shard()[0] == 0


def gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if world == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def shard_rows(n: int, chunk_size: int, rank: int = 0, world: int = 1) -> list[int]:
    """Rank ``rank``'s rows: global chunks rank, rank + world, ... of ``chunk_size`` rows, so every
    chunk (its rows and its seeds) is the same whatever the number of processes."""
    chunks = range(rank, -(-n // chunk_size), world)
    return [i for c in chunks for i in range(c * chunk_size, min(n, (c + 1) * chunk_size))]


def merge_shards(local: dict[str, list[Any]], n: int, world: int, index: str = "index") -> dict[str, list[Any]]:
    """Columns of all ranks' rows in row order: each rank's ``local`` holds its row numbers under
    ``index`` and one list per column."""
    merged: dict[str, list[Any]] = {k: [None] * n for k in local if k != index}
    for part in gather(local, world):
        for k, values in part.items():
            if k != index:
                for i, value in zip(part[index], values):
                    merged[k][i] = value
    return merged

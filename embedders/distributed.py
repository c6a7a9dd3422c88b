"""Device choice and data-parallel training, shared by every neural embedder (gru_ae, multitask).

Under ``torchrun --nproc_per_node=K -m embedders.<name> ...`` each process calls :func:`init_distributed` once;
every rank then builds the same list of batches and takes its :func:`shard` of it, the model is wrapped with
:func:`wrap_ddp`, and rank 0 alone writes checkpoints and embeds (other ranks return an empty block). Outside
torchrun all of this is a no-op: rank 0 of a world of one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | None) -> torch.device:
    """The torch device for ``device``: 'auto' (or None) -> cuda when present, else cpu; 'cuda' -> this rank's GPU
    (``LOCAL_RANK`` under torchrun, else 0); 'cuda:N' -> GPU N; 'cpu'. ValueError for CUDA without a CUDA device or
    another name. The one device choice of every torch module (the neural embedders, :mod:`validate.mlp`)."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = str(device).partition(":")
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} asked for but no CUDA device is available")
        return torch.device("cuda", int(index) if index else int(os.environ.get("LOCAL_RANK", 0)))
    if device != "cpu":
        raise ValueError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    return torch.device("cpu")


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str, threads: int) -> tuple[int, int]:
    """Set this process's CPU threads and, under torchrun (``WORLD_SIZE`` > 1), join the process group (nccl on
    CUDA, gloo on CPU). threads > 0: that many; 0: torch's default, or cores / K on CPU under torchrun.
    Returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if threads > 0:
        torch.set_num_threads(threads)
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dev = resolve_device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cpu" and threads <= 0:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return dist.get_rank(), world


def shard(batches: list, rank: int, world: int) -> list:
    """Deterministic share of ``batches`` for ``rank``: every world-th batch, the list wrapped so all ranks get the
    same count."""
    if world == 1 or not batches:
        return batches
    per = -(-len(batches) // world)
    return [batches[i % len(batches)] for i in range(rank, per * world, world)]


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel when a process group is up, else ``model`` itself."""
    _, world = dist_info()
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)


def all_reduce_sum(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum of ``x`` over ranks (``x`` itself in a world of one), returned on the CPU. nccl reduces on the GPU."""
    _, world = dist_info()
    if world == 1:
        return x
    y = x.to(device)
    dist.all_reduce(y)
    return y.cpu()


@contextmanager
def deterministic_algorithms():
    """Within the block, torch picks deterministic kernels where it has them (warning, not failing, where it has
    not), then the previous setting returns. On CPU with several threads an embedding's backward otherwise sums its
    rows in a thread-dependent order, so the same seed could give other bytes."""
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def embed_distributed(embedder, args) -> tuple[int, object | None]:
    """What a neural embedder's CLI does, under torchrun or not: join the process group (``args.device``,
    ``args.threads``), build the cached event table once (rank 0; the others wait, then open it), fit and embed,
    write the block on rank 0 (``args.out``, ``args.dtype``), leave the group. Returns (rank, block or None on other
    ranks). Errors propagate (after the group is left)."""
    from competition.events import EventTable
    from embedders.base import write_block
    from embedders.cli import embed

    rank, world = init_distributed(args.device, getattr(args, "threads", 0))
    progress = not args.no_progress and rank == 0
    try:
        if world > 1:
            if rank == 0:
                EventTable.build(args.data_dir, args.layout, progress=progress)
            dist.barrier()
            embedder.progress = embedder.progress and rank == 0
        block = embed(embedder, args.data_dir, args.layout, progress=progress)
        if rank == 0:
            write_block(block, args.out, dtype=args.dtype)
        if world > 1:
            # leave the group together: a rank that tore gloo down while rank 0 was still writing was once seen
            # to abort at exit (SIGABRT, "terminate called without an active exception"; 1 run of ~13 of the test)
            dist.barrier()
        return rank, (block if rank == 0 else None)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def neural_main(parser, argv, make, label) -> int:
    """The whole ``main`` of a neural embedder's CLI: parse, ``make(args)`` the embedder (a ValueError there is a
    usage error naming the flag), check ``--device`` / ``--threads`` / ``--data-dir``, :func:`embed_distributed`,
    print one summary line on rank 0, named ``label(args)``. Exit 2 with one line on bad input."""
    import sys

    from competition.load import DataError
    from embedders.base import BlockError

    args = parser.parse_args(argv)
    try:
        embedder = make(args)
        embedder.validate()
        resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir}: not a directory")
    try:
        rank, block = embed_distributed(embedder, args)
    except (DataError, BlockError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        m = block.meta
        print(f"{label(args)}: {block.vectors.shape[0]:,} clients x {block.dim} -> {args.out}  (best epoch "
              f"{m.get('best_epoch')}, held-out loss {m.get('best_heldout_loss')}; {m['seconds']}s, peak RSS "
              f"{m['peak_rss_mb']:,.0f} MiB)")
    return 0


__all__ = ["neural_main", "embed_distributed", "deterministic_algorithms", "DEVICES", "resolve_device", "dist_info", "init_distributed", "shard", "wrap_ddp", "all_reduce_sum"]

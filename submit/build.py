"""Blocks on demand: build every block an ensemble spec names that is missing or stale.

A block is stale when its ``meta.json`` fingerprint differs from
:func:`competition.events.block_fingerprint` (the content of the input files and the relevant clients) of the data
it must come from (the split's input period for local
validation, every raw event for the final submission), or, when the spec names its embedder, when it was made by
another embedder, seed or parameters (the spec's ``params`` over the embedder's defaults; the class's
``runtime_params``, such as ``progress``, aside). A stale or missing block is rebuilt with its spec entry's
``embedder`` and ``params`` (or, when the spec names none, the embedder and constructor parameters recorded in
its meta.json). An embedder that keeps checkpoints (``resumable``, e.g. gru_ae) continues an interrupted build of the same block
from ``<path>.work/last.pt`` when that is a checkpoint of the same run (not with ``rebuild``).

Embedders are found by name through :mod:`embedders.registry` (ours by short name, a user's by ``module:Class``).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from competition.events import block_fingerprint
from embedders import registry
from embedders.base import Embedder, write_block
from embedders.cli import embed
from validate.spec import BlockSpec, EnsembleSpec, SpecError, block_meta

#: Our embedders, by name (see :mod:`embedders.registry`; a dotted ``module:Class`` path names a user's own).
EMBEDDERS: tuple[str, ...] = tuple(registry.BUILTIN)


def embedder_class(name: str, where: str = "ensemble spec") -> type[Embedder]:
    """:func:`embedders.registry.embedder_class`, raising :class:`SpecError`."""
    try:
        return registry.embedder_class(name, where)
    except registry.RegistryError as exc:
        raise SpecError(str(exc)) from exc


def make_embedder(name: str, params: dict[str, Any], seed: int, progress: bool = True,
                  where: str = "ensemble spec", work_dir: str | Path | None = None) -> Embedder:
    """:func:`embedders.registry.make_embedder`, its params checked (``validate``) before any work; raises
    :class:`SpecError`."""
    try:
        embedder = registry.make_embedder(name, params, seed, progress, where, work_dir)
    except registry.RegistryError as exc:
        raise SpecError(str(exc)) from exc
    try:
        embedder.validate()
    except ValueError as exc:
        raise SpecError(f"{where}: embedder {name!r} rejects its params {params}: {exc}") from exc
    return embedder


def recipe(b: BlockSpec, meta: dict[str, Any], where: str, why: str = "must be (re)built"
           ) -> tuple[str, dict[str, Any]]:
    """(embedder name, params) that build block ``b``: the spec's, else the ones its meta.json records."""
    if b.embedder is not None:
        return b.embedder, dict(b.params)
    name = meta.get("embedder")
    if not isinstance(name, str) or (name not in EMBEDDERS and ":" not in name):
        raise SpecError(f"{where}: block {b.name!r} is {why} and cannot be built: the spec gives no 'embedder' and "
                        f"no meta.json names one we know ({name!r}); add \"embedder\" (one of {list(EMBEDDERS)}) "
                        f"and \"params\" to the entry, or point 'path' at an existing block")
    try:
        params, lost = registry.rebuild_params(name, meta.get("params") or {}, where)
    except registry.RegistryError as exc:
        raise SpecError(str(exc)) from exc
    if lost:
        warnings.warn(f"{where}: block {b.name!r} is rebuilt from its meta.json; recorded params {lost} are not "
                      f"constructor arguments of {name!r} and take their defaults (give \"params\" in the spec to "
                      f"set them)", stacklevel=2)
    return name, params


def staleness(b: BlockSpec, path: Path, fp: str, seed: int, where: str) -> str | None:
    """Why the block at ``path`` must be (re)built, or None when it is fresh."""
    meta = block_meta(replace(b, path=path))
    if not (path / "embeddings.npy").is_file() or not (path / "client_ids.npy").is_file():
        return "missing"
    if meta.get("fingerprint") != fp:
        return f"stale (input fingerprint {meta.get('fingerprint')} != {fp})"
    if b.embedder is None:
        return None  # nothing in the spec to compare with
    if meta.get("embedder") != b.embedder:
        return f"stale (made by {meta.get('embedder')!r}, the spec asks for {b.embedder!r})"
    want_seed = b.params.get("seed", seed)
    if meta.get("seed") != want_seed:
        return f"stale (seed {meta.get('seed')} != {want_seed})"
    embedder = make_embedder(b.embedder, b.params, want_seed, False, where)
    diff = registry.params_differ(embedder, meta.get("params"))
    if diff:
        wanted, have = (registry.json_normalised(p) for p in (embedder.get_params(), meta.get("params") or {}))
        return f"stale (params {diff} differ: {[have.get(k) for k in diff]} -> {[wanted.get(k) for k in diff]})"
    return None


def block_path(b: BlockSpec, layout: str) -> Path:
    """Where the block lives for ``layout``: its spec path ``<root>/<name>`` for "input"; ``<root>-final/<name>``
    for "raw". The final-submission blocks (built from events that include the target windows) thus never
    overwrite the local-validation ones, nor sit in the folder a search scans for blocks."""
    if layout == "input":
        return b.path
    root = b.path.parent
    return root.with_name(root.name + "-final") / b.path.name


def ensure_blocks(spec: EnsembleSpec, data_dir: str | Path, layout: str = "input", seed: int = 0,
                  progress: bool = True, rebuild: bool = False, log=print) -> EnsembleSpec:
    """Build every block of ``spec`` (weight > 0) that is missing or stale for ``data_dir``/``layout``.

    Returns the spec with each block's path pointing at the fresh block (see :func:`block_path`).
    """
    fp = block_fingerprint(data_dir, layout)
    out = []
    for b in spec.blocks:
        path = block_path(b, layout)
        if b.weight == 0:
            out.append(replace(b, path=path))
            continue
        why = "rebuild requested" if rebuild else staleness(b, path, fp, seed, spec.source)
        if why is not None:
            name, params = recipe(b, block_meta(replace(b, path=path)) or block_meta(b), spec.source,
                                  f"{why} at {path}")
            want_seed = params.get("seed", seed)
            log(f"block {b.name}: {why}; building with {name} {params or ''} (seed {want_seed}, layout {layout})")
            t0 = time.perf_counter()
            embedder = make_embedder(name, params, want_seed, progress, spec.source,
                                     work_dir=path.with_name(path.name + ".work"))
            if getattr(embedder, "resumable", False) and "resume" not in params and not rebuild:
                embedder.resume = "auto"  # a killed pack continues from the block's checkpoint (<path>.work)
            if hasattr(embedder, "use_prebuilt"):
                # blocks of this spec already here for the same events: its stacked inputs may reuse them
                embedder.use_prebuilt(o.path for o in out if o.weight > 0)
            block = embed(embedder, Path(data_dir), layout, progress=progress)
            block.meta["name"] = b.name
            write_block(block, path)
            log(f"block {b.name}: {block.vectors.shape[0]:,} x {block.dim} in {time.perf_counter() - t0:.1f}s -> {path}")
            b = replace(b, embedder=name, params=params)
        else:
            log(f"block {b.name}: fresh ({path})")
        out.append(replace(b, path=path))
    return replace(spec, blocks=out)


__all__ = ["EMBEDDERS", "embedder_class", "make_embedder", "ensure_blocks", "staleness", "block_path", "recipe"]

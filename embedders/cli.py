"""What every embedder CLI shares: the flags (--data-dir, --out, --dim, --seed, --layout), running fit/transform on
the event table for the relevant clients, and writing the block with its meta (params, seed, input fingerprint,
seconds, peak memory).

An embedder's own flags come from its constructor, declared once: :func:`add_params` adds one flag per
parameter (``--min-df`` for ``min_df``; type and default from the signature, help text from the ``Parameters``
section of the class docstring) and :func:`from_args` builds the embedder from the parsed flags."""
from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from competition.cli import HelpFormatter, add_no_progress, peak_rss_mb
from competition.events import EventTable, block_fingerprint
from competition.load import DataError, read_relevant_clients
from competition.schema import LAYOUTS
from embedders import registry
from embedders.base import Block, BlockError, Embedder, write_block


def base_parser(prog: str, description: str, default_dim: int | None,
                dim_help: str = "width of the block") -> argparse.ArgumentParser:
    """An ArgumentParser with the common embedder flags (``dim_help``: the --dim help, for a block whose width is
    derived from other parameters)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path,
                        help="data directory in the organisers' layout (split already run for --layout input)")
    parser.add_argument("--out", required=True, type=Path,
                        help="block folder to write (embeddings.npy, client_ids.npy, meta.json); replaced atomically")
    parser.add_argument("--dim", type=int, default=default_dim, help=dim_help)
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same block on CPU")
    parser.add_argument("--layout", choices=LAYOUTS, default="input",
                        help="'input': the split's input period (local validation); 'raw': every released event "
                             "(final submission)")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of embeddings.npy")
    add_no_progress(parser)
    return parser


#: Constructor parameters the common flags stand for (``--dim``, ``--seed``, ``--no-progress``).
COMMON_PARAMS = ("dim", "seed", "progress")
_TYPES = {"int": int, "float": float, "str": str, "Path": Path, "bool": bool}


def param_help(cls: type) -> dict[str, str]:
    """Parameter name -> help text, from the numpydoc ``Parameters`` section of ``cls``'s docstring::

        Parameters
        ----------
        min_df : int
            drop tokens held by fewer documents than this

    An entry may name several parameters (``thin, wide : int``); its text runs until the next entry or section.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = next((i + 2 for i, line in enumerate(lines[:-1])
                  if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}), None)
    out: dict[str, list[str]] = {}
    names: list[str] = []
    for i in range(start or len(lines), len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(" : ")[0].split(",")]
            for n in names:
                out[n] = []
        elif line.strip():
            for n in names:
                out[n].append(line.strip())
    return {n: _plain(" ".join(text)) for n, text in out.items()}


def _plain(text: str) -> str:
    """Docstring markup as a terminal shows it: ``x`` -> x, :role:`~a.b.c` -> c, :role:`a.b` -> a.b."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def _flag_type(param: inspect.Parameter) -> type:
    """The flag's type: the default's, else the first of int/float/str/Path/bool in the annotation."""
    if param.default is not None and param.default is not inspect.Parameter.empty:
        return str if isinstance(param.default, (tuple, list)) else type(param.default)
    found = re.findall(r"\b(int|float|str|Path|bool)\b", str(param.annotation))
    return _TYPES[found[0]] if found else str


def add_params(parser: argparse.ArgumentParser, cls: type[Embedder], choices: dict[str, Iterable] | None = None,
               skip: Iterable[str] = (), flags: dict[str, dict[str, Any]] | None = None) -> argparse.ArgumentParser:
    """Add a flag per constructor parameter of ``cls`` to ``parser`` (those of :data:`COMMON_PARAMS`, ``skip``
    and flags the parser already has aside): ``--name-with-dashes``, the signature's default and type (a tuple
    default is typed comma-separated), ``action="store_true"`` for a False default, ``--x/--no-x`` for a True one,
    ``choices[name]`` when given, the help from :func:`param_help`; ``flags[name]`` (argparse keywords) overrides
    any of those.
    A parameter without a docstring entry is a TypeError (every flag has help text). Returns ``parser``."""
    helps, choices, skip = param_help(cls), choices or {}, set(skip) | set(COMMON_PARAMS)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        flag = "--" + name.replace("_", "-")
        if name == "self" or name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or \
                flag in parser._option_string_actions:
            continue
        if name not in helps:
            raise TypeError(f"{cls.__name__}: parameter {name!r} has no entry in the docstring's Parameters section")
        kind, default = _flag_type(param), param.default
        kwargs: dict[str, Any] = {"help": helps[name], "default": default}
        if kind is bool:
            kwargs["action"] = "store_true" if not default else argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if isinstance(default, (tuple, list)):
                kwargs["default"] = ",".join(map(str, default))
        if name in choices:
            kwargs["choices"] = tuple(choices[name])
        kwargs.update((flags or {}).get(name, {}))
        parser.add_argument(flag, **kwargs)
    return parser


def from_args(cls: type[Embedder], args: argparse.Namespace, **overrides: Any) -> Embedder:
    """``cls`` built from parsed flags: each constructor parameter from the flag of its name (``progress`` from
    ``--no-progress``), then ``overrides``."""
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name == "progress":
            kwargs[name] = not args.no_progress
        elif name != "self" and hasattr(args, name):
            kwargs[name] = getattr(args, name)
    return cls(**{**kwargs, **overrides})


def embed(embedder: Embedder, data_dir: Path, layout: str = "input", progress: bool = True,
          client_ids: np.ndarray | None = None) -> Block:
    """Fit ``embedder`` on the event table and embed ``client_ids`` (default: the relevant clients).

    The block's meta records the embedder (:func:`embedders.registry.name_of`: a name that rebuilds it), its
    params, seed, layout, input fingerprint (:func:`competition.events.block_fingerprint`: the events and the
    clients embedded), seconds, events/s and peak RSS.
    """
    t0 = time.perf_counter()
    events = EventTable.build(data_dir, layout, progress=progress)
    t_events = time.perf_counter() - t0
    clients = read_relevant_clients(data_dir) if client_ids is None else np.asarray(client_ids, dtype=np.int64)
    t1 = time.perf_counter()
    block = embedder.fit_transform(events, clients)
    seconds = time.perf_counter() - t1
    block.meta.update({
        "embedder": registry.name_of(type(embedder)), "params": embedder.get_params(), "seed": embedder.seed, "layout": layout,
        "data_dir": str(data_dir), "events_fingerprint": events.fingerprint, "n_events": events.n_events,
        "fingerprint": block_fingerprint(data_dir, layout, clients, events.fingerprint),
        "event_table_seconds": round(t_events, 2), "seconds": round(seconds, 2),
        "events_per_second": round(events.n_events / max(seconds, 1e-9), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
    })
    block.meta.setdefault("name", embedder.name)
    return block


def run(parser: argparse.ArgumentParser, make: Callable[[argparse.Namespace], Embedder],
        argv: list[str] | None = None) -> int:
    """Parse flags, build the embedder with ``make(args)``, embed, write the block. Exit code 2 on bad input."""
    args = parser.parse_args(argv)
    try:
        if args.dim is not None and args.dim < 1:
            parser.error(f"--dim must be >= 1, got {args.dim}")
        embedder = make(args)
        try:
            embedder.validate()
        except ValueError as exc:
            parser.error(str(exc))
        block = embed(embedder, args.data_dir, args.layout, progress=not args.no_progress)
        write_block(block, args.out, dtype=args.dtype)
    except (DataError, BlockError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = block.meta
    print(f"{embedder.name}: {block.vectors.shape[0]:,} clients x {block.dim} -> {args.out}  "
          f"({m['seconds']}s, {m['events_per_second']:,.0f} events/s, peak RSS {m['peak_rss_mb']:,.0f} MiB)")
    return 0

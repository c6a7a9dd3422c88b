"""Which embedders exist, by name, and how one is configured from a spec's ``params``.

A name is either one of ours (:data:`BUILTIN`: ``stats``, ``tfidf_svd``, ``item2vec``, ``gru_ae``, ``multitask``,
``als``, ...) or a dotted path ``package.module:ClassName`` to a user's own :class:`embedders.base.Embedder` subclass, so that
pack, search and the stacking embedder build, rebuild and ``--final`` a user's block exactly like ours.
"""
from __future__ import annotations

import importlib
import json
import inspect
from pathlib import Path
from typing import Any

from embedders.base import Embedder

#: Our embedders: name -> "module:Class".
BUILTIN: dict[str, str] = {
    "stats": "embedders.stats:StatsEmbedder",
    "tfidf_svd": "embedders.tfidf_svd:TfidfSvdEmbedder",
    "item2vec": "embedders.item2vec:Item2Vec",
    "gru_ae": "embedders.gru_ae:GruAE",
    "multitask": "embedders.multitask:MultiTaskEmbedder",
    "als": "embedders.als:AlsEmbedder",
    "next_event": "embedders.next_event:NextEventEmbedder",
    "contrastive": "embedders.contrastive:ContrastiveEmbedder",
    "content": "embedders.content:ContentEmbedder",
    "rhythm": "embedders.rhythm:RhythmEmbedder",
}


class RegistryError(ValueError):
    """An embedder name that names nothing, or params it does not take."""


def embedder_class(name: str, where: str = "ensemble spec") -> type[Embedder]:
    """The Embedder subclass called ``name`` (a :data:`BUILTIN` name or ``module:Class``)."""
    target = BUILTIN.get(name, name)
    if ":" not in target:
        raise RegistryError(f"{where}: unknown embedder {name!r}; expected one of {list(BUILTIN)} or a dotted path "
                            f"'package.module:ClassName'")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(f"{where}: embedder {name!r} cannot be imported ({exc})") from exc
    cls = getattr(module, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Embedder) and cls is not Embedder):
        raise RegistryError(f"{where}: {target} is not an Embedder subclass")
    return cls


def name_of(cls: type[Embedder]) -> str:
    """The registry name that builds ``cls``: its short :data:`BUILTIN` name (``cls.name``) when that is ours,
    else its dotted path ``module:ClassName``. What a block's meta.json records as its ``embedder``."""
    if cls.name in BUILTIN and embedder_class(cls.name) is cls:
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def constructor_params(cls: type) -> set[str]:
    """Names of the constructor's parameters."""
    return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}


def runtime_params(cls: type[Embedder]) -> frozenset[str]:
    """The class's :attr:`~embedders.base.Embedder.runtime_params` (not part of a block's rebuild params)."""
    return frozenset(cls.runtime_params)


def json_normalised(value: Any) -> Any:
    """``value`` after a JSON round trip, so tuples and lists, numpy and Python numbers compare equal."""
    from competition.io import json_default
    return json.loads(json.dumps(value, default=json_default))


def params_differ(embedder: Embedder, recorded: dict[str, Any] | None) -> list[str]:
    """Names of the params (runtime ones aside) where ``embedder`` differs from ``recorded`` (a block's meta.json
    ``params``), sorted; compared after :func:`json_normalised`. Empty: the block was made with these params."""
    wanted, have = json_normalised(embedder.get_params()), json_normalised(recorded or {})
    runtime = runtime_params(type(embedder))
    return sorted(k for k in set(wanted) | set(have) if k not in runtime and wanted.get(k) != have.get(k))


def rebuild_params(name: str, recorded: dict[str, Any], where: str = "ensemble spec"
                   ) -> tuple[dict[str, Any], list[str]]:
    """(params, lost): the constructor params among ``recorded`` (a block's meta.json ``params``) that rebuild it,
    runtime-only ones left out, and the recorded names the constructor does not take (sorted)."""
    cls = embedder_class(name, where)
    accepted, runtime = constructor_params(cls), runtime_params(cls)
    params = {k: v for k, v in recorded.items() if k in accepted and k not in runtime}
    return params, sorted(k for k in recorded if k not in accepted)


def default_transform(name: str | None, params: dict[str, Any] | None = None) -> str:
    """The ensemble transform of blocks made by embedder ``name`` with ``params`` (its class's
    :meth:`~embedders.base.Embedder.transform_for`, by default its ``ensemble_transform``); "l2" for a name the
    registry does not know or cannot import."""
    try:
        cls = embedder_class(name) if isinstance(name, str) else None
    except RegistryError:
        cls = None
    return cls.transform_for(params if isinstance(params, dict) else None) if cls is not None \
        else Embedder.ensemble_transform


def make_embedder(name: str, params: dict[str, Any], seed: int, progress: bool = True,
                  where: str = "ensemble spec", work_dir: str | Path | None = None) -> Embedder:
    """``name`` configured with ``params`` (constructor kwargs); ``seed`` unless params set one; ``progress`` and
    ``work_dir`` (checkpoints, corpora) where the embedder takes them and params do not set them."""
    cls = embedder_class(name, where)
    accepted = constructor_params(cls)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise RegistryError(f"{where}: embedder {name!r} has no parameter(s) {unknown}; it takes {sorted(accepted)}")
    kwargs = {"seed": seed, **params}
    if "progress" in accepted and "progress" not in params:
        kwargs["progress"] = progress
    if work_dir is not None and "work_dir" in accepted and params.get("work_dir") is None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        kwargs["work_dir"] = str(work_dir)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: embedder {name!r} rejects its params {params}: {exc}") from exc


__all__ = ["BUILTIN", "RegistryError", "embedder_class", "constructor_params", "runtime_params",
           "json_normalised", "params_differ", "rebuild_params", "default_transform", "make_embedder", "name_of"]

"""embedders.cli.add_params / from_args: an embedder's flags come from its constructor (signature + the docstring's
Parameters section), so a flag is declared once; with no flags given, a CLI builds the constructor's defaults."""
from __future__ import annotations

import argparse
import importlib
import inspect

import pytest

from embedders.base import Embedder
from embedders.cli import COMMON_PARAMS, add_params, base_parser, from_args, param_help


class Toy(Embedder):
    """A toy.

    Parameters
    ----------
    dim : int
        width
    seed : int
        seed
    mode : str
        how: ``a`` or :data:`~some.module.B`
    rate : float
        a rate,
        on two lines
    cap : int | None
        a cap (default: none)
    fast : bool
        go fast
    careful : bool
        be careful
    kinds : tuple | str
        kinds
    progress : bool
        bars

    Attributes
    ----------
    fitted_ : int
        not a parameter
    """

    def __init__(self, dim: int = 4, seed: int = 0, mode: str = "a", rate: float = 0.5, cap: int | None = None,
                 fast: bool = False, careful: bool = True, kinds: tuple[str, ...] | str = ("x", "y"),
                 progress: bool = True):
        super().__init__(dim, seed)
        self.mode, self.rate, self.cap, self.fast, self.careful, self.kinds = mode, rate, cap, fast, careful, kinds
        self.progress = progress


def _parser() -> argparse.ArgumentParser:
    return add_params(base_parser("toy", "a toy", default_dim=4), Toy, choices={"mode": ("a", "b")})


def test_param_help_reads_the_parameters_section_only():
    helps = param_help(Toy)
    assert helps["rate"] == "a rate, on two lines"
    assert helps["mode"] == "how: a or B"  # markup as a terminal shows it
    assert "fitted_" not in helps and set(helps) == set(inspect.signature(Toy).parameters)


def test_flags_types_defaults_and_round_trip():
    parser = _parser()
    args = parser.parse_args(["--data-dir", "d", "--out", "o"])
    assert (args.mode, args.rate, args.cap, args.fast, args.careful, args.kinds) == ("a", 0.5, None, False, True, "x,y")
    assert from_args(Toy, args).get_params() == {**Toy().get_params(), "kinds": "x,y"}
    args = parser.parse_args(["--data-dir", "d", "--out", "o", "--mode", "b", "--rate", "2", "--cap", "3", "--fast",
                              "--no-careful", "--no-progress", "--seed", "5"])
    emb = from_args(Toy, args, cap=7)
    assert (emb.mode, emb.rate, emb.cap, emb.fast, emb.careful, emb.progress, emb.seed) == \
        ("b", 2.0, 7, True, False, False, 5)
    with pytest.raises(SystemExit):
        parser.parse_args(["--data-dir", "d", "--out", "o", "--mode", "c"])


def test_an_undocumented_parameter_is_refused():
    class Bare(Toy):
        """No Parameters section."""

    with pytest.raises(TypeError, match="no entry in the docstring"):
        add_params(base_parser("bare", "bare", default_dim=4), Bare)


@pytest.mark.parametrize("module", ["embedders.stats", "embedders.tfidf_svd", "embedders.item2vec",
                                    "embedders.gru_ae.__main__", "embedders.multitask.__main__"])
def test_each_cli_has_a_flag_per_parameter_and_builds_the_defaults(module, tmp_path):
    mod = importlib.import_module(module)
    parser = mod.build_parser()
    args = parser.parse_args(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"])
    built = mod.make(args)
    cls = type(built)
    for name in inspect.signature(cls.__init__).parameters:
        if name not in ("self", *COMMON_PARAMS, "thin", "wide"):  # multitask: --hidden THIN WIDE
            assert "--" + name.replace("_", "-") in parser._option_string_actions, (module, name)
    defaults = cls(progress=False, **({"work_dir": built.work_dir} if "work_dir" in vars(built) else {}))
    assert _canon(built.get_params()) == _canon(defaults.get_params())


def _canon(params: dict) -> dict:
    """A comma-separated flag and the tuple default it stands for compare equal ("a,b" == ("a", "b"))."""
    return {k: tuple(v.split(",")) if isinstance(v, str) else tuple(v) if isinstance(v, list) else v
            for k, v in params.items()}


"""One CLI vocabulary: every ``python -m ...`` command of the four packages, found from the package tree at test
time (so a new one, e.g. under embedders/, is covered once it lands), answers ``--help`` with exit 0, has help text
for every flag, never prints "(default: None)", and has ``--no-progress`` when it shows progress bars and
``--seed`` when it is randomised."""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("competition", "embedders", "validate", "submit")
MAIN_GUARD = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.M)


def cli_modules() -> list[str]:
    """Every module with a ``__main__`` guard, and every package's ``__main__``, under the four packages."""
    names = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            if path.name == "__main__.py" or MAIN_GUARD.search(path.read_text()):
                names.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return names


MODULES = cli_modules()


def test_the_walk_finds_the_known_commands():
    assert {"competition.synth", "competition.split", "embedders.stats", "embedders.gru_ae.__main__",
            "validate.probe", "validate.search", "submit.pack", "submit.check"} <= set(MODULES)


def _help(name: str, monkeypatch, capsys) -> tuple[argparse.ArgumentParser, str, str]:
    """Run ``main(["--help"])`` of module ``name`` in this process; return the parser it built, the help text
    and the module's source."""
    module = importlib.import_module(name)
    assert hasattr(module, "main"), f"{name}: a command module has main(argv)"
    seen = []
    parse_args = argparse.ArgumentParser.parse_args

    def spy(self, *args, **kwargs):
        seen.append(self)
        return parse_args(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", spy)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code in (0, None), f"{name} --help exited {exc.value.code}"
    assert seen, f"{name}: main() parses its flags with argparse"
    source = Path(module.__file__).read_text()
    return seen[0], capsys.readouterr().out, source


@pytest.mark.parametrize("name", MODULES)
def test_help(name, monkeypatch, capsys):
    parser, text, source = _help(name, monkeypatch, capsys)
    assert "(default: None)" not in text, name
    flags = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.help == argparse.SUPPRESS:  # a hidden, deprecated alias (e.g. --quiet for --no-progress)
            continue
        assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
        for flag in action.option_strings:
            flags[flag] = action
    options = text.split("\n\n", 1)[1]  # past the usage block
    for action in parser._actions:  # a required flag never shows a default
        if action.required and action.option_strings:
            line = next(ln for ln in options.splitlines() if ln.strip().startswith(action.option_strings[0]))
            assert "(default:" not in line, f"{name}: {line}"
    if re.search(r"\bprogress\b", source):
        assert "--no-progress" in flags, f"{name} shows progress bars but has no --no-progress"
        assert "--quiet" not in flags, f"{name}: --quiet is spelt --no-progress"
    if re.search(r"\b(seed|random|rng)\b", source):
        assert "--seed" in flags, f"{name} is randomised but has no --seed"
        assert flags["--seed"].type is int and flags["--seed"].default == 0, name
    if "--probe" in flags:
        from validate.cli import DEFAULT_PROBE, PROBE_CHOICES
        assert tuple(flags["--probe"].choices) == PROBE_CHOICES and flags["--probe"].default == DEFAULT_PROBE, name
        assert "lgbm" in text and "CPU" in text, name


def test_probe_search_pack_share_the_probe_flag(monkeypatch, capsys):
    flags = {}
    for name in ("validate.probe", "validate.search", "submit.pack"):
        parser, _, _ = _help(name, monkeypatch, capsys)
        flags[name] = next(a for a in parser._actions if "--probe" in a.option_strings)
    assert len({(tuple(a.choices), a.default) for a in flags.values()}) == 1


def test_resolve_probe():
    from validate.cli import CPU_PROBE, PROBES, resolve_probe
    assert resolve_probe("lgbm") == "lgbm" and resolve_probe("mlp", "cpu") == "mlp"
    assert resolve_probe("auto", "cpu") == CPU_PROBE and resolve_probe("auto", "cuda:0") == "mlp"
    import torch
    assert resolve_probe("auto") == ("mlp" if torch.cuda.is_available() else CPU_PROBE)
    assert CPU_PROBE in PROBES and CPU_PROBE != "mlp"


def test_quiet_is_a_hidden_alias_of_no_progress():
    from competition.cli import HelpFormatter, add_no_progress
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    add_no_progress(p, deprecated=("--quiet",))
    assert p.parse_args(["--quiet"]).no_progress and p.parse_args(["--no-progress"]).no_progress
    assert not p.parse_args([]).no_progress
    assert "--quiet" not in p.format_help()


def test_python_m_help_exits_0():
    """One real ``python -m X --help``, as a user types it."""
    res = subprocess.run([sys.executable, "-m", "validate.probe", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--no-progress" in res.stdout and "(default: None)" not in res.stdout

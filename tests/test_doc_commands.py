"""Docs that match the code: every ``python -m <module> ...`` command shown in README.md and docs/*.md (in fenced
code blocks and inline backticks) names a module that exists and only flags its parser knows (and none of them a
hidden, deprecated alias); every ``python benchmarks/X.py`` names a file that exists. All bad commands are
reported at once, each with file:line.

Only the flags are checked, not the values nor whether required arguments are all given. ``$D``-style shell
variables become a placeholder path; a ``#`` comment, and pipes, ``&&``, ``||`` and ``;`` end a command. Modules
outside the toolkit's four packages (``pytest``, ``venv``, ``torch.distributed.run``) are checked to exist only;
``python -m torch.distributed.run ... -m embedders.gru_ae ...`` checks the flags after ``-m embedders.gru_ae``
against that module.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("competition", "embedders", "validate", "submit")
PLACEHOLDER = "/tmp/doc-placeholder"
SHELL_VAR = re.compile(r"\$\{?[A-Za-z_]\w*\}?")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"--[A-Za-z0-9][\w-]*")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
SEPARATORS = {"&&", "||", "|", ";", "&"}
LAUNCHERS = {"torch.distributed.run", "torch.distributed.launch"}  # run "-m <module>" themselves


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class DocCommand:
    """One command shown in a doc: ``python -m target`` (kind "module") or ``python target`` (kind "script")."""
    source: str
    line: int
    kind: str
    target: str
    flags: tuple[str, ...]

    def where(self) -> str:
        return f"{self.source}:{self.line}"


# -- finding the commands ----------------------------------------------------------------------------------------------
def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line)


def command_texts(text: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every place a command may be: each logical line of a fenced code block (``\\``
    continuations joined, comments removed) and each inline code span (which may wrap over lines)."""
    out: list[tuple[int, str]] = []
    prose: list[str] = []
    lines = text.split("\n")
    in_code, pending, pending_line = False, [], 0
    for no, line in enumerate(lines, 1):
        if FENCE.match(line):
            if in_code and pending:
                out.append((pending_line, "\n".join(pending)))
            in_code, pending = not in_code, []
            prose.append("")
            continue
        if not in_code:
            prose.append(line)
            continue
        prose.append("")  # keep prose line numbers
        body = _strip_comment(line)
        if not pending:
            pending_line = no
        cont = body.rstrip().endswith("\\")
        pending.append(body.rstrip()[:-1] if cont else body)
        if not cont:
            out.append((pending_line, "\n".join(pending)))
            pending = []
    if pending:
        out.append((pending_line, "\n".join(pending)))
    flat = "\n".join(prose)
    for m in INLINE.finditer(flat):
        span = m.group(1)
        if re.search(r"\n\s*\n", span):  # a stray backtick: never across paragraphs
            continue
        out.append((flat.count("\n", 0, m.start()) + 1, "\n".join(_strip_comment(s) for s in span.split("\n"))))
    return sorted(out, key=lambda t: t[0])  # stable: spans of one line in their order


def _flag(token: str) -> str | None:
    m = FLAG.match(token.lstrip("[({'\""))
    return m.group(0) if m else None


def _is_python(token: str) -> bool:
    return re.fullmatch(r"(\S*/)?python(3(\.\d+)?)?", token) is not None


def parse_commands(text: str, source: str = "<doc>") -> list[DocCommand]:
    """Every ``python -m`` / ``python script.py`` command in markdown ``text``."""
    cmds: list[DocCommand] = []
    for line0, body in command_texts(text):
        body = SHELL_VAR.sub(PLACEHOLDER, body)
        tokens = [(m.group(0), line0 + body.count("\n", 0, m.start())) for m in re.finditer(r"\S+", body)]
        segment: list[tuple[str, int]] = []
        for tok in [*tokens, (";", 0)]:
            if tok[0] in SEPARATORS or tok[0].endswith(";"):
                if tok[0] not in SEPARATORS:
                    segment.append((tok[0][:-1], tok[1]))
                cmds += _segment_commands(segment, source)
                segment = []
            else:
                segment.append(tok)
    return cmds


def _segment_commands(tokens: list[tuple[str, int]], source: str) -> list[DocCommand]:
    words = [t for t, _ in tokens]
    for i, w in enumerate(words):
        if not _is_python(w):
            continue
        j = i + 1
        while j < len(words) and words[j].startswith("-") and words[j] != "-m":  # python -u, -X ...
            j += 1
        if j >= len(words):
            return []
        line = tokens[i][1]
        if words[j] == "-m" and j + 1 < len(words):
            module, rest = words[j + 1].strip("`'\".,;:)"), words[j + 2:]
            if module in LAUNCHERS and "-m" in rest:  # the launched module takes the flags after it
                k = rest.index("-m")
                cmds = [DocCommand(source, line, "module", module, ())]
                if k + 1 < len(rest) and MODULE_NAME.fullmatch(rest[k + 1]):
                    cmds.append(DocCommand(source, line, "module", rest[k + 1],
                                           tuple(f for f in map(_flag, rest[k + 2:]) if f)))
                return cmds
            if not MODULE_NAME.fullmatch(module):  # a placeholder: python -m embedders.<name>, python -m ...
                return []
            return [DocCommand(source, line, "module", module, tuple(f for f in map(_flag, rest) if f))]
        script = words[j].strip("`'\".,;:)")
        if script.endswith(".py"):
            return [DocCommand(source, line, "script", script, tuple(f for f in map(_flag, words[j + 1:]) if f))]
        return []
    return []


# -- what the code accepts ---------------------------------------------------------------------------------------------
class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


def _parser_flags(parser: argparse.ArgumentParser) -> tuple[frozenset[str], frozenset[str]]:
    """(visible, hidden) option strings of ``parser`` and any subparsers."""
    visible, hidden = set(), set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                v, h = _parser_flags(sub)
                visible |= v
                hidden |= h
            continue
        (hidden if action.help == argparse.SUPPRESS else visible).update(action.option_strings)
    return frozenset(visible), frozenset(hidden)


def _help_flags(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """The fallback: every ``--flag`` in ``python -m module --help`` (no hidden ones known)."""
    res = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"python -m {module} --help exited {res.returncode}: {res.stderr.strip()[-300:]}")
    return frozenset(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", res.stdout)), frozenset()


@functools.lru_cache(maxsize=None)
def module_flags(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(visible, hidden) flags of the command ``python -m module``: from its ``build_parser()``, else from the
    parser its ``main(["--help"])`` builds (caught as it parses), else from its ``--help`` text."""
    spec = importlib.util.find_spec(module)
    target = f"{module}.__main__" if spec is not None and spec.submodule_search_locations is not None else module
    mod = importlib.import_module(target)
    build = getattr(mod, "build_parser", None)
    if callable(build):
        try:
            return _parser_flags(build())
        except TypeError:  # takes arguments: not the CLI's parser builder
            pass
    main = getattr(mod, "main", None)
    if callable(main):
        original = argparse.ArgumentParser.parse_args

        def spy(self, *args, **kwargs):
            raise _Parsed(self)

        argparse.ArgumentParser.parse_args = spy
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(["--help"])
        except _Parsed as got:
            return _parser_flags(got.parser)
        except (SystemExit, TypeError):  # parsed some other way, or main() takes no argv
            pass
        finally:
            argparse.ArgumentParser.parse_args = original
    return _help_flags(module)


def _module_problem(module: str) -> str | None:
    """Why ``python -m module`` cannot run (None: it can)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package missing
        return f"no module {module}"
    if spec is None:
        return f"no module {module}"
    if spec.submodule_search_locations is not None:
        try:
            main_spec = importlib.util.find_spec(f"{module}.__main__")
        except ImportError:
            main_spec = None
        if main_spec is None:
            return f"{module} is a package without __main__"
    return None


def check_commands(cmds: list[DocCommand], flags_of=None, root: Path = ROOT) -> list[str]:
    """``file:line: problem`` for every command that does not match the code (empty: all good)."""
    flags_of = flags_of or module_flags
    problems = []
    for c in cmds:
        if c.kind == "script":
            if not Path(c.target).is_absolute() and not (root / c.target).is_file():
                problems.append(f"{c.where()}: python {c.target}: no such file")
            continue
        why = _module_problem(c.target)
        if why:
            problems.append(f"{c.where()}: python -m {c.target}: {why}")
            continue
        if c.target.split(".")[0] not in PACKAGES:
            continue
        try:
            visible, hidden = flags_of(c.target)
        except Exception as exc:  # noqa: BLE001 - reported with the rest
            problems.append(f"{c.where()}: python -m {c.target}: cannot read its flags ({exc!r})")
            continue
        for flag in c.flags:
            if flag in hidden:
                problems.append(f"{c.where()}: python -m {c.target}: {flag} is a hidden, deprecated alias")
            elif flag not in visible:
                problems.append(f"{c.where()}: python -m {c.target}: unknown flag {flag}")
    return problems


def check_doc(text: str, source: str = "<doc>", flags_of=None) -> list[str]:
    return check_commands(parse_commands(text, source), flags_of)


# -- the docs ----------------------------------------------------------------------------------------------------------
def test_every_doc_command_matches_the_code():
    cmds = [c for path in doc_files() for c in parse_commands(path.read_text(), str(path.relative_to(ROOT)))]
    modules = {c.target for c in cmds if c.kind == "module"}
    assert {"submit.pack", "submit.check", "competition.synth", "competition.split", "embedders.gru_ae",
            "validate.probe", "validate.search"} <= modules, modules  # the scan finds them
    assert any(c.kind == "script" and c.target.startswith("benchmarks/") for c in cmds)
    problems = check_commands(cmds)
    assert not problems, f"{len(problems)} doc command(s) do not match the code:\n" + "\n".join(problems)


# -- the checker -------------------------------------------------------------------------------------------------------
SYNTHETIC = """# A doc

```bash
python -m validate.probe --data-dir $D \\
    --embeddings-dir $R/blocks/stats --probbe lgbm   # --not-checked in a comment
python -m competition.split --data-dir D && python -m embedders.stats --data-dir D --out E --bogus | tee log
```

Run `python -m submit.pack --data-dir D
--out O --no-such-flag` or `python -m competition.synth_report --data-dir D --realism [--layout raw|input]`;
`python -m no_such.module --x`, `python benchmarks/no_such_bench.py --y`, `python benchmarks/bench_probe.py --z`,
`python -m competition.synth --out D --quiet`, `python -m embedders.<name> --help`, every `python -m ...`.
`python -m torch.distributed.run --nproc_per_node=2 -m embedders.gru_ae --data-dir D --gru-bogus`
"""


def test_parse_commands_finds_and_splits_them():
    cmds = parse_commands(SYNTHETIC, "x.md")
    got = [(c.line, c.kind, c.target, c.flags) for c in cmds]
    assert got == [
        (4, "module", "validate.probe", ("--data-dir", "--embeddings-dir", "--probbe")),
        (6, "module", "competition.split", ("--data-dir",)),
        (6, "module", "embedders.stats", ("--data-dir", "--out", "--bogus")),
        (9, "module", "submit.pack", ("--data-dir", "--out", "--no-such-flag")),
        (10, "module", "competition.synth_report", ("--data-dir", "--realism", "--layout")),
        (11, "module", "no_such.module", ("--x",)),
        (11, "script", "benchmarks/no_such_bench.py", ("--y",)),
        (11, "script", "benchmarks/bench_probe.py", ("--z",)),
        (12, "module", "competition.synth", ("--out", "--quiet")),
        (13, "module", "torch.distributed.run", ()),
        (13, "module", "embedders.gru_ae", ("--data-dir", "--gru-bogus")),
    ], got


def test_checker_reports_every_bad_command_with_file_and_line():
    problems = check_doc(SYNTHETIC, "x.md")
    assert problems == [
        "x.md:4: python -m validate.probe: unknown flag --probbe",
        "x.md:6: python -m embedders.stats: unknown flag --bogus",
        "x.md:9: python -m submit.pack: unknown flag --no-such-flag",
        "x.md:11: python -m no_such.module: no module no_such.module",
        "x.md:11: python benchmarks/no_such_bench.py: no such file",
        "x.md:12: python -m competition.synth: --quiet is a hidden, deprecated alias",
        "x.md:13: python -m embedders.gru_ae: unknown flag --gru-bogus",
    ], problems


def test_a_renamed_flag_fails_the_check(monkeypatch):
    doc = "Build it: `python -m embedders.stats --data-dir D --out E`.\n"
    assert check_doc(doc, "d.md") == []
    import embedders.stats as stats
    original = stats.build_parser

    def renamed():
        p = original()
        action = p._option_string_actions.pop("--data-dir")
        action.option_strings = ["--data-folder"]
        p._option_string_actions["--data-folder"] = action
        return p

    monkeypatch.setattr(stats, "build_parser", renamed)
    module_flags.cache_clear()
    try:
        assert check_doc(doc, "d.md") == ["d.md:1: python -m embedders.stats: unknown flag --data-dir"]
    finally:
        module_flags.cache_clear()


def test_flags_without_build_parser():
    """main() without build_parser: the parser it builds; a main() without argv: the --help text."""
    visible, hidden = module_flags("competition.split")  # main(argv), no build_parser
    assert "--data-dir" in visible and "--no-progress" in visible
    visible, _ = module_flags("json.tool")  # main() takes no argv: python -m json.tool --help
    assert "--sort-keys" in visible


@pytest.mark.parametrize("module", ["submit.check", "validate.oracle", "competition.synth"])
def test_modules_without_build_parser_give_their_flags(module):
    visible, _ = module_flags(module)
    assert "--help" in visible and len(visible) > 2

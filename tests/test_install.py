"""The toolkit is an installable package: pyproject's package discovery finds all four packages and every
subpackage, and the commands do not depend on the working folder."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import setuptools

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("competition", "embedders", "validate", "submit")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_discovery_lists_every_package():
    conf = _pyproject()
    find = conf["tool"]["setuptools"]["packages"]["find"]
    found = set(setuptools.find_packages(where=str(ROOT / find.get("where", ["."])[0]), include=find["include"],
                                         exclude=find.get("exclude", ())))
    # every folder with an __init__.py under the four packages (embedders.gru_ae, any new embedders.* ...)
    expected = {".".join(p.parent.relative_to(ROOT).parts) for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py")
                if "__pycache__" not in p.parts}
    assert set(PACKAGES) <= found
    assert "embedders.gru_ae" in found
    assert expected <= found, sorted(expected - found)
    assert not {p for p in found if p.split(".")[0] not in PACKAGES}, found  # no tests/, runs/, blocks/ ...
    deps = conf["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    pinned = {line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    declared = {d.split("=")[0].split(">")[0].split("<")[0].strip() for d in deps}
    assert pinned - {"pytest"} <= declared, sorted(pinned - declared)
    assert conf["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def _env_outside_repo() -> dict[str, str]:
    """The environment of a user: PYTHONPATH not pointing at the repository. When the package is not installed
    here (a plain ``pip install -r requirements.txt`` checkout), point PYTHONPATH at the repository root
    explicitly: the point is that the command does not depend on the working folder."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run([sys.executable, "-c", "import competition, embedders, validate, submit"],
                           cwd="/", env=env, capture_output=True)
    if probe.returncode != 0:
        env["PYTHONPATH"] = str(ROOT)
    return env


def test_commands_run_from_another_folder(tmp_path):
    env = _env_outside_repo()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    res = subprocess.run([sys.executable, "-m", "submit.check", "--help"], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--embeddings-dir" in res.stdout
    # a tiny real command: relative paths are the working folder's, outputs land there
    res = subprocess.run([sys.executable, "-m", "competition.synth", "--out", "w", "--clients", "20", "--seed", "1",
                          "--no-split", "--no-progress"], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(np.load(cwd / "w" / "input" / "relevant_clients.npy")) == 20
    assert not (ROOT / "w").exists()

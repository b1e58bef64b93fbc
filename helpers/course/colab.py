"""Setting the course up in Colab: what a notebook's first cell runs once it has cloned the course.

The cell clones the repository at the version the notebook was built from, puts the clone on
``sys.path`` and calls :func:`set_up`, which uses nothing but the standard library (the course's
dependencies are what it installs).

Colab comes with its own torch, torchvision and ipywidgets (7.7), and the notebook's kernel has
already imported a good number of packages. pip runs in a subprocess: a package it upgraded
under a running kernel would leave the kernel with two versions of it until a restart that
nothing announces. So :func:`set_up`

* installs the course's needs (``pyproject.toml``'s dependencies) with a constraints file that
  holds :data:`KEEP` and every distribution the kernel has loaded a module from at the versions
  installed, so pip leaves them as they are (and leaves them out of the requirements: the
  course's own ``ipywidgets>=8`` would otherwise contradict Colab's 7.7, which the course's
  widgets support); then the course itself, editable and without its dependencies;
* keeps pip's output: one line summarises it, the whole log is printed (and kept in
  ``.colab-setup/pip.log``) only when pip fails;
* writes its marker (``.colab-setup/done``) only after the install worked *and* the course's
  modules import in a fresh interpreter: without the marker the next run of the cell tries
  again; with it, the cell does nothing;
* prints one line: what it did and how long it took.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

__all__ = ["KEEP", "IMPORT_CHECK", "set_up", "kept_distributions", "course_requirements", "summarise_pip",
           "describe_clone", "marker_path"]

KEEP = ("torch", "torchvision", "torchaudio", "ipywidgets", "widgetsnbextension", "jupyterlab-widgets")
"""Distributions Colab brings that the course's install must not touch, loaded or not."""

IMPORT_CHECK = "import helpers.engine.models, helpers.course.plots, helpers.course.ui, plotly, ipywidgets"
"""What must import in a fresh interpreter before the set-up counts as done."""

SETUP_DIR = ".colab-setup"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def marker_path(course: str | Path) -> Path:
    """The file whose presence says the course in ``course`` is installed and imports."""
    return Path(course) / SETUP_DIR / "done"


def kept_distributions(keep: Iterable[str] = KEEP, *, exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{name: version}`` of what pip must leave alone: the installed ones of ``keep``, and every
    distribution this interpreter has loaded a module from (except ``exclude``)."""
    from importlib import metadata

    names = {_canonical(n) for n in keep}
    owners = metadata.packages_distributions()
    for module in list(sys.modules):
        names.update(_canonical(d) for d in owners.get(module.partition(".")[0], ()))
    names -= {_canonical(n) for n in exclude}
    kept = {}
    for name in sorted(names):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if version and re.fullmatch(r"v?\d[\w.!+-]*", version):  # a version a constraints file can hold
            kept[name] = version
    return kept


def course_requirements(course: str | Path) -> tuple[str, list[str]]:
    """The course's distribution name and its dependencies, read from the clone's ``pyproject.toml``."""
    import tomllib

    project = tomllib.loads((Path(course) / "pyproject.toml").read_text())["project"]
    return project["name"], list(project.get("dependencies", []))


def _requirement_name(spec: str) -> str:
    return _canonical(re.split(r"[\s<>=!~;\[(@]", spec.strip(), maxsplit=1)[0])


def summarise_pip(log: str) -> dict[str, object]:
    """What a pip log says it did: ``installed`` (``name version`` each), ``already`` (how many
    requirements were satisfied already) and ``downloaded_mb`` (the sizes pip printed)."""
    installed: list[str] = []
    for line in log.splitlines():
        if line.startswith("Successfully installed "):
            for item in line.removeprefix("Successfully installed ").split():
                name, _, version = item.rpartition("-")
                installed.append(f"{name} {version}")
    already = len(set(re.findall(r"^Requirement already satisfied: (\S+)", log, re.M)))
    sizes = re.findall(r"^\s*Downloading \S+ \(([\d.]+) (kB|MB|GB)\)", log, re.M)
    mb = sum(float(v) * {"kB": 1e-3, "MB": 1.0, "GB": 1e3}[u] for v, u in sizes)
    return {"installed": installed, "already": already, "downloaded_mb": mb}


def describe_clone(course: str | Path) -> str:
    """The clone's version: its tag when HEAD has one, else ``branch@commit``."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(course), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    tag = git("describe", "--tags", "--exact-match", "HEAD")
    if tag:
        return tag
    branch, commit = git("rev-parse", "--abbrev-ref", "HEAD"), git("rev-parse", "--short", "HEAD")
    return f"{branch}@{commit}" if commit else "an unknown version"


def _pip(args: list[str], log: Path) -> str:
    # --no-compile: pip would byte-compile every module of every package it installs; Python
    # compiles (and caches) only the modules the course imports, when it first imports them
    cmd = [sys.executable, "-m", "pip", "install", "--progress-bar", "off", "--no-input",
           "--disable-pip-version-check", "--no-compile", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    text = f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}"
    with open(log, "a") as fh:
        fh.write(text)
    if done.returncode != 0:
        print(text)
        raise RuntimeError(f"pip could not install the course's packages (its log is above, and in {log}); "
                           "nothing was marked as done: run this cell again to retry.")
    return text


def set_up(course: str | Path, *, expected: str | None = None, started: float | None = None) -> str:
    """Install what the course in ``course`` needs next to Colab's own packages, once.

    ``expected``: the version the notebook was built from (named in the line printed when the
    clone is another); ``started``: when the cell started (``time.time()``), so the time printed
    counts the clone too. Returns the line it prints.
    """
    t0 = time.time() if started is None else started
    course = Path(course)
    version = describe_clone(course)
    note = f" (no {expected} published yet: the default branch)" if expected and version != expected else ""
    marker = marker_path(course)
    if marker.exists():
        line = f"Course already set up in {course} ({version}{note}): nothing to do."
        print(line)
        return line
    work = course / SETUP_DIR
    work.mkdir(exist_ok=True)
    log = work / "pip.log"
    log.write_text("")
    name, needs = course_requirements(course)
    kept = kept_distributions(exclude=[name])
    (work / "constraints.txt").write_text("".join(f"{k}=={v}\n" for k, v in kept.items()))
    requirements = [r for r in needs if _requirement_name(r) not in kept]
    # nothing to add when Colab already holds every requirement (pip refuses an install of no package)
    text = _pip(["-c", str(work / "constraints.txt"), *requirements], log) if requirements else ""
    text += _pip(["--no-deps", "-e", str(course)], log)
    check = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, cwd=work)
    if check.returncode != 0:
        print(check.stdout + check.stderr)
        raise RuntimeError(f"the course installed, but its modules do not import ({IMPORT_CHECK!r}; the error is "
                           "above); nothing was marked as done: run this cell again to retry.")
    pip = summarise_pip(text)
    installed = [p for p in pip["installed"] if _requirement_name(str(p)) != _canonical(name)]
    direct = {_requirement_name(r) for r in requirements}  # the course's own needs first, then what they need
    ordered = sorted(installed, key=lambda p: _requirement_name(str(p)) not in direct)
    shown = ", ".join(ordered[:4]) + (", …" if len(ordered) > 4 else "")
    own = ", ".join(f"{k} {kept[k]}" for k in ("torch", "torchvision", "ipywidgets") if k in kept)
    others = len(kept) - sum(k in kept for k in ("torch", "torchvision", "ipywidgets"))
    marker.write_text(json.dumps({"version": version, "python": sys.version.split()[0], "kept": kept,
                                  "installed": installed}, indent=1) + "\n")
    line = (f"Course set up in {time.time() - t0:.0f} s: {version}{note} in {course}; pip installed "
            f"{len(installed)} packages ({pip['downloaded_mb']:.0f} MB downloaded{': ' + shown if shown else ''}), "
            f"{pip['already']} were there; kept Colab's {own or 'own packages'}"
            f"{f' and {others} more' if others else ''} as they are.")
    print(line)
    return line

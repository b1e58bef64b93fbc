# -*- coding: utf-8 -*-
"""Set up the course's environment on Linux, macOS or Windows, then run a job in it.

    python scripts/setup.py                  create .venv, install the pinned environment and the
                                             course package (editable); a second run only checks
    python scripts/setup.py main [ARGS]      ... then the main job:  python -m helpers.course.main_job ARGS
    python scripts/setup.py test [ARGS]      ... then the test suite: python -m pytest ARGS
    python scripts/setup.py lab [ARGS]       ... then JupyterLab on the notebooks (jupyter lab ARGS)

Options, before the command:
    --cpu        PyTorch's CPU-only build (the default on a machine without an NVIDIA GPU)
    --cuda       PyTorch's CUDA build (the default where an NVIDIA GPU is found)
    --venv PATH  the virtual environment to use (default: .venv in the repository)
    --check      only check the environment; install nothing (exit status 1 when incomplete)

On Windows (PowerShell):  py -3.11 scripts\\setup.py test

Standard library only, and the version check comes first, in code that any Python can parse, so
that an unsupported Python is told what to install instead of failing on the first import.
"""

from __future__ import print_function

import sys

# The Python versions the pinned set (requirements-pinned.txt) has wheels for, first and last;
# pyproject.toml's requires-python says the same (tests/test_setup.py resolves the pins for each).
SUPPORTED = ((3, 11), (3, 14))


def supported_versions():
    """The supported versions as "3.11", "3.12", ..."""
    (major, first), (_, last) = SUPPORTED
    return ["%d.%d" % (major, minor) for minor in range(first, last + 1)]


def python_problem(version, platform=sys.platform, found=None):
    """``None`` when ``version`` (``sys.version_info`` or a tuple) is supported; else a message
    saying what to install and how to run this script with it. ``found``: the command of a
    supported Python already on this machine (see :func:`find_supported_python`)."""
    if SUPPORTED[0] <= tuple(version[:2]) <= SUPPORTED[1]:
        return None
    versions = supported_versions()
    first = versions[0]
    windows = platform.startswith("win")
    if found:
        todo = "Python %s is installed here: run %s scripts%ssetup.py" % (found[len("python"):] or first, found,
                                                                       "\\" if windows else "/")
    elif windows:
        todo = ("Install Python %s from https://www.python.org/downloads/windows/ (or: py install %s), "
                "then run: py -%s scripts\\setup.py" % (first, first, first))
    else:
        todo = ("Install Python %s (https://www.python.org/downloads/, or `uv python install %s`, or your "
                "package manager), then run: python%s scripts/setup.py" % (first, first, first))
    if not windows:
        todo += " (the bash scripts: PYTHON=python%s bash scripts/main.sh)" % (found[len("python"):] if found else first)
    return ("This is Python %s; the course needs Python %s to %s, the versions its pinned packages "
            "(requirements-pinned.txt) have wheels for (it is tested on %s). %s."
            % (".".join(str(part) for part in tuple(version[:3])), first, versions[-1], first, todo))


def find_supported_python(path=None):
    """The first ``python3.X`` command on the PATH that runs a supported Python, or ``None``."""
    import os
    import subprocess

    folders = (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
    for version in supported_versions():
        name = "python" + version
        for folder in folders:
            exe = os.path.join(folder, name)
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                continue
            with open(os.devnull, "w") as quiet:
                check = "import sys; sys.exit(sys.version_info[:2] != (%s))" % version.replace(".", ", ")
                if subprocess.call([exe, "-c", check], stdout=quiet, stderr=quiet) == 0:
                    return name
    return None


if __name__ == "__main__":
    _problem = python_problem(sys.version_info)
    if _problem and not sys.platform.startswith("win"):
        _problem = python_problem(sys.version_info, found=find_supported_python())
    if _problem:
        print(_problem, file=sys.stderr)
        sys.exit(2)

# Below this line: Python 3.11 or newer.
import argparse  # noqa: E402
import json  # noqa: E402
import ntpath  # noqa: E402
import os  # noqa: E402
import posixpath  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINS = "requirements-pinned.txt"
# PyTorch's own wheel indexes (https://pytorch.org/get-started/locally/): CPU-only wheels, and the
# CUDA build for Windows (on Linux, the package index's default torch is the CUDA build; on macOS
# there is no CUDA build)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_INDEX = "https://download.pytorch.org/whl/cu130"
COMMANDS = ("main", "test", "lab")


def venv_layout(venv, platform=sys.platform):
    """``(scripts folder, python)`` of the virtual environment ``venv`` on ``platform``
    (``sys.platform``): ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    if platform.startswith("win"):
        scripts = ntpath.join(venv, "Scripts")
        return scripts, ntpath.join(scripts, "python.exe")
    scripts = posixpath.join(venv, "bin")
    return scripts, posixpath.join(scripts, "python")


def has_nvidia_gpu(platform=sys.platform, which=shutil.which, exists=os.path.exists):
    """Whether this machine has an NVIDIA GPU with its driver: the driver's ``nvidia-smi`` on the
    PATH, or (Linux) ``/proc/driver/nvidia``, or (Windows) ``nvidia-smi.exe`` in System32. Never on
    macOS (PyTorch has no CUDA build for it)."""
    if platform == "darwin":
        return False
    if which("nvidia-smi"):
        return True
    if platform.startswith("linux"):
        return exists("/proc/driver/nvidia")
    if platform.startswith("win"):
        root = os.environ.get("SystemRoot", "C:\\Windows")
        return exists(ntpath.join(root, "System32", "nvidia-smi.exe"))
    return False


def torch_source(platform, gpu):
    """``(build, index)``: which torch build to install and from which index (``None``: the
    package index pip is configured with). ``gpu``: an NVIDIA GPU is there or ``--cuda`` asked
    for one."""
    if platform == "darwin":
        return "default (CPU and Apple GPU)", None
    if gpu:
        return "CUDA", (CUDA_INDEX if platform.startswith("win") else None)
    return "CPU", CPU_INDEX


def index_reachable(url, timeout=10.0):
    """``(True, "")`` when the wheel index at ``url`` answers, else ``(False, why)``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout):
            return True, ""
    except Exception as exc:  # any failure means: install from the default index instead
        why = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
        code = getattr(exc, "code", None)  # the server answered with an error
        return False, ("HTTP %s: %s" % (code, why)) if code else why


def read_pins(path):
    """``[(name, version), ...]`` of the ``name==version`` lines of a requirements file."""
    pins = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
            if m:
                pins.append((m.group(1), m.group(2)))
    return pins


# Run by the environment's python (isolated: only what is installed there counts). Reads
# metadata only; imports neither torch nor the course package.
_PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, re, sys
names = json.loads(sys.argv[1])
out = {"python": "%d.%d.%d" % sys.version_info[:3], "versions": {}, "torch_cuda": None, "helpers": None}
for name in names:
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["versions"][name] = None
spec = importlib.util.find_spec("torch")
if spec is not None and spec.submodule_search_locations:
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], "version.py")) as f:
            m = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*['\"]([^'\"]+)['\"]", f.read(), re.M)
        out["torch_cuda"] = m.group(1) if m else None
    except OSError:
        pass
spec = importlib.util.find_spec("helpers")
out["helpers"] = spec.origin if spec is not None else None
print(json.dumps(out))
"""


def probe(python, pins):
    """What the environment of ``python`` holds: its version, the installed version of each
    pinned name, torch's CUDA version (``None``: a CPU build), where ``helpers`` comes from."""
    done = subprocess.run([python, "-I", "-c", _PROBE, json.dumps([n for n, _ in pins])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("%s could not be queried: %s" % (python, done.stderr.strip()[-500:]))
    return json.loads(done.stdout)


def _release(version):
    """A version without its local label (``2.14.1+cpu`` -> ``2.14.1``)."""
    return version.split("+", 1)[0]


def problems(state, pins, repo=REPO):
    """What is missing or different in a probed environment (empty: ready)."""
    found = []
    for name, want in pins:
        have = state["versions"].get(name)
        if have is None:
            found.append("%s is not installed" % name)
        elif _release(have) != _release(want):
            found.append("%s is %s, not %s" % (name, have, want))
    origin = state.get("helpers")
    package = os.path.join(repo, "helpers")
    if origin is None:
        found.append("the course package (helpers) is not installed")
    elif os.path.normcase(os.path.realpath(os.path.dirname(origin))) != os.path.normcase(os.path.realpath(package)):
        found.append("helpers comes from %s, not from this repository" % os.path.dirname(origin))
    return found


def torch_build(state):
    """``"CUDA 13.0"`` or ``"CPU"`` for the probed torch, ``None`` when torch is missing."""
    if state["versions"].get("torch") is None:
        return None
    return "CUDA %s" % state["torch_cuda"] if state["torch_cuda"] else "CPU"


def folder_size(path):
    """Bytes in the files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def format_size(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return "%.1f %s" % (n / scale, unit)
    return "%d B" % n


def format_duration(seconds):
    if seconds < 60:
        return "%.1f s" % seconds
    return "%d min %02d s" % divmod(int(round(seconds)), 60)


def say(text):
    print(text, flush=True)


def _pip(python, *args):
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    cmd = [python, "-m", "pip", "install"] + list(args)
    say("      pip install " + " ".join(args))
    done = subprocess.run(cmd, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit("setup: pip failed (exit status %d) on: %s" % (done.returncode, " ".join(cmd[3:])))


def setup(args, platform=sys.platform):
    """Create or check the environment; returns its python. Raises SystemExit on failure."""
    start = time.time()
    venv = os.path.abspath(args.venv)
    _, python = venv_layout(venv, platform)
    pins = read_pins(os.path.join(REPO, PINS))
    pinned = dict(pins)
    created = False
    if not os.path.exists(python):
        if args.check:
            raise SystemExit("setup: no virtual environment at %s" % venv)
        say("[1/4] creating the virtual environment %s (Python %s)" % (venv, sys.version.split()[0]))
        import venv as venv_module

        venv_module.EnvBuilder(with_pip=True).create(venv)
        created = True
    state = probe(python, pins)
    problem = python_problem(tuple(int(p) for p in state["python"].split(".")), platform)
    if problem:
        raise SystemExit("setup: %s has Python %s. Remove it and run this script again. %s"
                         % (venv, state["python"], problem))
    build = torch_build(state)
    wanted = "CUDA" if args.cuda else "CPU" if args.cpu else None
    replace_torch = (wanted is not None and build is not None and platform != "darwin"
                     and not build.startswith(wanted))
    todo = problems(state, pins)
    if not todo and not replace_torch:
        say("checked %s: Python %s, the %d pinned packages and the course package are in place; "
            "nothing to install" % (venv, state["python"], len(pins)))
    elif args.check:
        for line in todo:
            say("  - " + line)
        if replace_torch:
            say("  - torch is the %s build, not %s" % (build, wanted))
        raise SystemExit(1)
    else:
        if created:
            say("      upgrading pip in the new environment")
            _pip(python, "-q", "--upgrade", "pip")
        have, have_tv = state["versions"].get("torch"), state["versions"].get("torchvision")
        torch_ok = (have is not None and have_tv is not None and not replace_torch
                    and _release(have) == pinned["torch"] and _release(have_tv) == pinned["torchvision"])
        if not torch_ok:
            if args.cuda or args.cpu:
                gpu = args.cuda
            elif build is not None and _release(have) == pinned["torch"]:
                gpu = build.startswith("CUDA")  # torch is in place: keep its build
            else:
                gpu = has_nvidia_gpu(platform)
                say("      %s: PyTorch's %s build" % ("NVIDIA GPU found" if gpu else "no NVIDIA GPU found",
                                                   "CUDA" if gpu else "CPU-only"))
            label, index = torch_source(platform, gpu)
            if args.cuda and platform == "darwin":
                say("note: PyTorch has no CUDA build for macOS; installing its default build")
            if index is not None:
                ok, why = index_reachable(index)
                if not ok:
                    say("note: %s cannot be reached (%s); installing the default torch build from the "
                        "package index instead (on Linux: the CUDA build, with its NVIDIA libraries)" % (index, why))
                    label, index = "default", None
            if replace_torch and label != "default":
                _pip_uninstall(python, "torch", "torchvision")
            say("[2/4] installing torch %s and torchvision %s: the %s build%s (pip shows each "
                "download and its size)" % (pinned["torch"], pinned["torchvision"], label,
                                            " from " + index if index else ""))
            extra = ["--index-url", index] if index else []
            _pip(python, "torch==" + pinned["torch"], "torchvision==" + pinned["torchvision"], *extra)
        else:
            say("[2/4] torch %s (%s build) is in place" % (state["versions"]["torch"], build))
        say("[3/4] installing the %d pinned packages of %s and what they need" % (len(pins), PINS))
        _pip(python, "-r", os.path.join(REPO, PINS))
        say("[4/4] installing the course package (helpers), editable")
        _pip(python, "--no-deps", "-e", REPO)
        state = probe(python, pins)
        todo = problems(state, pins)
        if todo:
            raise SystemExit("setup: still not ready: " + "; ".join(todo))
    say("ready: Python %s, torch %s (%s build), %s %s, %s"
        % (state["python"], state["versions"]["torch"], torch_build(state), venv,
           format_size(folder_size(venv)), format_duration(time.time() - start)))
    return python


def _pip_uninstall(python, *names):
    say("      removing the installed %s first" % " and ".join(names))
    done = subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q"] + list(names))
    if done.returncode != 0:
        raise SystemExit("setup: could not uninstall %s" % " ".join(names))


def command_line(command, python, extra, platform=sys.platform, is_root=False):
    """The command line of ``command`` (main, test, lab) run by the environment's ``python``."""
    if command == "main":
        return [python, "-m", "helpers.course.main_job"] + list(extra)
    if command == "test":
        return [python, "-m", "pytest"] + list(extra)
    if command == "lab":
        root = ["--allow-root"] if is_root else []
        return ([python, "-m", "jupyterlab", "--ServerApp.root_dir=" + REPO,
                 "--LabApp.default_url=/lab/tree/notebooks"] + root + list(extra))
    raise ValueError("unknown command %r; known: %s" % (command, ", ".join(COMMANDS)))


def prepare_lab(python, venv):
    """The notebooks' kernel ("python3") is this environment's python; the course's JupyterLab
    settings (widget state saved with the notebooks) and its server configuration (saved notebooks
    without figure snapshots, HTML export with drawn figures) become this environment's defaults."""
    subprocess.run([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3",
                    "--display-name", "Python 3 (course .venv)"], check=True, stdout=subprocess.DEVNULL)
    folder = os.path.join(venv, "etc", "jupyter", "labconfig")
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(REPO, "binder", "lab-settings.json"),
                    os.path.join(folder, "default_setting_overrides.json"))
    # File > Save and Export Notebook As > HTML draws the figures offline (plotly.js once a page), and
    # a saved notebook keeps each figure once, without the PNG copy JupyterLab adds (helpers.course.export)
    subprocess.run([python, "-m", "helpers.course.export", "--server-config", os.path.join(venv, "etc", "jupyter")],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def run_in(venv, argv, platform=sys.platform):
    """Run ``argv`` in the repository with ``venv`` active; does not return."""
    scripts, _ = venv_layout(venv, platform)
    env = dict(os.environ, VIRTUAL_ENV=venv, PATH=scripts + os.pathsep + os.environ.get("PATH", ""))
    env.pop("PYTHONHOME", None)
    os.chdir(REPO)
    sys.stdout.flush()
    if platform.startswith("win"):  # no exec on Windows: wait, then pass the exit status on
        sys.exit(subprocess.call(argv, env=env))
    os.execve(argv[0], argv, env)


def split_argv(argv):
    """``(setup options, command or None, the command's arguments)``: everything after the
    command word goes to the command untouched."""
    for i, word in enumerate(argv):
        if word in COMMANDS:
            return argv[:i], word, argv[i + 1:]
    return argv, None, []


def main(argv=None):
    own, command, extra = split_argv(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="scripts/setup.py", description="Set up the course's environment, then run main, test or lab in it.",
        epilog="Commands: main [ARGS] (the main job), test [ARGS] (pytest), lab [ARGS] (JupyterLab); "
               "their arguments follow the command word.")
    torch_build_choice = ap.add_mutually_exclusive_group()
    torch_build_choice.add_argument("--cpu", action="store_true", help="install PyTorch's CPU-only build")
    torch_build_choice.add_argument("--cuda", action="store_true", help="install PyTorch's CUDA build")
    ap.add_argument("--venv", default=os.path.join(REPO, ".venv"), help="virtual environment (default: .venv)")
    ap.add_argument("--check", action="store_true", help="only check; install nothing")
    args = ap.parse_args(own)
    python = setup(args)
    if command is None:
        return 0
    venv = os.path.abspath(args.venv)
    if command == "lab":
        prepare_lab(python, venv)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    run_in(venv, command_line(command, python, extra, is_root=is_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())

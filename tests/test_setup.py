"""scripts/setup.py: the Python check, the supported range (resolved with pip for each version),
the torch build it picks, the paths of a virtual environment on each platform, and a second run
that only checks."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from _resolve import ROOT, index_url, normalize, reachable, require_index, requirement_lines, resolve
from packaging.specifiers import SpecifierSet

SCRIPT = ROOT / "scripts" / "setup.py"


def _load_setup():
    spec = importlib.util.spec_from_file_location("course_setup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


S = _load_setup()
FIRST, LAST = S.SUPPORTED
BELOW = f"{FIRST[0]}.{FIRST[1] - 1}"
ABOVE = f"{LAST[0]}.{LAST[1] + 1}"


# --- the supported range ---------------------------------------------------------------------


def test_pyproject_requires_the_supported_range():
    spec = SpecifierSet(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"])
    for version in S.supported_versions():
        assert f"{version}.0" in spec and f"{version}.9" in spec, version
    assert S.supported_versions()[0] == "3.11"  # at least 3.11 to 3.13
    assert "3.13.0" in spec
    for version in (BELOW, ABOVE):
        assert f"{version}.0" not in spec, version


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 12, 4), (3, 13, 1), (3, 14, 0)])
def test_supported_pythons_pass(version):
    assert S.python_problem(version) is None


def test_unsupported_python_is_told_what_to_install():
    linux = S.python_problem((3, 10, 12), "linux")
    assert "This is Python 3.10.12" in linux and "Python 3.11 to 3.14" in linux
    assert "python3.11 scripts/setup.py" in linux and "PYTHON=python3.11 bash scripts/main.sh" in linux
    windows = S.python_problem((3, 15, 0), "win32")
    assert "This is Python 3.15.0" in windows and "py -3.11 scripts\\setup.py" in windows
    assert "bash" not in windows
    found = S.python_problem((2, 7, 18), "linux", found="python3.12")
    assert "Python 3.12 is installed here: run python3.12 scripts/setup.py" in found


def _unsupported_interpreter() -> str | None:
    """An interpreter outside the supported range that runs on this machine, if any."""
    candidates = [shutil.which(f"python{v}") for v in ("3.10", "3.9", "3.8", "2.7")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python")))
    for exe in filter(None, candidates):
        done = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0:
            major, minor = (int(p) for p in done.stdout.split("."))
            if not FIRST <= (major, minor) <= LAST:
                return exe
    return None


def test_an_unsupported_python_is_refused_before_anything_else(tmp_path):
    exe = _unsupported_interpreter()
    if exe is None:
        pytest.skip("no Python outside 3.11-3.14 on this machine to run scripts/setup.py with")
    done = subprocess.run([exe, str(SCRIPT), "--venv", str(tmp_path / "venv")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "the course needs Python 3.11 to 3.14" in done.stderr
    assert not (tmp_path / "venv").exists()


# --- the pins resolve for every supported Python (and not outside) -------------------------------

PINS = requirement_lines(ROOT / "requirements-pinned.txt")


def _resolution(version: str, tmp: Path):
    """pip's resolution of the pins for ``version`` (each pip waits on the index most of its time,
    so they run together, in threads: tests/_early.py)."""
    import _early

    return _early.job(("pins", version), resolve, PINS, version, tmp)


def start_resolutions(tmp_path_factory, items=()) -> None:
    """Every version's resolution, started at the session's start (the ``early`` mark)."""
    if not reachable(index_url() + "/pip/"):
        for v in [*S.supported_versions(), BELOW, ABOVE]:
            _resolution(v, tmp_path_factory.mktemp(f"resolve-{v}"))


@pytest.mark.slow
@pytest.mark.early("start_resolutions")
@pytest.mark.parametrize("version", S.supported_versions())
def test_pins_resolve_for_each_supported_python(version, tmp_path):
    """Every pinned package, and what it needs, has a wheel for ``version`` on this platform.

    pip's ``--python-version`` picks wheels and Requires-Python for that version; environment
    markers are still read on the running Python (a pip limitation)."""
    require_index()
    status, packages, messages = _resolution(version, tmp_path).result()
    assert status == 0, messages[-3000:]
    got = {normalize(p["name"]): p["version"] for p in packages}
    for line in PINS:
        name, want = line.split("==")
        assert got[normalize(name)].split("+")[0] == want, name


@pytest.mark.slow
@pytest.mark.early("start_resolutions")
@pytest.mark.parametrize("version", [BELOW, ABOVE])
def test_pins_do_not_resolve_outside_the_range(version, tmp_path):
    """Just below and just above the range, some pinned package has no wheel: that is why the
    range is what it is."""
    require_index()
    status, _, messages = _resolution(version, tmp_path).result()
    assert status != 0
    assert "No matching distribution found" in messages, messages[-3000:]


# --- platform logic ------------------------------------------------------------------------------


def test_venv_paths_on_each_platform():
    assert S.venv_layout("/home/a/course/.venv", "linux") == ("/home/a/course/.venv/bin", "/home/a/course/.venv/bin/python")
    assert S.venv_layout("/Users/a/course/.venv", "darwin") == ("/Users/a/course/.venv/bin",
                                                                "/Users/a/course/.venv/bin/python")
    assert S.venv_layout("C:\\Users\\a\\course\\.venv", "win32") == (
        "C:\\Users\\a\\course\\.venv\\Scripts", "C:\\Users\\a\\course\\.venv\\Scripts\\python.exe")
    # the real thing on this machine
    scripts, python = S.venv_layout(sys.prefix)
    if sys.prefix != sys.base_prefix:
        assert os.path.samefile(python, sys.executable) or Path(python).resolve() == Path(sys.executable).resolve()
        assert Path(scripts).is_dir()


def _exists(*paths):
    return lambda p: p in paths


def _which(*names):
    return lambda n: "/usr/bin/" + n if n in names else None


def test_gpu_detection():
    no = _which()
    assert S.has_nvidia_gpu("linux", no, _exists()) is False
    assert S.has_nvidia_gpu("linux", _which("nvidia-smi"), _exists()) is True
    assert S.has_nvidia_gpu("linux", no, _exists("/proc/driver/nvidia")) is True
    # macOS: never CUDA, whatever is found
    assert S.has_nvidia_gpu("darwin", _which("nvidia-smi"), _exists("/proc/driver/nvidia")) is False
    assert S.has_nvidia_gpu("win32", no, _exists()) is False
    assert S.has_nvidia_gpu("win32", _which("nvidia-smi"), _exists()) is True
    assert S.has_nvidia_gpu("win32", no, lambda p: p.endswith("System32\\nvidia-smi.exe")) is True


def test_torch_build_and_index():
    assert S.torch_source("linux", False) == ("CPU", "https://download.pytorch.org/whl/cpu")
    assert S.torch_source("linux", True) == ("CUDA", None)  # the package index's torch is the CUDA build
    assert S.torch_source("win32", False) == ("CPU", "https://download.pytorch.org/whl/cpu")
    assert S.torch_source("win32", True)[1].startswith("https://download.pytorch.org/whl/cu")
    assert S.torch_source("darwin", True)[1] is None and S.torch_source("darwin", False)[1] is None


def test_index_reachable(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = "http://127.0.0.1:%d/whl" % server.server_address[1]
        assert S.index_reachable(base + "/cpu") == (True, "")
        ok, why = S.index_reachable(base + "/cu999")  # no such index: the server says 404
        assert ok is False and "404" in why
    finally:
        server.shutdown()
        server.server_close()
    ok, why = S.index_reachable("http://127.0.0.1:%d/whl/cpu" % server.server_address[1], timeout=2)
    assert ok is False and why


def test_pins_are_read_whole():
    pins = S.read_pins(ROOT / "requirements-pinned.txt")
    assert len(pins) == len(PINS) and all("==" in line for line in PINS)
    assert dict(pins)["torch"] and dict(pins)["torchvision"]


def test_commands_and_their_arguments():
    assert S.split_argv(["--cuda", "test", "-k", "x", "--cpu"]) == (["--cuda"], "test", ["-k", "x", "--cpu"])
    assert S.split_argv(["--check"]) == (["--check"], None, [])
    py = "/r/.venv/bin/python"
    assert S.command_line("main", py, ["--only", "02"]) == [py, "-m", "helpers.course.main_job", "--only", "02"]
    assert S.command_line("test", py, ["-x"]) == [py, "-m", "pytest", "-x"]
    lab = S.command_line("lab", py, ["--port", "8888"], is_root=True)
    assert lab[:3] == [py, "-m", "jupyterlab"] and "--allow-root" in lab and lab[-2:] == ["--port", "8888"]
    assert "--LabApp.default_url=/lab/tree/notebooks" in lab
    with pytest.raises(ValueError):
        S.command_line("nope", py, [])


def test_sizes_and_times_read_well():
    assert S.format_size(6_312_000_000) == "6.3 GB" and S.format_size(14_200) == "14.2 kB"
    assert S.format_duration(3.04) == "3.0 s" and S.format_duration(252) == "4 min 12 s"


def test_probe_reads_the_torch_build():
    state = S.probe(sys.executable, S.read_pins(ROOT / "requirements-pinned.txt"))
    import torch

    assert state["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert state["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert S.torch_build(state) == (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU")


# --- a second run only checks --------------------------------------------------------------------


def _venv_on_this_environment(tmp_path: Path, with_repo: bool) -> Path:
    """A fresh virtual environment that sees this environment's packages (a .pth file) and,
    with ``with_repo``, this repository's ``helpers`` (as an editable install would)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = S.venv_layout(str(venv))[1]
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    if with_repo:
        paths[str(ROOT)] = None
    Path(site, "course_test.pth").write_text("\n".join(paths) + "\n")
    return venv


def _setup(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_a_set_up_environment_is_only_checked(tmp_path):
    problems = S.problems(S.probe(sys.executable, S.read_pins(ROOT / "requirements-pinned.txt")),
                          S.read_pins(ROOT / "requirements-pinned.txt"), repo="/nowhere")
    missing = [p for p in problems if "helpers" not in p]  # the venv below gets this repository's helpers
    if missing:
        pytest.skip(f"this environment differs from requirements-pinned.txt: {missing[:3]}")
    venv = _venv_on_this_environment(tmp_path, with_repo=True)
    done = _setup("--venv", str(venv))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to install" in done.stdout
    assert "installing" not in done.stdout and "pip" not in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("ready: Python %d.%d.%d, torch " % sys.version_info[:3])
    assert " build), " in last and str(venv) in last


def test_check_lists_what_is_missing(tmp_path):
    venv = _venv_on_this_environment(tmp_path, with_repo=False)
    Path(next(venv.rglob("course_test.pth"))).unlink()  # an empty environment
    done = _setup("--check", "--venv", str(venv))
    assert done.returncode == 1
    assert "torch is not installed" in done.stdout and "helpers) is not installed" in done.stdout
    done = _setup("--check", "--venv", str(tmp_path / "none"))
    assert done.returncode == 1 and "no virtual environment" in done.stderr


def test_bash_scripts_are_thin_wrappers(tmp_path):
    for name, command in (("setup", ""), ("main", " main"), ("test", " test"), ("lab", " lab")):
        text = (ROOT / "scripts" / f"{name}.sh").read_text()
        assert f'scripts/setup.py{command} "$@"' in text, name
    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    venv = _venv_on_this_environment(tmp_path, with_repo=False)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--check", "--venv", str(venv)],
                          capture_output=True, text=True, env={**env, "PYTHON": sys.executable})
    assert done.returncode == 1 and "helpers) is not installed" in done.stdout

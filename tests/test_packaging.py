"""Packaging: the licence and citation files, builds without deprecation warnings, a wheel that
carries the offline models and works outside the repository, and Binder's requirements resolving
together with repo2docker's base environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.parse
import zipfile
from pathlib import Path

import _early
import pytest
import yaml
from _resolve import ROOT, index_url, normalize, reachable, require_index, requirement_lines, resolve
from packaging.specifiers import SpecifierSet
from packaging.version import Version

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPO = (ROOT / "notebooks" / "src" / "REPO").read_text().strip()


# --- licence and citation ------------------------------------------------------------------------


def test_licence_is_mit_and_declared_in_spdx_form():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The clip-decomposition-course authors" in text
    assert "THE SOFTWARE IS PROVIDED \"AS IS\"" in text
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project.get("classifiers", []))
    # SPDX license strings need setuptools 77 or newer to build
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    spec = SpecifierSet(setuptools.removeprefix("setuptools"))
    assert "77.0.0" in spec and "76.9" not in spec


def test_citation_file_cites_the_course_and_both_papers():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("cff-version", "message", "title", "authors"):  # required by the format
        assert cff[key], key
    assert cff["type"] == "software" and cff["license"] == "MIT"
    assert cff["repository-code"] == f"https://github.com/{REPO}"
    assert cff["version"] == PYPROJECT["project"]["version"]

    def person_or_entity(author):
        return bool(author.get("name")) or bool(author.get("family-names"))

    assert all(person_or_entity(a) for a in cff["authors"])
    refs = {r["doi"].split("arXiv.")[-1]: r for r in cff["references"]}
    assert set(refs) == {"2310.05916", "2409.06579"}
    for ref in refs.values():
        for key in ("type", "title", "authors"):  # required in a reference
            assert ref[key], key
        assert ref["type"] in {"conference-paper", "article"}
        assert all(person_or_entity(a) for a in ref["authors"])
        assert ref["url"] == "https://arxiv.org/abs/" + ref["doi"].split("arXiv.")[-1]
    decomposition, interpret = refs["2310.05916"], refs["2409.06579"]
    assert decomposition["title"] == "Interpreting CLIP's Image Representation via Text-Based Decomposition"
    assert [a["family-names"] for a in decomposition["authors"]] == ["Gandelsman", "Efros", "Steinhardt"]
    assert decomposition["year"] == 2024 and "ICLR" in decomposition["conference"]["name"]
    assert interpret["title"] == "Quantifying and Enabling the Interpretability of CLIP-like Models"
    assert [a["family-names"] for a in interpret["authors"]] == ["Madasu", "Gandelsman", "Lal", "Howard"]
    assert interpret["year"] == 2024


def test_packages_are_found_automatically():
    # no list of packages to keep up to date: every folder under helpers/ with an __init__.py
    # (test_wheel_carries_every_package_and_the_data checks the wheel)
    assert PYPROJECT["tool"]["setuptools"]["packages"] == {"find": {"include": ["helpers*"], "namespaces": False}}


# --- builds --------------------------------------------------------------------------------------


def _source_copy(dest: Path) -> Path:
    """The repository's files (tracked, and new ones git does not ignore) copied to ``dest``:
    builds write build/ and *.egg-info where they run."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            src = ROOT / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / name)
    else:  # not a git checkout
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache", "course_data"))
    return dest


def _backend(call: str, source: Path, out: Path) -> tuple[str, str]:
    """Run setuptools' build backend (``build_wheel``, ``build_sdist``, ``build_editable``) in
    ``source``, as pip does without build isolation: ``(the file it built, all it printed)``."""
    code = f"import sys, setuptools.build_meta as b; print('BUILT', b.{call}(sys.argv[1]))"
    env = {k: v for k, v in _early.environ().items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-W", "default", "-c", code, str(out)], cwd=source, capture_output=True,
                          text=True, env=env, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed[-3000:]
    return out / printed.split("BUILT ")[-1].split()[0], printed


def _setuptools_problem() -> str:
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed in this environment: the builds need it"
    if Version(setuptools.__version__) < Version("77"):
        return f"setuptools {setuptools.__version__} here; the build needs 77 or newer (pyproject.toml)"
    return ""


def start_builds(tmp_path_factory, items=()) -> None:
    """The builds, started at the session's start in a thread (the ``early`` mark, tests/_early.py)."""
    if not _setuptools_problem():
        _early.job("builds", _build_all, tmp_path_factory.mktemp("builds"))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """A wheel built in the source tree (what ``pip install .`` builds), a source distribution
    and the wheel built from it (what ``python -m build`` makes), and an editable build, with
    everything the builds printed."""
    why = _setuptools_problem()
    if why:
        pytest.skip(why)
    return _early.job("builds", _build_all, tmp_path_factory.mktemp("builds")).result()


def _build_all(base: Path) -> dict:
    source = _source_copy(base / "source")
    out = base / "dist"
    out.mkdir()
    wheel, log_wheel = _backend("build_wheel", source, out)
    sdist, log_sdist = _backend("build_sdist", source, out)
    shutil.unpack_archive(sdist, base / "unpacked")
    (unpacked,) = (base / "unpacked").iterdir()
    from_sdist_dir = base / "from-sdist"
    from_sdist_dir.mkdir()
    from_sdist, log_from_sdist = _backend("build_wheel", unpacked, from_sdist_dir)
    editable_dir = base / "editable"
    editable_dir.mkdir()
    editable, log_editable = _backend("build_editable", _source_copy(base / "source-editable"), editable_dir)
    try:  # the wheel installed outside the repository, here too, so that its test only reads the answers
        outside: dict | BaseException = _install_outside(wheel, base / "outside")
    except Exception as exc:  # noqa: BLE001 - kept for test_wheel_works_outside_the_repository
        outside = exc
    return {"wheel": wheel, "sdist": sdist, "from_sdist": from_sdist, "editable": editable, "outside": outside,
            "log": {"wheel": log_wheel, "sdist": log_sdist, "wheel from sdist": log_from_sdist,
                    "editable": log_editable}}


@pytest.mark.slow
@pytest.mark.early("start_builds")
def test_builds_print_no_deprecation_warning(builds):
    for name, log in builds["log"].items():
        assert "SetuptoolsDeprecationWarning" not in log, name
        found = [line for line in log.splitlines() if re.search("deprecat", line, re.I)]
        assert not found, (name, found[:5])


DATA_FILES = ["models/world-clip.json", "models/world-clip-world-v3.safetensors", "models/world-clip-world-v3.train.json",
              "models/world-clip-world-v3-plain.safetensors", "models/MODEL_CARD.md", "pools/general.tsv",
              "pools/world_pool.tsv", "pools/common_words.txt", "imagenet_wnids.txt"]


@pytest.mark.slow
@pytest.mark.early("start_builds")
def test_wheel_carries_every_package_and_the_data(builds):
    names = zipfile.ZipFile(builds["wheel"]).namelist()
    packages = sorted(str(p.parent.relative_to(ROOT)).replace(os.sep, "/")
                      for p in (ROOT / "helpers").rglob("__init__.py") if "course_data" not in p.parts)
    for package in packages:
        assert f"{package}/__init__.py" in names, package
    for file in DATA_FILES:
        assert f"helpers/course_data/{file}" in names, file
    data = sorted(str(p.relative_to(ROOT / "data")).replace(os.sep, "/") for p in (ROOT / "data").rglob("*")
                  if p.is_file())
    assert sorted(n.removeprefix("helpers/course_data/") for n in names if "/course_data/" in n) == data
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert builds["wheel"].stat().st_size <= 40e6, builds["wheel"].stat().st_size
    # the source distribution builds the same wheel
    assert sorted(zipfile.ZipFile(builds["from_sdist"]).namelist()) == sorted(names)
    # an editable install reads data/ in place: no copy
    assert not any("course_data" in n for n in zipfile.ZipFile(builds["editable"]).namelist())


# the embedding of one fixed image by the default model, and what the package reads where
_PROBE = r"""
import json, sys
import numpy as np, torch
from PIL import Image
torch.set_num_threads(1)
import helpers, helpers.engine.models as M, helpers.data.pools as P
model, preprocess, _ = M.load_model()
image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 72, 3), dtype=np.uint8))
with torch.no_grad():
    emb = model.encode_image(preprocess(image)[None])[0]
print(json.dumps({"helpers": helpers.__file__, "data": str(M.data_dir()), "embedding": emb.tolist(),
                  "world": M.world_of(model), "pool": len(P.load_pool("world")), "tags": M.offline_tags()}))
"""


def _probe(python: str, cwd: Path, extra_env: dict[str, str]) -> dict:
    env = {k: v for k, v in _early.environ().items() if k not in ("PYTHONPATH", "CLIP_COURSE_DATA")}
    done = subprocess.run([python, "-c", _PROBE], cwd=cwd, capture_output=True, text=True, env={**env, **extra_env},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _install_outside(wheel: Path, base: Path) -> dict:
    """``pip install`` of ``wheel`` into a fresh environment in ``base``, outside the repository
    (it reuses this environment's packages through a .pth file, without the clone's editable
    finder), then what :data:`_PROBE` prints there, in the clone, and there with
    ``$CLIP_COURSE_DATA`` set."""
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # a path entry: the .pth files in that folder (the clone's editable finder) are not run
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site, "course_deps.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in _early.environ().items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                           str(wheel)], capture_output=True, text=True, cwd=base,
                          env={**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    out = {"venv": venv, "pip": done}
    if done.returncode == 0:
        out["installed"] = _probe(python, base, {})
        out["clone"] = _probe(sys.executable, ROOT, {"PYTHONPATH": str(ROOT)})
        out["moved"] = _probe(python, base, {"CLIP_COURSE_DATA": str(ROOT / "data")})
    return out


@pytest.mark.slow
@pytest.mark.early("start_builds")
def test_wheel_works_outside_the_repository(builds):
    """``pip install`` of the wheel into a fresh environment outside the repository:
    ``load_model()`` loads the default from the wheel and embeds an image as the clone does (run
    with the builds, at the session's start: :func:`_install_outside`)."""
    found = builds["outside"]
    if isinstance(found, BaseException):
        raise found
    done, venv = found["pip"], found["venv"]
    assert done.returncode == 0, done.stdout + done.stderr
    installed, clone = found["installed"], found["clone"]
    assert Path(installed["helpers"]).resolve().is_relative_to(venv.resolve())
    assert Path(installed["data"]) == Path(installed["helpers"]).parent / "course_data"
    assert Path(clone["data"]).resolve() == (ROOT / "data").resolve()
    assert installed["tags"] == clone["tags"] and installed["world"] == clone["world"]
    assert installed["pool"] == clone["pool"] > 0
    import numpy as np

    np.testing.assert_allclose(installed["embedding"], clone["embedding"], rtol=1e-5, atol=1e-6)
    # $CLIP_COURSE_DATA still wins over the installed copy
    assert Path(found["moved"]["data"]) == ROOT / "data"


# --- Binder ----------------------------------------------------------------------------------------

# repo2docker's base environment for Python 3.11, where binder/requirements.txt is installed with
# pip: repo2docker/buildpacks/conda/environment.py-3.11-linux-64.lock (frozen 2025-10-16), the
# Jupyter front end and server parts (conda's names as on the package index).
REPO2DOCKER_311 = {
    "jupyterlab": "4.4.9",
    "notebook": "7.4.7",
    "jupyter_server": "2.17.0",
    "jupyterlab_server": "2.27.3",
    "jupyter-lsp": "2.3.0",
    "notebook-shim": "0.2.4",
    "jupyter-resource-usage": "1.2.0",
}


def test_binder_runs_python_3_11_and_installs_the_course():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"
    assert "3.11.0" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post


def test_readme_binder_badge_opens_the_learner_notebooks():
    readme = (ROOT / "README.md").read_text()
    urls = re.findall(r"\(https://mybinder\.org/v2/gh/[^)\s]+\)", readme)
    assert urls, "no Binder badge in README.md"
    url = urllib.parse.urlparse(urls[0].strip("()"))
    assert url.path == f"/v2/gh/{REPO}/HEAD"
    assert urllib.parse.parse_qs(url.query)["urlpath"] == ["lab/tree/notebooks/learner"]
    assert (ROOT / "notebooks" / "learner").is_dir()


def _binder_requirements() -> tuple[list[str], list[str]]:
    """binder/requirements.txt's lines (PyTorch's CPU index left out where it does not answer) and
    the pins of repo2docker's base packages the file does not name."""
    lines = requirement_lines(ROOT / "binder" / "requirements.txt")
    named = {normalize(re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]) for line in lines if not line.startswith("-")}
    kept = [f"{name}=={version}" for name, version in REPO2DOCKER_311.items() if normalize(name) not in named]
    indexes = [line for line in lines if line.startswith("--extra-index-url")]
    for line in indexes:  # PyTorch's CPU wheels where that index answers; else the same version from the default index
        if reachable(line.split()[-1].rstrip("/") + "/torch/"):
            lines.remove(line)
    return lines, kept


def _binder_resolution(tmp: Path):
    def run():
        lines, kept = _binder_requirements()
        return resolve(lines + kept, "3.11", tmp)

    return _early.job("binder", run)


def start_binder_resolution(tmp_path_factory, items=()) -> None:
    """The resolution, started at the session's start in a thread (the ``early`` mark)."""
    if not reachable(index_url() + "/pip/"):
        _binder_resolution(tmp_path_factory.mktemp("binder"))


@pytest.mark.slow
@pytest.mark.early("start_binder_resolution")
def test_binder_requirements_resolve_with_repo2docker_base(tmp_path):
    """What repo2docker does: ``pip install -r binder/requirements.txt`` into its base
    environment. Packages the file names are replaced; the base's Jupyter packages it does not
    name stay, so they must fit what is installed beside them."""
    require_index()
    lines, kept = _binder_requirements()
    assert any(k.startswith("notebook==") for k in kept)  # Binder's Notebook stays
    status, packages, messages = _binder_resolution(tmp_path).result()
    assert status == 0, messages[-3000:]
    got = {normalize(p["name"]): p["version"] for p in packages}
    for pin in kept:
        name, version = pin.split("==")
        assert got[normalize(name)] == version, pin

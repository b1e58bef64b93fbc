"""Datasets, downloads offline, recorded figures, widgets headless, the runner, the environment."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_world_task_matches_preprocess(default_bundle):
    from helpers.data.datasets import world_task

    _, preprocess, _ = default_bundle
    task = world_task("colour", 12)
    assert len(task) == 12 and task.classes[0] == "red"
    assert task.labels.tolist() == task.meta["scenes"].factors["colour"].tolist()
    # the array path equals the model's own preprocess on the PIL image
    x = task.dataset[3][0]
    ref = preprocess(task.show(3))
    assert torch.allclose(x, ref, atol=1e-5)


def test_load_task_errors():
    from helpers.data.datasets import load_task

    with pytest.raises(ValueError, match="unknown dataset"):
        load_task("mnist", preprocess=lambda im: im)
    with pytest.raises(ValueError, match="preprocess"):
        load_task("imagenette")
    with pytest.raises(FileNotFoundError):
        load_task("imagenet:/no/such/folder", preprocess=lambda im: im)


def test_imagenet_folder_task(tmp_path):
    from PIL import Image

    from helpers.data.datasets import imagenet_folder_task

    for wnid in ("n01440764", "n15075141"):
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (30, 20), (1, 2, 3)).save(tmp_path / wnid / "a.JPEG")
    Image.new("RGBA", (10, 10)).save(tmp_path / "n15075141" / "b.png")
    task = imagenet_folder_task(tmp_path, preprocess=lambda im: torch.zeros(3, 4, 4), templates="simple")
    assert task.labels.tolist() == [0, 999, 999]
    assert task.classes[0] == "tench" and len(task.prompts["tench"]) > 1
    assert task.dataset[2][1] == 999 and task.show(2).mode == "RGB"
    # the pixels of an RGB file are read before the file closes (lazy PIL loading)
    assert np.allclose(np.asarray(task.show(0)).reshape(-1, 3).mean(0), [1, 2, 3], atol=2)  # JPEG rounding


def test_downloads_fail_fast_offline(tmp_path, monkeypatch):
    from helpers.data import datasets
    from helpers.engine import download

    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setattr(download, "host_reachable", lambda host, **kw: False)
    with pytest.raises(download.OfflineError, match="unreachable.*dataset='world'"):
        datasets.load_task("imagenette", preprocess=lambda im: im)
    assert not any(tmp_path.rglob("*")), "an offline failure must leave no partial files"


def test_imagenet_wnids_file():
    wnids = (ROOT / "data" / "imagenet_wnids.txt").read_text().split()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[217] == "n02102040"


def test_figures_written_atomically(tmp_path):
    import numpy as np

    from helpers.course.record import Figures, load_figures

    path = tmp_path / "sub" / "f.json"
    f = Figures(path)
    f["acc"] = torch.tensor(0.5)
    f["curve"] = np.array([1.0, 2.0])
    f["pair"] = (1, "a")
    assert load_figures(path) == {"acc": 0.5, "curve": [1.0, 2.0], "pair": [1, "a"]}
    with pytest.raises(TypeError):
        f["bad"] = object()
    assert load_figures(path)["acc"] == 0.5
    mem = Figures("")
    mem["x"] = 1
    assert dict(mem) == {"x": 1}


def test_live_headless_uses_defaults(monkeypatch):
    import ipywidgets as widgets

    from helpers.course.ui import live

    monkeypatch.setenv("COURSE_HEADLESS", "1")
    seen = []
    assert live(lambda a, b: seen.append((a, b)), a=widgets.IntSlider(value=3), b=widgets.Text(value="x")) is None
    assert seen == [(3, "x")]
    with pytest.raises(TypeError):
        live(lambda a: None, a=5)


def test_notebook_paths_and_params():
    from helpers.course.main_job import _parse_param, notebook_paths

    names = [p.name for p in notebook_paths()]
    assert names == sorted(names) and names[0].startswith("01_")
    assert _parse_param("n_images=20") == ("n_images", 20)
    assert _parse_param("model_name=ViT-B-16") == ("model_name", "ViT-B-16")


def _pins(text, pattern=r"^\s*-?\s*([A-Za-z0-9_.-]+)\s*[=]=?\s*([0-9][^\s#]*)"):
    out = {}
    for line in text.splitlines():
        m = re.match(pattern, line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_environments_agree():
    pinned = _pins((ROOT / "requirements-pinned.txt").read_text())
    binder = _pins((ROOT / "binder" / "requirements.txt").read_text())
    conda = _pins((ROOT / "environment.yml").read_text())
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    for name, version in binder.items():
        assert pinned.get(name) == version, f"binder pins {name}=={version}, pinned has {pinned.get(name)}"
    for name, version in conda.items():
        if name != "python":
            assert pinned.get(name) == version, f"environment.yml pins {name} {version}, pinned has {pinned.get(name)}"
    import importlib.metadata as md

    for name in ("torch", "open-clip-torch", "numpy"):
        assert md.version(name).split("+")[0] == pinned[name], f"installed {name} differs from the pin"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/main.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^bash scripts/test.sh\s*$", ci, re.M)


def test_notebooks_committed_clean_and_in_sync(tmp_path):
    clean = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_notebooks.py")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout  # the same check as the pre-commit hook
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), path.name
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_notebooks.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # the checker itself: an executed cell is caught
    nb = json.loads((ROOT / "notebooks" / "01_residual_decomposition.ipynb").read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"], code["execution_count"] = [{"output_type": "stream", "name": "stdout", "text": "x"}], 1
    (tmp_path / "run.ipynb").write_text(json.dumps(nb))
    dirty = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_notebooks.py"), str(tmp_path / "run.ipynb")],
                           capture_output=True, text=True)
    assert dirty.returncode == 1 and "outputs in cells" in dirty.stdout


def test_sources_are_jupytext_percent_notebooks():
    import jupytext

    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        text = src.read_text()
        # opened as a notebook in JupyterLab and saved, a source comes back byte for byte
        assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text, src.name


def test_pre_commit_hooks_run_the_project_checks():
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff", "notebooks-in-sync", "notebooks-without-outputs", "architecture"} <= set(hooks)
    assert all(repo["repo"] == "local" and h["language"] == "system" for repo in config["repos"] for h in repo["hooks"])
    for h in hooks.values():  # every entry names a script or test that exists
        for word in h["entry"].split():
            if word.endswith(".py"):
                assert (ROOT / word).exists(), word
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--force-exclude", "helpers", "tests", "scripts",
                           "benchmarks", "notebooks/src"], cwd=ROOT, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-2000:]


def test_stderr_outputs_of_an_executed_notebook(tmp_path):
    from helpers.course.main_job import stderr_outputs

    nb = {"cells": [{"cell_type": "markdown", "source": "x"},
                    {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stdout", "text": "ok\n"}]},
                    {"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr",
                                                       "text": ["UserWarning: ", "careful\n"]},
                                                      {"output_type": "display_data", "data": {}}]}]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    assert stderr_outputs(path) == [(2, "UserWarning: careful\n")]
    nb["cells"].pop()
    path.write_text(json.dumps(nb))
    assert stderr_outputs(path) == []

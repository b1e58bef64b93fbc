"""Notebook 7's photo path without a download: ImageNet-style class folders and an
ImageNet-Segmentation file made from world scenes, read through the notebook's online branches
(1,000-way classification, words over the common-words list, words-only adversarial pairs, class
search, ImageNet-Segmentation), on the offline model, executed headless with papermill.

The photos and the segmentation file are written when the module is collected (a temporary
folder, removed at exit): the run starts in the background at the session's start."""

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.course.main_job import notebook_paths, stderr_outputs
from helpers.data import world
from helpers.engine.paths import data_dir


def _photo_folders(root, n_per_class=6, classes=3):
    """World scenes as JPEG photos in the folders of the first ImageNet classes."""
    wnids = (data_dir() / "imagenet_wnids.txt").read_text().split()[:classes]
    scenes = world.sample(n_per_class * classes, split="test", seed=9, config="world-v3")
    for c, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(scenes.images[c * n_per_class + i]).resize((96, 80)).save(root / wnid / f"{i}.JPEG")
    return root


def _segmentation_file(path, n=3):
    """World scenes and their masks in gtsegs_ijcv.mat's layout (object references to MATLAB-ordered arrays)."""
    import h5py

    scenes = world.sample(n, split="test", seed=10, config="world-v3")
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        ref = h5py.special_dtype(ref=h5py.Reference)
        img = f.create_dataset("value/img", (n, 1), dtype=ref)
        gt = f.create_dataset("value/gt", (n, 1), dtype=ref)
        for i in range(n):
            img[i, 0] = refs.create_dataset(f"i{i}", data=scenes.images[i].transpose(2, 1, 0)).ref
            gt[i, 0] = refs.create_dataset(f"g{i}", data=scenes.foreground[i].astype(np.uint8).T).ref
    return path


def _photo_run():
    tmp = Path(tempfile.mkdtemp(prefix="course-photos-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    folders = _photo_folders(tmp / "val")
    mat = _segmentation_file(tmp / "gtsegs_ijcv.mat")
    path = next(p for p in notebook_paths() if p.stem.startswith("07_"))
    params = {"dataset": f"imagenet:{folders}", "seg_dataset": f"imagenet-seg:{mat}", "n_images": 12,
              "eval_images": 6, "top_k": 2, "vocabulary": "common_words", "pool_size": 48, "n_words": 4,
              "seg_images": 3, "seg_neurons": 10, "n_pairs": 2, "templates": "simple", "batch_size": 6}
    return pytest.mark.notebook(path, params, env={"COURSE_HEADLESS": "1"})


@pytest.mark.slow
@_photo_run()
def test_second_order_notebook_on_photos(notebook_run):
    f, executed = notebook_run.figures, notebook_run.executed
    assert stderr_outputs(executed) == []
    assert f["n_images"] == 12 and f["eval_images"] == 6 and f["vocabulary"] == "common_words"
    assert f["exactness_f64"] <= 1e-10
    for layer, acc in f["ablations"].items():  # 1,000-way over six held-out photos
        assert all(0 <= a <= 1 and abs(a * 6 - round(a * 6)) < 1e-9 for a in acc.values()), (layer, acc)
    # no ground truth on photos: no lift, no rendered scenes, and the notebook says so
    assert "lift" not in f and "concepts" not in f and f["adversarial"] is None
    seg = f["segmentation"]
    assert all(0 <= v <= 1 for row in seg.values() for v in row.values() if not isinstance(v, str)), seg
    shown = executed.read_text()
    assert "no ground-truth factors" in shown and "text-to-image model" in shown
    assert "words that push A toward B" in shown

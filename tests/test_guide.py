"""The instructor's pages: the guide and the no-network page say what the course really does."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "notebooks" / "README.md").read_text()
OFFLINE = (ROOT / "notebooks" / "OFFLINE.md").read_text()


def test_the_offline_page_installs_from_a_local_wheelhouse_step_by_step():
    assert "pip download -r requirements-pinned.txt -d wheelhouse" in OFFLINE
    assert "pip install --no-index --find-links wheelhouse -r requirements-pinned.txt" in OFFLINE
    steps = re.findall(r"^## (\d)\. ", OFFLINE, re.M)
    assert steps == ["1", "2", "3", "4"]
    for path in re.findall(r"`((?:scripts|data|notebooks)/[\w./-]+)`", OFFLINE) + ["requirements-pinned.txt"]:
        assert (ROOT / path.rstrip("/")).exists() or "*" in path, path
    # the check it asks for is a real command of the main job
    assert "python -m helpers.course.main_job --learner --only 01 --no-html" in OFFLINE
    assert "[OFFLINE.md](OFFLINE.md)" in GUIDE


def test_the_guide_uses_the_preset_and_tells_the_truth_about_cells():
    assert 'preset = "ViT-B-16 LAION"' in GUIDE and 'model_name = "ViT-B-16"' not in GUIDE
    flat = " ".join(GUIDE.split())
    assert "same cell in both" not in flat and '"cell 14" is not the same cell in two builds' in flat
    assert "notebooks/instructor/" in GUIDE and "--slides" in GUIDE
    assert "helpers/exercises.py" not in GUIDE and "# %% [exercise]" not in GUIDE  # the markup as it is now
    assert (ROOT / "notebooks" / "figures" / "residual_decomposition.svg").exists()


def test_the_diagram_png_is_rendered_from_its_svg():
    from PIL import Image

    svg = (ROOT / "notebooks" / "figures" / "residual_decomposition.svg").read_text()
    w, h = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg).groups())
    png = Image.open(ROOT / "notebooks" / "figures" / "residual_decomposition.png")
    assert png.size == (int(2 * w), int(2 * h)), "re-render it: python scripts/render_figures.py"

"""Build notebooks/NN_*.ipynb from their sources notebooks/src/NN_*.py (percent format).

    python scripts/build_notebooks.py          # write the notebooks
    python scripts/build_notebooks.py --check  # exit 1 if a notebook is out of date

Source format: cells start with ``# %%`` (code) or ``# %% [markdown]`` (markdown, every line
prefixed by ``# ``); ``# %% [parameters]`` marks the papermill parameters cell; a line
``# {{SETUP}}`` is replaced by ``notebooks/src/_setup.py`` (the Colab/Binder/local set-up
cell shared by every notebook), ``{{REPO}}`` by the GitHub ``owner/name`` in
``notebooks/src/REPO`` and ``{{NOTEBOOK}}`` by the notebook's name. Notebooks are
written without outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
REPO_URL_FILE = ROOT / "notebooks" / "src" / "REPO"


def parse(text: str) -> list[tuple[str, str, list[str]]]:
    cells: list[tuple[str, str, list[str]]] = []
    kind, tags, lines = None, [], []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                cells.append((kind, "\n".join(lines).strip("\n"), tags))
            marker = line[4:].strip()
            kind = "markdown" if marker == "[markdown]" else "code"
            tags = ["parameters"] if marker == "[parameters]" else []
            lines = []
            continue
        if kind == "markdown":
            if line.strip() in ("#", ""):
                line = ""
            elif line.startswith("# "):
                line = line[2:]
            else:
                raise ValueError(f"markdown lines must start with '# ': {line!r}")
        lines.append(line)
    if kind is not None:
        cells.append((kind, "\n".join(lines).strip("\n"), tags))
    return cells


def build(src: Path, repo: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    setup = (src.parent / "_setup.py").read_text().strip("\n")
    text = src.read_text().replace("# {{SETUP}}", setup)
    text = text.replace("{{REPO}}", repo).replace("{{NOTEBOOK}}", src.stem)
    for i, (kind, body, tags) in enumerate(parse(text)):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else nbformat.v4.new_code_cell(body)
        cell["id"] = f"c{src.stem[:2]}-{i:02d}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    repo = REPO_URL_FILE.read_text().strip()
    stale = []
    for src in sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py")):
        target = ROOT / "notebooks" / (src.stem + ".ipynb")
        text = nbformat.writes(build(src, repo), version=4) + "\n"
        if args.check:
            if not target.exists() or target.read_text() != text:
                stale.append(target.name)
        else:
            target.write_text(text)
    if stale:
        print("out of date (run python scripts/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

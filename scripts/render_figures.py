"""Render the course's hand-drawn SVG figures (notebooks/figures/*.svg) to PNG next to them.

    python scripts/render_figures.py

The notebooks embed the PNG (JupyterLab renders PNG attachments but not SVG ones); the SVG is
the source to edit. Chromium (Debian's, through Playwright, as the browser test uses it) draws
each figure at twice its size, for sharp text on high-density screens.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parent.parent / "notebooks" / "figures"


def main() -> int:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("Chromium is needed (apt-get install chromium)", file=sys.stderr)
        return 1
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--headless"])
        for svg in sorted(FIGURES.glob("*.svg")):
            text = svg.read_text()
            w, h = (float(v) for v in re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', text).groups())
            page = browser.new_page(viewport={"width": int(w), "height": int(h)}, device_scale_factor=2)
            page.set_content(f"<html><body style='margin:0'>{text}</body></html>")
            page.locator("svg").first.screenshot(path=str(svg.with_suffix(".png")))
            page.close()
            print(f"{svg.name} -> {svg.with_suffix('.png').name}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

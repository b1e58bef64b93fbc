"""The explorer app's costs: the head catalogue's first build and cached load, and how fast every
control of every tab answers once the page is up.

Prints, measured in this one run (offline default unless ``--preset``):
  * the first build into an empty cache (model, gallery, head terms of the last layers, the
    pool's text embeddings, TextSpan of every head) and the load of the same from the cache,
    wall-clock and CPU seconds per stage;
  * the memory the searches hold: the cached head terms of the last layers (the only per-image
    arrays kept; the full decomposition of the gallery is never materialised);
  * for every tab, the time it takes to draw when first shown, and for every control of every tab
    (``helpers.course.app.build_app``), the time from setting a new value (as moving the control
    does) to the redrawn output, ``--repeats`` changes each:
    median and largest, wall-clock and CPU (all threads); the goal is every control within
    1 s on two cores. The browser's side (sending the output, drawing it) is
    ``tests/test_app.py``'s, which prints it per tab;
  * the machine's load average before and after (the course machines are shared: wall-clock
    times stretch with the load, CPU times much less).

    python benchmarks/bench_app.py [--preset offline] [--n-images N] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402

TEXTS = ["a green object", "a blue square", "a photo of sand", "a yellow heart", "a red circle", "a purple star",
         "a photo of water", "an orange cross", "a black diamond", "a white triangle", "a brick wall", "snow"]


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def next_value(w, i: int):
    """A new value for control ``w`` at the ``i``-th change, as a person would pick it."""
    import ipywidgets as widgets

    if isinstance(w, (widgets.Dropdown, widgets.ToggleButtons)):
        values = [o[1] if isinstance(o, tuple) else o for o in w.options]
        return values[(values.index(w.value) + 1) % len(values)]
    if isinstance(w, widgets.IntRangeSlider):
        lo, hi = w.value
        return (lo + 1, hi) if lo + 1 <= hi and i % 2 == 0 else (max(w.min, lo - 1), hi)
    if isinstance(w, (widgets.IntSlider, widgets.FloatSlider)):
        up = w.value + w.step
        return up if up <= w.max and i % 2 == 0 else w.value - w.step
    if isinstance(w, widgets.Checkbox):
        return not w.value
    if isinstance(w, widgets.Text):
        if w.description == "texts":  # topic segmentation: a list of texts, or the head's own
            return "" if w.value else ", ".join(TEXTS[i % 6: i % 6 + 3])
        return TEXTS[i % len(TEXTS)] if w.value != TEXTS[i % len(TEXTS)] else TEXTS[(i + 1) % len(TEXTS)]
    raise TypeError(f"no rule for {type(w).__name__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="offline")
    ap.add_argument("--n-images", type=int, default=None, help="gallery size (default: the preset's)")
    ap.add_argument("--repeats", type=int, default=5, help="changes per control")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the app's choice)")
    args = ap.parse_args()

    from helpers.course.app import TABS, Explorer, app_config, build_app, setup_process

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as cache:
        config = app_config(args.preset, args.n_images, cache, threads=args.threads, environ={})
        setup_process(config)  # as the app's kernel: its threads, plotly's renderer for a page
        threads = torch.get_num_threads()
        print(f"{config.model_id}: {config.n_images} images of {config.dataset}; torch threads {threads}")
        for what in ("first build (empty cache)", "load from the cache"):
            ex, wall, cpu = timed(lambda: Explorer(config, progress=False))
            stages = ", ".join(f"{k} {v:.2f}" for k, v in ex.watch.seconds.items())
            print(f"{what}: {wall:.1f} s wall, {cpu:.1f} s CPU; per stage (s wall): {stages}")
            assert ex.computed["catalogue"] == (what.startswith("first")), ex.computed
    ex.stack("dot")  # both scales, as after the first switch to the paper's protocol
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [ex.terms.heads, *ex.stacks.values()]}
    print(f"head terms held for the searches: {tuple(ex.terms.heads.shape)} on two scales (raw, reference), "
          f"{sum(storages.values()) / 2**20:.1f} MiB in all")

    page, wall, cpu = timed(lambda: build_app(ex))
    print(f"page built (its first tab drawn): {wall:.2f} s wall, {cpu:.2f} s CPU")
    rows, worst = [], (0.0, "")
    for k, tab in enumerate(TABS):
        panel = page.panels[tab]
        _, dw, dc = timed(lambda: setattr(page.tabs, "selected_index", k))  # a tab draws when first shown
        rows.append((tab, "(first shown)", "Tab", dw, dw, dc, dc))
        worst = max(worst, (dw, f"{tab} / first shown"))
        for name, w in panel.controls.items():
            walls, cpus = [], []
            for i in range(args.repeats):
                new = next_value(w, i)
                _, dw, dc = timed(lambda: setattr(w, "value", new))
                errors = [o for o in panel.children[1].outputs if o["output_type"] == "error"]
                assert not errors, (tab, name, errors[0]["evalue"])
                walls.append(dw)
                cpus.append(dc)
            rows.append((tab, name, type(w).__name__, statistics.median(walls), max(walls), statistics.median(cpus),
                         max(cpus)))
            if max(walls) > worst[0]:
                worst = (max(walls), f"{tab} / {name}")
    # an upload: checked, added to every list, the tab on show redrawn
    import datetime
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (20, 120, 200)).save(buf, format="PNG")
    upload = {"name": "photo.png", "type": "image/png", "size": buf.tell(), "content": memoryview(buf.getvalue()),
              "last_modified": datetime.datetime(2024, 1, 1)}
    page.tabs.selected_index = TABS.index("Exact map")
    _, dw, dc = timed(lambda: setattr(page.upload, "value", (upload,)))
    rows.append(("(upload box)", "file", "FileUpload", dw, dw, dc, dc))
    worst = max(worst, (dw, "upload"))

    print(f"\n{'tab':<20} {'control':<14} {'kind':<15} {'wall median':>12} {'wall max':>9} {'CPU median':>11} "
          f"{'CPU max':>8}   (ms, {args.repeats} changes each)")
    for tab, name, kind, mw, xw, mc, xc in rows:
        print(f"{tab:<20} {name:<14} {kind:<15} {mw * 1e3:>12.0f} {xw * 1e3:>9.0f} {mc * 1e3:>11.0f} {xc * 1e3:>8.0f}")
    slowest_cpu = max(r[6] for r in rows)
    print(f"\nslowest control: {worst[1]}, {worst[0] * 1e3:.0f} ms wall (largest CPU time of any control "
          f"{slowest_cpu * 1e3:.0f} ms); goal: every control within 1000 ms: "
          f"{'met' if worst[0] <= 1.0 else 'NOT met'} in this run")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Sentences written from computed values, so a notebook's text cannot drift from its numbers.

A notebook never types a figure it measures into its markdown. After a key result it shows a
short *What we see* block built here from the values it just computed::

    from helpers.course.narrative import what_we_see, pct, pts, compare

    what_we_see(
        f"Zero-shot accuracy is {pct(base)}.",
        f"Mean-ablating every MLP moves it by {pts(mlp - base)}.",
        compare(miou["decomposition"], miou["rollout"], "the decomposition", "rollout", what="mIoU"),
    )

Formatting is fixed in one place (percentages with one decimal, signed percentage points,
ratios with a multiplication sign), and comparisons say in words which side is ahead, so the
same sentence reads right whichever way the numbers fall.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["num", "pct", "pts", "ratio", "pm", "compare", "ranking", "verdict", "bullets", "what_we_see", "say",
           "provenance_reading", "baseline_comparison", "rate_difference"]

_MINUS = "\u2212"


def _finite(x: Any, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be a number, got {type(x).__name__}") from None
    return v


def num(x: Any, digits: int = 3) -> str:
    """A plain number with ``digits`` significant decimals (``0.838``, ``1.2e-07``); ``n/a`` for NaN."""
    v = _finite(x, "value")
    if math.isnan(v):
        return "n/a"
    if v != 0 and (abs(v) < 10 ** -(digits) or abs(v) >= 1e6):
        return f"{v:.{max(1, digits - 1)}e}".replace("-", _MINUS)
    return f"{v:.{digits}f}".replace("-", _MINUS)


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``0.9301 -> '93.0%'``."""
    v = _finite(x, "fraction")
    if math.isnan(v):
        return "n/a"
    return f"{100 * v:.{digits}f}%".replace("-", _MINUS)


def pts(delta: Any, digits: int = 1) -> str:
    """A difference of two fractions in signed percentage points: ``-0.031 -> '−3.1 points'``."""
    v = _finite(delta, "difference")
    if math.isnan(v):
        return "n/a"
    p = 100 * v
    if round(p, digits) == 0:
        return f"{0:.{digits}f} points"
    return f"{'+' if p > 0 else _MINUS}{abs(p):.{digits}f} points"


def ratio(x: Any, digits: int = 2) -> str:
    """A ratio with a multiplication sign: ``1.934 -> '1.93×'``."""
    v = _finite(x, "ratio")
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}\u00d7"


def pm(value: Any, se: Any, *, as_pct: bool = False, digits: int | None = None) -> str:
    """A figure with its standard error: ``pm(0.7, 0.0144, as_pct=True) -> '70.0% ± 1.4'`` (the
    error in percentage points), ``pm(0.512, 0.031) -> '0.512 ± 0.031'``; the value alone when
    ``se`` is None or NaN (no sampling error: the whole population)."""
    d = (1 if as_pct else 3) if digits is None else digits
    text = _fmt(_finite(value, "value"), as_pct, d)
    if se is None or math.isnan(_finite(se, "se")):
        return text
    err = 100 * float(se) if as_pct else float(se)
    return f"{text} \u00b1 {err:.{d}f}" + (" points" if as_pct else "")


def _fmt(v: float, as_pct: bool, digits: int) -> str:
    return pct(v, digits) if as_pct else num(v, digits)


def compare(a: Any, b: Any, name_a: str, name_b: str, *, what: str = "", higher_is_better: bool = True,
            as_pct: bool = False, digits: int = 3, tie: float = 0.0) -> str:
    """One sentence saying which of two values is ahead, with both values.

    ``compare(0.62, 0.64, "the decomposition", "rollout", what="mIoU")`` ->
    ``"the decomposition does **not** beat rollout on mIoU (0.620 vs 0.640)."``. Differences
    of at most ``tie`` count as a tie.
    """
    va, vb = _finite(a, "a"), _finite(b, "b")
    on = f" on {what}" if what else ""
    vals = f"({_fmt(va, as_pct, digits)} vs {_fmt(vb, as_pct, digits)})"
    if math.isnan(va) or math.isnan(vb):
        return f"{name_a} and {name_b} cannot be compared{on} {vals}."
    d = va - vb if higher_is_better else vb - va
    if abs(va - vb) <= tie:
        return f"{name_a} and {name_b} are level{on} {vals}."
    if d > 0:
        return f"{name_a} beats {name_b}{on} {vals}."
    return f"{name_a} does **not** beat {name_b}{on} {vals}."


def ranking(scores: Mapping[str, Any], *, higher_is_better: bool = True, as_pct: bool = False,
            digits: int = 3) -> str:
    """Names ordered best first with their values: ``"rollout (0.64) > decomposition (0.62)"``.

    Equal values are joined with ``=``."""
    if not scores:
        raise ValueError("nothing to rank")
    items = sorted(((float(v), k) for k, v in scores.items()), key=lambda t: t[0], reverse=higher_is_better)
    out = f"{items[0][1]} ({_fmt(items[0][0], as_pct, digits)})"
    for (prev, _), (v, k) in zip(items, items[1:]):
        out += f" {'=' if v == prev else '>' if higher_is_better else '<'} {k} ({_fmt(v, as_pct, digits)})"
    return out


def verdict(condition: Any, yes: str, no: str) -> str:
    """``yes`` when ``condition`` holds, else ``no`` (for sentences whose claim depends on a
    measured comparison)."""
    return yes if bool(condition) else no


def bullets(lines: Iterable[str]) -> str:
    """Markdown bullet list of the non-empty lines."""
    items = [str(line).strip() for line in lines if line and str(line).strip()]
    if not items:
        raise ValueError("no sentences to show")
    return "\n".join(f"* {line}" for line in items)


def what_we_see(*lines: str, title: str = "What we see") -> str:
    """Show a *What we see* block (markdown) built from the given sentences; returns its text.

    In a notebook it is displayed as rendered markdown, so it is part of the executed notebook
    and its HTML copy like any output."""
    text = f"**{title}**\n\n{bullets(lines)}"
    say(text)
    return text


def say(text: str) -> None:
    """Display ``text`` as markdown (plain text outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # pragma: no cover - IPython ships with the course environment
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def provenance_reading(prov: Any, found: bool, *, pattern: str = "the paper's pattern") -> str:
    """What finding ``pattern`` (or not finding it) means, given how the model was made.

    ``prov`` is a :class:`helpers.engine.models.Provenance` (anything with ``kind`` and ``note``; a bare
    kind string works too). Returns the provenance note followed by one sentence that reads
    right for that kind of model: for the offline default, trained toward the paper's pattern,
    finding it confirms the training and a real CLIP is the test; for a CLIP trained on web
    data, the pattern, if found, was learned; for random weights nothing can be concluded.
    """
    kind = str(getattr(prov, "kind", prov))
    note = str(getattr(prov, "note", "")).strip()
    readings = {
        "shaped": (f"Finding {pattern} here therefore confirms how the model was trained, not the paper's claim.",
                   f"Even so, {pattern} does **not** show here: the training push did not produce it."),
        "web": (f"This model shows {pattern}, and nothing in its training put it there: it was learned.",
                f"This model does **not** show {pattern}: on this model and these images the paper's "
                "claim does not hold."),
        "plain": (f"This model shows {pattern} without being pushed toward it: training found it.",
                  f"This model, trained without a push toward it, does **not** show {pattern}."),
        "random": (f"With random weights nothing can be concluded about {pattern}, either way.",) * 2,
    }
    default = (f"It shows {pattern}; how the weights were trained is not known here, so whether it was "
               "learned or built in is open.",
               f"It does **not** show {pattern}.")
    sentence = readings.get(kind, default)[0 if found else 1]
    return f"{note} {sentence}".strip()


def baseline_comparison(name: str, scores: dict[str, float], baselines: dict[str, float],
                        coverage: dict[str, float]) -> str:
    """One sentence on how a row of :func:`helpers.methods.metrics.map_scores` compares with the trivial
    maps of :func:`helpers.methods.metrics.baseline_scores`, with a plain reason, taken from
    :func:`helpers.methods.metrics.map_coverage`, for every score that does not beat its baseline."""
    from ..methods.metrics import BASELINES

    def vs(k):
        return f"{k} {num(scores[k])} vs {num(baselines[k])}"

    wins = [k for k in BASELINES if scores[k] > baselines[k]]
    losses = [k for k in BASELINES if k not in wins]
    if not losses:
        return f"**{name}** beats every trivial map ({'; '.join(vs(k) for k in wins)})."
    out = f"**{name}** "
    out += f"beats its trivial map on {', '.join(vs(k) for k in wins)}, but " if wins else ""
    out += f"does **not** beat it on {'; '.join(f'{vs(k)} ({BASELINES[k]})' for k in losses)}."
    c = coverage
    reasons = []
    if "object IoU" in losses:
        if c["kept"] < c["region"]:
            reasons.append(f"the region covers {pct(c['region'])} of the pixels but the mean threshold keeps "
                           f"{pct(c['kept'])}, so the IoU can reach at most {num(c['IoU bound'])} on average, "
                           f"while a mask of the whole image scores the region's share")
        else:
            reasons.append(f"the threshold keeps {pct(c['kept'])} of the pixels, as many as the region's "
                           f"{pct(c['region'])}, but mostly elsewhere")
    if "pixel accuracy" in losses:
        side = "everything" if c["region"] > 0.5 else "nothing"
        reasons.append(f"pixel accuracy rewards the larger side: the region covers {pct(c['region'])} of the "
                       f"pixels, so marking {side} is already right on {pct(baselines['pixel accuracy'])} of them")
    if "mAP" in losses or "object AP" in losses:
        if c["mean inside"] <= c["mean outside"]:
            reasons.append(f"the map is higher *outside* the region than inside (mean {num(c['mean outside'])} "
                           f"vs {num(c['mean inside'])}), so ranking pixels by it puts the region last")
        else:
            reasons.append(f"the map is only slightly higher inside the region than outside (mean "
                           f"{num(c['mean inside'])} vs {num(c['mean outside'])}), too little to rank its pixels first")
    return out + " Why: " + "; ".join(reasons) + "."


def rate_difference(comparison: Any, name_a: str, name_b: str, *, what: str = "", unit: str = "trials") -> str:
    """One sentence on two rates measured on the same trials, with the bootstrap interval of
    their difference (a :class:`helpers.methods.second_order.RateComparison`): which is higher,
    by how much, and whether that is within noise (the interval contains 0). ``unit`` names
    what the bootstrap resampled (``"images"``, ``"class pairs"``)."""
    c = comparison
    on = f" {what}" if what else ""
    level = f"{100 * c.level:.0f}%"
    vals = (f"({pct(c.rate_a)} vs {pct(c.rate_b)}; difference {pts(c.difference)}, {level} interval "
            f"{pts(c.low)} to {pts(c.high)}, resampling {c.n_clusters} {unit})")
    if c.within_noise:
        return f"{name_a} and {name_b} are level{on} within noise {vals}."
    side = "higher" if c.difference > 0 else "lower"
    return f"{name_a} is {side} than {name_b}{on}, beyond noise {vals}."

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

**Comparative words come from one function.** :func:`comparative` picks "beats", "leads",
"more tightly", "held", "robust" (or whatever pair of words a sentence needs) from a
:class:`~helpers.methods.stats.Difference`: the measured difference *and* how well it is known
(a paired bootstrap over images, :func:`helpers.methods.stats.paired_bootstrap`, or a stated
tolerance, :func:`helpers.methods.stats.with_tolerance`). When the interval straddles zero it
says "within noise" instead. :func:`compare` and :func:`leader` are built on it and refuse a
comparison that comes without its evidence. A claim a notebook states in several places is a
:class:`Claim`, judged once and stated with the same verdict everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from ..methods.stats import Difference

__all__ = ["num", "nums", "pct", "pts", "ratio", "pm", "compare", "comparative", "evidence_note", "leader", "Claim",
           "ranking", "verdict", "bullets", "what_we_see", "say", "provenance_reading", "provenance_phrase",
           "baseline_comparison", "shown_sum", "rate_difference", "WITHIN_NOISE"]

WITHIN_NOISE = "within noise"
"""What a comparison says when its interval straddles zero."""

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


def nums(*values: Any, digits: int = 2) -> list[str]:
    """Several numbers written alike, so a sentence never mixes notations (``-2.23e-04 vs
    -0.002``): scientific with ``digits`` decimals for all of them when any is below
    ``10**-digits`` in size (and not zero), else fixed with ``digits`` decimals for all."""
    vs = [_finite(v, "value") for v in values]
    small = any(v != 0 and abs(v) < 10 ** -digits for v in vs if not math.isnan(v))
    out = []
    for v in vs:
        if math.isnan(v):
            out.append("n/a")
        elif small:
            out.append(f"{v:.{digits}e}".replace("-", _MINUS))
        else:
            out.append(f"{v:.{digits}f}".replace("-", _MINUS))
    return out


def shown_sum(total: Any, parts: Iterable[Any], digits: int = 2) -> list[str]:
    """The parts of a sum as shown, so that the shown numbers add up to the shown total: every
    part but the last is rounded to ``digits``, and the last is what the shown total minus the
    other shown parts leaves (within half a unit of the last digit of its own value plus the
    others' rounding). Use it where a sentence writes ``1 − 1.06 − 0.03 = −0.09``."""
    ps = [_finite(p, "part") for p in parts]
    if not ps:
        raise ValueError("no parts")
    t = round(_finite(total, "total"), digits)
    shown = [round(p, digits) for p in ps[:-1]]
    last = round(t - sum(shown), digits)
    return [num(v, digits) for v in shown + [last]]


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


def _evidence(a: float, b: float, evidence: "Difference | None", tolerance: float | None,
              basis: str = "") -> "Difference":
    from ..methods.stats import Difference, with_tolerance

    if evidence is not None:
        if not isinstance(evidence, Difference):
            raise TypeError(f"evidence must be a helpers.methods.stats.Difference, got {type(evidence).__name__}")
        return evidence
    if tolerance is None:
        raise TypeError("a comparison needs its evidence: a Difference (helpers.methods.stats.paired_bootstrap) or a "
                        "stated tolerance; without one no comparative word can be chosen")
    return with_tolerance(a, b, tolerance, basis)


def comparative(evidence: "Difference", ahead: str, behind: str, level: str = WITHIN_NOISE, *,
                higher_is_better: bool = True) -> str:
    """The word for a comparison, weighed against its noise: ``ahead`` when the first figure is
    better beyond the interval, ``behind`` when it is worse, ``level`` when the interval
    straddles zero (or cannot be computed).

    Every comparative word in the notebooks ("beats", "leads", "more tightly", "held",
    "robust", ...) is chosen here, from a :class:`~helpers.methods.stats.Difference`."""
    side = evidence.side if math.isfinite(evidence.low) and math.isfinite(evidence.high) else 0
    if not higher_is_better:
        side = -side
    return ahead if side > 0 else behind if side < 0 else level


def evidence_note(evidence: "Difference", *, as_pct: bool = False, digits: int = 3) -> str:
    """How well a difference is known, in words: ``"difference +0.017, 95% interval +0.004 to
    +0.030 (a paired bootstrap over 200 images)"``, or for a stated tolerance ``"difference +31.0
    points ± 4.5 (two standard errors of an accuracy on 1000 images)"``."""
    def fmt(v: float, sign: bool = True) -> str:
        if as_pct:
            return (f"{'+' if v > 0 and sign else _MINUS if v < 0 else ''}{abs(100 * v):.{max(0, digits)}f}")
        return ("+" if v > 0 and sign else "") + num(v, digits)

    unit = " points" if as_pct else ""
    if evidence.level is None and math.isfinite(evidence.high - evidence.low):
        half = (evidence.high - evidence.low) / 2
        return f"difference {fmt(evidence.diff)}{unit} ± {fmt(half, sign=False)} ({evidence.basis})"
    interval = f"{round(100 * evidence.level):d}% interval" if evidence.level else "interval"
    return (f"difference {fmt(evidence.diff)}{unit}, {interval} {fmt(evidence.low)} to {fmt(evidence.high)}"
            f"{unit} ({evidence.basis})")


def compare(a: Any, b: Any, name_a: str, name_b: str, *, what: str = "", higher_is_better: bool = True,
            as_pct: bool = False, digits: int = 3, evidence: "Difference | None" = None,
            tolerance: float | None = None, tie: float | None = None, basis: str = "",
            words: tuple[str, str] = ("beats", "does **not** beat")) -> str:
    """One sentence saying which of two values is ahead, with both values and the evidence.

    ``evidence`` is a :class:`~helpers.methods.stats.Difference` of ``a - b`` (a paired bootstrap
    over images); without one, ``tolerance`` (or its older name ``tie``) states how close counts
    as level, and ``basis`` where that tolerance comes from. With neither the comparison is refused. Within the noise the sentence says so:
    ``"the decomposition and Chefer et al. are within noise of each other on mIoU (0.706 vs
    0.704; difference +0.002, 95% interval -0.010 to +0.013 (a paired bootstrap over 200 images))."``
    """
    va, vb = _finite(a, "a"), _finite(b, "b")
    on = f" on {what}" if what else ""
    vals = f"{_fmt(va, as_pct, digits)} vs {_fmt(vb, as_pct, digits)}"
    if math.isnan(va) or math.isnan(vb):
        return f"{name_a} and {name_b} cannot be compared{on} ({vals})."
    ev = _evidence(va, vb, evidence, tolerance if tolerance is not None else tie, basis)
    word = comparative(ev, *words, higher_is_better=higher_is_better)
    note = evidence_note(ev, as_pct=as_pct, digits=1 if as_pct else digits)
    if word == WITHIN_NOISE:
        return f"{name_a} and {name_b} are within noise of each other{on} ({vals}; {note})."
    return f"{name_a} {word} {name_b}{on} ({vals}; {note})."


def leader(values: Mapping[str, Any], evidence: Mapping[str, "Difference"], *, as_pct: bool = False,
           digits: int = 3, higher_is_better: bool = True) -> str:
    """Who leads, weighed against the noise: ``values`` by name, and for every name but the best
    the :class:`~helpers.methods.stats.Difference` of *the best minus it*. The best *leads* when
    it beats every other beyond the noise; otherwise the names within noise of it lead together.
    ``"Chefer et al. (0.71) leads"`` or ``"the decomposition (0.707) and rollout (0.706) lead
    together, within noise"``."""
    if not values:
        raise ValueError("no values")
    best = (max if higher_is_better else min)(values, key=lambda k: float(values[k]))
    tied = [k for k in values if k != best
            and comparative(evidence[k], "ahead", "behind", higher_is_better=higher_is_better) != "ahead"]
    names = [best] + sorted(tied, key=lambda k: -float(values[k]) if higher_is_better else float(values[k]))
    shown = [f"{k} ({_fmt(float(values[k]), as_pct, digits)})" for k in names]
    if len(shown) == 1:
        return f"{shown[0]} leads"
    return f"{', '.join(shown[:-1])} and {shown[-1]} lead together, {WITHIN_NOISE}"


@dataclass(frozen=True)
class Claim:
    """A claim's verdict, judged once and stated the same way wherever it is stated.

    ``Claim("A few texts keep the accuracy", evidence, detail="from 3 texts per head")``:
    ``evidence`` is a :class:`~helpers.methods.stats.Difference` (the claim holds when its first
    figure is ahead beyond the noise) or a plain bool (a claim settled by a count or a stated
    rule, which ``detail`` states). ``str(claim)`` is the sentence; :attr:`word` the verdict
    alone."""

    text: str
    evidence: Any
    detail: str = ""

    @property
    def status(self) -> str:
        """``"held"``, ``"not held"`` or ``"within noise"``."""
        if isinstance(self.evidence, bool):
            return "held" if self.evidence else "not held"
        return comparative(self.evidence, "held", "not held", "within noise")

    @property
    def held(self) -> bool:
        return self.status == "held"

    @property
    def word(self) -> str:
        return {"held": "**held**", "not held": "did **not** hold",
                "within noise": f"is not settled ({WITHIN_NOISE})"}[self.status]

    def __str__(self) -> str:
        detail = f" {self.detail}" if self.detail else ""
        return f"*{self.text}* {self.word}{detail}"

    @classmethod
    def share(cls, text: str, k: int, n: int, at_least: float, unit: str = "") -> "Claim":
        """A claim about a count: held when ``k`` of ``n`` is at least the share ``at_least``
        (stated in the sentence)."""
        if n <= 0:
            raise ValueError("n must be positive")
        rule = "all" if at_least >= 1 else f"at least {pct(at_least, 0)}"
        return cls(text, bool(k >= at_least * n - 1e-9),
                   f"({k} of {n}{' ' + unit if unit else ''}; the claim asks for {rule})")


def ranking(scores: Mapping[str, Any], *, higher_is_better: bool = True, as_pct: bool = False,
            digits: int = 3) -> str:
    """Names ordered best first with their values: ``"rollout (0.64) > decomposition (0.62)"``.

    Values that look equal at the shown precision are joined with ``=``. The order is that of
    the figures as measured; whether a gap is larger than the noise is :func:`compare`'s job."""
    if not scores:
        raise ValueError("nothing to rank")
    items = sorted(((float(v), k) for k, v in scores.items()), key=lambda t: t[0], reverse=higher_is_better)
    out = f"{items[0][1]} ({_fmt(items[0][0], as_pct, digits)})"
    for (prev, _), (v, k) in zip(items, items[1:]):
        same = _fmt(v, as_pct, digits) == _fmt(prev, as_pct, digits)  # as shown: equal-looking values are equal
        out += f" {'=' if same else '>' if higher_is_better else '<'} {k} ({_fmt(v, as_pct, digits)})"
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


PROVENANCE_PHRASES = {
    "shaped": "trained on the course's synthetic world with a direct-path penalty that pushed its direct effects "
              "into its last attention layers",
    "plain": "trained on the course's synthetic world, without any push toward the paper's pattern",
    "web": "a CLIP trained on web image-text pairs",
    "random": "a network with random weights, never trained",
}


def provenance_phrase(prov: Any) -> str:
    """How a model was made, in words a learner can read without the model card: the ``kind``
    of a :class:`helpers.engine.models.Provenance` (or the kind itself) spelled out."""
    kind = str(getattr(prov, "kind", prov))
    return PROVENANCE_PHRASES.get(kind, "weights whose training is not known here")


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
    what the bootstrap resampled (``"images"``, ``"class pairs"``). The word comes from
    :func:`comparative`, like every comparative word of the notebooks."""
    from ..methods.stats import Difference

    c = comparison
    evidence = Difference(float(c.rate_a), float(c.rate_b), float(c.low), float(c.high),
                          f"a paired bootstrap over {c.n_clusters} {unit}", float(c.level), int(c.n_clusters))
    on = f" {what}" if what else ""
    level = f"{100 * c.level:.0f}%"
    vals = (f"({pct(c.rate_a)} vs {pct(c.rate_b)}; difference {pts(c.difference)}, {level} interval "
            f"{pts(c.low)} to {pts(c.high)}, resampling {c.n_clusters} {unit})")
    word = comparative(evidence, "higher", "lower")
    if word == WITHIN_NOISE:
        return f"{name_a} and {name_b} are level{on} {WITHIN_NOISE} {vals}."
    return f"{name_a} is {word} than {name_b}{on}, beyond noise {vals}."

"""Regenerate the text pools shipped in ``data/pools/``.

``common_words.txt`` (the paper's baseline pool of common English words) is made from the
English frequency list of the ``wordfreq`` package (code Apache-2.0, data CC BY-SA 4.0), which
is needed only to run this script, not by the course::

    pip install --target /tmp/wordfreq wordfreq==3.1.1
    PYTHONPATH=/tmp/wordfreq python scripts/make_pools.py --common-words

Words are taken in order of frequency; kept are lower-case alphabetic words of at least two
letters, less :data:`DROPPED` (profanity, and contraction fragments and web address parts that
are not words), until :data:`N_WORDS` are collected. Function words are kept: this is a
baseline pool.

``general.tsv`` is made by :func:`helpers.pools.write_general_pool` (no extra package)::

    python scripts/make_pools.py --general        # same as: python -m helpers.pools --write

With no option both files are written (``--common-words`` needs ``wordfreq``).
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_WORDS = 3498
"""Size of the common-words pool (the paper's baseline pool has 3,498 words)."""

WORDFREQ_VERSION = "3.1.1"
"""The ``wordfreq`` release ``common_words.txt`` was made with (other releases may differ)."""

DROPPED = frozenset("""
shit shitty fuck fucking fucked fucker bitch bitches dick bullshit porn crap ass asshole damn
sexy rape pussy cock piss pissed bastard whore slut
ll ve re im dont thats didnt doesnt isnt cant ive youre theyre wasnt
http https www
""".split())
"""Words left out of the common-words pool."""

_WORD = re.compile(r"[a-z]{2,}")


def common_words(n: int = N_WORDS) -> list[str]:
    """The ``n`` most frequent English words of ``wordfreq`` that pass the filters."""
    try:
        import wordfreq
    except ImportError:
        raise SystemExit(
            "wordfreq is not installed; install it for this run only, e.g.\n"
            f"  pip install --target /tmp/wordfreq wordfreq=={WORDFREQ_VERSION}\n"
            "  PYTHONPATH=/tmp/wordfreq python scripts/make_pools.py --common-words") from None
    version = getattr(wordfreq, "__version__", None)
    if version is None:
        from importlib.metadata import version as _version

        version = _version("wordfreq")
    if version != WORDFREQ_VERSION:
        warnings.warn(f"wordfreq {version} is installed; data/pools/common_words.txt was made "
                      f"with {WORDFREQ_VERSION} and may come out different", stacklevel=2)
    out: list[str] = []
    seen: set[str] = set()
    for w in wordfreq.top_n_list("en", 4 * n, wordlist="best"):
        if not _WORD.fullmatch(w) or w in DROPPED or w in seen:
            continue
        seen.add(w)
        out.append(w)
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"only {len(out)} words passed the filters, fewer than {n}")
    return out


def write_common_words(path: Path | None = None, n: int = N_WORDS) -> Path:
    """Write :func:`common_words` one per line (default ``data/pools/common_words.txt``)."""
    from helpers.pools import pool_path

    out = Path(path) if path is not None else pool_path("common_words")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(common_words(n)) + "\n", encoding="utf-8", newline="\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the pools in data/pools/.")
    parser.add_argument("--common-words", action="store_true",
                        help="write common_words.txt (needs wordfreq)")
    parser.add_argument("--general", action="store_true", help="write general.tsv")
    parser.add_argument("--n", type=int, default=N_WORDS, help="number of common words")
    args = parser.parse_args(argv)
    both = not (args.common_words or args.general)
    if args.general or both:
        from helpers.pools import general_pool, write_general_pool

        print(f"wrote {len(general_pool())} descriptions to {write_general_pool()}")
    if args.common_words or both:
        print(f"wrote {args.n} words to {write_common_words(n=args.n)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

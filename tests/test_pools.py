"""Tests of the text pools (helpers.data.pools, data/pools/)."""

from __future__ import annotations

import collections
import re
import warnings
from pathlib import Path

import pytest

from helpers.data import pools as P

POOLS_DIR = Path(__file__).resolve().parent.parent / "data" / "pools"


@pytest.fixture(scope="module")
def general() -> P.Pool:
    return P.general_pool()


# --- the general pool ----------------------------------------------------------


def test_shipped_general_tsv_equals_generator(general, tmp_path):
    shipped = (POOLS_DIR / "general.tsv").read_text(encoding="utf-8")
    assert shipped == general.tsv_text(), "run: python -m helpers.data.pools --write"
    out = general.to_tsv(tmp_path / "g.tsv")
    assert out.read_bytes() == (POOLS_DIR / "general.tsv").read_bytes()


def test_generator_is_deterministic(general):
    again = P.general_pool()
    assert again.texts == general.texts
    assert again.properties == general.properties
    assert again.values == general.values


def test_general_size_and_uniqueness(general):
    assert len(general) >= 3000
    keys = [" ".join(t.lower().split()) for t in general.texts]
    assert len(set(keys)) == len(keys)
    assert all(t == t.strip() and "  " not in t for t in general.texts)


def test_every_row_tagged_and_balanced(general):
    names = [p.name for p in P.PROPERTIES]
    assert len(names) == len(set(names)) >= 18
    assert set(general.properties) == set(names)
    assert all(general.properties) and all(general.values)
    counts = general.counts()
    assert min(counts.values()) >= 100
    assert max(counts.values()) - min(counts.values()) <= 0.2 * max(counts.values())
    for p in P.PROPERTIES:
        tags = {v.tag for v in p.values}
        assert len(tags) == len(p.values), p.name
        assert {general.values[i] for i in general.by_property()[p.name]} <= tags


def test_required_properties_present(general):
    required = {"colour", "pattern", "material", "shape", "location", "count", "animal",
                "person", "object", "scene", "weather", "time", "art_style", "photo_style",
                "emotion"}
    assert required <= set(general.counts())
    assert len(set(general.counts()) - required) >= 3


def test_lengths_within_limits(general):
    for t in general.texts:
        assert len(t) <= P.MAX_CHARS and len(t.split()) <= P.MAX_WORDS, t
    assert P.MAX_CHARS <= 70 and P.MAX_WORDS <= 12


def test_varied_sentence_forms(general):
    templates = {t for p in P.PROPERTIES for t, _ in p.templates}
    assert len(templates) >= 15
    # every property uses several forms; no single form dominates a property
    for name, ix in general.by_property().items():
        firsts = collections.Counter(" ".join(general.texts[i].split()[:2]) for i in ix)
        assert len(firsts) >= 4, name
        assert firsts.most_common(1)[0][1] <= 0.5 * len(ix), name


def test_values_spread_evenly(general):
    for name, ix in general.by_property().items():
        per_value = collections.Counter(general.values[i] for i in ix)
        assert max(per_value.values()) - min(per_value.values()) <= 1, name


def test_vocabularies_are_disjoint():
    owner: dict[str, str] = {}
    for name, words in P.vocabularies().items():
        assert not words & P.NEUTRAL_WORDS
        for w in words:
            assert w not in owner, f"{w!r} is in both {owner[w]!r} and {name!r}"
            owner[w] = name


def test_descriptions_use_only_own_vocabulary(general):
    vocab = P.vocabularies()
    others = {name: set().union(*(v for n, v in vocab.items() if n != name)) for name in vocab}
    for text, prop in zip(general.texts, general.properties):
        words = set(P.words_of(text))
        assert words <= vocab[prop] | P.NEUTRAL_WORDS, (text, words - vocab[prop])
        assert not words & others[prop], (text, prop, words & others[prop])


def test_tagged_value_appears_in_text(general):
    forms = {(p.name, v.tag): v.forms.values() for p in P.PROPERTIES for v in p.values}
    for text, prop, value in zip(general.texts, general.properties, general.values):
        assert any(f.lower() in text.lower() for f in forms[prop, value]), (text, value)


def test_articles(general):
    consonant_sound = ("uni", "use", "eu", "one")
    for text, value in zip(general.texts, general.values):
        if len(value) == 1:  # "The letter A in bold type"
            continue
        for art, word in re.findall(r"\b(an?) ([a-z]+)", text, flags=re.IGNORECASE):
            w = word.lower()
            vowel = (w[0] in "aeiou" and not w.startswith(consonant_sound)) or w == "hdr"
            assert (art.lower() == "an") == vowel, text


def test_template_words_are_listed():
    import string

    for p in P.PROPERTIES:
        for template, _ in p.templates:
            literal = " ".join(lt for lt, *_ in string.Formatter().parse(template))
            assert set(P.words_of(literal)) <= p.fillers | P.NEUTRAL_WORDS, (p.name, template)


def test_write_general_pool(tmp_path):
    out = P.write_general_pool(tmp_path / "x" / "general.tsv")
    pool = P.load_pool(out)
    assert pool.texts == P.general_pool().texts
    assert pool.values == P.general_pool().values


def test_cli_check(capsys):
    assert P.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


# --- common words ------------------------------------------------------------------


def test_common_words_file():
    lines = (POOLS_DIR / "common_words.txt").read_text(encoding="utf-8").splitlines()
    assert 3000 <= len(lines) <= 3600
    assert len(set(lines)) == len(lines)
    assert all(re.fullmatch(r"[a-z]{2,}", w) for w in lines)
    assert lines[:3] == ["the", "to", "and"]


def test_load_common_words():
    pool = P.load_pool("common_words")
    assert 3000 <= len(pool) <= 3600
    assert set(pool.properties) == {"word"}
    assert pool.values == pool.texts
    assert pool.name == "common_words"


# --- loading -----------------------------------------------------------------------


def test_load_named_pools():
    g = P.load_pool("general")
    assert g.texts == P.general_pool().texts and g.name == "general"
    w = P.load_pool("world")
    assert len(w) > 100 and "unknown" not in w.properties
    assert {"colour", "shape"} <= set(w.properties)


def test_load_txt(tmp_path):
    f = tmp_path / "descriptions.txt"
    f.write_text("\ufeff# a comment\nA photo of a dog\n\n  An  oil painting  \r\n"
                 "Image with a red car\n", encoding="utf-8")
    pool = P.load_pool(f)
    assert pool.texts == ["A photo of a dog", "An oil painting", "Image with a red car"]
    assert pool.properties == ["unknown"] * 3 and pool.values == ["unknown"] * 3
    assert pool.name == "descriptions"
    assert len(P.load_pool(str(f))) == 3


def test_load_tsv_optional_columns(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("value\ttext\nred\tA red car\n\tA tree\n", encoding="utf-8")
    pool = P.load_pool(f)
    assert pool.texts == ["A red car", "A tree"]
    assert pool.values == ["red", "unknown"]
    assert pool.properties == ["unknown", "unknown"]


def test_pool_methods(tmp_path):
    pool = P.Pool(["a", "b", "c", "d"], ["x", "y", "x", "z"], ["1", "2", "3", "4"], "t")
    assert len(pool) == 4
    assert pool.by_property() == {"x": [0, 2], "y": [1], "z": [3]}
    sub = pool.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.properties == ["x", "x"] and sub.values == ["3", "1"]
    with pytest.raises(IndexError):
        pool.subset([4])
    back = P.load_pool(pool.to_tsv(tmp_path / "t.tsv"))
    assert (back.texts, back.properties, back.values) == (pool.texts, pool.properties,
                                                          pool.values)
    with pytest.raises(ValueError, match="texts but"):
        P.Pool(["a"], [], [], "bad")
    with pytest.raises(ValueError, match="tab"):
        P.Pool(["a\tb"], ["x"], ["y"]).tsv_text()


# --- errors ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        P.load_pool(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError):
        P.load_pool(tmp_path / "nope.tsv")


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown pool"):
        P.load_pool("no_such_pool")


def test_missing_named_file(tmp_path, monkeypatch):
    monkeypatch.setitem(P._FILES, "world", "absent.tsv")
    with pytest.raises(FileNotFoundError):
        P.load_pool("world")
    monkeypatch.setitem(P._FILES, "common_words", "absent.txt")
    with pytest.raises(FileNotFoundError, match="helpers.data.pools --write common_words"):
        P.load_pool("common_words")
    monkeypatch.setitem(P._FILES, "general", "absent.tsv")
    assert P.load_pool("general").texts == P.general_pool().texts


@pytest.mark.parametrize("name,content,match", [
    ("e.txt", "", "empty"),
    ("c.txt", "# only a comment\n\n", "empty"),
    ("h.tsv", "text\tproperty\tvalue\n", "empty"),
    ("b.tsv", "caption\tlabel\nA dog\tanimal\n", "header"),
    ("b.tsv", "text\ttext\nA\tB\n", "header"),
    ("b.tsv", "text\tproperty\tvalue\nA dog\tanimal\n", r"b\.tsv:2"),
    ("b.tsv", b"text\n\xff\xfe bad\n", "UTF-8"),
], ids=["empty", "only-comment", "only-header", "wrong-header", "repeated-column", "short-row", "not-utf8"])
def test_bad_pool_file(tmp_path, name, content, match):
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(ValueError, match=match):
        P.load_pool(f)


def test_duplicates(tmp_path):
    f = tmp_path / "d.txt"
    f.write_text("A dog\nA cat\na  DOG\nA cat\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="2 duplicate"):
        pool = P.load_pool(f)
    assert pool.texts == ["A dog", "A cat"]
    with pytest.raises(ValueError, match="duplicate"):
        P.load_pool(f, on_duplicate="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(P.load_pool(f, on_duplicate="keep")) == 4
    with pytest.raises(ValueError, match="on_duplicate"):
        P.load_pool(f, on_duplicate="drop")  # type: ignore[arg-type]


def test_shipped_pools_have_no_duplicates():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in P.POOL_NAMES:
            P.load_pool(name, on_duplicate="error")


@pytest.mark.slow
def test_data_dir_matches_models():
    from helpers.engine import models, paths

    assert P.data_dir is paths.data_dir is models.data_dir  # one rule, imported without torch by the pools
    assert P.pool_path("world") == models.data_dir() / "pools" / "world_pool.tsv"


# --- one way to regenerate every pool ----------------------------------------------------------


def test_cli_writes_every_generated_pool_byte_for_byte(tmp_path, capsys):
    for name, file in (("general", "general.tsv"), ("world", "world_pool.tsv")):
        out = tmp_path / file
        assert P.main(["--write", name, "--path", str(out)]) == 0
        assert out.read_bytes() == (POOLS_DIR / file).read_bytes(), name
        assert P.main(["--check", name, "--path", str(out)]) == 0
        out.write_text(out.read_text(encoding="utf-8") + "one more\tother\tx\n", encoding="utf-8")
        assert P.main(["--check", name, "--path", str(out)]) == 1
        assert "differs" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # --path names one file: one pool
        P.main(["--write", "general", "world", "--path", str(tmp_path / "x.tsv")])
    with pytest.raises(SystemExit):
        P.main(["--write", "nope"])


def test_cli_without_names_writes_the_pools_that_need_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "pools").mkdir()
    monkeypatch.setenv("CLIP_COURSE_DATA", str(tmp_path))
    assert P.main(["--write"]) == 0
    assert sorted(p.name for p in (tmp_path / "pools").iterdir()) == ["general.tsv", "world_pool.tsv"]
    assert P.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3520 general texts" in out and "wrote 448 world texts" in out


def test_world_pool_files_follow_the_data_folder(tmp_path, monkeypatch):
    from helpers.data import world

    monkeypatch.setenv("CLIP_COURSE_DATA", str(tmp_path))
    assert P.pool_path("world") == tmp_path / "pools" / "world_pool.tsv"
    written = P.write_pool("world")
    assert written == tmp_path / "pools" / "world_pool.tsv"
    assert written.read_bytes() == (POOLS_DIR / "world_pool.tsv").read_bytes()
    assert world.text_pool() == P.load_pool("world").rows()
    assert P.world_pool().rows() == world.text_pool()


def test_common_words_need_wordfreq_only_to_be_made(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wordfreq", None)  # as if it were not installed
    with pytest.raises(ImportError, match="pip install .*wordfreq==3.1.1"):
        P.pool_file_text("common_words")
    assert len(P.load_pool("common_words")) == P.N_WORDS  # reading needs nothing


def test_module_entry_point():
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CLIP_COURSE_DATA", None)
    done = subprocess.run([sys.executable, "-m", "helpers.data.pools", "--check", "world"], capture_output=True,
                          text=True, env=env, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "world_pool.tsv: up to date" in done.stdout


# --- the paper's own text sets, fetched from its repository at a pinned commit ---------------

_QUIRKS = "A photo of Cardiff  \na photo of cardiff\ncozy caf\u00e9 ambiance\nAn   image of a lighthouse \nword"


@pytest.fixture()
def served(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``; yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_reference_pool_urls_are_pinned():
    assert P.REFERENCE_POOL_NAMES == ("reference_general", "reference_common_words")
    assert P.reference_pool_url("reference_general") == (
        "https://raw.githubusercontent.com/yossigandelsman/clip_text_span/"
        "49f70f31bb13437a870ff8de340626b225500a22/text_descriptions/image_descriptions_general.txt")
    assert P.reference_pool_url("reference_common_words", commit="abc").endswith(
        "/clip_text_span/abc/text_descriptions/google_3498_english.txt")
    for _path, sha, size, _what in P.REFERENCE_POOLS.values():
        assert len(sha) == 64 and size > 0
    with pytest.raises(ValueError, match="unknown reference pool"):
        P.reference_pool_url("reference_words")


def test_reference_pool_is_fetched_once_checked_and_read_as_the_reference_reads_it(
        served, tmp_path, monkeypatch):
    import pooch

    www, base = served
    (www / "general.txt").write_bytes(_QUIRKS.encode("utf-8"))  # no newline at the end
    sha = pooch.file_hash(str(www / "general.txt"))
    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIP_COURSE_OFFLINE", raising=False)
    monkeypatch.setitem(P.REFERENCE_POOLS, "reference_general",
                        ("general.txt", sha, len(_QUIRKS.encode()), "a test set"))
    monkeypatch.setattr(P, "reference_pool_url", lambda name, commit=P.REFERENCE_COMMIT: f"{base}/general.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # duplicates kept, no warning: the reference embeds every line
        pool = P.load_pool("reference_general")
    assert pool.texts == ["A photo of Cardiff", "a photo of cardiff", "cozy caf\u00e9 ambiance",
                          "An image of a lighthouse", "word"]
    assert set(pool.properties) == {"unknown"} and pool.name == "reference_general"
    # dropping the duplicate is still possible when asked for
    with pytest.warns(UserWarning, match="duplicate"):
        assert len(P.load_pool("reference_general", on_duplicate="warn")) == 4
    # the second use reads the cache: no server needed
    (www / "general.txt").unlink()
    assert P.load_pool("reference_general").texts == pool.texts
    cached = list((tmp_path / "cache").rglob("general.txt"))
    assert len(cached) == 1 and cached[0].parent.name == "clip_text_span-49f70f3"


def test_reference_pool_with_another_hash_is_refused(served, tmp_path, monkeypatch):
    www, base = served
    (www / "words.txt").write_text("cat\ndog")
    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIP_COURSE_OFFLINE", raising=False)
    monkeypatch.setattr(P, "reference_pool_url", lambda name, commit=P.REFERENCE_COMMIT: f"{base}/words.txt")
    with pytest.raises(ValueError, match="(?i)hash"):
        P.load_pool("reference_common_words")  # the pinned hash is the real file's
    assert not [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]


def test_reference_pool_offline_fails_fast_with_a_hint(tmp_path, monkeypatch):
    import time

    from helpers.engine.download import OfflineError

    monkeypatch.setenv("CLIP_COURSE_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIP_COURSE_OFFLINE", "1")
    for name in P.REFERENCE_POOL_NAMES:
        t0 = time.perf_counter()
        with pytest.raises(OfflineError, match="raw.githubusercontent.com") as info:
            P.load_pool(name)
        assert time.perf_counter() - t0 < 10
        assert "preset='offline'" in str(info.value) and "pool=" in str(info.value)
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]


@pytest.mark.parametrize("name, lines, unique", [("reference_general", 3498, 3483),
                                                 ("reference_common_words", 3498, 3498)])
def test_real_reference_pools_when_cached(name, lines, unique):
    """Checks the real files where a copy already sits in the course cache (never downloads)."""
    import pooch

    from helpers.engine.download import cache_root

    path, sha, size, _ = P.REFERENCE_POOLS[name]
    local = cache_root() / f"clip_text_span-{P.REFERENCE_COMMIT[:7]}" / path.rsplit("/", 1)[1]
    if not local.exists():
        pytest.skip(f"{local} is not in the cache")
    assert local.stat().st_size == size and pooch.file_hash(str(local)) == sha
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pool = P.load_pool(name)
    assert len(pool) == lines
    assert len({" ".join(t.lower().split()) for t in pool.texts}) == unique

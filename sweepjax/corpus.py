"""A real text corpus that every machine has: the docstrings of Python's own standard library.

The corpus (:func:`build_corpus`)
    Every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` (the running interpreter's standard
    library: always installed, no network), in sorted order of its ``/``-separated relative path, except
    files under a directory named in :data:`EXCLUDED` (test suites, IDLE, lib2to3, turtle demos, installed
    packages, bytecode caches) or named ``config-*`` (the build's own scripts), and the build-specific
    ``_sysconfigdata_*.py``. Each file is parsed with :mod:`ast` (never imported: nothing runs) and
    contributes, in source order (the module first, then by line and column), the docstring
    (``ast.get_docstring``, indentation cleaned) of its module and of every class and (async) function
    that has a non-blank one. A docstring is one *document*, encoded as UTF-8 (a lone surrogate, which
    UTF-8 cannot encode, as its backslash escape). The corpus is the documents, each followed by
    :data:`SEPARATOR`, the byte NUL: an end-of-document token, which no docstring contains (one that did
    would have it written as the four bytes ``\\x00``), so the documents can be recovered from the bytes.

    Building parses ~580 files (~5 s), so the corpus is cached: in memory for the process, and on disk as
    ``$XDG_CACHE_HOME/sweepjax/corpus-<key>.bin`` (``~/.cache`` by default), ``<key>`` a hash of
    ``sys.version`` and the stdlib path. The file's first line holds the sha256 of the bytes after it,
    checked on every load: a corrupted or truncated file is rebuilt and rewritten (atomically).
    :func:`corpus_info` is what a reader of results needs to know which corpus it was (sha256, size,
    documents, Python version, source): another Python version gives another corpus.

The split (:func:`split`)
    Whole documents are held out: document d goes to the test split when the first 4 bytes of
    ``sha256(b"split:" + d)``, big-endian, are below :data:`TEST_SHARE` x 2^32 (~8 % of documents), so a
    document repeated in the corpus (``Return self==value.`` appears dozens of times) is always on one side
    and no test document is also a train document. Each split is its documents, each followed by the
    separator, in corpus order; windows cut from one split never hold text of the other.

The tokenizer (:func:`encode`, :func:`decode`)
    Byte-level: a token is one byte of the UTF-8 text, vocabulary :data:`VOCAB` = 256 (every byte value).
    Why: there is no trained tokenizer to make reproducible, any text (or byte string) round-trips exactly,
    and 256 embedding rows stay small next to the parameter counts of the CPU widths (a 32k BPE vocabulary
    would be most of a width-64 model's parameters).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import sys
import sysconfig
from pathlib import Path

import numpy as np

from sweepjax.files import atomic_write, cache_dir

SEPARATOR = b"\x00"        # end of each document
EXCLUDED = frozenset({"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages",
                      "__pycache__"})
"""Directory names whose files are left out (anywhere in the relative path), besides ``config-*``."""
TEST_SHARE = 0.08          # expected share of documents in the test split
VOCAB = 256                # byte-level: every byte value is a token
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_MAGIC = b"sweepjax-corpus sha256="


# ---- building ------------------------------------------------------------------------------------

def stdlib_path() -> Path:
    """The standard library the corpus is read from."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path | None = None) -> list[Path]:
    """The ``.py`` files of the corpus under ``root`` (default: the stdlib), in sorted relative-path order."""
    root = stdlib_path() if root is None else Path(root)
    kept = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(d in EXCLUDED or d.startswith("config-") for d in rel.parts[:-1]):
            continue
        if rel.name.startswith("_sysconfigdata") or not path.is_file():
            continue
        kept.append(rel.as_posix())
    return [root / rel for rel in sorted(kept)]


def docstrings(source: bytes) -> list[str]:
    """The non-blank docstrings of a module's source: the module's, then its classes' and functions' in
    source order (by line, then column)."""
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, _DOC_NODES)]
    nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", -1)))
    docs = (ast.get_docstring(n, clean=True) for n in nodes)
    return [d for d in docs if d and d.strip()]


def document(text: str) -> bytes:
    """One docstring as a document: UTF-8 (lone surrogates backslash-escaped), NUL written as ``\\x00``."""
    return text.encode("utf-8", "backslashreplace").replace(SEPARATOR, b"\\x00")


def build(root: Path | None = None) -> bytes:
    """The corpus of the stdlib at ``root`` (default: this interpreter's), built from its files (no cache)."""
    return b"".join(document(d) + SEPARATOR for path in source_files(root) for d in docstrings(path.read_bytes()))


# ---- caching -------------------------------------------------------------------------------------

def cache_path() -> Path:
    """The disk cache of this interpreter's corpus: ``$XDG_CACHE_HOME/sweepjax/corpus-<key>.bin``."""
    key = hashlib.sha256(f"{sys.version}\n{stdlib_path()}".encode()).hexdigest()[:16]
    return cache_dir() / f"corpus-{key}.bin"


def _read_cache(path: Path) -> bytes | None:
    """The cached corpus, or None when the file is missing, unreadable or fails its sha256."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head, _, data = blob.partition(b"\n")
    if head != _MAGIC + hashlib.sha256(data).hexdigest().encode():
        return None
    return data


def _write_cache(path: Path, data: bytes) -> None:
    """Write the corpus with its sha256 header, atomically; an unwritable cache only means building again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = _MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n"
        atomic_write(path, lambda p: p.write_bytes(header + data))
    except OSError:
        pass


def load_or_build(path: Path) -> bytes:
    """The corpus from the cache file ``path`` when it is there and intact (its sha256 checks), else built from
    the stdlib (:func:`build`) and written there."""
    data = _read_cache(path)
    if data is None:
        data = build()
        _write_cache(path, data)
    return data


@functools.cache
def build_corpus() -> bytes:
    """The corpus (module docstring): :func:`load_or_build` at :func:`cache_path`, once per process."""
    return load_or_build(cache_path())


# ---- what it is, and its split ---------------------------------------------------------------------

def documents(data: bytes | None = None) -> list[bytes]:
    """The documents of ``data`` (default: the corpus), in order, without their separators."""
    data = build_corpus() if data is None else data
    return data.split(SEPARATOR)[:-1]


def is_test(doc: bytes) -> bool:
    """Whether a document is held out for the test split (module docstring)."""
    h = int.from_bytes(hashlib.sha256(b"split:" + doc).digest()[:4], "big")
    return h < TEST_SHARE * 2**32


@functools.cache
def split() -> tuple[bytes, bytes]:
    """(train, test): the corpus's documents on each side, each followed by the separator, in corpus order."""
    docs = documents()
    held = [is_test(d) for d in docs]
    train = b"".join(d + SEPARATOR for d, t in zip(docs, held) if not t)
    test = b"".join(d + SEPARATOR for d, t in zip(docs, held) if t)
    return train, test


def corpus_info() -> dict[str, str | int]:
    """Which corpus this is, for results: its sha256, bytes, documents, the split's sizes, the Python that
    built it, where from, and the tokenizer."""
    data = build_corpus()
    train, test = split()
    return {
        "corpus_sha256": hashlib.sha256(data).hexdigest(),
        "corpus_bytes": len(data),
        "corpus_documents": len(documents()),
        "corpus_train_bytes": len(train),
        "corpus_test_bytes": len(test),
        "corpus_test_documents": test.count(SEPARATOR),
        "corpus_python": sys.version.split()[0],
        "corpus_source": (f"docstrings (module, class, function; ast, never imported) of the .py files under "
                          f"{stdlib_path()} in sorted path order, without {', '.join(sorted(EXCLUDED))}, config-*, "
                          f"_sysconfigdata_*; each document UTF-8 followed by NUL; test split: documents whose "
                          f"sha256(b'split:' + doc) < {TEST_SHARE} x 2^32"),
        "tokenizer": f"bytes (UTF-8), vocabulary {VOCAB}",
    }


# ---- the tokenizer -------------------------------------------------------------------------------

def encode(text: str | bytes) -> np.ndarray:
    """Tokens of a text (UTF-8) or byte string: one uint8 token per byte."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, np.uint8).copy()


def decode(tokens) -> bytes:
    """The bytes of a token sequence (any integer array with values in [0, 256))."""
    t = np.asarray(tokens)
    if t.size and (t.min() < 0 or t.max() >= VOCAB):
        raise ValueError(f"tokens must be in [0, {VOCAB}); got {t.min()}..{t.max()}")
    return t.astype(np.uint8).tobytes()

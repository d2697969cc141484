"""The dataset: a list of documents read from a UTF-8 text file. Standard library only.

Without a file, the original's dataset (32,033 names from the makemore repository) is
downloaded once, checked against its sha256 and cached. Offline machines point
MICROGPT_CACHE_DIR at a directory that already holds names.txt.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from .config import DOC_MODES  # lines, paragraphs, text

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/refs/heads/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
CACHE_ENV = "MICROGPT_CACHE_DIR"


class DataError(Exception):
    """A dataset that cannot be used; the message says what to do."""


def cache_dir() -> Path:
    """Where the names dataset is cached: $MICROGPT_CACHE_DIR, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microgpt"


def sha256_bytes(data: bytes) -> str:
    # NOTE: CPython's own SHA-256 (the same digest), not hashlib's: importing hashlib loads
    # OpenSSL, 3.6 MB of the ~20 MB a whole `microgpt train` of the names takes
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python <= 3.11
        except ImportError:  # another Python
            from hashlib import sha256
    return sha256(data).hexdigest()


def default_names_path(download: bool = True) -> Path:
    """The cached names.txt, downloading (and verifying) it first if needed."""
    path = cache_dir() / "names.txt"
    if path.is_file():
        if sha256_bytes(path.read_bytes()) != NAMES_SHA256:
            raise DataError(
                f"{path} is not the names dataset (sha256 mismatch); delete it or pass --data FILE"
            )
        return path
    if not download:
        raise DataError(f"no cached names dataset at {path}; pass --data FILE")
    import urllib.request  # NOTE: here, not at the top: it loads ssl (6 MB, 20 ms) every run

    try:
        with urllib.request.urlopen(NAMES_URL, timeout=30) as response:
            blob = response.read()
    except OSError as e:
        raise DataError(
            f"could not download the names dataset ({e.__class__.__name__}); pass a local file "
            f"with --data FILE, or set {CACHE_ENV} to a directory holding names.txt"
        ) from None
    if sha256_bytes(blob) != NAMES_SHA256:
        raise DataError("the downloaded names dataset failed its sha256 check; pass --data FILE")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".names.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return path


def read_text(path: str | os.PathLike) -> tuple[str, str]:
    """Read a UTF-8 text file; return (text, sha256 of its bytes). Errors say what to do."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; check the path given to --data")
    if p.is_dir():
        raise DataError(f"data path {str(p)!r} is a directory; pass a text file")
    try:
        blob = p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read data file {str(p)!r}: {e.strerror}") from None
    if b"\x00" in blob:
        raise DataError(f"data file {str(p)!r} looks binary (it holds NUL bytes); pass UTF-8 text")
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {str(p)!r} is not valid UTF-8 (byte {e.start}); convert it to UTF-8"
        ) from None
    return text, sha256_bytes(blob)


def split_lines(text: str) -> list[str]:
    """The original's documents: the non-empty stripped lines of the file."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as open()'s universal newlines
    return [line.strip() for line in text.strip().split("\n") if line.strip()]




def split_paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks (e.g. tinyshakespeare's speeches), inner newlines kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks, current = [], []
    for line in text.split("\n"):
        if line.strip():
            current.append(line.rstrip())
        elif current:
            blocks.append("\n".join(current).strip())
            current = []
    if current:
        blocks.append("\n".join(current).strip())
    return [b for b in blocks if b]


def split_documents(text: str, mode: str = "lines") -> list[str]:
    """The documents of a text: `lines` (the original's), `paragraphs`, or the whole `text`."""
    if mode == "lines":
        return split_lines(text)
    if mode == "paragraphs":
        return split_paragraphs(text)
    if mode == "text":
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return [text] if text.strip() else []
    raise DataError(f"unknown document mode {mode!r}; choose one of {', '.join(DOC_MODES)}")


def load_docs(
    path: str | os.PathLike, rng: random.Random, mode: str = "lines"
) -> tuple[list[str], str]:
    """Documents of a file, shuffled with `rng` (the run's first draw); and the file's sha256."""
    text, digest = read_text(path)
    docs = split_documents(text, mode)
    if not docs:
        raise DataError(f"data file {str(path)!r} holds no documents (empty or only whitespace)")
    rng.shuffle(docs)
    return docs, digest


def split_validation(docs: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Hold out `fraction` of the (already shuffled, so seed-chosen) documents: (train, val).

    The held-out documents are the last ones of the shuffled list, so the split costs no
    random draws and a run without validation is unchanged. A single document (`--doc-mode
    text`) is split by characters instead: its last `fraction` becomes the validation text.
    """
    if fraction == 0:
        return docs, []
    if len(docs) == 1:
        text = docs[0]
        n_val = int(len(text) * fraction)
        if n_val < 1 or n_val >= len(text):
            raise DataError(
                f"--val-fraction {fraction} leaves no text for training or validation "
                f"({len(text)} characters); use more text or another fraction"
            )
        return [text[:-n_val]], [text[-n_val:]]
    n_val = max(1, round(len(docs) * fraction))
    if n_val >= len(docs):
        raise DataError(
            f"--val-fraction {fraction} holds out all {len(docs)} documents; lower it "
            "or use more data"
        )
    return docs[:-n_val], docs[-n_val:]

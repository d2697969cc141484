"""The dataset: the documents of a UTF-8 text file, read as a stream into compact arrays.
Standard library only.

Without a file, the original's dataset (32,033 names from the makemore repository) is
downloaded once, checked against its sha256 and cached. Offline machines point
MICROGPT_CACHE_DIR at a directory that already holds names.txt.

A file is read 64 KiB at a time: hashed (sha256), decoded, split into documents, and
each document's characters appended to one array of code points (`Documents`). No document
is kept as a Python string, so the text costs 1 byte per character in memory (2 if it has
characters past U+00FF, 4 past U+FFFF), plus 8 bytes per document (where it ends, and its
place in the shuffled order); a file of names, about 7 characters each, costs about 2.1
bytes per character. Only a regular file is read (a FIFO would block, /dev/zero never
ends), and a memory budget, when given, is checked as the arrays grow.

>>> docs = Documents.from_strings(["emma", "ava"])
>>> len(docs), docs[1], list(docs)
(2, 'ava', ['emma', 'ava'])
"""

from __future__ import annotations

import bisect
import codecs
import os
import random
import stat
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from pathlib import Path

from . import files
from .config import DOC_MODES  # lines, paragraphs, text
from .resources import size

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/refs/heads/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
CACHE_ENV = "MICROGPT_CACHE_DIR"
READ_BYTES = 1 << 16  # read (and decode, and split) a file 64 KiB at a time (NOTE: a chunk's
# documents are Python strings while it is split: 1 MiB chunks made 1.5 MB of the default
# run's peak memory; and 64 KiB ones read a 300 MB file in 10 s, against 12.5-14 s)
DATA_HINT = "check the path given to --data"  # what to do about a data file we cannot read


class DataError(Exception):
    """A dataset that cannot be used; the message says what to do."""


def cache_dir() -> Path:
    """Where the names dataset is cached: $MICROGPT_CACHE_DIR, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microgpt"


def sha256_hasher():
    """A new SHA-256 hash object.

    NOTE: CPython's own SHA-256 (the same digest), not hashlib's: importing hashlib loads
    OpenSSL, 3.6 MB of the ~20 MB a whole `microgpt train` of the names takes."""
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python <= 3.11
        except ImportError:  # another Python
            from hashlib import sha256
    return sha256()


def sha256_bytes(data: bytes) -> str:
    digest = sha256_hasher()
    digest.update(data)
    return digest.hexdigest()


def default_names_path(download: bool = True) -> Path:
    """The cached names.txt, downloading (and verifying) it first if needed."""
    path = cache_dir() / "names.txt"
    if path.is_file():
        if read_text(path)[1] != NAMES_SHA256:
            raise DataError(
                f"{path} is not the names dataset (sha256 mismatch); delete it or pass --data FILE"
            )
        return path
    if not download:
        raise DataError(f"no cached names dataset at {path}; pass --data FILE")
    import urllib.request  # NOTE: here, not at the top: it loads ssl (6 MB, 20 ms) every run

    try:
        with urllib.request.urlopen(NAMES_URL, timeout=30) as response:
            blob = response.read(1 << 20)  # the dataset is 228 KB; nothing larger is it
    except OSError as e:
        raise DataError(
            f"could not download the names dataset ({e.__class__.__name__}); pass a local file "
            f"with --data FILE, or set {CACHE_ENV} to a directory holding names.txt"
        ) from None
    if sha256_bytes(blob) != NAMES_SHA256:
        raise DataError("the downloaded names dataset failed its sha256 check; pass --data FILE")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise files.write_error(path.parent, e) from None
    files.write_atomic(path, blob)
    return path


# --- reading a file as a stream ---------------------------------------------------------------


def check_data_file(path: str | os.PathLike, hint: str = DATA_HINT) -> os.stat_result:
    """stat (never open) `path` and refuse what is not a readable regular file."""
    name = str(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"data file name {name!r} is not valid UTF-8 (the run records it); rename the file"
        ) from None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"data file {name!r} does not exist; {hint}") from None
    except OSError as e:
        raise DataError(f"cannot read data file {name!r}: {files.describe(e)}; {hint}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"data path {name!r} is a directory; pass a text file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(
            f"data path {name!r} is not a regular file (a pipe, device or socket); pass a text "
            "file"
        )
    return st


class TextStream:
    """The text of a regular file, decoded 64 KiB at a time (`chunks`); `sha256` is the
    digest of its bytes once they have all been read.

    Newlines are made universal as open() makes them ("\\r\\n" and "\\r" become "\\n"), and a
    UTF-8 byte-order mark at the start is dropped: it marks the encoding, it is not text.
    """

    def __init__(self, path: str | os.PathLike, hint: str = DATA_HINT):
        self.path = path
        self.name = str(path)
        self.size = check_data_file(path, hint).st_size
        self.sha256: str | None = None

    def _read(self) -> Iterator[bytes]:
        try:
            # O_NONBLOCK: should the path have become a FIFO since the stat, open() must
            # not wait for a writer; fstat then refuses it
            fd = os.open(self.path, os.O_RDONLY | files.NONBLOCK | files.CLOEXEC | files.BINARY)
        except OSError as e:
            raise DataError(f"cannot read data file {self.name!r}: {files.describe(e)}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DataError(f"data path {self.name!r} is not a regular file; pass a text file")
            while True:
                try:
                    blob = os.read(fd, READ_BYTES)
                except OSError as e:
                    raise DataError(
                        f"cannot read data file {self.name!r}: {files.describe(e)}"
                    ) from None
                if not blob:
                    return
                yield blob
        finally:
            os.close(fd)

    def chunks(self) -> Iterator[str]:
        digest, decoder = sha256_hasher(), codecs.getincrementaldecoder("utf-8")()
        offset, first, cr = 0, True, False
        for blob in self._read():
            digest.update(blob)
            if b"\x00" in blob:
                raise DataError(
                    f"data file {self.name!r} looks binary (it holds NUL bytes); pass UTF-8 text"
                )
            text = self._decode(decoder, blob, offset)
            offset += len(blob)
            if first and text:
                first = False
                if text.startswith("\ufeff"):  # the byte-order mark
                    text = text[1:]
            if cr:
                text = "\r" + text
            cr = text.endswith("\r")  # its "\n" may open the next chunk
            if cr:
                text = text[:-1]
            yield text.replace("\r\n", "\n").replace("\r", "\n")
        self._decode(decoder, b"", offset, final=True)
        if cr:
            yield "\n"
        self.sha256 = digest.hexdigest()

    def _decode(self, decoder, blob: bytes, offset: int, final: bool = False) -> str:
        held = len(decoder.getstate()[0])  # bytes of a character cut by the last read
        try:
            return decoder.decode(blob, final)
        except UnicodeDecodeError as e:
            raise DataError(
                f"data file {self.name!r} is not valid UTF-8 (byte {offset - held + e.start}); "
                "convert it to UTF-8"
            ) from None


def read_text(path: str | os.PathLike, hint: str = DATA_HINT) -> tuple[str, str]:
    """A whole (small) UTF-8 text file: (text, sha256 of its bytes). Errors say what to do."""
    stream = TextStream(path, hint)
    text = "".join(stream.chunks())
    return text, stream.sha256


# --- documents --------------------------------------------------------------------------------

CODECS = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}  # code point width -> its encoding
TYPECODES = {1: "B", 2: "H", 4: "I"}


class Documents(Sequence):
    """Documents held compactly, a sequence of str to its users.

    `chars` holds every stored document's code points one after another (typecode B, H or
    I: the narrowest that holds the text), `bounds[i]:bounds[i + 1]` is document i's slice
    of it, and `order` says which stored documents this collection has, in which order (a
    shuffle shuffles `order`; a split slices it; the characters are never copied).
    """

    def __init__(self, chars: array, bounds: array, charset: frozenset,
                 order: Sequence[int] | None = None):  # fmt: skip
        self.chars = chars
        self.width = chars.itemsize
        self.bounds = bounds
        self.charset = charset  # every character of every stored document
        self.order = range(len(bounds) - 1) if order is None else order

    @classmethod
    def from_strings(cls, docs: Iterable[str]) -> Documents:
        builder = _Builder()
        builder.add(list(docs))
        return builder.documents()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Documents(self.chars, self.bounds, self.charset, self.order[i])
        return self.text(self.order[i])

    def __iter__(self) -> Iterator[str]:
        for k in self.order:
            yield self.text(k)

    def __repr__(self) -> str:
        return f"<Documents: {len(self)} of {len(self.bounds) - 1} stored>"

    @property
    def stored(self) -> int:
        return len(self.bounds) - 1

    def text(self, k: int) -> str:
        """Stored document k as a string."""
        return self.chars[self.bounds[k] : self.bounds[k + 1]].tobytes().decode(CODECS[self.width])

    def length(self, i: int) -> int:
        """Characters of the i-th document."""
        k = self.order[i]
        return self.bounds[k + 1] - self.bounds[k]

    def tokens(self, i: int, lo: int, hi: int, ids: dict[int, int], bos: int) -> list[int]:
        """Tokens lo..hi-1 of the i-th document's [BOS] + doc + [BOS] (`ids`: code point to
        token id), made from its code points: the whole sequence is never built."""
        k = self.order[i]
        start, n = self.bounds[k], self.bounds[k + 1] - self.bounds[k]
        a, b = max(lo, 1) - 1, min(hi, n + 1) - 1  # the characters of positions lo..hi-1
        out = [ids[c] for c in self.chars[start + a : start + max(a, b)]]
        if lo == 0:
            out.insert(0, bos)
        if hi >= n + 2:
            out.append(bos)
        return out

    def blocks(self, chars: int = 1 << 20) -> Iterator[list[str]]:
        """This collection's documents as strings, a list per block of about `chars`
        characters, in the order they are stored (for what does not care about order, such
        as the fingerprint: a block is decoded at once, not document by document)."""
        keep = None
        if len(self.order) != self.stored:  # a part of the store: which documents are ours
            keep = bytearray(self.stored)
            for k in self.order:
                keep[k] = 1
        codec, bounds, k = CODECS[self.width], self.bounds, 0
        while k < self.stored:
            end = min(max(bisect.bisect_left(bounds, bounds[k] + chars, k + 1), k + 1), self.stored)
            base, ends = bounds[k], bounds[k : end + 1]
            text = self.chars[base : bounds[end]].tobytes().decode(codec)
            if keep is None:
                yield [text[a - base : b - base] for a, b in zip(ends, ends[1:])]
            else:
                yield [text[a - base : b - base]
                       for a, b, kept in zip(ends, ends[1:], keep[k:end]) if kept]  # fmt: skip
            k = end

    def shuffled(self, rng: random.Random) -> Documents:
        """The documents in the order of `rng.shuffle`: the same draws, hence the same
        permutation, as shuffling the list of the documents' strings."""
        order = array("I" if self.stored < 2**32 else "Q", self.order)
        rng.shuffle(order)
        # a memoryview: the train and validation views slice it without a copy
        return Documents(self.chars, self.bounds, self.charset, memoryview(order))

    def split_characters(self, n_val: int) -> tuple[Documents, Documents]:
        """The one document's first characters and its last `n_val` ones, as two documents."""
        start, end = self.bounds[self.order[0]], self.bounds[self.order[0] + 1]
        bounds = array(self.bounds.typecode, [start, end - n_val, end])
        return (Documents(self.chars, bounds, self.charset, range(0, 1)),
                Documents(self.chars, bounds, self.charset, range(1, 2)))  # fmt: skip

    @property
    def nbytes(self) -> int:
        """The memory of the arrays (the characters and bounds are shared by every view)."""
        order = self.order.nbytes if isinstance(self.order, memoryview) else 0
        stored = self.chars.itemsize * len(self.chars) + self.bounds.itemsize * len(self.bounds)
        return stored + order


def characters(*collections: Sequence[str]) -> set[str]:
    """Every character of the given documents. Views that share one store and hold all of
    its documents between them (a train/validation split) use the store's set."""
    collections = [c for c in collections if len(c)]
    stores = {id(c.chars) for c in collections if isinstance(c, Documents)}
    if len(stores) == 1 and all(isinstance(c, Documents) for c in collections):
        first = collections[0]
        if sum(len(c) for c in collections) == first.stored:
            return set(first.charset)
    out: set[str] = set()
    for c in collections:
        for doc in c:
            out.update(doc)
    return out


class _Builder:
    """Appends documents' characters to growing arrays, widening them when a character
    needs it, and refusing to grow past `budget` bytes (None: no limit)."""

    def __init__(self, budget: int | None = None, name: str = "", size: int = 0):
        self.chars = array("B")
        self.bounds = array("I", [0])
        self.charset: set[str] = set()
        self.budget, self.name, self.size = budget, name, size
        self.read = 0  # bytes of the file read so far (for the estimate in the refusal)

    def _encode(self, text: str) -> bytes:
        width = self.chars.itemsize
        if width == 1:
            try:
                return text.encode("latin-1")
            except UnicodeEncodeError:
                self._widen(2)
                return self._encode(text)
        blob = text.encode(CODECS[width])
        if len(blob) != width * len(text):  # a character past U+FFFF became two in UTF-16
            self._widen(4)
            return self._encode(text)
        return blob

    def _widen(self, width: int) -> None:
        old, codec = self.chars, CODECS[self.chars.itemsize]
        new = array(TYPECODES[width])
        step = 1 << 22
        for i in range(0, len(old), step):
            new.frombytes(old[i : i + step].tobytes().decode(codec).encode(CODECS[width]))
        self.chars = new
        self._check()

    def add(self, docs: list[str]) -> None:
        """Whole documents."""
        if not docs:
            return
        joined = "".join(docs)
        self.charset.update(joined)
        blob = self._encode(joined)  # first: it may replace self.chars by a wider array
        self.chars.frombytes(blob)
        base = self.bounds[-1]
        if base + len(joined) >= 2**32 and self.bounds.typecode == "I":
            self.bounds = array("Q", self.bounds)
        self.bounds.extend(islice(accumulate(map(len, docs), initial=base), 1, None))
        self._check()

    def add_piece(self, text: str) -> None:
        """More characters of the document not yet ended (--doc-mode text)."""
        self.charset.update(text)
        blob = self._encode(text)
        self.chars.frombytes(blob)
        self._check()

    def end_document(self) -> None:
        if len(self.chars) >= 2**32 and self.bounds.typecode == "I":
            self.bounds = array("Q", self.bounds)
        self.bounds.append(len(self.chars))

    def _check(self) -> None:
        if self.budget is None:
            return
        used = self.chars.itemsize * len(self.chars) + self.bounds.itemsize * len(self.bounds)
        used += 4 * (len(self.bounds) - 1)  # the shuffled order to come
        if used > self.budget:
            whole = used * self.size // max(self.read, 1)
            raise DataError(
                f"data file {self.name!r} needs about {size(whole)} of memory for its documents "
                f"and {size(self.budget)} is free for them; use a smaller file (or free memory)"
            )

    def documents(self) -> Documents:
        return Documents(self.chars, self.bounds, frozenset(self.charset))


# --- splitting text into documents ------------------------------------------------------------


def _lines_of(chunks: Iterable[str]) -> Iterator[list[str]]:
    """The "\\n"-separated lines of the text, a list per chunk (a line cut by a chunk's end
    is completed by the next; the last line, possibly empty, comes last)."""
    pending: list[str] = []  # pieces of a line longer than a chunk: joined once, at its end
    for text in chunks:
        parts = text.split("\n")
        if len(parts) == 1:
            pending.append(text)
            continue
        if pending:
            pending.append(parts[0])
            parts[0] = "".join(pending)
        pending = [parts.pop()]
        yield parts
    yield ["".join(pending)]


def _split_paragraphs(chunks: Iterable[str]) -> Iterator[list[str]]:
    """Blank-line separated blocks (e.g. tinyshakespeare's speeches), inner newlines kept,
    each line's trailing whitespace removed."""
    current: list[str] = []
    for lines in _lines_of(chunks):
        blocks = []
        for line in lines:
            if line.strip():
                current.append(line.rstrip())
            elif current:
                blocks.append("\n".join(current).strip())
                current = []
        yield [b for b in blocks if b]
    if current:
        yield [b for b in ["\n".join(current).strip()] if b]


def _split_lines(chunks: Iterable[str]) -> Iterator[list[str]]:
    """The original's documents: the non-empty stripped lines."""
    for lines in _lines_of(chunks):
        yield list(filter(None, map(str.strip, lines)))  # C loops: tens of millions of lines


def load_docs(
    path: str | os.PathLike,
    rng: random.Random,
    mode: str = "lines",
    hint: str = DATA_HINT,
    budget: int | None = None,
) -> tuple[Documents, str]:
    """Documents of a file, shuffled with `rng` (the run's first draw); and the file's sha256."""
    docs, digest = read_documents(path, mode, hint, budget)
    return docs.shuffled(rng), digest


def _fill(builder: _Builder, chunks: Iterable[str], mode: str) -> None:
    if mode == "text":  # one document, the whole text (unless it is all whitespace)
        blank = True
        for text in chunks:
            blank = blank and not text.strip()
            builder.add_piece(text)
        if not blank:
            builder.end_document()
        return
    split = {"lines": _split_lines, "paragraphs": _split_paragraphs}.get(mode)
    if split is None:
        raise DataError(f"unknown document mode {mode!r}; choose one of {', '.join(DOC_MODES)}")
    for docs in split(chunks):
        builder.add(docs)


def split_documents(text: str, mode: str = "lines") -> list[str]:
    """The documents of a text: `lines` (the original's), `paragraphs`, or the whole `text`,
    with universal newlines (as files are read)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if mode == "text":
        return [text] if text.strip() else []
    if mode == "lines":
        return [d for docs in _split_lines([text]) for d in docs]
    if mode == "paragraphs":
        return [d for docs in _split_paragraphs([text]) for d in docs]
    raise DataError(f"unknown document mode {mode!r}; choose one of {', '.join(DOC_MODES)}")


def split_lines(text: str) -> list[str]:
    return split_documents(text, "lines")


def split_paragraphs(text: str) -> list[str]:
    return split_documents(text, "paragraphs")


def read_documents(
    path: str | os.PathLike, mode: str = "lines", hint: str = DATA_HINT, budget: int | None = None
) -> tuple[Documents, str]:
    """The documents of a file in file order, and the file's sha256. `budget`: the bytes the
    documents may take; a file that needs more is refused as soon as that is clear."""
    if mode not in DOC_MODES:
        raise DataError(f"unknown document mode {mode!r}; choose one of {', '.join(DOC_MODES)}")
    stream = TextStream(path, hint)
    builder = _Builder(budget, stream.name, stream.size)

    def counted() -> Iterator[str]:
        for text in stream.chunks():
            builder.read += READ_BYTES
            yield text

    _fill(builder, counted(), mode)
    docs = builder.documents()
    if not len(docs):
        raise DataError(f"data file {stream.name!r} holds no documents (empty or only whitespace)")
    return docs, stream.sha256


def split_validation(docs: Sequence[str], fraction: float) -> tuple[Sequence[str], Sequence[str]]:
    """Hold out `fraction` of the (already shuffled, so seed-chosen) documents: (train, val).

    The held-out documents are the last ones of the shuffled list, so the split costs no
    random draws and a run without validation is unchanged. A single document (`--doc-mode
    text`) is split by characters instead: its last `fraction` becomes the validation text.
    """
    if fraction == 0:
        return docs, docs[:0]
    if len(docs) == 1:
        n = docs.length(0) if isinstance(docs, Documents) else len(docs[0])
        n_val = int(n * fraction)
        if n_val < 1 or n_val >= n:
            raise DataError(
                f"--val-fraction {fraction} leaves no text for training or validation "
                f"({n} characters); use more text or another fraction"
            )
        if isinstance(docs, Documents):
            return docs.split_characters(n_val)
        return [docs[0][:-n_val]], [docs[0][-n_val:]]
    n_val = max(1, round(len(docs) * fraction))
    if n_val >= len(docs):
        raise DataError(
            f"--val-fraction {fraction} holds out all {len(docs)} documents; lower it "
            "or use more data"
        )
    return docs[:-n_val], docs[-n_val:]

"""`shareprice import`: real epoch documents from files into `epochs`, idempotently.

Files hold a JSON array of documents (the real samples: the flat export, and the storage dump
as a one-element list), NDJSON (one document per line), or a single document; a directory means
every *.json / *.ndjson / *.jsonl file under it. Either format, mixed freely.

Why it works the way it does:
- Streaming: a JSON array is split into its elements by a tokenizer that only tracks strings and
  brackets (a regex finds whole strings in C), so a multi-gigabyte export is never held whole;
  each element's original text is validated by the parser and stored as is (no re-serializing).
- Every document is parsed before anything is written for it; a ParseError is recorded with its
  source (file and index or line) and the next document goes on.
- Idempotent by content: an epoch already stored with equal JSON (jsonb equality, so key order
  and whitespace do not matter) is skipped and counted; a *different* document for a stored
  epoch is a conflict, reported and left alone unless `replace=True`. Nothing is ever deleted.
- Batches go through COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING
  and, for the rest, one comparison query: three statements per batch, not three per document.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.engine import Engine

from shareprice.chain.parser import ParseError, load_json, parse_document
from shareprice.errors import ShareError, error_line

__all__ = ["ImportSummary", "JsonStreamError", "import_paths", "iter_documents_in_file"]

SUFFIXES = (".json", ".ndjson", ".jsonl")
_CHUNK = 8 << 20
_BATCH_DOCS = 500
_BATCH_BYTES = 64 << 20


@dataclass
class ImportSummary:
    files: int = 0
    read: int = 0
    inserted: int = 0
    identical: int = 0
    conflicting: list[int] = field(default_factory=list)  # epochs left as they were
    replaced: list[int] = field(default_factory=list)  # epochs overwritten (replace=True)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    @property
    def ok(self) -> bool:
        """Nothing needs a person's attention: no invalid input, no unresolved conflict."""
        return not self.invalid and not self.conflicting

    def as_dict(self) -> dict:
        return {
            "files": self.files,
            "read": self.read,
            "inserted": self.inserted,
            "identical_skipped": self.identical,
            "conflicting": len(self.conflicting),
            "replaced": len(self.replaced),
            "invalid": len(self.invalid),
        }


class JsonStreamError(ShareError, ValueError):
    """The file's JSON is broken where its documents cannot be told apart any more."""


# --- reading files ---------------------------------------------------------------------------------

# A whole JSON string (or one running to the end of the buffer: then `close` is None), or a
# bracket. Strings are matched whole, so brackets inside them are never seen as structure.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(?P<close>")|\\?\Z)|[\[\]{}]', re.DOTALL)
# A scalar array element (a string, number, true/false/null): invalid as a document, but it must
# be delimited to report it and go on.
_SCALAR = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[^,\]\s"]+', re.DOTALL)
_SPACE = b" \t\r\n"


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return files


def iter_documents_in_file(path: Path) -> Iterator[tuple[str, bytes | JsonStreamError]]:
    """(source label, raw document bytes) per document in the file; a JsonStreamError in place
    of bytes when the rest of the file cannot be read (it is the last item then)."""
    with path.open("rb") as fp:
        head = fp.read(1 << 16)
        fp.seek(0)
        start = head.lstrip(b"\xef\xbb\xbf" + _SPACE)[:1]
        if start == b"[":
            yield from _array_documents(fp, str(path))
            return
        yield from _object_or_lines(fp, str(path))


def _object_or_lines(fp: BinaryIO, label: str) -> Iterator[tuple[str, bytes | JsonStreamError]]:
    """NDJSON when the first non-blank line is a whole JSON value; else one document."""
    first = None
    for line in fp:
        if line.strip():
            first = line
            break
    if first is None:
        return
    try:
        load_json(first)
        is_lines = True
    except ParseError:
        is_lines = False
    fp.seek(0)
    if not is_lines:
        data = fp.read()
        try:
            load_json(data)
        except ParseError:
            if data.count(b"\n") > 1:  # NDJSON whose first line is broken: go line by line
                is_lines = True
                fp.seek(0)
        if not is_lines:
            yield label, data
            return
    for number, line in enumerate(fp, start=1):
        if line.strip():
            yield f"{label}:line {number}", line


def _array_documents(fp: BinaryIO, label: str) -> Iterator[tuple[str, bytes | JsonStreamError]]:
    reader = _ArrayReader(fp)
    index = 0
    try:
        for element in reader.elements():
            yield f"{label}[{index}]", element
            index += 1
    except JsonStreamError as exc:
        yield f"{label}[{index}]", exc


class _ArrayReader:
    """Splits a top-level JSON array into its elements' bytes, reading fixed-size chunks."""

    def __init__(self, fp: BinaryIO, chunk_size: int = _CHUNK) -> None:
        self.fp = fp
        self.chunk_size = chunk_size
        self.buf = b""
        self.pos = 0
        self.offset = 0  # file offset of buf[0]
        self.eof = False

    def _fill(self) -> bool:
        """Read more; keep the buffer from self.pos on. False at end of file."""
        if self.eof:
            return False
        chunk = self.fp.read(self.chunk_size)
        self.offset += self.pos
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        if not chunk:
            self.eof = True
        return bool(chunk)

    def _skip_space(self) -> bytes:
        """The next non-space byte (not consumed), or b'' at end of file."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _SPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos : self.pos + 1]
            if not self._fill():
                return b""

    def _error(self, message: str) -> JsonStreamError:
        return JsonStreamError(f"invalid JSON at byte {self.offset + self.pos}: {message}")

    def elements(self) -> Iterator[bytes]:
        self._fill()
        if self.buf.startswith(b"\xef\xbb\xbf"):
            self.pos = 3
        if self._skip_space() != b"[":
            raise self._error("expected '['")
        self.pos += 1
        if self._skip_space() == b"]":
            self.pos += 1
        else:
            while True:
                yield self._element()
                nxt = self._skip_space()
                if nxt == b",":
                    self.pos += 1
                    continue
                if nxt == b"]":
                    self.pos += 1
                    break
                raise self._error(
                    "truncated (no closing ']')" if not nxt else f"expected ',' or ']', got {nxt!r}"
                )
        if self._skip_space():
            raise self._error("data after the closing ']'")

    def _element(self) -> bytes:
        first = self._skip_space()
        if not first:
            raise self._error("truncated (expected a value)")
        start = self.pos
        if first in b"{[":
            depth = 0
            scan = start
            while True:
                for match in _TOKEN.finditer(self.buf, scan):
                    token = match.group()
                    if token[0] == 0x22:  # '"'
                        if match.group("close") is None:  # string runs past the buffer
                            scan = match.start()
                            break
                        continue
                    depth += 1 if token in b"{[" else -1
                    if depth == 0:
                        self.pos = match.end()
                        return self.buf[start : self.pos]
                else:
                    scan = len(self.buf)
                # Need more bytes: keep everything from the element's start.
                keep = start
                self.pos = start
                if not self._fill():
                    raise self._error("truncated (the last document does not end)")
                scan -= keep
                start = 0
        # A scalar element (not a document, the parser will say so): up to ',' ']' or space.
        while True:
            scalar = _SCALAR.match(self.buf, start)
            if scalar is not None and scalar.end() < len(self.buf):
                self.pos = scalar.end()
                return self.buf[start : self.pos]
            self.pos = start
            if not self._fill():
                if match is not None:
                    self.pos = match.end()
                    return self.buf[: self.pos]
                raise self._error("truncated")
            start = 0


# --- writing ----------------------------------------------------------------------------------------

_STAGE = """
CREATE TEMPORARY TABLE IF NOT EXISTS import_stage (
    epoch      INTEGER PRIMARY KEY,
    end_block  BIGINT,
    end_hash   TEXT,
    indexed_at TIMESTAMPTZ,
    data       JSONB NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY_STAGE = "COPY import_stage (epoch, end_block, end_hash, indexed_at, data) FROM STDIN"
# New epochs in, existing ones untouched (ON CONFLICT also covers a concurrent importer).
_INSERT_NEW = """
INSERT INTO epochs (epoch, end_block, end_hash, indexed_at, data)
SELECT epoch, end_block, end_hash, indexed_at, data FROM import_stage
ON CONFLICT (epoch) DO NOTHING
RETURNING epoch
"""
# Of the staged epochs that were already stored, which differ (jsonb equality: content, not
# text). Locked so a concurrent --replace cannot slip between compare and report.
_DIFFERENT = """
SELECT s.epoch
  FROM import_stage s JOIN epochs e USING (epoch)
 WHERE e.data IS DISTINCT FROM s.data
 ORDER BY s.epoch
   FOR UPDATE OF e
"""
_REPLACE = """
UPDATE epochs e
   SET data = s.data, end_block = s.end_block, end_hash = s.end_hash, indexed_at = s.indexed_at
  FROM import_stage s
 WHERE e.epoch = s.epoch AND e.data IS DISTINCT FROM s.data
RETURNING e.epoch
"""


@dataclass
class _Staged:
    source: str
    epoch: int
    end_block: int | None
    end_hash: str | None
    indexed_at: dt.datetime | None
    text: str


def import_paths(
    engine: Engine,
    paths: Iterable[str | Path],
    replace: bool = False,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Import every document in `paths`; see the module docstring for the rules."""
    files = expand_paths(paths)
    summary = ImportSummary(files=len(files))
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None  # an open pool connection always has its driver connection
        conn.execute(_STAGE)
        conn.commit()
        batch: dict[int, _Staged] = {}
        size = 0
        for path in files:
            for source, data in iter_documents_in_file(path):
                if isinstance(data, JsonStreamError):
                    summary.invalid.append((source, f"{data} (rest of file skipped)"))
                    continue
                summary.read += 1
                try:
                    record = parse_document(data)
                except ParseError as exc:
                    summary.invalid.append((source, str(exc)))
                    continue
                if record.epoch in batch:  # the same epoch twice: compare with the first
                    _flush(conn, batch, replace, summary)
                    batch, size = {}, 0
                indexed_at = (
                    dt.datetime.fromtimestamp(record.indexed_at_ms / 1000, tz=dt.UTC)
                    if record.indexed_at_ms is not None
                    else None
                )
                text = _document_text(data)
                batch[record.epoch] = _Staged(
                    source, record.epoch, record.end_block, record.end_hash, indexed_at, text
                )
                size += len(text)
                if len(batch) >= _BATCH_DOCS or size >= _BATCH_BYTES:
                    _flush(conn, batch, replace, summary)
                    batch, size = {}, 0
                    if progress is not None:
                        progress(summary)
        if batch:
            _flush(conn, batch, replace, summary)
    finally:
        raw.close()
    return summary


def _document_text(data: bytes) -> str:
    """The document's own JSON text; the storage dump's one-element list is unwrapped."""
    text = data.decode("utf-8").strip()
    if text.startswith("["):  # parse_document accepted it, so it is a one-element list
        return text[1:-1].strip()
    return text


def _flush(conn, batch: dict[int, _Staged], replace: bool, summary: ImportSummary) -> None:
    try:
        _write(conn, list(batch.values()), replace, summary)
    except Exception as exc:  # e.g. PostgreSQL refusing a string with \u0000 in jsonb
        conn.rollback()
        if len(batch) == 1:
            (staged,) = batch.values()
            reason = error_line(exc)
            summary.invalid.append(
                (staged.source, f"epoch {staged.epoch}: rejected by PostgreSQL: {reason}")
            )
            return
        for staged in batch.values():  # find the culprit, keep the rest
            _flush(conn, {staged.epoch: staged}, replace, summary)


def _write(conn, staged: list[_Staged], replace: bool, summary: ImportSummary) -> None:
    with conn.cursor() as cur:
        with cur.copy(_COPY_STAGE) as copy:
            for s in staged:
                copy.write_row((s.epoch, s.end_block, s.end_hash, s.indexed_at, s.text))
        inserted = {row[0] for row in cur.execute(_INSERT_NEW).fetchall()}
        different = [row[0] for row in cur.execute(_DIFFERENT).fetchall()]
        replaced = [row[0] for row in cur.execute(_REPLACE).fetchall()] if replace else []
    conn.commit()
    summary.inserted += len(inserted)
    summary.identical += len(staged) - len(inserted) - len(different)
    if replace:
        summary.replaced += replaced
    else:
        summary.conflicting += different

"""Durable, resumable score output: part files beside the output, merged at the end.

    store = ScoreStore(["scores.csv"])          # or .parquet targets, or both
    todo = store.todo(paths)                    # the paths that have no row yet
    for table in results:                       # pyarrow tables: path, score, label, error
        store.add(table)                        # buffered; flushed to a part file
    failed = store.finish(paths)                # one row per path, in the order of paths

Rows are flushed as Parquet part files into ``<first target>.afiqa-parts/``, each written
under a temporary name and renamed into place, so a run killed at any moment keeps every
part it flushed and never leaves half a part. A rerun with the same targets reads the
parts and the finished targets (an earlier complete run) and scores only the paths that
have no row; a path with an error keeps its error. ``finish`` writes each target through
a temporary file renamed into place, then removes the parts folder.

A target that exists and is not an afiqa output (its first columns are not
``path,score,label,error``) is never written over.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from afiqa.io.csvout import CSV_COLUMNS, FORMULA_STARTS, write_scores
from afiqa.errors import AfiqaError

PARTS_SUFFIX = ".afiqa-parts"


def schema():
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("score", pa.float64()), ("label", pa.string()), ("error", pa.string()),
                      ("uncertainty", pa.float64()), ("problem", pa.string())])


OLD_COLUMNS = CSV_COLUMNS[:4]  # what afiqa wrote before uncertainty and problem: still read as an earlier run


class ScoreStore:
    """The rows scored so far for ``targets`` (.csv and/or .parquet files)."""

    def __init__(self, targets, flush_rows: int = 4096, flush_seconds: float = 5.0):
        self.targets = [Path(t) for t in targets]
        if not self.targets:
            raise AfiqaError("no output given: name a .csv or .parquet file")
        for t in self.targets:
            _check_target(t)
        self.parts = self.targets[0].with_name(self.targets[0].name + PARTS_SUFFIX)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self._buffer: list = []
        self._buffered = 0
        self._last_flush = float("-inf")  # the first rows are flushed as soon as they come
        self._rows = self._read_existing()  # path -> (score, label, error, uncertainty, problem)

    # -- reading ------------------------------------------------------------------------
    @property
    def done(self) -> int:
        return len(self._rows)

    def todo(self, paths) -> list[str]:
        """``paths`` that have no row yet, in their order."""
        return [p for p in paths if p not in self._rows]

    def _read_existing(self) -> dict:
        rows: dict = {}
        for t in self.targets:  # a finished earlier run
            if t.exists():
                _merge_rows(rows, _read_target(t))
        if self.parts.is_dir():  # an interrupted one: its parts
            import pyarrow.parquet as pq

            for f in sorted(self.parts.glob("*.parquet")):
                try:
                    _merge_rows(rows, pq.read_table(f, schema=schema()))
                except Exception:  # an unreadable part is rescored, never trusted
                    continue
        return rows

    # -- writing ------------------------------------------------------------------------
    def add(self, table) -> None:
        """Rows of one scored batch (a pyarrow table with the columns of ``CSV_COLUMNS``)."""
        table = table.select(list(CSV_COLUMNS)).cast(schema())
        _merge_rows(self._rows, table)
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.flush_rows or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part file (temporary name, renamed into place)."""
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.parts.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.parts / ("." + name + ".tmp")
        pq.write_table(pa.concat_tables(self._buffer), tmp)
        os.replace(tmp, self.parts / name)
        self._buffer, self._buffered, self._last_flush = [], 0, time.monotonic()

    def finish(self, paths) -> int:
        """Write every target with one row per path of ``paths``; returns how many failed.

        A path without a row (it cannot happen after a complete run) raises ``AfiqaError``
        and the parts are kept, so a rerun scores it.
        """
        self.flush()
        missing = [p for p in paths if p not in self._rows]
        if missing:
            raise AfiqaError(f"{len(missing)} files have no score yet (first: {missing[0]}); run again to score them")
        rows = [(p, *self._rows[p]) for p in paths]
        for t in self.targets:
            if t.suffix.lower() in (".parquet", ".pq"):
                _write_parquet(t, rows)
            else:
                write_scores(t, rows)
        shutil.rmtree(self.parts, ignore_errors=True)
        return sum(1 for r in rows if r[1] is None)


def _merge_rows(rows: dict, table) -> None:
    """Add ``table``'s rows to ``rows``; a row with a score replaces an error row, never the reverse."""
    cols = [table.column(c).to_pylist() for c in CSV_COLUMNS]
    for path, score, label, error, uncertainty, problem in zip(*cols):
        if path is None:
            continue
        old = rows.get(path)
        if old is None or (old[0] is None and score is not None):
            rows[path] = (score, label or "", error or "", uncertainty, problem or "")


def _check_target(t: Path) -> None:
    if t.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise AfiqaError(f"{t}: the output must end in .csv or .parquet")
    if t.exists():
        try:
            _read_target(t, head=True)
        except AfiqaError:
            raise
        except Exception:
            raise AfiqaError(f"{t} exists and is not an afiqa scores file; choose another name") from None


def _read_target(t: Path, head: bool = False):
    """An earlier run's output as a table, or ``AfiqaError`` if it is not one."""
    import pyarrow as pa

    not_ours = AfiqaError(f"{t} exists and is not an afiqa scores file; choose another name")
    if t.suffix.lower() == ".csv":
        import csv

        with t.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            if header[: len(CSV_COLUMNS)] != CSV_COLUMNS and header[: len(OLD_COLUMNS)] != OLD_COLUMNS:
                raise not_ours
            if head:
                return None
            n = len(CSV_COLUMNS) if header[: len(CSV_COLUMNS)] == CSV_COLUMNS else len(OLD_COLUMNS)
            cols = list(zip(*(r[:n] for r in reader if len(r) >= n))) or [()] * n
            cols += [[""] * len(cols[0])] * (len(CSV_COLUMNS) - n)
        return pa.table({
            "path": [_unsafe_path(p) for p in cols[0]],
            "score": [float(s) if s else None for s in cols[1]],
            "label": [_unsafe_cell(x) for x in cols[2]],
            "error": [_unsafe_cell(x) for x in cols[3]],
            "uncertainty": [float(s) if s else None for s in cols[4]],
            "problem": [_unsafe_cell(x) for x in cols[5]],
        }, schema=schema())
    import pyarrow.parquet as pq

    names = tuple(pq.read_schema(t).names)
    if names[: len(CSV_COLUMNS)] != CSV_COLUMNS and names[: len(OLD_COLUMNS)] != OLD_COLUMNS:
        raise not_ours
    if head:
        return None
    table = pq.read_table(t, columns=[c for c in CSV_COLUMNS if c in names])
    for c in CSV_COLUMNS[len(table.column_names):]:
        table = table.append_column(c, pa.nulls(table.num_rows, schema().field(c).type))
    return table.cast(schema())


def _unsafe_cell(text: str) -> str:
    """The text ``afiqa.io.csvout.safe_cell`` was given."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def _unsafe_path(text: str) -> str:
    """The path ``afiqa.io.csvout.safe_path`` was given."""
    dot = "." + os.sep
    return text[len(dot):] if text.startswith(dot) and text[len(dot):].startswith(FORMULA_STARTS) else text


def _write_parquet(target: Path, rows) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(zip(*rows)) if rows else [()] * len(CSV_COLUMNS)
    table = pa.table(dict(zip(CSV_COLUMNS, map(list, cols))), schema=schema())
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AfiqaError(f"could not write {target}: {e.strerror or type(e).__name__}") from None

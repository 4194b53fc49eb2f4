"""The scores CSV that the CLI (``--csv``) and the app's Batch download write.

One format: the columns ``path,score,label,error,uncertainty,problem`` (then any extra
columns, e.g. the CLI's ``heatmap``); ``score`` and ``uncertainty`` (the likely absolute
error of the score, in its points) with ``SCORE_DECIMALS`` (2) decimals, empty when the
file could not be scored (``uncertainty`` and ``problem`` also for a model without side
heads); ``error`` a one-line reason, empty when it was; ``problem`` the main thing
lowering the score (``afiqa.model.sideheads``).

Spreadsheet formulas are neutralised. A cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return is run as a formula by Excel, LibreOffice and Google
Sheets (``=HYPERLINK(...)`` in a file name), so such text cells get a leading ``'``,
which spreadsheets show as text (OWASP's advice for CSV injection). A path is kept
usable by programs instead: a relative path that would start a formula is written as
``./name`` (the same file). Scores are numbers and written as they are.

The file is written beside its target under a temporary name and renamed into place
when closed, also after Ctrl-C (the rows written so far are a valid CSV), so a reader
never sees half a file and a failed write leaves the target as it was.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from afiqa.errors import AfiqaError

CSV_COLUMNS = ("path", "score", "label", "error", "uncertainty", "problem")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class OutputError(AfiqaError, OSError):
    """An output file that could not be written (full disk, no permission, ...)."""


SCORE_DECIMALS = 2  # one display of a score: 35.10, never 35.1 or 35.100


def format_score(score: float | None) -> str:
    """A score as afiqa shows it everywhere (the CSV, the CLI, the app): ``SCORE_DECIMALS``
    decimals, trailing zeros kept; "" for no score."""
    return "" if score is None or score != score else f"{float(score):.{SCORE_DECIMALS}f}"  # NaN: no score


def safe_cell(text) -> str:
    """``text`` as a CSV cell that a spreadsheet shows as text, never runs as a formula.

    A cell starting with ``= + - @``, a tab or a carriage return gets a leading ``'``;
    anything else is returned unchanged (``None`` becomes "").
    """
    text = "" if text is None else str(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def safe_path(path) -> str:
    """A path as a CSV cell: the same file for a program, text for a spreadsheet.

    A relative path that would start a formula is written as ``./path``; an absolute
    path starts with ``/`` (or a drive) and is written as it is.
    """
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return "." + os.sep + text if text.startswith(FORMULA_STARTS) else text


class ScoreCsv:
    """Write score rows to ``target`` through a temporary file renamed into place.

    ``with ScoreCsv("scores.csv", extra=("heatmap",)) as out: out.row(path, score, label, error, heat,
    uncertainty=7.1, problem="blur")``.
    On leaving the block normally or by ``KeyboardInterrupt`` the rows written so far
    become ``target``; on a write error the temporary file is removed, ``target`` is
    left as it was and ``OutputError`` says why in one sentence.
    """

    def __init__(self, target: str | os.PathLike, extra: tuple[str, ...] = ()):
        self.target = Path(target)
        self.columns = (*CSV_COLUMNS, *extra)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name[:80]}.", suffix=".part", dir=self.target.parent)
        except OSError as e:
            raise OutputError(f"could not write {self.target}: {e.strerror or type(e).__name__}") from None
        self._tmp = Path(tmp)
        os.chmod(fd, _mode_for(self.target))  # mkstemp's 0600 would hide the scores from the user's group
        # surrogateescape: a file name that is not UTF-8 is written back as the bytes it has on disk
        self._fh = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._writer = csv.writer(self._fh)
        self._guard(self._writer.writerow, self.columns)

    def row(self, path, score: float | None, label: str | None, error: str | None, *extra,
            uncertainty: float | None = None, problem: str | None = "") -> None:
        """One file's row; ``extra`` cells follow ``problem`` (paths, written with ``safe_path``)."""
        cells = [safe_path(path), format_score(score), safe_cell(label), safe_cell(error),
                 format_score(uncertainty), safe_cell(problem)]
        extra = (*extra, *[""] * (len(self.columns) - len(CSV_COLUMNS) - len(extra)))
        cells += [safe_path(x) if x else "" for x in extra]
        self._guard(self._writer.writerow, cells)
        self._guard(self._fh.flush)

    def close(self) -> Path:
        """Rename the rows written so far into place; returns ``target``."""
        if self._fh.closed:
            return self.target
        self._guard(self._fh.close)
        self._guard(os.replace, self._tmp, self.target)
        return self.target

    def discard(self) -> None:
        """Remove the temporary file; ``target`` stays as it was."""
        try:
            self._fh.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            self.discard()
            reason = e.strerror or type(e).__name__
            raise OutputError(f"could not write {self.target}: {reason}") from None

    def __enter__(self) -> "ScoreCsv":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self.close()
        else:
            self.discard()


def _mode_for(target: Path) -> int:
    """The permissions ``target`` has, or a new file's under the current umask."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_scores(target: str | os.PathLike, rows, extra: tuple[str, ...] = ()) -> Path:
    """Write ``rows`` of (path, score, label, error[, uncertainty, problem, *extra]) to ``target`` at once."""
    with ScoreCsv(target, extra) as out:
        for r in rows:
            r = (*r, None, "")[:max(len(r), 6)]
            out.row(*r[:4], *r[6:], uncertainty=r[4], problem=r[5])
    return out.target

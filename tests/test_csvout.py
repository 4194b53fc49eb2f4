"""The scores CSV: columns, rounding, formula neutralising, temporary file and rename."""

import csv
import os
from pathlib import Path

import pytest

from afiqa.io.csvout import CSV_COLUMNS, OutputError, ScoreCsv, format_score, safe_cell, safe_path, write_scores


def read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_format_score_has_2_decimals_trailing_zeros_kept_and_empty_for_none():
    assert format_score(79.994) == "79.99"
    assert format_score(35.1) == "35.10"
    assert format_score(0) == "0.00"
    assert format_score(None) == ""


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "@SUM(A1:A9)", "+1", "-2+3", "\tx", "\rx"])
def test_formula_starts_are_neutralised(text):
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["photo.jpg", "a=b.jpg", " =x", "'quoted", "", "sub/=x.jpg"])
def test_other_text_is_kept(text):
    assert safe_cell(text) == text


def test_safe_path_keeps_the_same_file():
    assert safe_path("=cmd.jpg") == os.path.join(".", "=cmd.jpg")
    assert safe_path(Path("-x.png")) == os.path.join(".", "-x.png")
    assert safe_path("/abs/=x.jpg") == "/abs/=x.jpg"
    assert safe_path("ok.jpg") == "ok.jpg"
    assert Path(safe_path("@x.jpg")) == Path("@x.jpg")


def test_rows_are_written_through_a_rename(tmp_path):
    target = tmp_path / "scores.csv"
    with ScoreCsv(target, extra=("heatmap",)) as out:
        out.row(Path("=x.jpg"), 71.23456, "good", "", "heat/=x.png", uncertainty=6.789, problem="blur")
        assert not target.exists()  # the rows are in a temporary file beside it until the end
        out.row("@bad.jpg", None, "", "@bad.jpg: the file is empty")
    rows = read(target)
    assert rows[0] == [*CSV_COLUMNS, "heatmap"]
    assert rows[0][:6] == ["path", "score", "label", "error", "uncertainty", "problem"]  # the first four stay
    assert rows[1] == [os.path.join(".", "=x.jpg"), "71.23", "good", "", "6.79", "blur", "heat/=x.png"]
    assert rows[2] == [os.path.join(".", "@bad.jpg"), "", "", "'@bad.jpg: the file is empty", "", "", ""]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_ctrl_c_leaves_the_rows_so_far(tmp_path):
    target = tmp_path / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        with ScoreCsv(target) as out:
            out.row("a.jpg", 50.0, "fair", "")
            raise KeyboardInterrupt
    assert read(target) == [list(CSV_COLUMNS), ["a.jpg", "50.00", "fair", "", "", ""]]
    assert len(list(tmp_path.iterdir())) == 1


def test_a_crash_leaves_the_old_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "scores.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with ScoreCsv(target) as out:
            out.row("a.jpg", 50.0, "fair", "")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n" and len(list(tmp_path.iterdir())) == 1


def test_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    target = tmp_path / "scores.csv"
    out = ScoreCsv(target)
    real = os.fdopen(os.open("/dev/full", os.O_WRONLY), "w")  # every write: ENOSPC
    out._fh.close()
    out._fh = real
    out._writer = csv.writer(real)
    with pytest.raises(OutputError, match=r"could not write .*scores.csv: No space left on device"):
        out.row("a.jpg", 50.0, "fair", "")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_one_sentence(tmp_path):
    with pytest.raises(OutputError, match="could not write .*No such file or directory"):
        write_scores(tmp_path / "nope" / "scores.csv", [])

"""Dataset adapters against tiny fixtures written in each dataset's real file format."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from train.datasets import ADAPTERS, Sample, load


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".jpg": "JPEG", ".bmp": "BMP", ".png": "PNG"}[path.suffix.lower()]
    Image.new("RGB", (8, 6), (40, 80, 120)).save(path, fmt)


def _csv(path: Path, header: list[str], rows: list[list], quoting=csv.QUOTE_MINIMAL) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=quoting)
        w.writerow(header)
        w.writerows(rows)


def _by_name(samples: list[Sample]) -> dict[str, Sample]:
    return {s.path.name: s for s in samples}


def _assert_higher_is_better(samples: list[Sample], best: str, worst: str) -> None:
    by = _by_name(samples)
    assert by[best].score == max(s.score for s in samples)
    assert by[worst].score == min(s.score for s in samples)
    assert all(0.0 <= s.score <= 1.0 for s in samples)


# ---------------------------------------------------------------- biq2021


def test_biq2021_real_format(tmp_path, capsys):
    names = ["ss01 (12).jpg", "ss02 (3).jpg", "ss03 (7).jpg", "ss01 (5).jpg"]
    for n in names[:3]:  # "ss01 (5).jpg" is listed but absent
        _img(tmp_path / "Images" / n)
    (tmp_path / "Train (Images and MOS).csv").write_text(
        "Image Name,MOS,,\r\nss01 (12).jpg,0.8471,,\r\nss02 (3).jpg,0.2874,,\r\nss01 (5).jpg,0.5,,\r\n,,,\r\n"
    )
    (tmp_path / "Test (Images and MOS).csv").write_text("Image Name,MOS\nss03 (7).jpg,0.7321\n")
    samples = load("biq2021", tmp_path)
    assert [(s.path.name, s.score, s.split, s.group) for s in samples] == [
        ("ss01 (12).jpg", 0.8471, "train", "ss01"),
        ("ss02 (3).jpg", 0.2874, "train", "ss02"),
        ("ss03 (7).jpg", 0.7321, "test", "ss03"),
    ]
    assert samples[0].path == tmp_path / "Images" / "ss01 (12).jpg"
    assert "'ss01 (5).jpg'" in capsys.readouterr().err


def test_biq2021_missing_index(tmp_path):
    (tmp_path / "Train (Images and MOS).csv").write_text("Image Name,MOS,,\n")
    with pytest.raises(FileNotFoundError, match=r"Test \(Images and MOS\)\.csv"):
        load("biq2021", tmp_path)


# ---------------------------------------------------------------- koniq10k

KONIQ_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]


def _koniq(root: Path, folder: str = "1024x768", extra: list[str] | None = None, extra_vals=()) -> None:
    rows = [  # image_name, counts c1..c5, c_total, MOS (1..5), SD, MOS_zscore (0..100)
        ["10004473376.jpg", 0, 0, 25, 73, 7, 105, 3.0, 0.527, 77.38],
        ["10007357496.jpg", 0, 3, 45, 47, 1, 96, 5.0, 0.580, 68.72],
        ["100117038.jpg", 0, 1, 21, 72, 6, 100, 1.0, 0.532, 75.11],
        ["10058760545.jpg", 45, 48, 7, 0, 0, 100, 2.0, 0.615, 15.22],
    ]
    rows = [r + ([extra_vals[i]] if extra else []) for i, r in enumerate(rows)]
    _csv(root / "koniq10k_scores_and_distributions.csv", KONIQ_HEADER + (extra or []), rows, csv.QUOTE_NONNUMERIC)
    for r in rows[:3]:  # the fourth is absent
        _img(root / folder / r[0])


def test_koniq10k_maps_mos_1_5(tmp_path, capsys):
    _koniq(tmp_path)
    samples = load("koniq10k", tmp_path)
    scores = {s.path.name: s.score for s in samples}
    assert scores == {"10004473376.jpg": 0.5, "10007357496.jpg": 1.0, "100117038.jpg": 0.0}
    assert {s.split for s in samples} == {"all"}
    assert samples[0].path == tmp_path / "1024x768" / "10004473376.jpg"
    _assert_higher_is_better(samples, "10007357496.jpg", "100117038.jpg")
    err = capsys.readouterr().err
    assert "1 image(s)" in err and "10058760545.jpg" in err


def test_koniq10k_512_folder_and_set_column(tmp_path):
    _koniq(tmp_path, "512x384", ["set"], ["training", "validation", "test", "training"])
    samples = load("koniq10k", tmp_path)
    assert {s.path.parent.name for s in samples} == {"512x384"}
    assert [s.split for s in samples] == ["train", "val", "test"]


def test_koniq10k_split_from_official_sets_file(tmp_path):
    _koniq(tmp_path)
    # the official split file: MOS there is on 0..100 and must not be used
    _csv(
        tmp_path / "koniq10k_distributions_sets.csv",
        ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"],
        [
            ["10004473376.jpg", 0, 0, 0.238, 0.695, 0.067, 105, 77.38, 0.527, "test"],
            ["10007357496.jpg", 0, 0.03, 0.47, 0.49, 0.01, 96, 68.73, 0.580, "training"],
        ],
    )
    samples = _by_name(load("koniq10k", tmp_path))
    assert samples["10004473376.jpg"].split == "test" and samples["10004473376.jpg"].score == 0.5
    assert samples["10007357496.jpg"].split == "train"
    assert samples["100117038.jpg"].split == "all"  # not in the sets file


def test_koniq10k_missing_index(tmp_path):
    (tmp_path / "1024x768").mkdir()
    with pytest.raises(FileNotFoundError, match="koniq10k_scores_and_distributions.csv"):
        load("koniq10k", tmp_path)


# ---------------------------------------------------------------- live_challenge

LIVEC_NAMES = [f"t{i}.bmp" for i in range(1, 8)] + ["10.bmp", "100.bmp", "1000.JPG", "1001.JPG"]
LIVEC_MOS = [50.0] * 7 + [25.0, 75.0, 100.0, 60.0]


def _livec(root: Path, column: bool = True) -> None:
    names = np.empty((len(LIVEC_NAMES), 1) if column else (1, len(LIVEC_NAMES)), dtype=object)
    names.flat[:] = LIVEC_NAMES  # an object array is written as a MATLAB cell array
    (root / "Data").mkdir(parents=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": names})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([LIVEC_MOS])})  # 1xN double
    for n in LIVEC_NAMES[:10]:  # 1001.JPG is absent
        _img(root / "Images" / n)


@pytest.mark.parametrize("column", [True, False], ids=["Nx1", "1xN"])
def test_live_challenge(tmp_path, capsys, column):
    _livec(tmp_path, column)
    samples = load("live_challenge", tmp_path)
    # the first 7 (training) entries are left out even though their files exist
    assert {s.path.name: s.score for s in samples} == {"10.bmp": 0.25, "100.bmp": 0.75, "1000.JPG": 1.0}
    assert all(s.split == "all" and s.path.parent == tmp_path / "Images" for s in samples)
    _assert_higher_is_better(samples, "1000.JPG", "10.bmp")
    assert "1001.JPG" in capsys.readouterr().err


def test_live_challenge_missing_index(tmp_path):
    _livec(tmp_path)
    (tmp_path / "Data" / "AllMOS_release.mat").unlink()
    with pytest.raises(FileNotFoundError, match="AllMOS_release.mat"):
        load("live_challenge", tmp_path)


# ---------------------------------------------------------------- kadid10k


def _kadid(root: Path) -> None:
    rows = [
        ["I01_01_01.png", "I01.png", 4.57, 0.496],
        ["I01_01_05.png", "I01.png", 1.0, 0.3],
        ["I02_10_03.png", "I02.png", 5.0, 0.0],
        ["I02_10_04.png", "I02.png", 2.0, 0.7],
    ]
    _csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    for n in ["I01.png", "I02.png", "I01_01_01.png", "I01_01_05.png", "I02_10_03.png"]:  # I02_10_04 absent
        _img(root / "images" / n)


def test_kadid10k(tmp_path, capsys):
    _kadid(tmp_path)
    samples = load("kadid10k", tmp_path)
    by = _by_name(samples)
    assert set(by) == {"I01_01_01.png", "I01_01_05.png", "I02_10_03.png"}
    assert by["I01_01_01.png"].score == pytest.approx(3.57 / 4)
    assert (by["I01_01_05.png"].score, by["I02_10_03.png"].score) == (0.0, 1.0)
    assert [by[n].group for n in ("I01_01_01.png", "I01_01_05.png", "I02_10_03.png")] == ["I01", "I01", "I02"]
    assert {s.split for s in samples} == {"all"}
    _assert_higher_is_better(samples, "I02_10_03.png", "I01_01_05.png")
    assert "I02_10_04.png" in capsys.readouterr().err


def test_kadid10k_missing_index(tmp_path):
    _img(tmp_path / "images" / "I01_01_01.png")
    with pytest.raises(FileNotFoundError, match="dmos.csv"):
        load("kadid10k", tmp_path)


# ---------------------------------------------------------------- tid2013


def _tid(root: Path) -> None:
    (root / "mos_with_names.txt").write_text(
        "5.51429 i01_01_1.bmp\r\n4.56757 i01_01_2.bmp\r\n0.00000 i02_17_5.bmp\r\n"
        "9.00000 i25_08_1.bmp\r\n6.00000 i03_02_3.bmp\r\n"
    )
    for n in ["I01_01_1.BMP", "i01_01_2.bmp", "I02_17_5.bmp", "i25_08_1.BMP"]:  # i03_02_3 absent
        _img(root / "distorted_images" / n)


def test_tid2013(tmp_path, capsys):
    _tid(tmp_path)
    samples = load("tid2013", tmp_path)
    by = _by_name(samples)
    assert set(by) == {"I01_01_1.BMP", "i01_01_2.bmp", "I02_17_5.bmp", "i25_08_1.BMP"}  # real on-disk names
    assert all(s.path.is_file() for s in samples)
    assert by["I01_01_1.BMP"].score == pytest.approx(5.51429 / 9)
    assert (by["I02_17_5.bmp"].score, by["i25_08_1.BMP"].score) == (0.0, 1.0)
    assert [s.group for s in samples] == ["i01", "i01", "i02", "i25"]
    assert {s.split for s in samples} == {"all"}
    _assert_higher_is_better(samples, "i25_08_1.BMP", "I02_17_5.bmp")
    assert "i03_02_3.bmp" in capsys.readouterr().err


def test_tid2013_missing_index(tmp_path):
    _img(tmp_path / "distorted_images" / "i01_01_1.bmp")
    with pytest.raises(FileNotFoundError, match="mos_with_names.txt"):
        load("tid2013", tmp_path)


# ---------------------------------------------------------------- generic csv


def _generic(root: Path) -> Path:
    rows = [
        ["a.png", 1, "train", "g1"],
        ["sub/b.png", 3, "test", "g2"],
        ["c.png", 2, "", ""],
        ["d.png", 3, "train", "g1"],
    ]
    _csv(root / "scores.csv", ["path", "score", "split", "group"], rows)
    for n in ["a.png", "sub/b.png", "c.png"]:  # d.png absent
        _img(root / n)
    return root / "scores.csv"


def test_csv_higher_better(tmp_path, capsys):
    index = _generic(tmp_path)
    for root in (index, tmp_path):  # the file itself, or its folder
        samples = load("csv", root, lo=1, hi=3)
        assert [(s.path, s.score, s.split, s.group) for s in samples] == [
            (tmp_path / "a.png", 0.0, "train", "g1"),
            (tmp_path / "sub" / "b.png", 1.0, "test", "g2"),
            (tmp_path / "c.png", 0.5, "all", ""),
        ]
    assert "d.png" in capsys.readouterr().err


def test_csv_lower_better_and_defaults(tmp_path):
    _generic(tmp_path)
    samples = load("csv", tmp_path, lo=1, hi=3, higher_better=False)
    assert [s.score for s in samples] == [1.0, 0.0, 0.5]
    _assert_higher_is_better(samples, "a.png", "b.png")
    _csv(tmp_path / "other" / "x.csv", ["path", "score"], [["../a.png", 0.25]])
    (s,) = load("csv", tmp_path / "other" / "x.csv")  # default lo=0, hi=1; no split/group columns
    assert (s.path.resolve(), s.score, s.split, s.group) == ((tmp_path / "a.png").resolve(), 0.25, "all", "")


def test_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load("csv", tmp_path / "missing.csv")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        load("csv", tmp_path)
    _generic(tmp_path)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        load("csv", tmp_path)  # scores 1..3 read on the default 0..1 scale
    _csv(tmp_path / "scores.csv", ["file", "mos"], [["a.png", 0.5]])
    with pytest.raises(ValueError, match="'path' and 'score'"):
        load("csv", tmp_path)


# ---------------------------------------------------------------- shared behaviour


def test_all_images_missing_is_an_error(tmp_path):
    _kadid(tmp_path)
    for p in (tmp_path / "images").iterdir():
        p.unlink()
    with pytest.raises(ValueError, match="dmos.csv"):
        load("kadid10k", tmp_path)


def test_load_unknown_name_lists_known():
    with pytest.raises(ValueError, match="unknown dataset 'nope'") as e:
        load("nope", ".")
    for name in ADAPTERS:
        assert name in str(e.value)
    assert set(ADAPTERS) == {"biq2021", "koniq10k", "live_challenge", "kadid10k", "tid2013", "csv"}

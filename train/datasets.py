"""Dataset adapters: each returns ``Sample`` rows with scores mapped to [0, 1], higher = better.

Every adapter takes the dataset's root (``csv``: the CSV file or its folder), leaves out listed
images that are not on disk (one summary line on stderr), raises ``FileNotFoundError`` naming the
index file it expected when that is absent, and ``ValueError`` when nothing usable is left or a
mapped score falls outside [0, 1] (a sign of an index on another scale). ``load(name, root)``
picks an adapter by name.
"""

from __future__ import annotations

import csv as _csv
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    path: Path
    score: float  # in [0, 1], higher is better
    split: str  # "train", "val", "test", or "all" where the dataset has no official split
    group: str = ""  # subset / reference image, for per-group metrics


def _index(path: Path, dataset: str, what: str = "") -> Path:
    """``path`` if it is a file, else a FileNotFoundError naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: expected index file {path}{' (' + what + ')' if what else ''}")
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(_csv.DictReader(f))


def _present(dataset: str, index: Path | str, samples: list[Sample]) -> list[Sample]:
    """Leave out samples whose image is missing (reported on stderr), check scores, refuse an empty result."""
    kept, missing = [], []
    for s in samples:
        (kept if s.path.is_file() else missing).append(s)
    if missing:
        names = ", ".join(repr(s.path.name) for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(f"{dataset}: {len(missing)} image(s) listed in {index} not found, left out: {names}", file=sys.stderr)
    bad = [s for s in kept if not 0.0 <= s.score <= 1.0]
    if bad:
        raise ValueError(
            f"{dataset}: {len(bad)} score(s) outside [0, 1] after mapping (e.g. {bad[0].path.name}: {bad[0].score}); "
            f"is {index} on the expected scale?"
        )
    if not kept:
        raise ValueError(f"{dataset}: no usable images listed in {index}")
    return kept


def biq2021(root: str | Path) -> list[Sample]:
    """BIQ2021: ``Images/`` plus the official ``Train (Images and MOS).csv`` and ``Test (Images and MOS).csv``.

    Columns ``Image Name,MOS`` (the train CSV has trailing empty columns); MOS is already in
    [0, 1], higher = better, and is used as is. split = train/test from the CSV; group = the
    subset prefix of the name (``ss01 (12).jpg`` -> ``ss01``).
    """
    root = Path(root)
    out: list[Sample] = []
    for split, name in (("train", "Train (Images and MOS).csv"), ("test", "Test (Images and MOS).csv")):
        index = _index(root / name, "biq2021")
        with open(index, newline="", encoding="utf-8-sig") as f:
            rows = list(_csv.reader(f))[1:]
        names = [(r[0].strip(), r[1]) for r in rows if r and r[0].strip()]
        out += [Sample(root / "Images" / n, float(mos), split, n.split(" ")[0]) for n, mos in names]
    return _present("biq2021", "the train/test CSVs", out)


_KONIQ_SETS = {"training": "train", "validation": "val", "test": "test"}


def koniq10k(root: str | Path) -> list[Sample]:
    """KonIQ-10k: ``koniq10k_scores_and_distributions.csv`` and images in ``1024x768/`` (else ``512x384/``).

    Columns image_name, c1..c5, c_total, MOS, SD, MOS_zscore; ``MOS`` is the mean of 1..5 ratings
    (higher = better) and maps to ``(MOS - 1) / 4``. MOS_zscore (0..100) is not used.
    split: the CSV's ``set`` column if it has one, else the ``set`` column of the official
    ``koniq10k_distributions_sets.csv`` when that file lies next to it (training/validation/test ->
    train/val/test), else "all". (That sets file's own MOS column is on the 0..100 z-score
    scale, so only its ``set`` is read.) group = "".
    """
    root = Path(root)
    index = _index(root / "koniq10k_scores_and_distributions.csv", "koniq10k", "columns image_name,...,MOS,...")
    folder = next((root / d for d in ("1024x768", "512x384") if (root / d).is_dir()), None)
    if folder is None:
        raise FileNotFoundError(f"koniq10k: expected an image folder {root / '1024x768'} or {root / '512x384'}")
    rows = _read_csv(index)
    sets_file = root / "koniq10k_distributions_sets.csv"
    sets = {}
    if rows and "set" not in rows[0] and sets_file.is_file():
        sets = {r["image_name"]: r["set"] for r in _read_csv(sets_file)}
    samples = []
    for r in rows:
        raw_set = r.get("set") or sets.get(r["image_name"])
        split = _KONIQ_SETS.get(raw_set, raw_set) if raw_set else "all"
        samples.append(Sample(folder / r["image_name"], (float(r["MOS"]) - 1.0) / 4.0, split))
    return _present("koniq10k", index, samples)


_LIVEC_TRAINING = 7  # leading entries of the release that are its 7 training images


def live_challenge(root: str | Path) -> list[Sample]:
    """LIVE In the Wild Image Quality Challenge (CLIVE): ``Data/AllImages_release.mat``,
    ``Data/AllMOS_release.mat`` and images in ``Images/``.

    ``AllImages_release`` is a cell array of file names (Nx1 in the release) and ``AllMOS_release``
    a 1xN double array of MOS on 0..100 (higher = better), mapped to ``MOS / 100``. The first 7
    entries (the release's 7 training images) are always left out, as is conventional, so
    the full release (1169 entries) gives 1162 samples. split = "all", group = "".
    """
    import numpy as np
    from scipy.io import loadmat

    root = Path(root)
    names_file = _index(root / "Data" / "AllImages_release.mat", "live_challenge", "variable AllImages_release")
    mos_file = _index(root / "Data" / "AllMOS_release.mat", "live_challenge", "variable AllMOS_release")
    names = [str(np.ravel(x)[0]) for x in np.ravel(loadmat(names_file)["AllImages_release"])]
    mos = np.ravel(loadmat(mos_file)["AllMOS_release"]).astype(float)
    if len(names) != len(mos):
        raise ValueError(
            f"live_challenge: {len(names)} names in {names_file.name} but {len(mos)} MOS values in {mos_file.name}"
        )
    samples = [Sample(root / "Images" / n, float(m) / 100.0, "all") for n, m in zip(names, mos)]
    return _present("live_challenge", names_file, samples[_LIVEC_TRAINING:])


def kadid10k(root: str | Path) -> list[Sample]:
    """KADID-10k: ``dmos.csv`` (columns dist_img,ref_img,dmos,var) and images in ``images/``.

    Despite its name ``dmos`` is a quality score on 1..5 with higher = better; it maps to
    ``(dmos - 1) / 4``. group = the reference image's name without extension (``I01.png`` ->
    ``I01``); split = "all".
    """
    root = Path(root)
    index = _index(root / "dmos.csv", "kadid10k", "columns dist_img,ref_img,dmos")
    samples = [
        Sample(root / "images" / r["dist_img"], (float(r["dmos"]) - 1.0) / 4.0, "all", Path(r["ref_img"]).stem)
        for r in _read_csv(index)
    ]
    return _present("kadid10k", index, samples)


def tid2013(root: str | Path) -> list[Sample]:
    """TID2013: ``mos_with_names.txt`` (lines ``MOS filename``) and images in ``distorted_images/``.

    MOS is on 0..9 with higher = better and maps to ``MOS / 9``. File names are matched to the
    files in ``distorted_images/`` case-insensitively (``i01_01_1.bmp`` finds ``I01_01_1.BMP``).
    group = the reference id, lower-cased (``I01_01_1.bmp`` -> ``i01``); split = "all".
    """
    root = Path(root)
    index = _index(root / "mos_with_names.txt", "tid2013", "lines 'MOS filename'")
    folder = root / "distorted_images"
    on_disk = {p.name.lower(): p for p in folder.iterdir()} if folder.is_dir() else {}
    samples = []
    for line in index.read_text(encoding="utf-8-sig").splitlines():
        if line.strip():
            mos, name = line.split(maxsplit=1)
            name = name.strip()
            path = on_disk.get(name.lower(), folder / name)
            samples.append(Sample(path, float(mos) / 9.0, "all", name.split("_")[0].lower()))
    return _present("tid2013", index, samples)


def csv(root: str | Path, lo: float = 0.0, hi: float = 1.0, higher_better: bool = True) -> list[Sample]:
    """Any dataset described by a CSV with a header and columns ``path``, ``score`` (optional ``split``, ``group``).

    ``root`` is the CSV file, or a folder holding exactly one ``.csv``. Paths are relative to
    the CSV's folder. A score on [lo, hi] maps to ``(score - lo) / (hi - lo)``, and to
    ``(hi - score) / (hi - lo)`` when ``higher_better`` is False. split defaults to "all",
    group to "".
    """
    root = Path(root)
    if root.is_dir():
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise FileNotFoundError(f"csv: expected exactly one .csv file in {root}, found {len(found)}")
        root = found[0]
    index = _index(root, "csv", "columns path,score[,split,group]")
    if hi <= lo:
        raise ValueError(f"csv: need lo < hi, got lo={lo}, hi={hi}")
    rows = _read_csv(index)
    if rows and not {"path", "score"} <= rows[0].keys():
        raise ValueError(f"csv: {index} needs columns 'path' and 'score', has {sorted(rows[0])}")
    samples = []
    for r in rows:
        score = (float(r["score"]) - lo if higher_better else hi - float(r["score"])) / (hi - lo)
        samples.append(Sample(index.parent / r["path"], score, r.get("split") or "all", r.get("group") or ""))
    return _present("csv", index, samples)


ADAPTERS = {
    "biq2021": biq2021,
    "koniq10k": koniq10k,
    "live_challenge": live_challenge,
    "kadid10k": kadid10k,
    "tid2013": tid2013,
    "csv": csv,
}


def load(name: str, root: str | Path, **kwargs) -> list[Sample]:
    """Samples of dataset ``name`` (a key of ADAPTERS) under ``root``; kwargs go to the adapter."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](root, **kwargs)

"""The Ray engine on a real local Ray cluster, against the local engine, on real images.

One cluster (2 CPUs) serves the module: Ray and its workers take long to start on a
busy machine. The CLI runs connect to it with --ray-address.
"""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen import blur, scene

ROOT = Path(__file__).resolve().parent.parent
N_GOOD = 110


@pytest.fixture(scope="module")
def cluster():
    from afiqa.distributed import connect

    ray = connect(num_cpus=2)  # what the engine starts: no dashboard, a small object store
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of N_GOOD real photos (JPEG and PNG, nested) and 4 bad files, plus a listing."""
    d = tmp_path_factory.mktemp("shoot")
    for i in range(N_GOOD):
        sub = d / f"day{i % 3}"
        sub.mkdir(exist_ok=True)
        img = blur(scene(i, size=(112, 96)), (0, 1.5, 4)[i % 3])
        Image.fromarray(img).save(sub / f"img{i:03d}.{'png' if i % 5 == 0 else 'jpg'}", quality=90)
    (d / "day0" / "truncated.jpg").write_bytes((d / "day0" / "img003.jpg").read_bytes()[:300])
    (d / "day1" / "empty.png").write_bytes(b"")
    (d / "day2" / "text.jpg").write_text("not a photo")
    Image.fromarray(scene(7, size=(20, 20))).save(d / "day2" / "tiny.png")
    listing = d.parent / f"{d.name}-more.txt"
    listing.write_text(f"# extra files\n\n{d / 'day0' / 'img003.jpg'}\n{d / 'gone.jpg'}\n")
    return d, listing


@pytest.fixture(scope="module")
def local_rows(photos, tiny_predictor):
    """The local engine's rows for the same inputs: path -> (score, error)."""
    from afiqa.io.listing import expand

    paths = expand(photos)
    return {p: (r.score, r.error) for p, r in zip(paths, tiny_predictor.score_batch(paths))}


def assert_same_as_local(rows: dict, local: dict):
    assert set(rows) == set(local)
    for path, (score, error) in local.items():
        got_score, got_error = rows[path]
        assert got_error == error, path
        if score is None:
            assert got_score is None, path
        else:
            assert got_score == pytest.approx(score, abs=0.05), path
    assert sum(s is None for s, _ in local.values()) == 5  # 4 bad files and one that is gone
    assert len({round(s, 1) for s, _ in local.values() if s is not None}) > 20  # real, varied scores


def test_a_killed_worker_costs_a_retry_not_rows(cluster, photos, local_rows, tiny_card_path):
    import afiqa.distributed as dist
    from afiqa.distributed import local_worker_pids

    folder, listing = photos
    ds = dist.score([folder, listing], model=tiny_card_path, workers=2, batch_size=4, rows_per_block=8)
    rows, killed, seen = {}, None, set()
    for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for r in table.to_pylist():
            assert r["path"] not in rows, "a row came twice"
            rows[r["path"]] = (r["score"], r["error"])
        seen |= local_worker_pids()
        if killed is None:
            assert len(rows) < len(local_rows)  # mid-run
            pids = local_worker_pids()
            assert pids, "no scoring actor found"
            killed = min(pids)
            os.kill(killed, signal.SIGKILL)
    assert killed is not None and killed not in local_worker_pids()
    assert len(seen - {killed}) >= 2, "the killed actor was not replaced"
    assert_same_as_local(rows, local_rows)


def test_cli_interrupted_run_resumes_and_writes_parquet_and_csv(cluster, photos, local_rows, tiny_card_path,
                                                                  tmp_path):
    import pyarrow.parquet as pq

    folder, listing = photos
    out, out_csv = tmp_path / "scores.parquet", tmp_path / "scores.csv"
    parts = tmp_path / "scores.parquet.afiqa-parts"
    cmd = [sys.executable, "-m", "afiqa", "score", folder, listing, "--engine", "ray", "--ray-address", cluster,
           "--parquet", out, "--csv", out_csv, "--model", tiny_card_path, "--batch-size", "4", "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    log = tmp_path / "first.log"
    with log.open("w") as fh:  # a file, not a pipe: a full pipe would stall the run
        first = subprocess.Popen(list(map(str, cmd)), env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not list(parts.glob("*.parquet")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()  # SIGKILL: no clean-up at all
    first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL, log.read_text()
    assert not out.exists() and not out_csv.exists()
    kept = sum(pq.read_table(f).num_rows for f in parts.glob("*.parquet"))
    assert 0 < kept < len(local_rows), log.read_text()

    p = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr  # bad files
    assert f"{len(local_rows)} files, {kept} already scored, {len(local_rows) - kept} to score" in p.stderr
    assert "5 of 115 files could not be scored" in p.stderr and "Traceback" not in p.stderr
    assert not parts.exists()

    table = pq.read_table(out)
    assert table.column_names == ["path", "score", "label", "error", "uncertainty", "problem"]
    assert table.num_rows == len(local_rows) == len(table.column("path").unique())
    assert_same_as_local({r["path"]: (r["score"], r["error"]) for r in table.to_pylist()}, local_rows)
    with out_csv.open(encoding="utf-8") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["path"] for r in csv_rows] == table.column("path").to_pylist()
    assert all(r["label"] and not r["error"] for r in csv_rows if r["score"])
    # the side heads reach the Ray engine's rows: every scored row says its error and problem
    assert all(float(r["uncertainty"]) > 0 and r["problem"] for r in csv_rows if r["score"])

    again = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and f"{len(local_rows)} already scored, 0 to score" in again.stderr
    assert pq.read_table(out).equals(table)


# -- no cluster needed -------------------------------------------------------------------
def test_without_ray_the_engine_says_what_to_install(photos, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from afiqa.cli import main; "
            f"sys.exit(main(['score', {str(photos[0])!r}, '--engine', 'ray', '--csv', {str(tmp_path / 'o.csv')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2
    assert p.stderr.strip() == "afiqa: --engine ray needs Ray Data: pip install 'afiqa[ray]'"


def test_engine_usage_errors_exit_2(photos, tmp_path, capsys):
    from afiqa.cli import main

    folder = str(photos[0])
    assert main(["score", folder, "--parquet", str(tmp_path / "o.parquet")]) == 2
    assert "need --engine ray" in capsys.readouterr().err
    assert main(["score", folder, "--engine", "ray"]) == 2
    assert "give --csv FILE or --parquet FILE" in capsys.readouterr().err
    image = folder + "/day0/img003.jpg"  # a file that is not an afiqa output is never written over
    before = Path(image).read_bytes()
    assert main(["score", folder, "--engine", "ray", "--parquet", image]) == 2
    assert "must end in .csv or .parquet" in capsys.readouterr().err and Path(image).read_bytes() == before
    theirs = tmp_path / "people.csv"
    theirs.write_text("name,age\nada,36\n")
    assert main(["score", folder, "--engine", "ray", "--parquet", str(tmp_path / "o.parquet"), "--csv", str(theirs)]) == 2
    assert "people.csv exists and is not an afiqa scores file" in capsys.readouterr().err
    assert theirs.read_text() == "name,age\nada,36\n" and not (tmp_path / "o.parquet").exists()


def test_listing_files_folders_and_uris(photos, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from afiqa.errors import AfiqaError
    from afiqa.io.listing import expand

    folder, listing = photos
    in_folder = expand([folder])
    assert len(in_folder) == N_GOOD + 4 and in_folder == sorted(in_folder)
    assert expand([listing]) == [str(folder / "day0" / "img003.jpg"), str(folder / "gone.jpg")]
    # an overlap is listed once, at its first place
    assert expand([folder, listing]) == in_folder + [str(folder / "gone.jpg")]
    uri = expand([folder.as_uri()])
    assert uri == ["file://" + p for p in in_folder]
    pq.write_table(pa.table({"id": [1, 2], "path": ["a.jpg", "s3://b/c.jpg"]}), tmp_path / "index.parquet")
    (tmp_path / "index.csv").write_text("path,score\n007.jpg,1\nb.jpg,2\n")
    assert expand([tmp_path / "index.parquet", tmp_path / "index.csv"]) == ["a.jpg", "s3://b/c.jpg", "007.jpg", "b.jpg"]
    assert expand([os.fsdecode(b"x\xff.jpg")]) == ["x\\xff.jpg"]  # not UTF-8: Arrow-safe, then "no such file"
    (tmp_path / "bad.csv").write_text("file,score\na.jpg,1\n")
    with pytest.raises(AfiqaError, match="needs a 'path' column"):
        expand([tmp_path / "bad.csv"])
    with pytest.raises(AfiqaError, match="no such listing file"):
        expand([tmp_path / "missing.txt"])


def test_store_keeps_flushed_parts_ignores_broken_ones_and_round_trips_the_csv(tmp_path):
    import pyarrow as pa

    from afiqa.distributed.resume import ScoreStore, schema

    out = tmp_path / "s.csv"
    paths = ["=a.jpg", "b.jpg", "c.jpg"]
    store = ScoreStore([out], flush_rows=1)
    store.add(pa.table({"path": ["=a.jpg"], "score": [51.25], "label": ["fair"], "error": [""], "uncertainty": [6.5],
                        "problem": ["blur"]}, schema=schema()))
    store.add(pa.table({"path": ["b.jpg"], "score": [None], "label": [""], "error": ["=b.jpg: bad"],
                        "uncertainty": [None], "problem": [""]}, schema=schema()))
    (store.parts / "part-9.parquet").write_bytes(b"PAR1 half a file")  # a part cut short by a kill
    again = ScoreStore([out])
    assert again.todo(paths) == ["c.jpg"]
    again.add(pa.table({"path": ["c.jpg"], "score": [12.0], "label": ["bad"], "error": [""], "uncertainty": [9.25],
                        "problem": ["noise"]}, schema=schema()))
    assert again.finish(paths) == 1
    assert out.read_text().splitlines() == ["path,score,label,error,uncertainty,problem", "./=a.jpg,51.25,fair,,6.50,blur",
                                            "b.jpg,,,'=b.jpg: bad,,", "c.jpg,12.00,bad,,9.25,noise"]
    assert not again.parts.exists()
    third = ScoreStore([out])  # a finished CSV is read back as what it says
    assert third.todo(paths + ["d.jpg"]) == ["d.jpg"]
    assert third._rows["=a.jpg"] == (51.25, "fair", "", 6.5, "blur") and third._rows["b.jpg"] == (None, "", "=b.jpg: bad", None, "")
    old = tmp_path / "old.csv"  # what afiqa wrote before the uncertainty and problem columns: still an earlier run
    old.write_text("path,score,label,error\na.jpg,40.00,poor,\n")
    assert ScoreStore([old])._rows["a.jpg"] == (40.0, "poor", "", None, "")

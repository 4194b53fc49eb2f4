"""The Ray engine: score many photos with Ray Data actors, on one machine or a cluster.

    import afiqa.distributed as dist
    ds = dist.score(["photos/", "s3://bucket/shoot/"], workers=8)   # a lazy ray.data.Dataset
    ds.write_parquet("s3://bucket/scores/")                          # or iter_batches(), ...

Each worker is an actor (``Scorer``) that loads the model once, then takes batches of
paths and returns ``path, score, label, error`` rows; a file that cannot be read or
decoded is an error row, never a failed batch. Ray Data restarts an actor that dies and
retries its batch (``max_restarts=-1`` and ``max_task_retries=-1``, its defaults for
actor pools), so a lost worker costs a retry, not rows.

``afiqa score ... --engine ray`` (``score_command``) adds resumability: the rows stream
back to the driver, which is the only writer (the rows are small, ~100 bytes each, and
no shared filesystem is needed), and ``afiqa.distributed.resume.ScoreStore`` keeps them durable
between runs.

Ray is optional: ``pip install 'afiqa[ray]'``.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from afiqa.errors import AfiqaError
from afiqa.runtime.zoo import DEFAULT_MODEL

INSTALL_HINT = "--engine ray needs Ray Data: pip install 'afiqa[ray]'"
OBJECT_STORE_BYTES = 256 * 2**20  # a local cluster's object store: rows and paths are small
MAX_FILE_BYTES = 512 * 2**20  # a file read from object storage larger than this is refused
# A local cluster on a busy machine: a worker (ours imports TensorFlow) gets 300 s to
# register instead of Ray's 60. (The raylet's 15 s wait for its dashboard agent is hard-coded,
# ray-project/ray#65983: start-up is tried twice.)
LOCAL_CLUSTER_ENV = {"RAY_worker_register_timeout_seconds": "300"}


def import_ray():
    """``ray`` with Ray Data, or ``AfiqaError`` saying what to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise AfiqaError(INSTALL_HINT) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None):
    """Join the cluster at ``address`` (``auto``, ``host:port``, ``ray://...``), or start a local one.

    Without ``address``, ``RAY_ADDRESS`` is used when set (Ray's own convention). An
    already initialised Ray (e.g. the caller's own ``ray.init``) is used as it is.
    """
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:
            for name, value in LOCAL_CLUSTER_ENV.items():  # before the raylet starts: it reads them
                os.environ.setdefault(name, value)
            local = dict(num_cpus=num_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                         log_to_driver=False, configure_logging=False)
            try:
                ray.init(**local)
            except Exception:  # on a busy machine the raylet can give up on its agents (#65983): once more
                ray.shutdown()
                ray.init(**local)
    return ray


class Scorer:
    """A Ray Data worker: the model loaded once, then ``__call__`` per batch of paths."""

    def __init__(self, model=DEFAULT_MODEL, weights=None, batch_size: int | None = None, base_dir: str = ".",
                 threads: int = 1):
        # before TensorFlow starts: one actor per CPU, each computing on its own threads
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
        os.environ.setdefault("AFIQA_THREADS", str(threads))  # LiteRT: afiqa.runtime.cpu_threads
        from afiqa.predictor import Predictor

        self.base_dir = Path(base_dir)
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="afiqa-read")  # object storage: I/O-bound
        self.predictor = Predictor(model, weights=weights, batch_size=batch_size)

    def __call__(self, batch):
        import pyarrow as pa

        from afiqa.distributed.resume import schema

        shown = [str(p) for p in batch["path"]]
        items = list(self._io.map(self._source, shown))  # (source, name) or (None, error)
        results = iter(self.predictor.score_batch([src for src, _ in items if src is not None]))
        rows = {"path": shown, "score": [], "label": [], "error": [], "uncertainty": [], "problem": []}
        for path, (src, name) in zip(shown, items):
            if src is None:
                score, label, error, uncertainty, problem = None, "", name, None, ""
            else:
                r = next(results)  # the error names what was read: name it by its listed path
                error = path + r.error[len(name):] if r.error.startswith(name) else r.error
                score, label, uncertainty, problem = r.score, r.label, r.uncertainty, r.problem
            for key, value in zip(("score", "label", "error", "uncertainty", "problem"),
                                  (score, label, error, uncertainty, problem)):
                rows[key].append(value)
        return pa.table(rows, schema=schema())

    def _source(self, path: str):
        """(what the predictor reads, the name its errors start with), or (None, the error)."""
        from afiqa.io.listing import is_uri

        if path.startswith("file://"):
            path = path[len("file://"):]
        elif is_uri(path):
            try:
                return _read_uri(path), "image bytes"
            except Exception as e:  # not found, no permission, network: this file's error
                return None, f"{path}: could not be read ({str(e).splitlines()[0][:120]})"
        full = self.base_dir / path  # an absolute path stays as it is
        return full, str(full)


def _read_uri(uri: str) -> bytes:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    size = fs.get_file_info(path).size
    if size is not None and size > MAX_FILE_BYTES:
        raise ValueError(f"{size / 2**20:.0f} MiB, over the limit of {MAX_FILE_BYTES / 2**20:.0f} MiB")
    with fs.open_input_stream(path) as fh:
        return fh.read()


def score(source, *, model=DEFAULT_MODEL, weights=None, batch_size: int | None = None, workers: int | None = None,
          cpus_per_worker: float = 1, rows_per_block: int = 256):
    """A lazy ``ray.data.Dataset`` of ``path, score, label, error`` rows for ``source``.

    ``source``: a ``ray.data.Dataset`` with a ``path`` column, or paths, URIs, folders and
    listing files (``afiqa.io.listing.expand``). ``workers``: actors in the pool (default:
    the cluster's CPUs divided by ``cpus_per_worker``). Connects to Ray first if needed
    (``connect``). A model card path is read on the workers, so on a cluster it must
    be on a filesystem every node sees.
    """
    ray = connect()
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
    if isinstance(source, ray.data.Dataset):
        ds = source.select_columns(["path"])
    else:
        from afiqa.io.listing import expand

        paths = expand([source] if isinstance(source, (str, os.PathLike)) else source)
        if not paths:
            raise AfiqaError("no image files to score")
        # blocks of at most rows_per_block paths, and enough of them to keep every worker busy
        import pyarrow as pa

        table = pa.table({"path": pa.array(paths, pa.string())})
        blocks = min(len(paths), max(-(-len(paths) // rows_per_block), 4 * workers))
        step = -(-len(paths) // blocks)
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(paths), step)])
    card = os.fspath(model) if isinstance(model, os.PathLike) else model
    return ds.map_batches(
        Scorer,
        fn_constructor_kwargs=dict(model=card, weights=None if weights is None else os.fspath(weights),
                                   batch_size=batch_size, base_dir=os.getcwd(),
                                   threads=max(1, int(cpus_per_worker))),
        batch_size=batch_size or 8,  # rows a call; each worker's Predictor runs them at its runtime's batch
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
    )


def score_command(args) -> int:
    """``afiqa score ... --engine ray``: resumable scoring into --csv and/or --parquet."""
    from afiqa.io.listing import expand
    from afiqa.distributed.resume import ScoreStore

    if args.heatmaps:
        raise AfiqaError("--heatmaps is not available with --engine ray")
    targets = [t for t in (args.parquet, args.csv) if t]
    if not targets:
        raise AfiqaError("--engine ray writes its rows to a file: give --csv FILE or --parquet FILE")
    ray = import_ray()
    paths = expand(args.paths)
    if not paths:
        print("afiqa: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    store = ScoreStore(targets)
    todo = store.todo(paths)
    say = (lambda *a: None) if args.quiet else (lambda text: print(f"afiqa: {text}", file=sys.stderr, flush=True))
    say(f"{len(paths)} files, {len(paths) - len(todo)} already scored, {len(todo)} to score")
    if todo:
        connect(args.ray_address)
        ray.data.DataContext.get_current().enable_progress_bars = not args.quiet and sys.stderr.isatty()
        if args.quiet:
            logging.getLogger("ray").setLevel(logging.WARNING)
        ds = score(todo, model=args.model, weights=args.weights, batch_size=args.batch_size, workers=args.workers)
        try:
            for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                store.add(table)
        finally:
            store.flush()  # also on Ctrl-C or a lost cluster: the rows so far are kept
    failed = store.finish(paths)
    say(f"{len(paths)} rows written to {', '.join(targets)}")
    if failed:
        print(f"afiqa: {failed} of {len(paths)} files could not be scored (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def local_worker_pids() -> set[int]:
    """PIDs of this process's scoring actors on this machine (Linux; for benchmarks and tests).

    Ray names an actor's process ``ray::MapWorker(MapBatches(Scorer))``; a local
    cluster's processes descend from the process that started it.
    """
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or b"MapBatches(Scorer)" not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            while pid > 1 and pid != me:  # up the parents
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if pid == me:
            found.add(int(entry.name))
    return found

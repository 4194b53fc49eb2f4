"""What to score, as a list of path strings: files, folders and listing files.

    expand(["photos/", "s3://bucket/shoot/", "more.txt", "index.parquet"])

- A folder (local, or a prefix on a filesystem pyarrow knows: ``s3://``, ``gs://``,
  ``hdfs://``, ``abfs://``...) gives the image files inside it, recursively, sorted, hidden
  files and folders skipped, as ``afiqa.io.inputs.list_images`` does for local folders.
- A listing file (``.txt``/``.lst``: one path or URI per line, blank lines and ``#``
  comments skipped; ``.csv``/``.parquet``: its ``path`` column, so an afiqa output or a
  data set's index can be fed back in) gives the paths it lists, as written (a relative
  path is relative to the current folder).
- Anything else is kept as given, so a bad file named explicitly is reported.

Each path appears once, at its first position. A name that is not valid UTF-8 is
written with its odd bytes escaped (``\\xff``): Arrow holds UTF-8 text only, so such a
file gets an error row ("no such file") rather than stopping the run. Nothing is read over the network here
for local inputs; a URI is listed through ``pyarrow.fs``.
"""

from __future__ import annotations

import os
from pathlib import Path

from afiqa.errors import AfiqaError
from afiqa.io.inputs import IMAGE_EXTENSIONS, list_images

LISTING_SUFFIXES = frozenset({".txt", ".lst", ".csv", ".parquet", ".pq"})


def is_uri(text: str) -> bool:
    """``scheme://...`` (``file://`` included); a Windows drive letter is not a scheme."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def expand(sources) -> list[str]:
    """The image paths named by ``sources`` (paths, URIs, folders, listing files), each once."""
    out: list[str] = []
    for src in map(os.fspath, sources):
        if Path(src).suffix.lower() in LISTING_SUFFIXES:
            out.extend(read_listing(src))
        elif is_uri(src):
            out.extend(_list_uri(src))
        elif Path(src).is_dir():
            out.extend(map(str, list_images([src])))
        else:
            out.append(src)
    return list(dict.fromkeys(map(_utf8, out)))


def _utf8(path: str) -> str:
    """A file name that is not UTF-8 (``os.fsdecode`` surrogates) with its odd bytes as ``\\xNN``.

    Arrow and Parquet hold UTF-8 text only; such a file then gets an error row.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def read_listing(src: str) -> list[str]:
    """The paths a listing file names (see the module docstring); ``AfiqaError`` if unreadable."""
    suffix = Path(src).suffix.lower()
    try:
        if suffix in (".csv", ".parquet", ".pq"):
            table = _read_table(src, suffix)
            if "path" not in table.column_names:
                raise AfiqaError(f"{src}: a listing table needs a 'path' column; it has {', '.join(table.column_names)}")
            return [p for p in table.column("path").to_pylist() if p]
        with _open(src) as fh:
            text = fh.read().decode("utf-8", errors="surrogateescape")
    except AfiqaError:
        raise
    except FileNotFoundError:
        raise AfiqaError(f"{src}: no such listing file") from None
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError...
        raise AfiqaError(f"{src}: could not be read as a listing ({str(e).splitlines()[0][:160]})") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_table(src: str, suffix: str):
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        with _open(src) as fh:  # every column as text: a path is never a number
            return pcsv.read_csv(fh, convert_options=pcsv.ConvertOptions(column_types={"path": "string"}))
    import pyarrow.parquet as pq

    fs, path = _filesystem(src)
    return pq.read_table(path, filesystem=fs, columns=None)


def _open(src: str):
    fs, path = _filesystem(src)
    return fs.open_input_stream(path)


def _filesystem(src: str):
    """``(pyarrow filesystem, path on it)`` for a local path or a URI."""
    import pyarrow.fs as pafs

    if is_uri(src):
        return pafs.FileSystem.from_uri(src)
    return pafs.LocalFileSystem(), str(Path(src).absolute())


def _list_uri(src: str) -> list[str]:
    """Image files under a URI prefix (sorted, hidden skipped), or the URI itself if it is a file."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(src)
        info = fs.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            return [src]
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except Exception as e:
        raise AfiqaError(f"{src}: could not be listed ({str(e).splitlines()[0][:160]})") from None
    prefix = src[: len(src) - len(src.split("://", 1)[1])]  # the scheme, e.g. "s3://"
    found = []
    for i in infos:
        rel = i.path[len(root):].lstrip("/")
        if (i.type == pafs.FileType.File and Path(i.path).suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in rel.split("/"))):
            found.append(prefix + i.path)
    return sorted(found)

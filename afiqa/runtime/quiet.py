"""TensorFlow's start-up notices, kept off a command's standard error.

On processors where TensorFlow turns on its oneDNN kernels (seen on an AVX-512 AMD EPYC), its
import writes an INFO line, "oneDNN custom operations are on ...", each time preceded by
"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR".
The C++ side writes them to file descriptor 2 before logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not hold them back (TensorFlow 2.21). ``install()`` makes the
first ``import tensorflow`` run with descriptor 2 captured; what it wrote is then passed
on, less those known lines. Nothing else is dropped, and nothing is hidden when the user
asks for TensorFlow's INFO logs (``TF_CPP_MIN_LOG_LEVEL=0``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"
    r"|^I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\.")


@contextlib.contextmanager
def filtered_stderr():
    """Capture file descriptor 2 for the block, then write back all but the NOISE lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no usable standard error: nothing to keep clean
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    def __init__(self, name: str):
        self.name = name
        self._looking = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self._looking:
            return None
        self._looking = True  # the real spec, found by the other finders
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._looking = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run = spec.loader.exec_module

            def exec_module(module):
                if self in sys.meta_path:  # done after this import (a bare find_spec imports nothing)
                    sys.meta_path.remove(self)
                with filtered_stderr():
                    run(module)

            spec.loader.exec_module = exec_module
        return spec


def install(name: str = "tensorflow") -> None:
    """Filter the first import of ``name`` (TensorFlow) as the module docstring says; a
    no-op when it is imported already or the user asked for INFO logs."""
    if name in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        return
    if not any(isinstance(f, _QuietImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport(name))

"""Put the ImageNet MobileNet weights the tests build on into the Keras cache.

    python scripts/fetch_keras_weights.py              # with internet: Keras downloads them
    python scripts/fetch_keras_weights.py --from DIR   # offline: copy them from a Keras cache DIR

The cache is ``$KERAS_HOME``; without it, the offline cache ``../shared/keras`` beside the
checkout when there is one (as tests/conftest.py picks it, so the tests then use it too),
else Keras's default ``~/.keras``. The files go to its ``models/`` folder. When they are already there, nothing is done and nothing is
written (so a read-only cache, such as CI's, is fine). The app and the CLI do not need
them: the shipped afiqa weights hold the backbones too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The files keras.applications looks for (include_top=False, alpha 1.0, any input size).
FILES = {
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "mobilenet": "mobilenet_1_0_224_tf_no_top.h5",
}


SHARED_KERAS = ROOT.parent / "shared" / "keras"  # the offline cache beside the checkout (CI's); tests/conftest.py too


def keras_home() -> Path:
    """``$KERAS_HOME``; unset, ``../shared/keras`` beside the checkout if it is a folder, else ``~/.keras``."""
    if os.environ.get("KERAS_HOME"):
        return Path(os.path.expanduser(os.environ["KERAS_HOME"]))
    if SHARED_KERAS.is_dir():
        return SHARED_KERAS
    return Path(os.path.expanduser("~/.keras"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", type=Path, metavar="DIR", help="a Keras cache holding them (offline)")
    args = p.parse_args(argv)
    home = keras_home()
    os.environ["KERAS_HOME"] = str(home)  # Keras's download below goes there too
    models = home / "models"
    missing = {name: f for name, f in FILES.items() if not (models / f).is_file()}
    if not missing:
        print(f"ImageNet MobileNet weights: already in {models}")
        return 0
    if args.source:
        for f in missing.values():
            src = next((c for c in (args.source / "models" / f, args.source / f) if c.is_file()), None)
            if src is None:
                print(f"fetch_keras_weights: {f} is not in {args.source} (nor in its models/)", file=sys.stderr)
                return 2
            models.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, models / f)
    else:
        import socket

        from afiqa.model.backbones import get_backbone

        socket.setdefaulttimeout(60)  # Keras's download has no timeout of its own: a silent network must not hang
        for name in missing:
            try:
                get_backbone(name).build("imagenet")  # Keras downloads into $KERAS_HOME/models
            except Exception as e:  # no network, most often
                print(f"fetch_keras_weights: could not download the {name} ImageNet weights into {models} ({e}).\n"
                      f"Offline, point to a Keras cache holding models/{FILES[name]}: export KERAS_HOME=DIR "
                      f"(or put one at {SHARED_KERAS}, which is used when KERAS_HOME is unset), or copy it in "
                      f"with --from DIR", file=sys.stderr)
                return 2
    print(f"ImageNet MobileNet weights: in {models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

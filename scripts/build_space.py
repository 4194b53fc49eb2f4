"""Build a ready-to-push Hugging Face Space folder for the afiqa app, and upload it.

    python scripts/build_space.py OUT [--model NAME|CARD.json] [--weights-from lfs|hub]
                                      [--upload OWNER/SPACE] [--dry-run]

OUT gets what a Gradio Space runs, and nothing else: ``app.py``, the ``afiqa`` package,
``requirements.txt`` (this repository's, less its ``-e .`` line: the app imports the package
from the folder), ``examples/``, a ``README.md`` with the Space's front matter, the
model card ``weights/<model>.json`` and a ``.gitattributes`` that stores weight files
(``*.h5``, ``*.keras``, ``*.tflite``) in Git LFS, which the Hub requires of any file
over 10 MB. Where the weights come from:

- ``--weights-from lfs`` (default): the weights file is copied into ``weights/``;
  ``git push`` or ``--upload`` sends it through LFS.
- ``--weights-from hub``: no weights file; the app downloads it at start from the
  card's Hub model repo (publish it first with ``scripts/publish_model.py``).

The ``.gitattributes`` belongs to the built folder only: this repository's own weights
stay plain git objects. The build refuses to finish if a file over 10 MB would sit
outside LFS.

``--upload OWNER/SPACE`` creates the Space (``HfApi.create_repo``, SDK gradio) if needed
and uploads the folder with ``HfApi.upload_folder`` (a token from ``hf auth login`` or
``HF_TOKEN``). ``--dry-run`` builds the folder and prints the files and what would be
uploaded, without any network.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LFS_PATTERNS = ("*.h5", "*.keras", "*.tflite")
HUB_FILE_LIMIT = 10 * 1024 * 1024  # the Hub refuses a plain-git file over 10 MB
PACKAGE_SKIP = ("__pycache__", "*.pyc")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("out", type=Path, help="folder to build (created; must be empty if it exists)")
    p.add_argument("--model", default=None, help="model name or model card .json (default: the default model)")
    p.add_argument("--weights-from", choices=("lfs", "hub"), default="lfs")
    p.add_argument("--upload", metavar="OWNER/SPACE", help="create the Space if needed and upload the folder")
    p.add_argument("--dry-run", action="store_true", help="build and list, upload nothing")
    args = p.parse_args(argv)
    try:
        files = build(args.out, args.model, args.weights_from)
    except (ValueError, OSError) as e:
        print(f"build_space: {e}", file=sys.stderr)
        return 2
    print(describe(args.out, files))
    if args.upload:
        if args.dry_run:
            print(f"dry run: would create the Space {args.upload} (sdk gradio) if needed and upload "
                  f"{len(files)} files from {args.out} with HfApi.upload_folder")
        else:
            url = upload(args.out, args.upload)
            print(f"uploaded: {url}")
    return 0


def build(out: Path, model: str | None = None, weights_from: str = "lfs") -> list[Path]:
    """Build the Space in ``out``; returns its files, relative to ``out``."""
    from afiqa.predictor import load_card
    from afiqa.runtime.zoo import DEFAULT_MODEL

    card, card_dir = load_card(model or DEFAULT_MODEL)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "app.py", out / "app.py")
    shutil.copytree(ROOT / "afiqa", out / "afiqa", ignore=shutil.ignore_patterns(*PACKAGE_SKIP))
    (out / "requirements.txt").write_text(space_requirements((ROOT / "requirements.txt").read_text(encoding="utf-8")))
    shutil.copytree(ROOT / "examples", out / "examples")
    if (ROOT / "LICENSE").is_file():
        shutil.copy2(ROOT / "LICENSE", out / "LICENSE")
    weights = out / "weights"
    weights.mkdir()
    (weights / f"{card.name}.json").write_text(json.dumps(card.to_dict(), indent=2) + "\n")
    if weights_from == "lfs":
        from afiqa.runtime.weights import resolve_weights

        src = resolve_weights(card, weights_dir=card_dir)  # verified against the card's sha256
        shutil.copy2(src, weights / card.weights_file)
        if card.side_heads.get("file"):  # problem and uncertainty (afiqa.model.sideheads): small, plain git
            shutil.copy2(src.parent / card.side_heads["file"], weights / card.side_heads["file"])
    (out / ".gitattributes").write_text(
        "# Weight files go to Git LFS: the Hub refuses plain-git files over 10 MB.\n"
        + "".join(f"{pat} filter=lfs diff=lfs merge=lfs -text\n" for pat in LFS_PATTERNS)
    )
    (out / "README.md").write_text(space_readme(card, weights_from, default=model is None))
    files = sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file())
    too_big = [f for f in files if (out / f).stat().st_size > HUB_FILE_LIMIT and not in_lfs(f)]
    if too_big:
        raise ValueError(f"files over 10 MB outside LFS: {', '.join(map(str, too_big))}")
    return files


def space_requirements(text: str) -> str:
    """requirements.txt for a Space: this repository's, less the line that installs the project itself
    (``-e .``, ``.``): a Space runs ``pip install -r requirements.txt`` before its files are there, and its
    app imports the package from its own folder."""
    def installs_project(line: str) -> bool:
        words = line.split("#", 1)[0].split()
        return words in (["."], ["-e", "."], ["--editable", "."], ["./"], ["-e", "./"])

    keep: list[str] = []
    for line in text.splitlines(keepends=True):
        if installs_project(line):
            while keep and keep[-1].lstrip().startswith("#"):  # and the comment that explains it
                keep.pop()
        else:
            keep.append(line)
    return "".join(keep)


def in_lfs(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pat) for pat in LFS_PATTERNS)


def front_matter() -> str:
    """The YAML front matter of this repository's README (the Space's settings)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError("README.md has no front matter")
    return text[: text.index("\n---\n", 4) + 5]


def space_readme(card, weights_from: str, default: bool) -> str:
    head = front_matter()
    extra = []
    if weights_from == "hub":
        extra.append(f"models:\n  - {card.hub_repo}\n")
    if not default:  # the app reads AFIQA_MODEL; a Space sets variables in its settings
        extra.append(f"# Set the Space variable AFIQA_MODEL=weights/{card.name}.json to serve this model.\n")
    head = head[:-4] + "".join(extra) + "---\n"
    where = (f"downloaded at start from the Hub model repo [`{card.hub_repo}`](https://huggingface.co/{card.hub_repo})"
             if weights_from == "hub" else f"in `weights/{card.weights_file}` (Git LFS)")
    return (
        f"{head}\n# afiqa: blind image quality assessment\n\n"
        "Drop a photo to get a quality score from 0 to 100 (higher is better) and a heat-map of what "
        "raises and lowers it; compare versions of a photo; score a batch and download a CSV.\n\n"
        f"Model: `{card.name}` ({', '.join(card.config.backbones)}, {card.config.image_size} px), weights {where}. "
        "Built by `scripts/build_space.py` from the afiqa repository.\n"
    )


def describe(out: Path, files: list[Path]) -> str:
    lines = [f"built {out}: {len(files)} files"]
    for f in files:
        size = (out / f).stat().st_size
        if f.parts[0] in ("afiqa", "examples") and size < HUB_FILE_LIMIT:
            continue
        lines.append(f"  {f}  {size / 1e6:.2f} MB{'  (LFS)' if in_lfs(f) else ''}")
    for folder in ("afiqa", "examples"):
        n = sum(1 for f in files if f.parts[0] == folder)
        lines.append(f"  {folder}/  {n} files")
    return "\n".join(lines)


def upload(out: Path, repo_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    info = api.upload_folder(folder_path=out, repo_id=repo_id, repo_type="space",
                             commit_message="afiqa Space, built by scripts/build_space.py")
    return str(getattr(info, "commit_url", info))


if __name__ == "__main__":
    sys.exit(main())

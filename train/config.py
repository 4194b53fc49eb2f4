"""Training configuration: a YAML file, dotted command-line overrides, saved resolved."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def load(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The YAML at ``path`` with ``key.sub=value`` overrides (values parsed as YAML)."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section of the config")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"override {item!r}: unknown key {key!r}; known here: {sorted(node)}")
        node[leaf] = yaml.safe_load(raw)
    return copy.deepcopy(cfg)


def dump(cfg: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False))

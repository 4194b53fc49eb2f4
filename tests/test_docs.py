"""The README and docs/ as a newcomer reads them: every snippet runs, every figure has one source.

- Every ```python block in README.md and docs/*.md runs as written, each in a fresh
  process, from a scratch folder that holds only a link to ``examples/`` (so a snippet
  cannot lean on files of the clone other than the ones a user has beside the README).
- Every ```bash block carries a marker on the line before its fence:
  ``<!-- test: bash -->`` (safe and quick: it runs here, the same way) or
  ``<!-- not run: REASON -->`` (it installs, trains on a data set, uploads or needs a
  cluster). A block with neither fails, so a new shell snippet gets a decision.
- The README's figures for the shipped models are the ones in their model cards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*(test: bash|not run: .+?)\s*-->\s*$")


def code_blocks(path: Path) -> list[dict]:
    """Fenced blocks of a Markdown file: language, code, the marker before it, line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        before = lines[start - 1] if start > 0 else ""
        mark = MARK.match(before.strip())
        blocks.append({"lang": lang, "code": "\n".join(lines[start + 1:j]), "line": start + 1,
                       "mark": mark.group(1) if mark else None,
                       "file": (path.relative_to(ROOT) if path.is_relative_to(ROOT) else path).as_posix()})
        i = j + 1
    return blocks


ALL = [b for p in DOCS for b in code_blocks(p)]
PYTHON = [b for b in ALL if b["lang"] == "python"]
SHELL = [b for b in ALL if b["lang"] in ("bash", "sh", "shell", "console")]
RUN_SHELL = [b for b in SHELL if b["mark"] == "test: bash"]


def _id(b: dict) -> str:
    return f"{b['file']}:{b['line']}"


def _scratch(tmp_path: Path) -> Path:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _env() -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               TF_CPP_MIN_LOG_LEVEL="2")
    bindir = str(Path(sys.executable).parent)  # the venv's `afiqa` command, as after activation
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def test_the_docs_have_snippets_to_check():
    # a parser that finds nothing would pass everything below
    assert len(PYTHON) >= 2 and len(RUN_SHELL) >= 1, [_id(b) for b in ALL]
    assert any(b["file"] == "README.md" for b in PYTHON)


def test_the_parser_reads_fences_and_markers(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("text\n<!-- test: bash -->\n```bash\nafiqa info\n```\n\n```python\nprint(1)\n```\n"
                  "<!-- not run: installs -->\n```bash\npip install x\n```\n")
    blocks = code_blocks(md)
    assert [(b["lang"], b["code"], b["mark"]) for b in blocks] == [
        ("bash", "afiqa info", "test: bash"), ("python", "print(1)", None), ("bash", "pip install x", "not run: installs")]


@pytest.mark.parametrize("block", SHELL, ids=_id)
def test_every_shell_block_says_whether_it_runs(block):
    assert block["mark"], (f"{_id(block)}: put `<!-- test: bash -->` (safe, quick, runs in the tests) or "
                           f"`<!-- not run: REASON -->` on the line before the fence")


@pytest.mark.real_weights
@pytest.mark.parametrize("block", PYTHON, ids=_id)
def test_python_snippet_runs_as_written(block, tmp_path):
    r = subprocess.run([sys.executable, "-c", block["code"]], cwd=_scratch(tmp_path), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{_id(block)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


@pytest.mark.real_weights
@pytest.mark.parametrize("block", RUN_SHELL, ids=_id)
def test_shell_snippet_runs_as_written(block, tmp_path):
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]], cwd=_scratch(tmp_path), env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{_id(block)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"


def _cards() -> dict[str, dict]:
    cards = {}
    for p in [*(ROOT / "weights").glob("*.json"), *(ROOT / "docs" / "models").glob("*.json")]:
        c = json.loads(p.read_text())
        cards[c["name"]] = c
    return cards


def test_the_readme_models_table_is_the_cards():
    """Each row of the README's model table quotes its card's test SROCC / PLCC and LOSO mean."""
    cards = _cards()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [ln for ln in readme.splitlines() if ln.startswith("| ") and re.search(r"afiqa-[\w.]+", ln)
            and re.search(r"\d\.\d{3} / \d\.\d{3}", ln)]
    named = set()
    for row in rows:
        name = re.search(r"(afiqa-[\w.]+)", row).group(1)
        if name not in cards:
            continue
        named.add(name)
        card = cards[name]
        srocc, plcc = map(float, re.search(r"(\d\.\d{3}) / (\d\.\d{3})", row).groups())
        # to 3 decimals, either way at a tie (0.8855 is 0.88549... as a float)
        assert abs(srocc - card["test_metrics"]["srocc"]) <= 5e-4 + 1e-9, row
        assert abs(plcc - card["test_metrics"]["plcc"]) <= 5e-4 + 1e-9, row
        loso = card["training"].get("leave_one_subset_out") or {}
        folds = [loso[k]["srocc"] for k in ("ss01", "ss02", "ss03") if k in loso]
        if len(folds) == 3:
            assert f"{sum(folds) / 3:.3f}" in row, (row, sum(folds) / 3)
    assert set(cards) <= named, f"models with a card but no row in the README's table: {set(cards) - named}"

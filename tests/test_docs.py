"""The docs stand alone: every document that code, configs, tests and docs cite is in the repository."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py", "*.toml", "*.md", "*.sh"], cwd=ROOT, capture_output=True,
                         text=True)
    files = out.stdout.split() if out.returncode == 0 else []
    return [ROOT / f for f in files if (ROOT / f).is_file()] or [p for p in ROOT.rglob("*.md") if ".venv" not in p.parts]


def test_cited_documents_exist():
    missing = []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        for ref in sorted(set(re.findall(r"\bdocs/[\w./-]+\.md\b", text))):
            if not (ROOT / ref).is_file():
                missing.append(f"{path.relative_to(ROOT)} → {ref}")
    assert missing == []


def test_nothing_cites_notes_outside_the_repository():
    outside = [str(p.relative_to(ROOT)) for p in tracked_text_files()
               if p.name != "test_docs.py" and re.search(r"\.\./shared/|\bPAPER_NOTES\b|\bPROBES\.md\b",
                                                          p.read_text(errors="replace"))]
    assert outside == []

"""Assemble the files of the leaderboard's Hugging Face Space into one folder.

A Space is its own git repository, so it cannot import this checkout. The bundle copies
what the app imports: the ``leaderboard`` package, the light part of ``benchmark``
(records, metrics, stores; nothing that imports torch) and ``tasks/criteria.yaml``,
next to the Space's ``app.py``, ``README.md`` (front matter) and ``requirements.txt``.

    python -m leaderboard.space.bundle build/space
    hf upload OWNER/SPACE build/space . --repo-type space
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPACE = Path(__file__).resolve().parent

SPACE_FILES = ("app.py", "README.md", "requirements.txt")
BENCHMARK_FILES = (
    "__init__.py",
    "records.py",
    "record_schema.py",
    "metrics.py",
    "sequence_metrics.py",
    "paths.py",
    "hub.py",
    "reported.py",
    "results.py",
)
EXTRA_FILES = ("tasks/criteria.yaml",)


def bundle(out: Path) -> list[Path]:
    """Write the Space's files into ``out`` (replacing what the bundle owns); return them."""
    out = Path(out)
    written = []

    def copy(src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        written.append(dest)

    for name in SPACE_FILES:
        copy(SPACE / name, out / name)
    for name in BENCHMARK_FILES:
        copy(ROOT / "benchmark" / name, out / "benchmark" / name)
    for src in sorted((ROOT / "benchmark" / "stores").glob("*.py")):
        copy(src, out / "benchmark" / "stores" / src.name)
    for src in sorted((ROOT / "leaderboard").glob("*.py")):
        copy(src, out / "leaderboard" / src.name)
    for rel in EXTRA_FILES:
        copy(ROOT / rel, out / rel)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the Space's files into")
    args = parser.parse_args()
    files = bundle(args.out)
    print(f"{len(files)} files written to {args.out}")


if __name__ == "__main__":
    main()

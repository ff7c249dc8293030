"""Lay out what the Dockerfile's build stage copies, as `docker build` would, without Docker.

    python docker_context.py DOCKERFILE CONTEXT_DIR DEST_DIR

Copies the sources of every ``COPY`` of the first stage (not ``COPY --from``) from CONTEXT_DIR
into DEST_DIR under the same relative paths, keeping symlinks as symlinks (as COPY does), and
fails when a source is missing or excluded by CONTEXT_DIR/.dockerignore.
"""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import sys
from pathlib import Path


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            result = not negate
    return result


def build_stage_sources(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text("utf-8").replace("\\\n", " ")
    stages = text.split("\nFROM ")
    sources: list[str] = []
    for line in stages[1].splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "COPY" and not any(w.startswith("--") for w in words):
            sources += words[1:-1]
    return sources


def main(dockerfile: Path, context: Path, dest: Path) -> int:
    ignore_file = context / ".dockerignore"
    lines = ignore_file.read_text("utf-8").splitlines() if ignore_file.exists() else []
    patterns = [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]
    dest.mkdir(parents=True, exist_ok=True)
    for src in build_stage_sources(dockerfile):
        rel = src.rstrip("/")
        source = context / rel
        if not source.exists() or ignored(rel, patterns):
            sys.stderr.write(f"error: COPY {src}: missing from the build context\n")
            return 1
        if source.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, dest / rel, symlinks=True, ignore=skip)
        else:
            shutil.copy2(source, dest / rel)
    sys.stdout.write("build context: " + " ".join(sorted(p.name for p in dest.iterdir())) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))

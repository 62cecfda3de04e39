"""mkdocs hook: pages link to files of the repository outside docs/ (the README, committed reports and
plots, the dataset notes) by their relative paths, as a reader on GitHub follows them.

The site gets a copy of each such file under ``repo/`` (and of what a copied page links to, in turn),
and every link is pointed at the page or copy it means. A link to a file that does not exist is left as
it is, so ``mkdocs build --strict`` reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")
REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
OUTSIDE = "repo"  # where the site keeps its copies of the repository's files


def _real(src_uri: str) -> Path:
    """The file in the repository that a page of the site (its path in the site's sources) comes from."""
    if src_uri.startswith(f"{OUTSIDE}/"):
        return REPO / src_uri.removeprefix(f"{OUTSIDE}/")
    return DOCS / src_uri


def _site_path(path: Path) -> str | None:
    """Where a repository file is in the site's sources: docs/ pages as they are, the rest under repo/."""
    if path.is_relative_to(DOCS):
        return path.relative_to(DOCS).as_posix()
    if path.is_relative_to(REPO) and path.is_file():
        return f"{OUTSIDE}/{path.relative_to(REPO).as_posix()}"
    return None


def _targets(page: Path) -> list[tuple[re.Match, Path]]:
    """Every relative link of a markdown file, with the file it points to."""
    found = []
    for match in LINK.finditer(page.read_text(encoding="utf-8")):
        if "://" not in match[2] and not match[2].startswith(("/", "mailto:")):
            found.append((match, (page.parent / match[2]).resolve()))
    return found


def on_files(files, config):
    todo = [DOCS / f.src_uri for f in files if f.src_uri.endswith(".md")]
    copied: set[Path] = set()
    while todo:  # a copied page's own links must resolve too: copy what it links to, and so on
        for _, target in _targets(todo.pop()):
            if target in copied or target.is_relative_to(DOCS) or _site_path(target) is None:
                continue
            copied.add(target)
            if target.suffix == ".md":
                todo.append(target)
    for path in sorted(copied):
        files.append(File.generated(config, _site_path(path), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    here = posixpath.dirname(page.file.src_uri) or "."
    real = _real(page.file.src_uri)

    def point(match: re.Match) -> str:
        if "://" in match[2] or match[2].startswith(("/", "mailto:")):
            return match[0]
        target = _site_path((real.parent / match[2]).resolve())
        if target is None:
            return match[0]
        return f"{match[1]}{posixpath.relpath(target, here)}{match[3]}"

    return LINK.sub(point, markdown)

"""MkDocs hooks of the documentation site (``hooks:`` in ``mkdocs.yml``).

Some repository files outside ``docs/`` belong on the site too. Each is published as a generated
page, and the pages' links to the repository file (written ``../bench/README.md`` so that they work
when the Markdown is read in the repository) point to that page on the site. Links from the
included file back into ``docs/`` are rewritten the other way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

# repository path -> page of the site
INCLUDED = {"bench/README.md": "benchmark-figures.md"}


def on_files(files: Files, config: Any) -> Files:
    for source, page in INCLUDED.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        text = re.sub(r"\]\(\.\./docs/", "](", text)
        files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for source, target in INCLUDED.items():
        markdown = markdown.replace(f"](../{source}", f"]({target}")
    return markdown

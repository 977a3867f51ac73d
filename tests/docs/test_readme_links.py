"""README.md's pictures and relative links point at files that are in the repository (a broken link is a picture
a reader of the README never sees)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    """The link targets of markdown links and images that are repository paths (no URL, no in-page anchor)."""
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


def test_link_parser_finds_images_and_skips_urls():
    text = "![a](docs/x.png) [b](https://e.org/y.png) [c](#anchor) [d](lddgan_core/model.py#L3)"
    assert relative_links(text) == ["docs/x.png", "lddgan_core/model.py"]


def test_readme_links_exist():
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(links) >= 10, links  # the README shows its grids: the parser must find them
    missing = sorted({p for p in links if not (ROOT / p).exists()})
    assert not missing, f"README.md links to files that are not in the repository: {missing}"

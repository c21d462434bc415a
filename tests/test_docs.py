"""The documentation's shape: a short README that starts with the two commands, and
relative links that lead somewhere."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README_BUDGET = 150  # lines (issue 31): everything else belongs in docs/
COMMANDS_WITHIN = 30  # the two commands' fenced block starts on the first screen


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_BUDGET, (
        f"README.md has {len(lines)} lines, over its budget of {README_BUDGET}: "
        "move the detail into docs/ (see docs/README.md)")
    blocks = re.findall(r"^```bash\n(.*?)^```", "\n".join(lines[:COMMANDS_WITHIN]) + "\n",
                        flags=re.M | re.S)
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    for command in ("make demo", "make test"):
        assert command in commands, (
            f"README.md's first {COMMANDS_WITHIN} lines have no ```bash block running {command!r}")


# [text](target) and ![alt](target), the target up to a space (an optional "title") or ")"
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _docs():
    return [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "api.md")]


def _relative_links(text):
    """The relative targets of a markdown text's links, without their #fragment."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # links in code blocks are code
    text = re.sub(r"`[^`\n]*`", "", text)                       # and so are those in inline code
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I) or target.startswith("#"):
            continue  # http(s), mailto, ...; an anchor in the same page
        yield target.split("#")[0]


def test_the_docs_are_found():
    names = {p.relative_to(REPO).as_posix() for p in _docs()}
    assert {"README.md", "docs/README.md", "docs/guide.md", "docs/experiments.md"} <= names, names


def test_every_relative_link_in_the_docs_points_at_a_file_that_exists():
    broken, checked = [], 0
    for doc in _docs():
        for target in _relative_links(doc.read_text(encoding="utf-8")):
            checked += 1
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert checked > 10, checked
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_the_link_finder_sees_what_it_should():
    """The link test is only as good as its pattern: images, titles and fragments are
    read; code, absolute addresses and same-page anchors are not."""
    text = ('[a](guide.md#1-mixtures) ![b](figures/x.png "a title") [c](https://example.org/y.md)\n'
            '[d](#local) `[e](in-code.md)`\n```\n[f](in-block.md)\n```\n[g](../README.md)\n')
    assert list(_relative_links(text)) == ["guide.md", "figures/x.png", "../README.md"]

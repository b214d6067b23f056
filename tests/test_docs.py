"""The README is a guide: short, in a newcomer's order, without CPU models, linking every page of docs/;
and every relative link in the docs leads somewhere."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CPU_MODELS = re.compile(r"EPYC|Xeon|Zen ?\d|Ryzen|Threadripper|Opteron|Core i[3579]|Graviton|Neoverse|\bIntel\b|\bAMD\b",
                        re.IGNORECASE)


def lines():
    return README.read_text(encoding="utf-8").splitlines()


def line_of(prefix: str) -> int:
    return next(i for i, line in enumerate(lines(), start=1) if line.startswith(prefix))


def test_the_readme_is_at_most_250_lines():
    assert len(lines()) <= 250


def test_the_readme_runs_in_a_newcomers_order():
    order = ["## Quick start", "## What a run gives", "## The pipeline", "## Real data", "## Experiments",
             "## The app", "## Layout"]
    assert [line_of(h) for h in order] == sorted(line_of(h) for h in order)
    assert line_of("| stage | script |") < 80
    assert max(line_of("## Real data"), line_of("## Experiments"), line_of("## The app")) < 220


def test_the_readme_names_no_cpu_model():
    assert [line for line in lines() if CPU_MODELS.search(line)] == []


def test_ci_runs_the_readmes_test_command():
    text = README.read_text(encoding="utf-8")
    assert "```bash\n.venv/bin/python -m pytest -q\n```" in text
    assert "\n.venv/bin/python -m pytest -q\n" in (REPO / ".ci" / "run").read_text()


def test_the_readme_links_every_page_of_docs():
    linked = {(REPO / target.split("#")[0]).resolve() for target in LINK.findall(README.read_text(encoding="utf-8"))}
    assert sorted(p.name for p in (REPO / "docs").glob("*.md") if p.resolve() not in linked) == []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, no punctuation but - and _, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = set(re.findall(r'<a id="([^"]+)"></a>', text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert broken == []


def test_the_layout_does_not_say_acquire_is_imported_by_nothing_else():
    # skinlesion/serve/app.py renders the bundled examples with acquire.demo_data
    assert "render_demo_image" in (REPO / "skinlesion" / "serve" / "app.py").read_text()
    layout = README.read_text(encoding="utf-8").split("## Layout", 1)[1]
    assert "nothing else imports it" not in layout and "app's bundled examples" in layout

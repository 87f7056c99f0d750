"""Screenshots of the evidence reports, made with Debian's chromium from the test fixture
(tests/evidence_fixtures.py: synthetic results on tests/fakes.py's hand-made reference, not a real run).

    .venv/bin/python scripts/screenshots_evidence.py docs/screenshots

writes FOLDER/feedback-evidence.png (the "Your own runs" section of a student who ran every learning
rate and 4 batch sizes) and FOLDER/class-coverage.png (the class report's coverage section).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def write_reports(out: Path) -> tuple[Path, Path]:
    """The fixture's feedback pages and class report under `out`; -> (one feedback page, summary.html)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from evidence_fixtures import evidence_results
    from fakes import fake_reference, spec

    from grader.reports.report import write_class_report, write_feedback

    sp = spec()
    ref = fake_reference(sp)
    results = evidence_results(sp, ref)
    for r in results:
        write_feedback(out, r, sp, False, ref)
    write_class_report(out, results, sp, ref)
    return out / "feedback" / "ava.html", out / "summary.html"


def shoot(pages: list[tuple[Path, str, Path]]) -> None:
    """Each (page, CSS selector, png): the element alone, at a laptop's width."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for page_path, selector, png in pages:
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(page_path.as_uri())
                page.wait_for_load_state("load")
                page.locator(selector).screenshot(path=str(png))
                page.close()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the PNGs go (created if missing)")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        feedback, summary = write_reports(Path(tmp))
        shoot([(feedback, "#own-runs", args.folder / "feedback-evidence.png"),
               (summary, "#coverage", args.folder / "class-coverage.png")])
    for name in ("feedback-evidence.png", "class-coverage.png"):
        print(args.folder / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the screenshots of the two pages in docs/figures with headless chromium.

    python docs/screenshots.py ROLLOUTS     # ROLLOUTS: the README's random_choice.jsonl

Needs Debian's chromium (`make browser`). The explorer is shown on the paper's Fig. 4 problem; the
diagnose report on ROLLOUTS at beta 0.001 and 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mara_rl.cli import main

FIGURES = Path(__file__).resolve().parent / "figures"


def screenshot(page: Path, png: Path, size: str = "1280,900") -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (make browser)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={size}",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True)
    print(f"wrote {png}")


def run(rollouts: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        explorer, report = Path(tmp) / "explorer.html", Path(tmp) / "report.html"
        if main(["explore", "--out", str(explorer)]) or main(["diagnose", rollouts, "--beta", "0.001", "1", "--html", str(report)]):
            sys.exit("could not write the pages")
        screenshot(explorer, FIGURES / "explore.png")
        screenshot(report, FIGURES / "diagnose_html.png")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run(sys.argv[1])

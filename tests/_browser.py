"""A real headless browser for the page tests: Debian's chromium driven by selenium's chromedriver.

``make test`` installs both (``make browser``: ``apt-get install chromium chromium-driver``; selenium
comes with the ``[dev]`` extra). Where they cannot be installed the tests skip and say what is missing.
"""

from __future__ import annotations

import shutil

import pytest

INSTALL_HINT = "run `make browser` (as root: apt-get install -y chromium chromium-driver) and pip install selenium"


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for program in ("chromium", "chromedriver"):
        if _which(program) is None:
            return f"{program} is not on PATH"
    return None


def _which(program: str) -> str | None:
    candidates = {"chromium": ("chromium", "chromium-browser", "google-chrome"), "chromedriver": ("chromedriver",)}[program]
    return next((path for path in map(shutil.which, candidates) if path), None)


def start_browser():
    """A headless chromium session (1280x900), or a skip naming what is missing."""
    missing = _missing()
    if missing is not None:
        pytest.skip(f"no headless browser: {missing}; {INSTALL_HINT}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    # An explicit driver path: selenium then never looks for (or downloads) a driver of its own.
    return webdriver.Chrome(service=Service(_which("chromedriver")), options=options)

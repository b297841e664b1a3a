"""The counting page in a real browser: headless Chromium driven by Playwright, against a live server.

Skips, with the reason, where Playwright or a Chromium binary is missing (``.ci/run`` installs
Debian's ``chromium``)."""

from __future__ import annotations

import csv
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install -e '.[dev]')")

from skipnas.count import count_images
from skipnas.serve.app import create_app
from skipnas.serve.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (apt-get install chromium)")


@pytest.fixture
def served(bright_spot_model: Path, tmp_path: Path) -> Iterator[tuple[str, Workspace]]:
    workspace = Workspace(bright_spot_model, tmp_path / "work", device="cpu")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(workspace), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", workspace
    server.should_exit = True
    thread.join(timeout=10)
    workspace.close()


@pytest.fixture
def browser_page() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        yield page
        browser.close()


def test_upload_count_reject_and_download_in_chromium(served, browser_page, two_images, tmp_path) -> None:
    url, workspace = served
    page = browser_page
    expect = sync_api.expect
    page.goto(url)
    page.set_input_files("#file-input", [str(p) for p in two_images])
    expect(page.locator("#batch-total")).to_have_text("5", timeout=30_000)

    page.locator(".image-row", has_text="first.png").click()
    expect(page.locator("#image-total")).to_have_text("first.png: 3 particles")
    expect(page.locator("#particle-table tbody tr")).to_have_count(3)
    canvas = page.locator("#canvas")
    box = canvas.bounding_box()
    page.mouse.click(box["x"] + 60 / 128 * box["width"], box["y"] + 50 / 96 * box["height"])  # the disk at (60, 50)
    expect(page.locator("#image-total")).to_have_text("first.png: 2 particles")
    expect(page.locator("#batch-total")).to_have_text("4")
    expect(page.locator("#particle-table tbody tr.rejected")).to_have_count(1)

    with page.expect_download() as download:
        page.click("#download-particles")
    downloaded = list(csv.DictReader(Path(download.value.path()).read_text().splitlines()))
    count_images(workspace.folder.path, two_images, tmp_path / "counted", device="cpu", progress=False)
    counted = [{**row, "file": Path(row["file"]).name} for row in csv.DictReader((tmp_path / "counted" / "particles.csv").read_text().splitlines())]
    rejected = [row for row in counted if row["file"] == "first.png" and (row["x"], row["y"]) == ("54", "44")]
    assert len(rejected) == 1
    def by_particle(row: dict[str, str]) -> tuple[str, int]:
        return row["file"], int(row["id"])

    # the two uploads race, so the images may come in either order
    assert sorted(downloaded, key=by_particle) == sorted((row for row in counted if row is not rejected[0]), key=by_particle)


def test_a_refused_upload_shows_its_reason_on_the_page(served, browser_page, tmp_path) -> None:
    url, _ = served
    page = browser_page
    notes = tmp_path / "notes.png"
    notes.write_text("these are not pixels")
    page.goto(url)
    page.set_input_files("#file-input", [str(notes)])
    sync_api.expect(page.locator("#image-list li.error")).to_contain_text("notes.png: not an image")

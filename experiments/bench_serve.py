"""The counting page against `skipnas count` on one large image, and the page's responsiveness.

Builds a SIZE x SIZE image by tiling the given images, then, alternating, times:
- ``count``: ``python -m skipnas count MODEL IMAGE --out DIR --no-overlays`` (a fresh process,
  model loading included, as a user runs it);
- ``count_images``: the same in this process, Python and torch already loaded (the counting's own work);
- ``page``: a running ``skipnas serve`` in headless Chromium: from picking the file to the image
  drawn with its outlines and its count shown (upload, counting, the display image, the outlines);
- ``second image``: while a large image counts, the time to open an already counted one.
Where no Chromium is found, the page is timed through its HTTP API instead (rows say which).
With ``--screenshot``, the page is first photographed with the given images counted, the first
shown with one particle rejected.

    python experiments/bench_serve.py --model MODEL_DIR --images a.png b.png ... --size 2048 \
        --repeats 3 --screenshot docs/serve.png --out experiments/results/bench_serve.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from skipnas.data.io import read_image, write_image


def tiled_image(paths: list[Path], size: int) -> np.ndarray:
    """A size x size mosaic of the images (grey if the first is grey), in reading order, repeated as needed."""
    tiles = [read_image(p) for p in paths]
    grey = tiles[0].ndim == 2
    tiles = [t if (t.ndim == 2) == grey else (t.mean(axis=2).astype(t.dtype) if grey else np.repeat(t[..., None], 3, 2))
             for t in tiles]
    canvas = np.zeros((size, size) if grey else (size, size, 3), tiles[0].dtype)
    y = index = 0
    while y < size:
        x, row_height = 0, 0
        while x < size:
            tile = tiles[index % len(tiles)]
            index += 1
            h, w = min(tile.shape[0], size - y), min(tile.shape[1], size - x)
            canvas[y : y + h, x : x + w] = tile[:h, :w]
            x, row_height = x + w, max(row_height, h)
        y += row_height
    return canvas


def time_count(model: Path, image: Path, work: Path, run: int) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "skipnas", "count", str(model), str(image), "--out", str(work / f"count-{run}"),
                    "--device", "cpu", "--no-overlays"], check=True, capture_output=True)
    return time.perf_counter() - started


def time_count_in_process(model: Path, image: Path, work: Path, run: int) -> float:
    from skipnas.count import count_images

    started = time.perf_counter()
    count_images(model, [image], work / f"in-process-{run}", device="cpu", overlays=False, progress=False)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "skipnas", "serve", str(model), "--port", str(port), "--workdir",
                               str(work / "serve"), "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/api/overview", timeout=1).read()
            return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"skipnas serve stopped: {server.stderr.read().decode()}")
            time.sleep(0.1)
    raise SystemExit("skipnas serve did not start within a minute")


def _get(url: str) -> bytes:
    return urllib.request.urlopen(url, timeout=600).read()


def time_api(url: str, image: Path, name: str) -> float:
    """Upload, wait for the count, fetch the display image and the outlines: what the page does."""
    started = time.perf_counter()
    request = urllib.request.Request(f"{url}/api/images?name={name}", data=image.read_bytes(), method="POST")
    image_id = json.loads(urllib.request.urlopen(request, timeout=600).read())["id"]
    while json.loads(_get(f"{url}/api/images/{image_id}"))["status"] not in ("done", "error"):
        time.sleep(0.1)
    _get(f"{url}/api/images/{image_id}/display.png")
    return time.perf_counter() - started


class Browser:
    """Headless Chromium on the page."""

    def __init__(self, url: str, chromium: str) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        self.page = self._browser.new_page(viewport={"width": 1500, "height": 900})
        self.page.goto(url)

    def close(self) -> None:
        self._browser.close()
        self._playwright.stop()

    def upload(self, path: Path) -> None:
        self.page.set_input_files("#file-input", [str(path)])

    def wait_counted(self, name: str) -> None:
        self.page.locator(".image-row.done", has_text=name).wait_for(timeout=600_000)

    def open(self, name: str) -> None:
        self.page.locator(".image-row", has_text=name).click()
        self.page.locator("#image-total", has_text=f"{name}:").wait_for(timeout=600_000)

    def time_page(self, path: Path) -> float:
        started = time.perf_counter()
        self.upload(path)
        self.wait_counted(path.name)
        self.open(path.name)
        return time.perf_counter() - started

    def time_second_image(self, large: Path, small_name: str) -> float:
        """Open a counted image while ``large`` counts."""
        from playwright.sync_api import TimeoutError as PageTimeout

        self.upload(large)
        try:
            self.page.locator(".image-row.counting, .image-row.queued", has_text=large.name).wait_for(timeout=30_000)
        except PageTimeout:  # counted before the page saw it counting: too small to tell
            self.wait_counted(large.name)
            return float("nan")
        started = time.perf_counter()
        self.open(small_name)
        seconds = time.perf_counter() - started
        still_counting = self.page.locator(".image-row.done", has_text=large.name).count() == 0
        self.wait_counted(large.name)
        return seconds if still_counting else float("nan")

    def screenshot(self, images: list[Path], out: Path) -> None:
        """The page with ``images`` counted, the first shown with its second particle rejected."""
        for image in images:
            self.upload(image)
            self.wait_counted(image.name)
        self.open(images[0].name)
        rows = self.page.locator("#particle-table tbody tr")
        if rows.count() > 1:  # show what a rejected particle looks like
            rows.nth(1).click()
            self.page.locator("#particle-table tbody tr.rejected").first.wait_for()
        out.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model folder")
    parser.add_argument("--images", type=Path, nargs="+", help="images to tile into the large one")
    parser.add_argument("--size", type=int, default=2048, help="side of the large image (default 2048)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, help="save a screenshot of the page here")
    parser.add_argument("--smoke", action="store_true", help="an untrained tiny model, a 256 px image, one repeat")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_serve.csv"))
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        if args.smoke:
            from skipnas.counting.postprocess import PostprocessConfig
            from skipnas.genome import Genome
            from skipnas.modelio import save_model_folder
            from skipnas.models import build_model
            from skipnas.runtime.normalise import Normalisation

            genome = Genome.named("standard", base_width=4)
            args.model = save_model_folder(work / "model", build_model(genome, in_channels=1).eval(), genome,
                                           Normalisation.stretched(1), PostprocessConfig(), in_channels=1)
            cv2.imwrite(str(work / "tile.png"), np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))
            args.images, args.size, args.repeats = [work / "tile.png"], 256, 1
        if args.model is None or not args.images:
            parser.error("give --model and --images (or --smoke)")
        large = tiled_image(args.images, args.size)
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        server, url = start_server(args.model, work)
        browser = None
        try:
            if chromium is not None:
                try:
                    browser = Browser(url, chromium)
                except ImportError:
                    browser = None
            page_kind = "page (chromium)" if browser else "page (http api)"
            if browser and args.screenshot:  # first, so the page lists only the given images
                browser.screenshot(args.images, args.screenshot)
            small = work / "small.png"
            write_image(small, tiled_image(args.images, min(args.size, 256)))
            if browser:
                browser.time_page(small)  # the page's first image: a warm-up, as count's warm-up is its own start
            else:
                time_api(url, small, small.name)
            rows = []
            for run in range(args.repeats):
                path = work / f"large-{run}.png"
                write_image(path, large)
                rows.append({"run": run, "method": "count (cli)", "seconds": round(time_count(args.model, path, work, run), 3)})
                rows.append({"run": run, "method": "count_images (in process)",
                             "seconds": round(time_count_in_process(args.model, path, work, run), 3)})
                seconds = browser.time_page(path) if browser else time_api(url, path, path.name)
                rows.append({"run": run, "method": page_kind, "seconds": round(seconds, 3)})
            if browser:
                path = work / "large-busy.png"
                write_image(path, large)
                rows.append({"run": 0, "method": "open a counted image while a large one counts",
                             "seconds": round(browser.time_second_image(path, small.name), 3)})
        finally:
            if browser:
                browser.close()
            server.terminate()
            server.wait(timeout=30)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["run", "method", "seconds"])
            writer.writeheader()
            writer.writerows(rows)
        def median(method: str) -> float:
            return statistics.median(r["seconds"] for r in rows if r["method"] == method)

        print(f"{args.size} x {args.size}, medians of {args.repeats}: count (cli) {median('count (cli)'):.2f} s, "
              f"count_images {median('count_images (in process)'):.2f} s, {page_kind} {median(page_kind):.2f} s; "
              f"page / cli {median(page_kind) / median('count (cli)'):.2f}, "
              f"page / in process {median(page_kind) / median('count_images (in process)'):.2f}")
        for row in rows:
            print(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the counting page serves: one model folder, the images uploaded to it, their corrections,
and the files made from them, all inside one work folder. No web code: the app calls this.

The work folder holds ``uploads/<id>/<name>`` (each image as sent, under a name cleaned of anything
but letters, digits, ``-``, ``_`` and ``.``) and, when the user saves them, ``corrected/images/``,
``corrected/masks/`` (16-bit instance masks, the layout ``skipnas train --data`` reads) and the
corrected ``counts.csv`` and ``particles.csv``. Nothing a request names becomes a path: images are
found by the random id the upload was given.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skipnas.count import (
    COUNTS_FILE,
    PARTICLE_FIELDS,
    PARTICLES_FILE,
    count_prediction,
    counts_fields,
    counts_row,
    display_image,
    predict_for_counting,
    unique_name,
)
from skipnas.data.io import IMAGE_SUFFIXES, check_image_size, read_image, relabel_consecutive, write_mask
from skipnas.errors import SkipnasError
from skipnas.fileio import install_files, staging_dir, write_csv_atomic
from skipnas.modelio import ModelFolder, load_model_folder
from skipnas.progress import report_progress_to
from skipnas.runtime.device import DeviceSetup, place_model, select_device
from skipnas.serve.corrections import CorrectionError, ImageCorrections

DEFAULT_MAX_UPLOAD_MIB = 512
DISPLAY_MAX_SIDE = 4096  # larger images are shown downscaled; counts and clicks stay in the image's pixels
UPLOADS_DIR = "uploads"
CORRECTED_DIR = "corrected"
_ID = re.compile(r"^[0-9a-f]{32}$")
# the first bytes of every format skipnas reads: anything else is refused before it is queued
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(SkipnasError):
    """An upload refused before any counting: its message is for the page, ``status`` its HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def safe_filename(name: str) -> str:
    """``name`` without folders and with only letters, digits, ``-``, ``_`` and ``.``, never hidden or empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    stem = _UNSAFE.sub("_", stem).strip("._")[:100] or "image"
    suffix = _UNSAFE.sub("", suffix).lower()[:8]
    return f"{stem}.{suffix}" if suffix else stem


@dataclass
class ServedImage:
    """One uploaded image and where its counting stands."""

    id: str
    name: str  # the name it was uploaded under, cleaned
    path: Path
    status: str = "queued"  # queued, counting, done or error
    progress: float = 0.0  # 0..1 while counting
    stage: str = "waiting for the images before it"
    error: str | None = None
    width: int = 0
    height: int = 0
    seconds: float | None = None  # counting time, prediction and counting
    corrections: ImageCorrections | None = None
    display_png: bytes | None = None
    # held while the corrections change or are read, so a listing never sees half an edit
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return self.corrections.counts() if self.corrections is not None else {}

    def summary(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "id": self.id, "name": self.name, "status": self.status, "progress": round(self.progress, 3), "stage": self.stage,
            "error": self.error, "width": self.width, "height": self.height, "seconds": self.seconds,
            "count": sum(counts.values()) if self.status == "done" else None, "counts": counts,
            "version": self.corrections.version if self.corrections is not None else 0,
        }


class Workspace:
    """The model, the uploaded images and the work folder of one ``skipnas serve``.

    Images are counted one after another on a background thread, so the page stays responsive and
    finished images can be opened and corrected while a large one counts.
    """

    def __init__(
        self,
        model_dir: str | Path,
        workdir: str | Path,
        *,
        device: str = "auto",
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MIB * 2**20,
        overlap: int = 32,
        tta: str | None = None,
    ) -> None:
        self.setup: DeviceSetup = select_device(device)
        self.folder: ModelFolder = load_model_folder(model_dir, map_location=self.setup.device)
        place_model(self.folder.model, self.setup)
        self.tta = self.folder.tta_for(tta)
        self.overlap = overlap
        self.max_upload_bytes = max_upload_bytes
        self.workdir = Path(workdir).resolve()
        try:
            (self.workdir / UPLOADS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SkipnasError(f"{self.workdir}: cannot make the work folder ({exc.strerror}); choose another --workdir") from None
        self.images: dict[str, ServedImage] = {}
        self._lock = threading.Lock()
        self._counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skipnas-count")

    def close(self) -> None:
        self._counting.shutdown(wait=False, cancel_futures=True)

    # ---- uploads and counting -----------------------------------------------------------------

    def upload_target(self, name: str) -> tuple[str, Path]:
        """A fresh image id and the path its upload goes to; refuses names that are not images."""
        cleaned = safe_filename(name)
        if not name.strip():
            raise UploadError("the upload has no file name; pick an image file")
        suffix = Path(cleaned).suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise UploadError(f"{name}: not an image skipnas reads; send {', '.join(sorted(IMAGE_SUFFIXES))}", status=415)
        image_id = uuid.uuid4().hex
        folder = self.workdir / UPLOADS_DIR / image_id
        folder.mkdir(parents=True)
        return image_id, folder / cleaned

    def accept(self, image_id: str, path: Path, size: int) -> ServedImage:
        """Check a finished upload's header and queue it for counting; a refused one leaves nothing behind."""
        try:
            if size == 0:
                raise UploadError(f"{path.name}: the upload is empty; pick the image again")
            with open(path, "rb") as handle:
                if not handle.read(8).startswith(_SIGNATURES):
                    raise UploadError(f"{path.name}: not an image (its bytes are no PNG, JPEG or TIFF); pick an image file", 415)
            try:
                check_image_size(path)
            except SkipnasError as exc:
                raise UploadError(_named(exc, path), status=413) from None
        except UploadError:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        image = ServedImage(image_id, path.name, path)
        with self._lock:
            self.images[image_id] = image
        self._counting.submit(self._count, image)
        return image

    def discard(self, path: Path) -> None:
        """Remove an upload that did not finish (too large, cut off)."""
        shutil.rmtree(path.parent, ignore_errors=True)

    def _count(self, image: ServedImage) -> None:
        started = time.perf_counter()
        image.status, image.stage = "counting", "reading"

        def heard(description: str, completed: float, total: float | None) -> None:
            image.stage = description
            image.progress = min(completed / total, 1.0) if total else 0.0

        try:
            pixels = read_image(image.path)
            image.height, image.width = pixels.shape[:2]
            with report_progress_to(heard):
                prediction = predict_for_counting(self.folder, pixels, self.setup, self.overlap, tta=self.tta)
            image.stage, image.progress = "counting particles", 1.0
            detections = count_prediction(self.folder, prediction, pixels.shape[:2])
            corrections = ImageCorrections.from_detections(
                detections, _at_size(prediction.classes, self.folder.class_names, pixels.shape[:2]),
                self.folder.postprocess.threshold, fibres=self.folder.postprocess.method == "fibres",
            )
            image.display_png = _display_png(pixels)
            image.corrections = corrections
            image.seconds = round(time.perf_counter() - started, 3)
            image.status, image.stage = "done", "counted"
        except SkipnasError as exc:
            image.status, image.error = "error", _named(exc, image.path)
        except Exception as exc:  # noqa: BLE001 - an image the readers choke on must not stop the others
            image.status, image.error = "error", f"{image.name}: could not be counted ({type(exc).__name__}: {exc})"

    # ---- looking up and correcting ------------------------------------------------------------

    def image(self, image_id: str) -> ServedImage:
        """The image with this id; KeyError for anything else (a malformed id included)."""
        if not _ID.match(image_id):
            raise KeyError(image_id)
        with self._lock:
            return self.images[image_id]

    def counted(self, image_id: str) -> tuple[ServedImage, ImageCorrections]:
        image = self.image(image_id)
        if image.corrections is None:
            raise CorrectionError(f"{image.name} is not counted yet ({image.status}); wait for its count")
        return image, image.corrections

    def edit(self, image_id: str, action: dict[str, Any]) -> dict[str, Any]:
        """Apply one correction (see :func:`apply_edit`) and return what the page shows of the image."""
        image, corrections = self.counted(image_id)
        with image.lock:
            apply_edit(corrections, action)
            return self.details(image_id)

    def details(self, image_id: str) -> dict[str, Any]:
        """The image's summary and, once counted, every particle with its outline."""
        image = self.image(image_id)
        with image.lock:
            return self._details(image)

    def _details(self, image: ServedImage) -> dict[str, Any]:
        info = image.summary()
        if image.corrections is not None:
            corrections = image.corrections
            info["particles"] = [
                {**particle.row(image.name), "kept": particle.kept, "origin": particle.origin,
                 "centroid": [round(v, 1) for v in particle.centroid], "anchor": corrections.anchor(particle),
                 "outline": corrections.outline(particle)}
                for found in corrections.particles.values() for particle in sorted(found.values(), key=lambda p: p.id)
            ]
        return info

    def overview(self) -> dict[str, Any]:
        """The model and every image's summary, with the batch's totals."""
        with self._lock:
            images = [image.summary() for image in self.images.values()]
        done = [row for row in images if row["status"] == "done"]
        return {
            "model": {"path": str(self.folder.path), "classes": self.folder.class_names,
                      "counting": self.folder.postprocess.method, "fibres": self.folder.postprocess.method == "fibres"},
            "workdir": str(self.workdir),
            "max_upload_mib": round(self.max_upload_bytes / 2**20, 1),
            "images": images,
            "total": sum(row["count"] for row in done),
            "counted_images": len(done),
        }

    # ---- what the user takes away -------------------------------------------------------------

    def _done(self) -> list[tuple[ServedImage, ImageCorrections]]:
        with self._lock:
            images = list(self.images.values())
        return [(image, image.corrections) for image in images if image.corrections is not None]

    def counts_rows(self) -> list[dict[str, Any]]:
        """One ``counts.csv`` row per counted image, corrected (no true count: the page has no masks)."""
        return [counts_row(image.name, image.counts()) for image, _ in self._done()]

    def counts_fields(self) -> list[str]:
        return counts_fields(self.folder.class_names)

    def particle_rows(self) -> list[dict[str, Any]]:
        """Every kept particle of every counted image, as ``particles.csv`` rows of ``skipnas count``."""
        rows = []
        for image, corrections in self._done():
            with image.lock:
                rows += [particle.row(image.name) for particle in corrections.kept()]
        return rows

    def csv_text(self, which: str) -> str:
        rows, fields = (self.counts_rows(), self.counts_fields()) if which == "counts" else (self.particle_rows(), PARTICLE_FIELDS)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def save_dataset(self) -> dict[str, Any]:
        """Write every counted image and its corrected instance mask to ``corrected/`` (``images/``,
        ``masks/``, the two CSVs), replacing what an earlier save wrote there, all at once."""
        done = self._done()
        if not done:
            raise CorrectionError("no counted image to save yet; upload and count images first")
        if len(self.folder.class_names) > 1:
            raise CorrectionError("saving masks keeps one class per instance mask; this model counts several classes")
        target = self.workdir / CORRECTED_DIR
        staging = staging_dir(target)
        try:
            written, used = [], set()
            for image, corrections in done:
                stem = unique_name(Path(image.name).stem, used)
                suffix = image.path.suffix.lower()
                (staging / "images").mkdir(exist_ok=True)
                shutil.copyfile(image.path, staging / "images" / f"{stem}{suffix}")
                with image.lock:
                    instances = _kept_instances(corrections)
                write_mask(staging / "masks" / f"{stem}.png", instances)
                written += [f"images/{stem}{suffix}", f"masks/{stem}.png"]
            write_csv_atomic(staging / COUNTS_FILE, self.counts_rows(), self.counts_fields())
            write_csv_atomic(staging / PARTICLES_FILE, self.particle_rows(), PARTICLE_FIELDS)
            earlier = _earlier_save(target)
            install_files(staging, target, [*written, COUNTS_FILE, PARTICLES_FILE], stale=[p for p in earlier if p not in written])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return {
            "folder": str(target), "images": len(done), "particles": len(self.particle_rows()),
            "command": f"skipnas train --init {self.folder.path} --data {target} --out {self.workdir / 'fine-tuned'}",
        }


def apply_edit(corrections: ImageCorrections, action: dict[str, Any]) -> None:
    """One correction from the page: ``{"action": "toggle", "class", "id"}``, ``{"action": "toggle_at", "x", "y"}``,
    ``{"action": "add", "points": [[x, y], ...]}`` (a drawn outline) or ``{"action": "add", "x", "y"}`` (a click),
    ``{"action": "split", "class", "id", "points"}``, ``{"action": "merge", "class", "ids"}``, ``{"action": "undo"}``."""
    kind = action.get("action")
    try:
        if kind == "toggle":
            corrections.toggle(str(action["class"]), int(action["id"]))
        elif kind == "toggle_at":
            particle = corrections.particle_at(float(action["x"]), float(action["y"]))
            if particle is None:
                raise CorrectionError("no particle there; use Add to mark a missed one")
            corrections.toggle(particle.class_name, particle.id)
        elif kind == "add" and "points" in action:
            corrections.add_polygon([(float(x), float(y)) for x, y in action["points"]], action.get("class"))
        elif kind == "add":
            corrections.add_seed(float(action["x"]), float(action["y"]), action.get("class"))
        elif kind == "split":
            corrections.split(str(action["class"]), int(action["id"]), [(float(x), float(y)) for x, y in action["points"]])
        elif kind == "merge":
            corrections.merge(str(action["class"]), [int(i) for i in action["ids"]])
        elif kind == "undo":
            corrections.undo()
        else:
            raise CorrectionError(f"unknown correction {kind!r}; use toggle, toggle_at, add, split, merge or undo")
    except (KeyError, TypeError, ValueError) as exc:
        raise CorrectionError(f"a {kind or 'correction'} request lacks or garbles {exc}; reload the page") from None


def _named(exc: SkipnasError, path: Path) -> str:
    """The error's message naming the upload by its name, not by its place in the work folder."""
    return str(exc).replace(str(path), path.name)


def _at_size(classes: np.ndarray, names: list[str], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Each class's probability map at the image's own size (the network may have seen it rescaled)."""
    height, width = shape
    maps = {}
    for name, prob in zip(names, classes):
        if prob.shape != (height, width):
            prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        maps[name] = prob.astype(np.float16)
    return maps


def _display_png(pixels: np.ndarray) -> bytes:
    view = display_image(pixels)
    height, width = view.shape[:2]
    if max(height, width) > DISPLAY_MAX_SIDE:
        factor = DISPLAY_MAX_SIDE / max(height, width)
        view = cv2.resize(view, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".png", view, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise SkipnasError("could not encode the image for the page")
    return encoded.tobytes()


def _kept_instances(corrections: ImageCorrections) -> np.ndarray:
    """One instance map of the kept particles, numbered 1..N in the order of ``particles.csv``."""
    (name, labels), = corrections.labels.items()
    kept = [p.id for p in corrections.particles[name].values() if p.kept]
    return relabel_consecutive(np.where(np.isin(labels, kept), labels, 0))


def _earlier_save(target: Path) -> list[str]:
    """The files an earlier save wrote to ``target`` (its images, masks and CSVs), relative to it."""
    if not target.is_dir():
        return []
    found = [name for name in (COUNTS_FILE, PARTICLES_FILE) if (target / name).is_file()]
    for sub in ("images", "masks"):
        if (target / sub).is_dir():
            found += [f"{sub}/{p.name}" for p in (target / sub).iterdir() if p.is_file()]
    return found


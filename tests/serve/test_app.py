"""The counting page's API (skipnas/serve/app.py and workspace.py), through Starlette's test client."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from skipnas.count import count_images
from skipnas.data.scan import scan_dataset
from skipnas.serve.app import create_app
from skipnas.serve.workspace import Workspace, safe_filename


@pytest.fixture
def page(bright_spot_model: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Workspace]]:
    workspace = Workspace(bright_spot_model, tmp_path / "work", device="cpu", max_upload_bytes=200_000)
    with TestClient(create_app(workspace)) as client:
        yield client, workspace
    workspace.close()


def _upload(client: TestClient, path: Path, name: str | None = None) -> dict:
    response = client.post(f"/api/images?name={name or path.name}", content=path.read_bytes())
    assert response.status_code == 202, response.text
    return response.json()


def _wait(client: TestClient, image_id: str) -> dict:
    for _ in range(300):
        details = client.get(f"/api/images/{image_id}").json()
        if details["status"] in ("done", "error"):
            return details
        time.sleep(0.05)
    raise AssertionError("the image was never counted")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_counts_equal_skipnas_count_and_a_rejection_leaves_the_csv(page, two_images, tmp_path) -> None:
    client, _ = page
    ids = [_upload(client, path)["id"] for path in two_images]
    details = [_wait(client, image_id) for image_id in ids]
    assert [d["count"] for d in details] == [3, 2]
    assert client.get("/api/overview").json()["total"] == 5
    rejected = details[0]["particles"][1]
    edited = client.post(f"/api/images/{ids[0]}/edit", content=json.dumps({"action": "toggle", "class": "particle", "id": rejected["id"]}))
    assert edited.status_code == 200 and edited.json()["count"] == 2
    assert client.get("/api/overview").json()["total"] == 4

    counted = count_images(page[1].folder.path, two_images, tmp_path / "counted", device="cpu", progress=False)
    expected = [{**row, "file": Path(row["file"]).name} for row in _rows((tmp_path / "counted" / "particles.csv").read_text())]
    expected = [row for row in expected if not (row["file"] == "first.png" and row["id"] == str(rejected["id"]))]
    assert _rows(client.get("/api/download/particles.csv").text) == expected
    counts = _rows(client.get("/api/download/counts.csv").text)
    assert [(r["file"], r["count"]) for r in counts] == [("first.png", "2"), ("second.png", "2")]
    assert counted.total == 5


def test_saved_corrections_are_a_dataset_skipnas_train_reads(page, two_images) -> None:
    client, workspace = page
    ids = [_upload(client, path)["id"] for path in two_images]
    first = _wait(client, ids[0])
    _wait(client, ids[1])
    client.post(f"/api/images/{ids[0]}/edit", content=json.dumps({"action": "toggle", "class": "particle", "id": first["particles"][0]["id"]}))
    client.post(f"/api/images/{ids[1]}/edit", content=json.dumps({"action": "add", "points": [[5, 80], [20, 80], [20, 92], [5, 92]]}))
    saved = client.post("/api/save").json()
    folder = Path(saved["folder"])
    assert folder == workspace.workdir / "corrected" and saved["images"] == 2 and saved["particles"] == 5
    assert f"--data {folder}" in saved["command"]
    index = scan_dataset(folder)
    assert sorted(s.stem for s in index.samples()) == ["first", "second"]
    from skipnas.data.io import count_instances, read_mask

    assert sorted(count_instances(read_mask(s.mask_path).instances) for s in index.samples()) == [2, 3]


def test_bad_uploads_get_one_line_and_a_4xx_and_leave_nothing(page, two_images, tmp_path) -> None:
    client, workspace = page
    text = client.post("/api/images?name=notes.txt", content=b"hello")
    assert text.status_code == 415 and "not an image skipnas reads" in text.json()["error"]
    fake = client.post("/api/images?name=fake.png", content=b"hello, not a png at all")
    assert fake.status_code == 415 and "fake.png: not an image" in fake.json()["error"]
    empty = client.post("/api/images?name=empty.png", content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    big = client.post("/api/images?name=big.png", content=b"\x89PNG\r\n\x1a\n" + bytes(300_000))
    assert big.status_code == 413 and "upload limit" in big.json()["error"]
    assert list((workspace.workdir / "uploads").iterdir()) == []
    assert client.get("/api/overview").json()["images"] == []


def test_a_corrupt_image_gets_an_error_line_and_the_others_count(page, two_images, tmp_path) -> None:
    client, _ = page
    broken = tmp_path / "broken.png"
    broken.write_bytes(two_images[0].read_bytes()[:60])  # a PNG cut off after its header
    bad = _wait(client, _upload(client, broken)["id"])
    good = _wait(client, _upload(client, two_images[1])["id"])
    assert bad["status"] == "error" and bad["error"].startswith("broken.png")
    assert str(tmp_path) not in bad["error"]
    assert good["status"] == "done" and good["count"] == 2


def test_no_request_reaches_a_file_outside_the_work_folder(page) -> None:
    client, _ = page
    for url in ("/static/..%2Fworkspace.py", "/static/workspace.py", "/api/images/..%2F..%2Fetc%2Fpasswd",
                "/api/images/../../etc/passwd/display.png", "/api/download/..%2Fsecret.csv"):
        response = client.get(url)
        assert response.status_code == 404, url
    assert client.get("/static/app.js").status_code == 200


def test_a_bad_correction_is_a_409_and_changes_nothing(page, two_images) -> None:
    client, _ = page
    image_id = _upload(client, two_images[1])["id"]
    before = _wait(client, image_id)
    for action in ({"action": "toggle_at", "x": 2, "y": 2}, {"action": "split", "class": "particle", "id": 1, "points": [[0, 0]]},
                   {"action": "explode"}, {"action": "merge", "class": "particle"}):
        response = client.post(f"/api/images/{image_id}/edit", content=json.dumps(action))
        assert response.status_code == 409 and response.json()["error"], action
    assert client.post(f"/api/images/{image_id}/edit", content=b"[1, 2").status_code == 400
    after = client.get(f"/api/images/{image_id}").json()
    assert after["count"] == before["count"] and after["version"] == before["version"]


def test_upload_names_are_cleaned_of_folders_and_odd_characters() -> None:
    assert safe_filename("../../etc/passwd.png") == "passwd.png"
    assert safe_filename("C:\\data\\my image (1).TIF") == "my_image_1.tif"
    assert safe_filename(".hidden.png") == "hidden.png"
    assert safe_filename("....png") == "image.png"


def test_skipnas_train_init_fine_tunes_the_served_model_on_the_saved_corrections(page, bright_spot_model, tmp_path) -> None:
    import cv2

    from skipnas.cli import main
    from skipnas.modelio import load_model_folder
    from tests.serve.conftest import disks_image

    client, _ = page
    for index in range(5):  # enough images for train and val splits
        path = tmp_path / f"spots{index}.png"
        cv2.imwrite(str(path), disks_image([(20 + 15 * index, 30), (90, 20 + 10 * index)]))
        _wait(client, _upload(client, path)["id"])
    folder = client.post("/api/save").json()["folder"]
    out = tmp_path / "fine-tuned"
    assert main(["train", "--init", str(bright_spot_model), "--data", folder, "--pretrain-seconds", "0", "--steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    tuned, served = load_model_folder(out), load_model_folder(bright_spot_model)
    assert tuned.genome == served.genome and tuned.normalisation == served.normalisation

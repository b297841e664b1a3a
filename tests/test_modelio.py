from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from skipnas.counting.postprocess import PostprocessConfig
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.modelio import WEIGHTS_FILE, load_model_folder, load_state_dict, save_model_folder
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation


def _save(path: Path, genome: Genome | None = None) -> torch.nn.Module:
    genome = genome or Genome.named("reverse", base_width=4)
    torch.manual_seed(0)
    model = build_model(genome, in_channels=1).eval()
    save_model_folder(
        path, model, genome, Normalisation((0.4,), (0.1,), 255.0), PostprocessConfig(threshold=0.6), in_channels=1,
        metrics={"dice": 0.5},
    )
    return model


class _NotATensor:
    pass


def test_round_trip_rebuilds_the_same_model_from_the_folder_alone(tmp_path: Path) -> None:
    model = _save(tmp_path / "m")
    folder = load_model_folder(tmp_path / "m")
    x = torch.randn(1, 1, 40, 40)
    assert torch.equal(model(x), folder.model(x))
    assert folder.genome == Genome.named("reverse", base_width=4)
    assert folder.normalisation == Normalisation((0.4,), (0.1,), 255.0)
    assert folder.postprocess == PostprocessConfig(threshold=0.6) and folder.metrics == {"dice": 0.5}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "genome.json", "metrics.json", "model.json", "postprocess.json", "weights.pt"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left


def test_saving_again_replaces_the_folder(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    _save(tmp_path / "m", Genome.named("dense", base_width=4))
    assert load_model_folder(tmp_path / "m").genome.name == "dense"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_an_unrelated_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(SkipnasError, match="not a skipnas model folder; choose another --out, or add --overwrite"):
        _save(tmp_path / "photos")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["holiday.jpg"]
    with pytest.raises(SkipnasError, match="is a file, not a folder"):
        _save(tmp_path / "photos" / "holiday.jpg")


def test_saving_over_a_model_folder_keeps_the_users_other_files(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    (tmp_path / "m" / "notes.txt").write_text("my notes")
    (tmp_path / "m" / "run1").mkdir()
    (tmp_path / "m" / "run1" / "log.txt").write_text("my log")
    (tmp_path / "m" / "summary.json").write_text("{}")  # an earlier export's: it describes the old model
    _save(tmp_path / "m", Genome.named("dense", base_width=4))
    assert load_model_folder(tmp_path / "m").genome.name == "dense"
    assert (tmp_path / "m" / "notes.txt").read_text() == "my notes"
    assert (tmp_path / "m" / "run1" / "log.txt").read_text() == "my log"
    assert not (tmp_path / "m" / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left


def test_overwrite_writes_beside_the_users_files_but_never_over_them(tmp_path: Path) -> None:
    genome = Genome.named("standard", base_width=4)
    model = build_model(genome, in_channels=1).eval()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"x")
    (photos / "summary.json").write_text("mine")
    with pytest.raises(SkipnasError, match="holds summary.json, not written by skipnas, which --overwrite never replaces"):
        save_model_folder(photos, model, genome, Normalisation((0.4,), (0.1,), 255.0), PostprocessConfig(), in_channels=1,
                          overwrite=True)
    (photos / "summary.json").unlink()
    save_model_folder(photos, model, genome, Normalisation((0.4,), (0.1,), 255.0), PostprocessConfig(), in_channels=1,
                      overwrite=True)
    assert load_model_folder(photos).genome == genome and (photos / "holiday.jpg").read_bytes() == b"x"


def test_an_empty_folder_under_a_read_only_parent_takes_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # the scratch folders go inside m
    _save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "genome.json", "metrics.json", "model.json", "postprocess.json", "weights.pt"
    ]


def test_a_folder_where_a_model_file_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m" / "weights.pt").mkdir(parents=True)
    with pytest.raises(SkipnasError, match="weights.pt: is a folder where the model folder's file goes"):
        _save(tmp_path / "m")


def test_weights_that_are_not_a_plain_state_dict_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    weights = tmp_path / "m" / WEIGHTS_FILE
    torch.save({"layer": _NotATensor()}, weights)  # needs arbitrary unpickling
    with pytest.raises(SkipnasError, match="not a plain state dict of tensors"):
        load_model_folder(tmp_path / "m")
    torch.save([torch.zeros(1)], weights)  # loads safely, but is no state dict
    with pytest.raises(SkipnasError, match="not a plain state dict of tensors"):
        load_state_dict(weights)
    weights.write_bytes(b"garbage")
    with pytest.raises(SkipnasError, match="weights.pt: not a plain state dict"):
        load_model_folder(tmp_path / "m")


def test_weights_of_another_genome_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    (tmp_path / "m" / "genome.json").write_text(json.dumps(Genome.named("dense", base_width=4).to_dict()))
    with pytest.raises(SkipnasError, match="weights do not fit the genome"):
        load_model_folder(tmp_path / "m")


def test_missing_folder_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SkipnasError, match="no such model folder"):
        load_model_folder(tmp_path / "nope")
    _save(tmp_path / "m")
    os.remove(tmp_path / "m" / "model.json")
    with pytest.raises(SkipnasError, match="model.json: missing"):
        load_model_folder(tmp_path / "m")


def test_a_broken_postprocess_file_names_itself(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    (tmp_path / "m" / "postprocess.json").write_text('{"threshold": 7}')
    with pytest.raises(SkipnasError, match="postprocess.json: .*threshold"):
        load_model_folder(tmp_path / "m")


def test_a_model_with_an_auxiliary_head_round_trips_and_records_its_target(tmp_path: Path) -> None:
    genome = Genome.named("semi-dense", base_width=4)
    torch.manual_seed(0)
    model = build_model(genome, in_channels=1, auxiliary="distance").eval()
    seeded = PostprocessConfig(method="seeded", seed_threshold=0.4)
    save_model_folder(tmp_path / "m", model, genome, Normalisation((0.4,), (0.1,), 255.0), seeded, in_channels=1)
    assert json.loads((tmp_path / "m" / "model.json").read_text())["auxiliary"] == "distance"
    folder = load_model_folder(tmp_path / "m")
    assert folder.auxiliary == "distance" and folder.postprocess == seeded
    x = torch.randn(1, 1, 40, 40)
    assert folder.model(x).shape == (1, 2, 40, 40)
    assert torch.equal(model(x), folder.model(x))


def test_a_folder_from_before_auxiliary_heads_loads_without_one(tmp_path: Path) -> None:
    model = _save(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["auxiliary"] is None
    del info["auxiliary"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    folder = load_model_folder(tmp_path / "m")
    x = torch.randn(1, 1, 40, 40)
    assert folder.auxiliary is None and torch.equal(model(x), folder.model(x))


def test_auxiliary_settings_that_cannot_work_name_the_file(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    model_json = tmp_path / "m" / "model.json"
    info = json.loads(model_json.read_text())
    (tmp_path / "m" / "postprocess.json").write_text('{"method": "seeded"}')
    with pytest.raises(SkipnasError, match="postprocess.json: method 'seeded' counts from an auxiliary head.*retrain"):
        load_model_folder(tmp_path / "m")
    model_json.write_text(json.dumps({**info, "auxiliary": "edges"}))
    with pytest.raises(SkipnasError, match="model.json: unknown auxiliary target 'edges'"):
        load_model_folder(tmp_path / "m")
    # a head the weights do not have
    model_json.write_text(json.dumps({**info, "auxiliary": "distance"}))
    with pytest.raises(SkipnasError, match="weights do not fit the genome in genome.json and the heads in model.json"):
        load_model_folder(tmp_path / "m")


def test_a_folder_describes_the_heads_of_the_model_it_holds(tmp_path: Path) -> None:
    genome = Genome.named("standard", base_width=4)
    plain = build_model(genome, in_channels=1)
    seeded = PostprocessConfig(method="seeded")
    with pytest.raises(ValueError, match="needs an auxiliary head"):
        save_model_folder(tmp_path / "m", plain, genome, Normalisation((0.4,), (0.1,), 255.0), seeded, in_channels=1)
    assert not (tmp_path / "m").exists()


def test_a_folder_records_the_test_time_augmentation_its_counting_was_calibrated_with(tmp_path: Path) -> None:
    model = build_model(Genome.named("standard", base_width=4))
    folder = save_model_folder(
        tmp_path / "m", model, Genome.named("standard", base_width=4), Normalisation((0.5,), (0.25,), 255.0),
        PostprocessConfig(), in_channels=1, inference_tta="dihedral",
    )
    assert load_model_folder(folder).tta == "dihedral"
    model_json = folder / "model.json"
    info = json.loads(model_json.read_text())
    model_json.write_text(json.dumps({key: value for key, value in info.items() if key != "inference_tta"}))
    assert load_model_folder(folder).tta == "none"  # folders from before test-time augmentation
    model_json.write_text(json.dumps({**info, "inference_tta": "rotate"}))
    with pytest.raises(SkipnasError, match="model.json: unknown test-time augmentation 'rotate'"):
        load_model_folder(folder)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        save_model_folder(tmp_path / "n", model, Genome.named("standard", base_width=4), Normalisation((0.5,), (0.25,), 255.0),
                          PostprocessConfig(), in_channels=1, inference_tta="rotate")
    assert not (tmp_path / "n").exists()


def test_the_input_scale_stretching_and_calibration_record_travel_with_the_folder(tmp_path: Path) -> None:
    genome = Genome.named("standard", base_width=4)
    model = build_model(genome, in_channels=1).eval()
    record = {"selection": "stable", "particles": 12}
    save_model_folder(
        tmp_path / "m", model, genome, Normalisation.stretched(1), PostprocessConfig(threshold=0.6), in_channels=1,
        input_scale=0.5, calibration=record, data_choices=["input scale 0.5: ..."],
    )
    folder = load_model_folder(tmp_path / "m")
    assert folder.scale == 0.5 and folder.normalisation.per_image and folder.normalisation.max_pixel_value == 1.0
    assert folder.postprocess == PostprocessConfig(threshold=0.6)  # the record is no setting
    assert json.loads((tmp_path / "m" / "postprocess.json").read_text())["calibration"] == record
    assert folder.info["data_choices"] == ["input scale 0.5: ..."]


@pytest.mark.parametrize("bad", [-1, 0, "abc"])
def test_an_impossible_input_scale_in_model_json_is_one_clear_error(tmp_path: Path, bad: object) -> None:
    _save(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    info["input_scale"] = bad
    (tmp_path / "m" / "model.json").write_text(json.dumps(info))
    with pytest.raises(SkipnasError, match="model.json: input_scale must be"):
        load_model_folder(tmp_path / "m")


@pytest.mark.parametrize(
    "key, bad, expected",
    [
        ("in_channels", -1, "in_channels must be a whole number from 1 to 1024, got -1"),
        ("in_channels", "abc", "in_channels must be a whole number from 1 to 1024, got 'abc'"),
        ("in_channels", 10**9, "in_channels must be a whole number from 1 to 1024"),
        ("classes", 0, "classes must be a whole number from 1 to 1024, got 0"),
        ("inference_tile", "abc", "inference_tile must be a whole number of px, a multiple of 16 .*got 'abc'; set it to e.g. 512"),
        ("inference_tile", 0, "inference_tile must be a whole number of px, a multiple of 16 .*got 0"),
        ("inference_tile", 8, "inference_tile must be .*got 8"),
        ("inference_tile", 24, "inference_tile must be .*a multiple of 16 \\(2 \\*\\* the network's depth 4\\), got 24"),
        ("inference_tile", 512.5, "inference_tile must be .*got 512.5"),
        ("inference_tile", True, "inference_tile must be .*got True"),
    ],
)
def test_impossible_values_in_model_json_name_the_folder_key_and_value(tmp_path: Path, key: str, bad: object, expected: str) -> None:
    _save(tmp_path / "m", Genome.named("standard", base_width=4))
    model_json = tmp_path / "m" / "model.json"
    model_json.write_text(json.dumps({**json.loads(model_json.read_text()), key: bad}))
    with pytest.raises(SkipnasError, match=f"^{re.escape(str(model_json))}: {expected}") as info:
        load_model_folder(tmp_path / "m")
    assert "\n" not in str(info.value)


def test_an_inference_tile_of_a_multiple_of_the_depth_loads(tmp_path: Path) -> None:
    _save(tmp_path / "m", Genome.named("standard", base_width=4))
    model_json = tmp_path / "m" / "model.json"
    model_json.write_text(json.dumps({**json.loads(model_json.read_text()), "inference_tile": 48}))
    assert load_model_folder(tmp_path / "m").tile == 48

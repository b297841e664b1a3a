from __future__ import annotations

import json
from pathlib import Path

import pytest

from skipnas.cli import main
from skipnas.genome import Genome


def test_bad_auxiliary_settings_exit_2_before_any_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--auxiliary", "edges", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'edges'" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "distance", "--auxiliary-weight", "-1", "--out", str(tmp_path / "m")]) == 2
    assert "--auxiliary-weight must be 0 or more (0: no such loss term), got -1" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "none", "--auxiliary-weight", "2", "--out", str(tmp_path / "m")]) == 2
    assert "--auxiliary-weight needs --auxiliary" in capsys.readouterr().err
    assert main(["train", "--particle-weight", "-0.5", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "--particle-weight must be 0 or more (0: no such loss term), got -0.5" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tile", "8"], "--tile must be at least 16 px"),
        (["--tile", "1"], "--tile must be at least 16 px"),
        (["--tile", "big"], "--tile must be auto or a whole number"),
        (["--scale", "0"], "--scale must be above 0"),
        (["--scale", "-1"], "--scale must be above 0"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--finetune-lr", "-1"], "--finetune-lr must be above 0"),
        (["--lr", "0"], "--lr must be above 0"),
        (["--pretrain-seconds", "-5"], "--pretrain-seconds must be 0 or more"),
        (["--finetune-seconds", "-1"], "--finetune-seconds must be 0 or more"),
        (["--pretrain-seconds", "nan"], "--pretrain-seconds must be 0 or more (0 skips the phase), got nan"),
        (["--finetune-lr", "0"], "--finetune-lr must be above 0"),
        (["--lr", "inf"], "--lr must be above 0 (e.g. 1e-3), got inf"),
        (["--finetune-epochs", "-1"], "--finetune-epochs must be 0 or more (0 skips the phase), got -1"),
        (["--synthetic", "-1"], "--synthetic must be 0 or more (0 skips pretraining), got -1"),
        (["--pretrain-seconds", "0", "--finetune-seconds", "0"], "nothing to train: both phases are skipped"),
        (["--pretrain-seconds", "5", "--synthetic", "0", "--finetune-epochs", "0"], "nothing to train: both phases are skipped"),
        (["--lr", "1e-2"], "--lr only applies to pretraining, which is off (--pretrain-seconds 0, the default)"),
        (["--pretrain-epochs", "3", "--synthetic", "8"], "--pretrain-epochs and --synthetic only apply to pretraining, which is off"),
        (["--lr", "1e-2", "--pretrain-seconds", "0"], "the rate of training on your images is --finetune-lr"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--width", "wide"], "--width must be auto or a whole number, got 'wide'"),
        (["--width", "0"], "--width must be auto or a whole number of 1 or more, got 0"),
        (["--patience", "-1"], "--patience must be 0 (never stop early) or more, got -1"),
        (["--ema-decay", "1"], "--ema-decay must be from 0 (no average) up to, but not including, 1 (e.g. 0.99), got 1"),
        (["--ema-decay", "nan"], "--ema-decay must be from 0 (no average) up to, but not including, 1 (e.g. 0.99), got nan"),
        (["--particle-weight", "nan"], "--particle-weight must be 0 or more"),
    ],
)
def test_values_that_cannot_work_exit_2_with_one_line_before_training(tmp_path, capsys, monkeypatch, flags, message) -> None:
    import skipnas.candidate

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read before the flags were checked")

    monkeypatch.setattr(skipnas.candidate, "open_dataset", no_data)
    assert main(["train", *flags, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_the_refusal_names_finetune_lr_only_when_lr_was_given(tmp_path, capsys) -> None:
    assert main(["train", "--synthetic", "8", "--out", str(tmp_path / "m")]) == 2
    assert "--finetune-lr" not in capsys.readouterr().err
    assert main(["train", "--lr", "2e-3", "--out", str(tmp_path / "m")]) == 2
    assert "the rate of training on your images is --finetune-lr" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _train(data: Path, out: Path, *flags: str) -> list[str]:
    return ["train", "--data", str(data), "--width", "4", "--pretrain-seconds", "0", "--finetune-epochs", "1",
            "--device", "cpu", "--json", "--out", str(out), *flags]


def test_out_over_a_model_folder_keeps_the_users_other_files(tmp_path, capsys, tiny_dataset) -> None:
    out = tmp_path / "m"
    assert main(_train(tiny_dataset, out)) == 0
    (out / "notes.txt").write_text("my notes")
    (out / "run1").mkdir()
    (out / "run1" / "log.txt").write_text("my log")
    first = (out / "weights.pt").stat().st_mtime_ns
    assert main(_train(tiny_dataset, out, "--topology", "dense")) == 0
    assert json.loads((out / "genome.json").read_text())["name"] == "dense" and (out / "weights.pt").stat().st_mtime_ns != first
    assert (out / "notes.txt").read_text() == "my notes" and (out / "run1" / "log.txt").read_text() == "my log"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_out_in_a_folder_of_other_files_needs_overwrite_and_keeps_them(tmp_path, capsys, tiny_dataset) -> None:
    out = tmp_path / "results"
    (out / "run1").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    assert main(_train(tiny_dataset, out)) == 2
    err = capsys.readouterr().err
    assert f"{out}: holds files and is not a skipnas model folder; choose another --out, or add --overwrite" in err
    assert len(err.strip().splitlines()) == 1 and sorted(p.name for p in out.iterdir()) == ["notes.txt", "run1"]
    assert main(_train(tiny_dataset, out, "--overwrite")) == 0
    assert json.loads(capsys.readouterr().out)["model_dir"] == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "genome.json", "metrics.json", "model.json", "notes.txt", "postprocess.json", "run1", "weights.pt"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no staging folder left



def test_steps_replace_the_seconds_and_are_split_as_they_are() -> None:
    from skipnas.cli import build_parser
    from skipnas.cli.train import phase_budgets

    pretrain, finetune = phase_budgets(build_parser().parse_args(["train", "--steps", "30", "--pretrain-seconds", "60", "--finetune-seconds", "120"]))
    assert (pretrain.steps, pretrain.seconds, finetune.steps, finetune.seconds) == (10, None, 20, None)  # 60 s : 120 s
    pretrain, finetune = phase_budgets(build_parser().parse_args(["train", "--steps", "30"]))
    assert not pretrain.enabled and finetune.steps == 30


def test_pretraining_flags_reach_the_config_when_pretraining_is_on() -> None:
    from skipnas.cli import build_parser
    from skipnas.cli.train import check_budgets, phase_budgets, synthetic_images

    args = build_parser().parse_args(["train", "--pretrain-seconds", "30", "--lr", "2e-3", "--pretrain-epochs", "4", "--synthetic", "8"])
    check_budgets(args)
    pretrain, finetune = phase_budgets(args)
    assert (pretrain.seconds, pretrain.lr, pretrain.epochs, synthetic_images(args)) == (30, 2e-3, 4, 8)
    assert finetune.lr == 5e-4


def test_the_command_defaults_are_the_train_configs() -> None:
    """skipnas train's budgets and learning rates are TrainConfig's: no pretraining, 180 s of fine-tuning."""
    from skipnas.cli import build_parser
    from skipnas.cli.train import phase_budgets, synthetic_images
    from skipnas.train.config import TrainConfig

    args = build_parser().parse_args(["train"])
    pretrain, finetune = phase_budgets(args)
    defaults = TrainConfig()
    assert (pretrain, finetune) == (defaults.pretrain, defaults.finetune)
    assert not pretrain.enabled and finetune.seconds == 180.0
    assert synthetic_images(args) == defaults.synthetic_images


def test_a_run_on_steps_gives_the_same_model_twice(tmp_path, capsys, tiny_dataset) -> None:
    import torch

    weights = []
    for name in ("a", "b"):
        flags = ["train", "--data", str(tiny_dataset), "--width", "4", "--steps", "9", "--synthetic", "4",
                 "--pretrain-seconds", "60", "--finetune-seconds", "120", "--validation-steps", "3", "--device", "cpu", "--json", "--out", str(tmp_path / name)]
        assert main(flags) == 0
        training = json.loads((tmp_path / name / "model.json").read_text())["training"]
        assert training["stop_reasons"] == {"pretrain": "3 steps", "finetune": "6 steps"}
        weights.append(torch.load(tmp_path / name / "weights.pt", map_location="cpu"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_patience_0_trains_the_whole_budget_and_patience_n_stops_early(tmp_path, capsys, tiny_dataset) -> None:
    base = ["train", "--data", str(tiny_dataset), "--width", "4", "--pretrain-seconds", "0", "--steps", "12",
            "--validation-steps", "1", "--finetune-lr", "1e-9", "--device", "cpu", "--json"]
    assert main([*base, "--patience", "0", "--out", str(tmp_path / "never")]) == 0
    assert main([*base, "--patience", "2", "--out", str(tmp_path / "early")]) == 0
    never = json.loads((tmp_path / "never" / "model.json").read_text())
    early = json.loads((tmp_path / "early" / "model.json").read_text())
    assert never["train_config"]["early_stopping"] is None and early["train_config"]["early_stopping"] == 2
    # a learning rate of 1e-9 learns nothing: no validation is better than the first, so patience 2 stops at the third
    assert never["training"]["stop_reasons"]["finetune"] == "12 steps"
    assert early["training"]["stop_reasons"]["finetune"] != "12 steps" and early["training"]["steps"] < 12


def test_ema_decay_trains_with_a_weight_average_and_records_it(tmp_path, capsys, tiny_dataset) -> None:
    import torch

    base = ["train", "--data", str(tiny_dataset), "--width", "4", "--steps", "6", "--validation-steps", "3",
            "--finetune-lr", "1e-2", "--device", "cpu", "--json"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    assert main([*base, "--ema-decay", "0.5", "--out", str(tmp_path / "averaged")]) == 0
    plain = json.loads((tmp_path / "plain" / "model.json").read_text())
    averaged = json.loads((tmp_path / "averaged" / "model.json").read_text())
    assert plain["train_config"]["ema_decay"] == 0.0 and averaged["train_config"]["ema_decay"] == 0.5
    assert plain["training"]["steps"] == averaged["training"]["steps"] == 6
    first = torch.load(tmp_path / "plain" / "weights.pt", map_location="cpu")
    second = torch.load(tmp_path / "averaged" / "weights.pt", map_location="cpu")
    assert any(not torch.equal(first[key], second[key]) for key in first)


def test_init_starts_from_a_model_folder_and_carries_its_network_over(tmp_path, capsys, tiny_dataset, tiny_dataset_writer) -> None:
    import torch

    first = tmp_path / "first"
    assert main(["train", "--data", str(tiny_dataset), "--topology", "reverse", "--width", "4", "--steps", "9",
                 "--validation-steps", "3", "--device", "cpu", "--json", "--out", str(first)]) == 0
    other = tiny_dataset_writer(tmp_path / "corrected", seed=7)  # other images: other statistics
    again = tmp_path / "again"
    # a learning rate of 1e-9 changes nothing: the weights trained from are the first model's
    assert main(["train", "--data", str(other), "--init", str(first), "--pretrain-seconds", "0", "--steps", "2",
                 "--finetune-lr", "1e-9", "--device", "cpu", "--json", "--out", str(again)]) == 0
    before, after = (json.loads((folder / "model.json").read_text()) for folder in (first, again))
    assert json.loads((again / "genome.json").read_text()) == json.loads((first / "genome.json").read_text())
    assert after["normalisation"] == before["normalisation"] and after["auxiliary"] == before["auxiliary"]
    assert any(line.startswith(f"started from the weights of {first}") for line in after["data_choices"])
    weights = [torch.load(folder / "weights.pt") for folder in (first, again)]
    learnt = [key for key in weights[0] if "running_" not in key and "num_batches" not in key]  # batch norm's statistics move
    assert learnt and all(torch.allclose(weights[0][key], weights[1][key], atol=1e-6) for key in learnt)
    capsys.readouterr()
    assert main(["train", "--data", str(other), "--init", str(first), "--topology", "dense", "--out", str(tmp_path / "x")]) == 2
    assert "--init carries over the model's genome, head, scale and normalisation; leave out --topology" in capsys.readouterr().err
    assert main(["train", "--data", str(other), "--init", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no such model folder" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_calibrate_on_auto_adds_the_training_images_when_val_holds_few_particles(tmp_path, capsys, tiny_dataset) -> None:
    base = ["train", "--data", str(tiny_dataset), "--width", "4", "--steps", "6",
            "--validation-steps", "3", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0  # the default: the tiny val split holds a few particles
    said = capsys.readouterr().out
    assert "counting chosen on val and train (8 images" in said and "fewer than 100" in said
    record = json.loads((tmp_path / "auto" / "postprocess.json").read_text())["calibration"]
    assert record["calibrated_on"]["splits"] == ["val", "train"]
    assert json.loads((tmp_path / "auto" / "model.json").read_text())["train_config"]["calibrate_on"] == "auto"
    assert main([*base, "--calibrate-on", "val", "--json", "--out", str(tmp_path / "val")]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated_on"] is None
    assert "calibrated_on" not in json.loads((tmp_path / "val" / "postprocess.json").read_text())["calibration"]



def test_invert_on_reaches_the_training_config_stored_with_the_model(tmp_path, capsys, tiny_dataset) -> None:
    flags = ["--steps", "4", "--calibrate-on", "val", "--invert", "on"]
    assert main(_train(tiny_dataset, tmp_path / "m", *flags)) == 0
    assert json.loads((tmp_path / "m" / "model.json").read_text())["train_config"]["augment"]["invert"] is True


def test_the_width_follows_the_cost_of_a_step_unless_given(tmp_path, capsys, monkeypatch, tiny_dataset) -> None:
    # 32 tiles of 48 px a step hold 2.25x the pixels of 8 tiles of 64 px: width 16 narrows to 12
    base = ["train", "--data", str(tiny_dataset), "--steps", "2", "--batch", "32", "--tile", "48", "--calibrate-on", "val", "--device", "cpu"]
    monkeypatch.chdir(tmp_path)
    assert main(base) == 0
    captured = capsys.readouterr()
    said = " ".join((captured.err + captured.out).split())  # the data's choices are status lines, on stderr
    assert "base width 12, not 16: a step of 32 tiles of 48 px holds 2.2x the pixels of 8 tiles of 64 px" in said
    assert "training standard (width 12)" in said
    # the default folder is named by the width trained
    assert json.loads((tmp_path / "runs" / "models" / "standard-w12" / "genome.json").read_text())["base_width"] == 12
    assert main([*base, "--width", "4", "--json", "--out", str(tmp_path / "given")]) == 0
    assert json.loads((tmp_path / "given" / "genome.json").read_text())["base_width"] == 4
    # a genome file keeps its own width unless --width auto asks for the data's
    genome_file = tmp_path / "reverse.json"
    genome_file.write_text(json.dumps(Genome.named("reverse", base_width=24).to_dict()))
    assert main([*base, "--topology", str(genome_file), "--json", "--out", str(tmp_path / "file")]) == 0
    assert json.loads((tmp_path / "file" / "genome.json").read_text())["base_width"] == 24
    # narrowed from the file's 24 (to 16), not from 16 (to 12)
    assert main([*base, "--topology", str(genome_file), "--width", "auto", "--json", "--out", str(tmp_path / "file-auto")]) == 0
    assert json.loads((tmp_path / "file-auto" / "genome.json").read_text())["base_width"] == 16

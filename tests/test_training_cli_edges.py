"""`gramcast-train` on bad input and unsafe run folders: one clear line and a non-zero exit, never a
traceback, and no saved work overwritten or left half-written."""
import fcntl
import json
import re
import shutil
import zipfile

import pytest
import torch
from test_training_gan import make_dataset, run

from gramcast.training.cli import build_parser
from gramcast.training.cli import main as train_main
from gramcast.training.engine.launch import stage_config
from gramcast.training.engine.run_dir import LOCK_FILE
from gramcast.training.stages.encoder import EncoderStageConfig


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"), n=6)


@pytest.fixture(scope="module")
def saved_run(dataset, tmp_path_factory):
    """A two-step tiny GAN run with its state.pt; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("saved") / "run"
    assert run(["--data", str(dataset), "--out", str(out), "--steps", "2", "--max-images", "4"]) == 0
    return out


def copy_run(saved_run, tmp_path):
    return shutil.copytree(saved_run, tmp_path / "run")


def refused(capsys, args, code=2) -> str:
    """The one stderr line of a refused command (asserting its exit code)."""
    capsys.readouterr()
    assert run(args) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("damage", ["random", "empty", "truncated"])
def test_a_damaged_state_is_refused_on_resume(dataset, saved_run, tmp_path, capsys, damage):
    out = copy_run(saved_run, tmp_path)
    state = out / "state.pt"
    whole = state.read_bytes()
    state.write_bytes({"random": bytes(range(256)) * 8, "empty": b"", "truncated": whole[: len(whole) // 2]}[damage])
    err = refused(capsys, ["--data", str(dataset), "--out", str(out), "--steps", "3", "--resume"])
    assert "state.pt is damaged" in err and "another --out" in err


def test_a_state_of_another_stage_is_refused_naming_the_stage(dataset, saved_run, tmp_path, capsys):
    out = copy_run(saved_run, tmp_path)
    state = torch.load(out / "state.pt", weights_only=True)
    state["config"] = json.dumps({**json.loads(state["config"]), "stage": "encoder"})
    state["stage"] = {"encoder": state["stage"]["G"]}
    torch.save(state, out / "state.pt")
    err = refused(capsys, ["--data", str(dataset), "--out", str(out), "--steps", "3", "--resume"])
    assert "from the encoder stage" in err and "gramcast-train encoder" in err


def test_a_state_of_another_preset_is_refused_asking_for_the_same_config(dataset, saved_run, tmp_path, capsys):
    out = copy_run(saved_run, tmp_path)
    args = ["gan", "--config", "small", "--no-progress", "--data", str(dataset), "--out", str(out), "--steps", "3",
            "--resume", "--max-images", "2", "--batch-size", "1"]
    capsys.readouterr()
    assert train_main(args) == 2
    assert "--config tiny run: use the same --config" in capsys.readouterr().err
    # without the record of its preset (an older run) the networks' shapes tell
    state = torch.load(out / "state.pt", weights_only=True)
    torch.save({**state, "config": "{}"}, out / "state.pt")
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert "does not fit this configuration" in err and "use the same --config" in err and "Traceback" not in err


def test_an_out_that_is_a_file_or_under_one_is_refused(dataset, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        err = refused(capsys, ["--data", str(dataset), "--out", str(out), "--steps", "1"])
        assert f"--out {out}" in err
    assert (tmp_path / "afile").read_text() == "x"


def write_dataset(folder, manifest, images=None):
    (folder / "images").mkdir(parents=True)
    for name, data in (images or {}).items():
        (folder / name).write_bytes(data)
    (folder / "poses.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return folder


def test_unusable_datasets_are_refused_in_one_line_leaving_no_run_folder(dataset, tmp_path, capsys):
    crop = (dataset / "images" / "000.png").read_bytes()
    item = {"image": "images/a.png", "yaw": 0.0, "pitch": 0.0}
    cases = {
        "empty": ({"items": []}, {}, "holds no images"),
        "bad_crop": ({"items": [item]}, {"images/a.png": crop[:40]}, "images/a.png: cannot read this training image"),
        "missing_crop": ({"items": [item]}, {}, "images/a.png: listed in poses.json but missing"),
        "bad_json": ("{bad", {}, "poses.json is malformed"),
        "no_items": ({"size": 64}, {}, "poses.json is malformed (no 'items')"),
    }
    for name, (manifest, images, expected) in cases.items():
        data = write_dataset(tmp_path / name, manifest, images)
        out = tmp_path / f"out_{name}"
        err = refused(capsys, ["--data", str(data), "--out", str(out), "--steps", "1"])
        assert expected in err, (name, err)
        assert not out.exists(), name          # a refused run leaves no folder behind
    (tmp_path / "not.zip").write_bytes(b"PK not really")
    assert "not a readable .zip dataset" in refused(capsys, ["--data", str(tmp_path / "not.zip"), "--out",
                                                             str(tmp_path / "out_zip"), "--steps", "1"])


def test_set_values_that_make_no_sense_are_refused(dataset, tmp_path, capsys):
    common = ["--data", str(dataset), "--out", str(tmp_path / "run"), "--steps", "1"]
    for item, expected in (("batch_size=0", "batch_size=0: give 1 or more"),
                           ("betas=[0.1]", "betas=[0.1]: give two numbers in [0, 1)"),
                           ("r1_every=-3", "r1_every=-3: give 1 or more"),
                           ("lr_generator=0", "lr_generator=0.0: give a positive number"),
                           ("r1_every=true", "r1_every takes a value of type int, got bool"),
                           ("pose_on_real=1", "pose_on_real takes true or false")):
        assert expected in refused(capsys, [*common, "--set", item]), item
    assert not (tmp_path / "run").exists()


def test_set_reaches_nested_fields_by_dotted_name_or_json_object(tmp_path):
    def config(*items):
        argv = ["encoder", "--generator", "g", "--data", "d", "--out", "o"]
        return stage_config(EncoderStageConfig, build_parser().parse_args([*argv, *(x for i in items for x in ("--set", i))]))

    preset = EncoderStageConfig.preset("tiny")
    cfg = config("recon_weights.lpips=0.5")
    assert cfg.recon_weights.lpips == 0.5 and cfg.recon_weights.l2 == preset.recon_weights.l2
    assert cfg.delta_every == preset.delta_every       # the preset's values stay
    cfg = config('recon_weights={"l2": 1, "identity": 0}')
    assert (cfg.recon_weights.l2, cfg.recon_weights.identity, cfg.recon_weights.lpips) == (1.0, 0.0, 1.0)
    from gramcast.errors import GramcastError

    for item, expected in (("recon_weights.lpipz=1", "no field 'lpipz'; fields: identity, l2, lpips"),
                           ("recon_weights.lpips=-1", "recon_weights.lpips=-1.0: give 0 or more"),
                           ("recon_weights=2", "recon_weights is a group of fields"),
                           ("lr.x=1", "lr has no fields")):
        with pytest.raises(GramcastError, match=re.escape(expected)):
            config(item)


def test_a_fresh_run_over_a_saved_one_is_refused(dataset, saved_run, tmp_path, capsys):
    out = copy_run(saved_run, tmp_path)
    before = (out / "state.pt").read_bytes()
    err = refused(capsys, ["--data", str(dataset), "--out", str(out), "--steps", "3"])
    assert "holds a run at step 2: --resume continues it; another --out starts afresh" in err
    assert (out / "state.pt").read_bytes() == before


def test_a_folder_another_run_holds_is_refused(dataset, saved_run, tmp_path, capsys):
    out = copy_run(saved_run, tmp_path)
    before = (out / "state.pt").read_bytes()
    with open(out / LOCK_FILE, "a") as held:          # what a running run holds
        fcntl.flock(held, fcntl.LOCK_EX)
        err = refused(capsys, ["--data", str(dataset), "--out", str(out), "--steps", "3", "--resume"])
    assert "another run is training in this folder" in err and str(out) in err
    assert (out / "state.pt").read_bytes() == before


def test_resume_drops_what_a_killed_run_left_past_its_checkpoint(dataset, saved_run, tmp_path):
    out = copy_run(saved_run, tmp_path)
    stale = out / ".state.k9x_2ab1.pt"            # a save cut short by kill -9
    stale.write_bytes(b"half a checkpoint")
    with open(out / "scalars.jsonl", "a") as log:   # steps logged after the checkpoint, then the kill
        log.write(json.dumps({"step": 3, "loss/D": 1.0}) + "\n" + '{"step": 4, "lo')
    assert run(["--data", str(dataset), "--out", str(out), "--steps", "4", "--max-images", "4", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not stale.exists()


def test_pack_dataset_makes_the_folder_of_its_output(dataset, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "d.zip"
    assert train_main(["pack-dataset", str(dataset), str(out), "--size", "32"]) == 0
    assert zipfile.ZipFile(out).read("poses.json")
    (tmp_path / "afile").write_text("x")
    capsys.readouterr()
    assert train_main(["pack-dataset", str(dataset), str(tmp_path / "afile" / "d.zip")]) == 2
    assert "a file is in the way" in capsys.readouterr().err


def test_a_dataset_smaller_than_the_model_is_enlarged_with_a_warning(tmp_path, caplog):
    from gramcast.training.data import FaceDataset
    from test_training_gan import make_dataset

    small = make_dataset(tmp_path / "d32", n=3, res=32)
    with caplog.at_level("WARNING", logger="gramcast.training.data"):
        data = FaceDataset(small, 64)
    assert data.images.shape[-2:] == (64, 64) and data.stored_size == 32
    assert any("32 px images" in r.getMessage() and "--size 64" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="gramcast.training.data"):
        assert FaceDataset(small, 32).stored_size == 32 and FaceDataset(small, 16).images.shape[-1] == 16
    assert not caplog.records           # its own size, or smaller: nothing to say

"""Weight snapshots (carry a run between machines in small parts) and the wall-clock budget."""
import json
from pathlib import Path

import pytest
import torch
from test_training_gan import make_dataset, run

from gramcast.errors import CheckpointError
from gramcast.training.cli import main as train_main
from gramcast.training.engine.snapshot import read_snapshot


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("snap")
    data = make_dataset(root / "faces", n=6)
    out = root / "run"
    assert run(["--data", str(data), "--out", str(out), "--steps", "2"]) == 0
    return data, out


def test_snapshot_parts_hold_every_network_weight_in_bf16(trained, tmp_path):
    _, out = trained
    assert train_main(["snapshot", str(out), str(tmp_path / "carry" / "gan"), "--part-mib", "0.3"]) == 0
    parts = sorted((tmp_path / "carry").glob("gan-*.safetensors"))
    assert len(parts) > 1 and all(p.stat().st_size < 0.4 * 2**20 for p in parts)
    step, modules, scalars = read_snapshot(parts[-1])
    state = torch.load(out / "state.pt", weights_only=True)["stage"]
    assert step == 2 and set(modules) == {"G", "G_ema", "D"} and scalars["images_seen"] == state["images_seen"]
    for name in modules:
        for k, t in state[name].items():
            expected = t.to(torch.bfloat16) if t.is_floating_point() else t
            assert torch.equal(modules[name][k], expected), (name, k)
    parts[0].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_snapshot(parts[-1])


def test_init_from_warm_starts_networks_and_step_with_fresh_optimisers(trained, tmp_path):
    data, out = trained
    assert train_main(["snapshot", str(out), str(tmp_path / "gan"), "--dtype", "fp32"]) == 0
    warm = tmp_path / "warm"
    assert run(["--data", str(data), "--out", str(warm), "--steps", "2",
                "--init-from", str(tmp_path / "gan-00001-of-00001.safetensors")]) == 0
    # Already at step 2: nothing trained, so the saved networks are exactly the source run's.
    src, dst = (torch.load(d / "state.pt", weights_only=True) for d in (out, warm))
    assert dst["step"] == 2
    for name in ("G", "G_ema", "D"):
        for k, t in src["stage"][name].items():
            assert torch.equal(t, dst["stage"][name][k]), (name, k)
    assert dst["stage"]["opt_G"]["state"] == {}  # fresh optimiser: no moments yet


def test_snapshot_of_another_configuration_is_refused(trained, tmp_path, capsys):
    data, out = trained
    assert train_main(["snapshot", str(out), str(tmp_path / "gan")]) == 0
    part = str(tmp_path / "gan-00001-of-00001.safetensors")
    code = train_main(["gan", "--config", "small", "--no-progress", "--data", str(data), "--out",
                       str(tmp_path / "x"), "--steps", "1", "--init-from", part])
    err = capsys.readouterr().err
    assert code != 0 and "same --config" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "state.pt").exists()
    bad = tmp_path / "notes-00001-of-00001.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="readable"):
        read_snapshot(bad)


def test_max_minutes_stops_saves_and_exits_zero(trained, tmp_path, capsys):
    data, _ = trained
    out = tmp_path / "budget"
    assert run(["--data", str(data), "--out", str(out), "--steps", "1000", "--max-minutes", "0.0001"]) == 0
    state = torch.load(out / "state.pt", weights_only=True)
    assert 1 <= state["step"] < 1000
    assert "--max-minutes budget" in capsys.readouterr().out
    logs = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert logs and logs[-1]["step"] <= state["step"]

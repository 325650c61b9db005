"""Stage 1 (the GAN) in the tiny preset on CPU: it trains, resumes exactly, and runs under torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gramcast.training.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def make_dataset(folder: Path, n: int = 12, res: int = 64, yaw_step: float = 0.0) -> Path:
    """Real studio portraits cropped to the face, plus mirrored copies; recorded poses frontal, or
    spread over yaw by ``yaw_step`` around 0 (for stages that read the poses)."""
    import cv2

    photos = sorted((ROOT / "tests" / "data" / "faces").glob("*.jpg"))
    assert photos, "tests/data/faces holds the shipped real photos"
    (folder / "images").mkdir(parents=True)
    items = []
    for i in range(n):
        img = cv2.imread(str(photos[i % len(photos)]))
        h, w = img.shape[:2]
        side = int(min(h, w) * 0.7)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (res, res), interpolation=cv2.INTER_AREA)
        if (i // len(photos)) % 2:
            crop = crop[:, ::-1]
        name = f"images/{i:03d}.png"
        cv2.imwrite(str(folder / name), np.ascontiguousarray(crop))
        items.append({"image": name, "yaw": yaw_step * (i - (n - 1) / 2), "pitch": 0.0,
                      "person": str(i % len(photos))})
    (folder / "poses.json").write_text(json.dumps({"items": items}))
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


def run(args):
    return train_main(["gan", "--config", "tiny", "--no-progress", "--log-every", "1", *args])


def params_of(run_dir: Path) -> dict:
    state = torch.load(run_dir / "state.pt", weights_only=True)
    return {**{f"G.{k}": v for k, v in state["stage"]["G"].items()},
            **{f"D.{k}": v for k, v in state["stage"]["D"].items()}}


def test_tiny_run_trains_and_exports_a_loadable_generator(dataset, tmp_path):
    out = tmp_path / "run"
    assert run(["--data", str(dataset), "--out", str(out), "--steps", "30", "--checkpoint-every", "10",
                "--image-every", "30"]) == 0
    logs = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert len(logs) == 30 and all(np.isfinite(v) for row in logs for v in row.values())
    # The discriminator learns to separate real from generated images on this small real set.
    last = logs[-5:]
    assert np.mean([r["D/real_score"] - r["D/fake_score"] for r in last]) > 0
    from gramcast.model import GRAMModel

    g = GRAMModel.load(out / "generator_ema.safetensors")
    img = g.render(g.sample_ws(1, seed=0), (0.2, 0.0)).rgb
    assert img.shape[-1] == 64 and torch.isfinite(img).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert "samples/yaw_sweep" in events.Tags()["images"]          # the multi-yaw grid
    assert {"loss/D", "loss/G", "eval/psnr_mv", "eval/diversity_ratio"} <= set(events.Tags()["scalars"])

    # the model-card report of the exported generator: a grid of identities x yaws and its scores
    import cv2

    assert train_main(["report", str(out / "generator_ema.safetensors"), "--data", str(dataset),
                       "-o", str(tmp_path / "card" / "gan"), "--identities", "3", "--diversity-samples", "8",
                       "--fid-samples", "0", "--face-samples", "2", "--device", "cpu"]) == 0
    grid = cv2.imread(str(tmp_path / "card" / "gan.png"))
    assert grid.shape == (3 * 64, 5 * 64, 3)
    scores = json.loads((tmp_path / "card" / "gan.json").read_text())
    assert scores["diversity_real"] > 0 and scores["diversity_ratio"] > 0 and np.isfinite(scores["psnr_mv"])
    assert 0.0 <= scores["face_pose/face_found"] <= 1.0     # a few dozen steps: faces or not, it is measured
    assert "fid" not in scores and sorted(p.name for p in (tmp_path / "card").iterdir()) == ["gan.json", "gan.png"]
    # a prefix with a dot in it is kept whole (not taken for a suffix); a .png name gives its stem
    for prefix in ("lr2.5e-3", "b8.png"):
        assert train_main(["report", str(out / "generator_ema.safetensors"), "--data", str(dataset),
                           "-o", str(tmp_path / "card2" / prefix), "--identities", "1", "--diversity-samples", "2",
                           "--fid-samples", "0", "--face-samples", "0", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "card2").iterdir()) == ["b8.json", "b8.png", "lr2.5e-3.json",
                                                                     "lr2.5e-3.png"]


@pytest.mark.parametrize("variant", ["eager_r1", "lazy_r1", "augment"])
def test_interrupted_and_resumed_run_equals_uninterrupted(dataset, tmp_path, variant):
    a, b = tmp_path / "a", tmp_path / "b"
    lazy_r1 = variant == "lazy_r1"
    # lazy R1 every 3 steps, interrupted off its schedule (after step 4)
    extra = {"eager_r1": ["--set", "r1_every=1"],
             "lazy_r1": ["--set", "r1_every=3", "--set", "r1_gamma=2"],
             "augment": ["--set", 'augment="color,translation,cutout"']}[variant]
    stop = "4" if lazy_r1 else "3"
    assert run(["--data", str(dataset), "--out", str(a), "--steps", "6", *extra]) == 0
    assert run(["--data", str(dataset), "--out", str(b), "--steps", stop, *extra]) == 0
    assert run(["--data", str(dataset), "--out", str(b), "--steps", "6", "--resume", *extra]) == 0
    if lazy_r1:
        record = json.loads((a / "config.json").read_text())
        assert record["r1_every"] == 3 and record["r1_gamma"] == 2.0
    pa, pb = params_of(a), params_of(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_lazy_r1_changes_training_and_bad_overrides_and_numbers_are_refused(dataset, tmp_path, capsys):
    every, lazy = tmp_path / "every", tmp_path / "lazy"
    assert run(["--data", str(dataset), "--out", str(every), "--steps", "2", "--set", "r1_every=1"]) == 0
    assert run(["--data", str(dataset), "--out", str(lazy), "--steps", "2", "--set", "r1_every=2"]) == 0
    # step 0 takes the penalty in both (doubled in the lazy run), step 1 only in the eager run
    d_every, d_lazy = params_of(every), params_of(lazy)
    assert any(not torch.equal(d_every[k], d_lazy[k]) for k in d_every if k.startswith("D."))
    capsys.readouterr()
    assert run(["--data", str(dataset), "--out", str(tmp_path / "bad"), "--steps", "1", "--set", "r1_gama=1"]) != 0
    err = capsys.readouterr().err
    assert "r1_gama" in err and "r1_gamma" in err
    assert run(["--data", str(dataset), "--out", str(tmp_path / "bad2"), "--steps", "1", "--set", "r1_every=often"]) != 0
    assert "r1_every takes a value of type int" in capsys.readouterr().err
    assert run(["--data", str(dataset), "--out", str(tmp_path / "bad3"), "--steps", "1",
                "--set", 'augment="colour"']) != 0
    assert "unknown augmentation colour" in capsys.readouterr().err
    for option, value in (("--steps", "-5"), ("--batch-size", "0"), ("--max-minutes", "0")):
        assert run(["--data", str(dataset), "--out", str(tmp_path / "bad4"), option, value]) == 2
        assert f"{option} " in capsys.readouterr().err
    assert not (tmp_path / "bad4").exists()             # refused before a run folder is made


def test_augmentation_changes_training(dataset, tmp_path):
    plain, aug = tmp_path / "plain", tmp_path / "aug"
    assert run(["--data", str(dataset), "--out", str(plain), "--steps", "2"]) == 0
    assert run(["--data", str(dataset), "--out", str(aug), "--steps", "2", "--set", 'augment="translation"']) == 0
    d_plain, d_aug = params_of(plain), params_of(aug)
    assert any(not torch.equal(d_plain[k], d_aug[k]) for k in d_plain if k.startswith("D."))


def test_a_step_leaves_its_scalars_on_the_device(dataset):
    """No tensor is read back to the host during a step (outside the optimiser's own step counters,
    which live on the host): on a GPU every read would make the host wait for the queued kernels
    instead of queueing the next step. The trainer reads the scalars on the steps it logs."""
    import traceback

    from torch.utils._python_dispatch import TorchDispatchMode

    from gramcast.training.engine.distributed import DistInfo
    from gramcast.training.stages.gan import GANConfig, GANStage

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.places = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten._local_scalar_dense:
                stack = traceback.extract_stack()
                if not any("torch/optim/" in f.filename for f in stack):
                    self.places.append(" < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stack[-6:-1]))
            return func(*args, **(kwargs or {}))

    cfg = GANConfig.preset("tiny")
    cfg.eval_every, cfg.batch_size, cfg.r1_every = 0, 2, 2
    stage = GANStage(cfg, dataset, DistInfo())
    with HostReads() as reads:
        results = [stage.train_step(step) for step in range(2)]     # step 0 with R1, step 1 without
    assert reads.places == []
    # the scalars still arrive: the read happens when asked for
    for result in results:
        scalars = result.reduce()
        assert {"loss/D", "loss/G", "loss/r1"} <= set(scalars) and all(np.isfinite(list(scalars.values())))
    with HostReads() as reads:                                       # the check does see a read
        float(stage.train_step(2).values["loss/D"])
    assert len(reads.places) == 1


def test_the_ema_moves_by_the_half_life_of_the_images_seen(dataset):
    """After one update, every EMA parameter sits at p_ema + (p - p_ema)(1 - 0.5^(batch / half_life)),
    and the buffers are copied."""
    from gramcast.training.engine.distributed import DistInfo
    from gramcast.training.stages.gan import GANConfig, GANStage

    cfg = GANConfig.preset("tiny")
    cfg.eval_every, cfg.batch_size, cfg.ema_rampup, cfg.ema_half_life_images = 0, 4, 0.0, 8.0
    stage = GANStage(cfg, dataset, DistInfo())
    with torch.no_grad():
        for p in stage.G.parameters():
            p.add_(torch.randn_like(p))
        stage.G.mapping.w_avg.fill_(3.0)
    before = [p.clone() for p in stage.G_ema.parameters()]
    stage._update_ema()
    weight = 1 - 0.5 ** (4 / 8.0)
    for old, new, target in zip(before, stage.G_ema.parameters(), stage.G.parameters()):
        torch.testing.assert_close(new, old + (target - old) * weight)
    assert torch.equal(stage.G_ema.mapping.w_avg, torch.full_like(stage.G_ema.mapping.w_avg, 3.0))


def test_sigterm_saves_a_checkpoint_and_exits(dataset, tmp_path):
    out = tmp_path / "sig"
    proc = subprocess.Popen([sys.executable, "-m", "gramcast.training.cli", "gan", "--config", "tiny",
                             "--data", str(dataset), "--out", str(out), "--steps", "100000",
                             "--no-progress", "--checkpoint-every", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import time

    deadline = time.time() + 120
    while not (out / "scalars.jsonl").exists() or not (out / "scalars.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.2)
    proc.terminate()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output      # 128 + SIGTERM, as the shell reports a process it ended
    assert "interrupted" in output
    state = torch.load(out / "state.pt", weights_only=True)
    assert 0 < state["step"] < 100000


def test_torchrun_two_ranks_on_gloo(dataset, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "gramcast.training.cli", "gan", "--config", "tiny",
                           "--data", str(dataset), "--out", str(out), "--steps", "3", "--no-progress",
                           "--device", "cpu", "--log-every", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # rank 0 alone writes logs and checkpoints
    assert (out / "state.pt").exists() and len((out / "scalars.jsonl").read_text().splitlines()) == 3
    assert not list(out.glob("*rank1*"))
    # After each synchronised step the ranks' parameters agree exactly (checked across ranks).
    logs = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert all(row["dist/param_spread"] == 0.0 for row in logs)

"""General inversion stage (paper Sec. 3.2): the e4e-style w+ encoder and pivotal tuning of the generator.

Everything runs on CPU with a generator smaller than the tiny preset (32² renders) and real photo crops.
"""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_training_gan import make_dataset as make_faces

from gramcast.errors import CheckpointError
from gramcast.model import GRAMConfig, GRAMModel
from gramcast.model.encoder import EncoderConfig, GRAMEncoder, delta_regularizer, wplus_to_mean
from gramcast.training.cli import main as train_main
from gramcast.training.engine.distributed import DistInfo
from gramcast.training.reconstruction import LaplacianPyramidL1, ReconstructionLoss
from gramcast.training.stages.encoder import (EncoderStage, EncoderStageConfig, active_deltas_at,
                                              learning_rate_at, mean_latent)
from gramcast.training.stages.tune import (TuneStage, TuneStageConfig, default_locality_alpha, locality_codes,
                                           locality_regularizer)

ROOT = Path(__file__).resolve().parents[1]
#: The tiny preset shrunk further so a training step takes well under a second on 2 cores.
SMALL_MODEL = dict(resolution=32, num_manifolds=6, plane_resolution=16, samples_per_ray=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one intra-op thread is as fast alone and many times faster on a busy
    machine (idle OpenMP workers spin). Restored after this module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_gram_config() -> GRAMConfig:
    cfg = GRAMConfig.preset("tiny")
    return dataclasses.replace(cfg, **SMALL_MODEL)


def make_dataset(folder: Path, n: int = 4, res: int = 32) -> Path:
    """Real studio portraits cropped to the face (a FaceDataset folder), poses spread over yaw."""
    return make_faces(folder, n=n, res=res, yaw_step=0.1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    GRAMModel(small_gram_config()).save(path)
    return path


def randomized_encoder(seed: int = 0, **overrides) -> GRAMEncoder:
    """An encoder whose every parameter (the zero-initialised heads too) and w_avg are random."""
    torch.manual_seed(seed)
    enc = GRAMEncoder(EncoderConfig.for_model(small_gram_config(), "tiny", **overrides))
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.2)
        enc.w_avg.normal_()
    return enc.eval()


def images(b: int = 2, res: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------- the encoder network
@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_encoder_output_is_wplus_of_the_matching_generator(preset):
    gcfg = GRAMConfig.preset(preset)
    with torch.device("meta"):  # shapes only: the paper-size encoder has ~300M weights
        ecfg = EncoderConfig.for_model(gcfg, preset)
        n_ws = GRAMModel(gcfg).num_ws
        ws = GRAMEncoder(ecfg)(torch.empty(2, 3, gcfg.resolution, gcfg.resolution))
    assert (ecfg.input_resolution, ecfg.num_ws, ecfg.w_dim) == (gcfg.resolution, n_ws, gcfg.w_dim)
    assert ws.shape == (2, n_ws, gcfg.w_dim)
    assert 1 <= ecfg.coarse_ws and 1 <= ecfg.mid_ws and ecfg.coarse_ws + ecfg.mid_ws < n_ws


def test_encoder_runs_on_real_values_and_resizes_other_input_sizes():
    enc = randomized_encoder()
    ws = enc(images(3, res=32))
    assert ws.shape == (3, enc.config.num_ws, enc.config.w_dim) and torch.isfinite(ws).all()
    assert enc(images(1, res=48)).shape == (1, enc.config.num_ws, enc.config.w_dim)
    # different images give different codes
    assert not torch.allclose(ws[0], ws[1])
    with pytest.raises(ValueError):
        enc(torch.zeros(1, 1, 32, 32))


def test_zeroed_output_layers_give_exactly_the_mean_latent():
    enc = randomized_encoder()
    x = images(2)
    assert not torch.equal(enc(x), enc.w_avg.expand(2, enc.config.num_ws, -1))   # random heads: not w̄
    with torch.no_grad():
        for head in enc.heads:
            head.out.weight.zero_()
            head.out.bias.zero_()
    assert torch.equal(enc(x), enc.w_avg.expand(2, enc.config.num_ws, -1).contiguous())


def test_fresh_encoder_starts_at_the_mean_latent_with_deltas_off():
    torch.manual_seed(0)
    enc = GRAMEncoder(EncoderConfig.for_model(small_gram_config(), "tiny"), w_avg=torch.randn(64))
    ws = enc(images(2))
    # delta heads start at zero: every layer gets w̄ + w_0
    assert torch.equal(ws, ws[:, :1].expand_as(ws))
    assert (ws[:, 0] - enc.w_avg).norm(dim=-1).max() < 0.5 * enc.w_avg.norm()


def test_inactive_deltas_are_exactly_zero_and_active_ones_are_not():
    enc = randomized_encoder()
    x = images(2)
    L = enc.config.num_ws
    for n in (0, 3, L - 1):
        ws = enc(x, active_deltas=n)
        deltas = ws - ws[:, :1]
        assert torch.count_nonzero(deltas[:, n + 1:]) == 0, n
        assert (deltas[:, 1:n + 1].abs().amax(dim=(0, 2)) > 0).all(), n
    enc.active_deltas = 2
    assert torch.equal(enc(x), enc(x, active_deltas=2))
    # w_0 and the active deltas do not depend on how many are active
    assert torch.equal(enc(x, 2)[:, :3], enc(x, L - 1)[:, :3])
    for bad in (-1, L):
        with pytest.raises(ValueError):
            enc.active_deltas = bad


def test_delta_regularizer_hand_computed():
    ws = torch.tensor([[[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]],      # deltas: (3, 4) -> 5, (0, 1) -> 1
                       [[1.0, 1.0], [1.0, 1.0], [1.0, -1.0]]])    # deltas: 0, (0, -2) -> 2
    assert delta_regularizer(ws).item() == pytest.approx((6.0 + 2.0) / 2)
    assert delta_regularizer(ws[:, :1]).item() == 0.0   # one layer: nothing to regularise


def test_wplus_to_mean_hand_computed():
    w_avg = torch.tensor([1.0, 0.0])
    ws = torch.tensor([[[1.0, 0.0], [1.0, 0.0]],         # at the mean: 0
                       [[2.0, 0.0], [1.0, 3.0]]])        # 1² + 3² = 10
    assert wplus_to_mean(ws, w_avg).item() == pytest.approx(5.0)
    per_layer = torch.tensor([[1.0, 0.0], [0.0, 0.0]])   # a (L, D) mean
    assert wplus_to_mean(ws, per_layer).item() == pytest.approx(((1 + 0) + (1 + 1 + 9 + 0)) / 2)


def test_encoder_config_round_trip_and_validation():
    cfg = EncoderConfig.for_model(small_gram_config(), "small")
    assert EncoderConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"input_resolution": 30}, {"channels": [8, 16], "stage_blocks": [1, 1]},
                {"coarse_ws": 5, "mid_ws": 5, "num_ws": 8}, {"stage_blocks": [1, 1]}, {"w_dim": 0}):
        with pytest.raises(ValueError):
            EncoderConfig.from_dict({**cfg.to_dict(), **bad})
    with pytest.raises(ValueError, match="unknown"):
        EncoderConfig.from_dict({**cfg.to_dict(), "depth": 3})
    with pytest.raises(ValueError):
        EncoderConfig.for_model(small_gram_config(), "huge")


# ---------------------------------------------------------------------- checkpoints
def test_save_load_round_trip(tmp_path):
    enc = randomized_encoder()
    enc.active_deltas = 3
    enc.save(tmp_path / "e.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["e.safetensors"]   # no temp file left
    loaded = GRAMEncoder.load(tmp_path / "e.safetensors", device="cpu")
    assert loaded.config == enc.config and loaded.active_deltas == 3 and not loaded.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = images(2)
    assert torch.equal(enc(x), loaded(x))
    # the state dict alone carries active_deltas (what bundles and training states store)
    again = GRAMEncoder(enc.config)
    again.load_state_dict(enc.state_dict())
    assert again.active_deltas == 3 and torch.equal(again(x), enc(x))


def test_bad_encoder_files_raise_checkpoint_error(tmp_path, generator_file):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    good = tmp_path / "good.safetensors"
    randomized_encoder().save(good)
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(good))
    cases = {"missing": (tmp_path / "nope.safetensors", "no such")}
    (tmp_path / "text.safetensors").write_text("not a checkpoint")
    cases["foreign bytes"] = (tmp_path / "text.safetensors", "not a readable")
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (tmp_path / "cut.safetensors", "not a readable|cannot be read")
    cases["a generator"] = (generator_file, r"not a gramcast w\+ encoder")
    save_file(state, str(tmp_path / "v99.safetensors"), metadata={**meta, "format_version": "99"})
    cases["newer version"] = (tmp_path / "v99.safetensors", "upgrade gramcast")
    tampered = dict(state)
    tampered["w_avg"] = tampered["w_avg"] + 1
    save_file(tampered, str(tmp_path / "tampered.safetensors"), metadata=meta)
    cases["tampered"] = (tmp_path / "tampered.safetensors", "content hash")
    save_file({k: v for k, v in state.items() if k != "w_avg"}, str(tmp_path / "partial.safetensors"), metadata=meta)
    cases["missing tensor"] = (tmp_path / "partial.safetensors", "does not match")
    cfg = json.loads(meta["config"])
    save_file(state, str(tmp_path / "badcfg.safetensors"),
              metadata={**meta, "config": json.dumps({**cfg, "input_resolution": 33})})
    cases["bad config"] = (tmp_path / "badcfg.safetensors", "bad encoder configuration")
    from gramcast.model.checkpoint import model_id

    too_many = {**state, "_extra_state": torch.tensor(99)}   # more active deltas than w's, hash intact
    save_file(too_many, str(tmp_path / "active.safetensors"), metadata={**meta, "model_id": model_id(too_many)})
    cases["bad active_deltas"] = (tmp_path / "active.safetensors", "active_deltas must be")
    for name, (path, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            GRAMEncoder.load(path, device="cpu")
    assert GRAMEncoder.load(good, device="cpu") is not None


# ---------------------------------------------------------------------- the encoder stage
def test_schedules():
    cfg = EncoderStageConfig.preset("paper")
    assert (cfg.lr, cfg.lr_final, cfg.betas, cfg.delta_reg_weight, cfg.wplus_reg_weight) == (3e-4, 6e-5, (0.9, 0.999),
                                                                                              1e-3, 1e-4)
    assert (cfg.recon_weights.l2, cfg.recon_weights.lpips, cfg.recon_weights.identity) == (1e-2, 1.0, 4e-2)
    assert learning_rate_at(99_999, cfg) == 3e-4 and learning_rate_at(100_000, cfg) == 6e-5
    assert [active_deltas_at(s, 10, 4) for s in (0, 9, 10, 25, 1000)] == [0, 0, 1, 2, 3]
    assert active_deltas_at(0, 0, 11) == 10
    with pytest.raises(ValueError):
        EncoderStageConfig.preset("huge")


def test_mean_latent_is_the_mean_of_mapped_samples(generator_file):
    g = GRAMModel.load(generator_file, device="cpu")
    w = mean_latent(g, 50, seed=3, batch=20)          # in chunks of 20, 20, 10
    z = torch.randn(50, g.config.z_dim, generator=torch.Generator().manual_seed(3))
    expected = g.mapping(z, update_w_avg=False).mean(0)
    assert torch.allclose(w, expected, atol=1e-5)
    assert not torch.allclose(w, mean_latent(g, 50, seed=4), atol=1e-5)


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, generator_file, dataset):
    """A tiny EncoderStage run overfitting four real crops; returns (stage, error before, error after, scalars)."""
    cfg = dataclasses.replace(EncoderStageConfig.preset("tiny"), w_avg_samples=200, flip=False, delta_every=4,
                              lr=1e-3, lr_final=3e-4, lr_decay_step=20)
    stage = EncoderStage(cfg, generator_file, dataset, DistInfo(), recon_loss=ReconstructionLoss(cfg.recon_weights))
    before = stage.reconstruction_error()
    logs = [stage.train_step(step).reduce() for step in range(30)]
    out = tmp_path_factory.mktemp("enc")
    stage.export(out)
    return stage, before, stage.reconstruction_error(), logs, out / "encoder.safetensors"


def test_encoder_stage_learns_to_reconstruct(encoder_run, generator_file):
    stage, before, after, logs, _ = encoder_run
    assert all(math.isfinite(v) for row in logs for v in row.values())
    assert after["recon"] < 0.95 * before["recon"], (before, after)
    # the schedules ran: deltas unlocked one every 4 steps, the lr dropped at step 20
    assert [row["train/active_deltas"] for row in logs[::4]] == [float(min(i, 7)) for i in range(8)]
    assert logs[19]["train/lr"] == 1e-3 and logs[20]["train/lr"] == 3e-4
    assert logs[0]["loss/delta_reg"] == 0.0 and logs[-1]["loss/delta_reg"] > 0.0
    # the generator stayed frozen
    g = GRAMModel.load(generator_file, device="cpu")
    for k, v in g.state_dict().items():
        assert torch.equal(v, stage.G.state_dict()[k]), k


def test_exported_encoder_reproduces_the_stage(encoder_run):
    stage, _, _, _, path = encoder_run
    loaded = GRAMEncoder.load(path, device="cpu")
    assert loaded.active_deltas == stage.E.active_deltas == 7
    assert torch.equal(loaded.w_avg, stage.w_avg)
    x = stage.data.images[:2].float().div(127.5).sub(1.0)
    stage.E.eval()
    assert torch.equal(loaded(x), stage.E(x))
    stage.E.train()


def test_encoder_stage_log_images(encoder_run):
    stage = encoder_run[0]

    class Writer:
        def __init__(self):
            self.images, self.scalars = {}, {}

        def add_image(self, tag, img, step):
            self.images[tag] = img

        def add_scalar(self, tag, value, step):
            self.scalars[tag] = value

    w = Writer()
    stage.log_images(w, 1, n=3)
    grid = w.images["inversion/input_recon_novel"]
    assert grid.shape == (3, 3 * 32, 4 * 32) and 0 <= grid.min() and grid.max() <= 1
    # first column is the input itself; the two novel-yaw columns differ from the reconstruction
    assert torch.allclose(grid[:, :32, :32], (stage.data.images[0].float() / 255), atol=1e-5)
    assert not torch.equal(grid[:, :, 32:64], grid[:, :, 64:96])
    assert "eval/recon" in w.scalars


# ---------------------------------------------------------------------- generator tuning
def test_locality_codes_step_alpha_towards_the_sample():
    g = torch.Generator().manual_seed(0)
    w_p, w_z = torch.randn(3, 4, 5, generator=g), torch.randn(3, 5, generator=g)
    w_r = locality_codes(w_p, w_z, 2.5)
    step = w_r - w_p
    assert torch.allclose(step.flatten(1).norm(dim=1), torch.full((3,), 2.5))
    direction = w_z[:, None] - w_p
    cos = torch.nn.functional.cosine_similarity(step.flatten(1), direction.flatten(1), dim=1)
    assert torch.allclose(cos, torch.ones(3))
    assert default_locality_alpha(18, 512) == pytest.approx(30.0)
    assert default_locality_alpha(11, 64) == pytest.approx(30.0 * math.sqrt(11 * 64 / (18 * 512)))


def test_locality_regularizer_is_zero_for_equal_renders():
    a = images(2)
    b = a + 0.1 * images(2, seed=5)
    perc = LaplacianPyramidL1()
    assert locality_regularizer(a, a.clone(), perc).item() == 0.0
    assert locality_regularizer(b, a, None).item() == pytest.approx(((b - a) ** 2).mean().item(), rel=1e-5)
    assert locality_regularizer(b, a, perc).item() > locality_regularizer(b, a, None).item() > 0


@pytest.fixture(scope="module")
def tune_run(encoder_run, generator_file, dataset):
    cfg = dataclasses.replace(TuneStageConfig.preset("tiny"), flip=False)
    stage = TuneStage(cfg, generator_file, encoder_run[4], dataset, DistInfo(),
                      recon_loss=ReconstructionLoss(cfg.recon_weights))
    before = stage.reconstruction_error()
    logs = [stage.train_step(step).reduce() for step in range(30)]
    return stage, before, stage.reconstruction_error(), logs


def test_tuning_changes_only_the_triplane_generator_and_decoder(tune_run, generator_file, tmp_path):
    stage = tune_run[0]
    original = GRAMModel.load(generator_file, device="cpu")
    tuned = stage.G.state_dict()
    changed = {k for k, v in original.state_dict().items() if not torch.equal(v, tuned[k])}
    assert changed, "nothing was tuned"
    assert all(k.startswith(("synthesis.", "decoder.")) for k in changed), sorted(changed)[:5]
    assert any(k.startswith("synthesis.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    for k, v in original.state_dict().items():           # mapping (with w_avg) and manifolds: bit-identical
        if k.startswith(("mapping.", "manifold.")):
            assert torch.equal(v, tuned[k]), k
    stage.export(tmp_path)
    exported = GRAMModel.load(tmp_path / "generator_tuned.safetensors", device="cpu")
    for k, v in exported.state_dict().items():
        assert torch.equal(v, tuned[k]), k


def test_tuning_reduces_reconstruction_error_and_locality_starts_at_zero(tune_run):
    stage, before, after, logs = tune_run
    assert after["recon"] < 0.95 * before["recon"], (before, after)
    # the tuned generator equals the original at the first step, so the regulariser is zero there
    assert logs[0]["loss/locality"] < 1e-10
    assert logs[-1]["loss/locality"] > 1e-6
    # and the original generator's reconstructions are unchanged
    assert stage.reconstruction_error(model=stage.G0)["recon"] == pytest.approx(before["recon"], rel=1e-6)


# ---------------------------------------------------------------------- command line
@pytest.fixture
def substitute_losses(monkeypatch, tmp_path):
    """No LPIPS / ArcFace in the cache: the CLI runs with the documented substitutes (fast, hermetic)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("GRAMCAST_LPIPS", raising=False)
    monkeypatch.delenv("GRAMCAST_ARCFACE", raising=False)


def cli(*args):
    return train_main([*args, "--config", "tiny", "--no-progress", "--log-every", "1"])


def test_cli_encoder_writes_the_encoder_and_resumes_exactly(substitute_losses, generator_file, dataset, tmp_path,
                                                           capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--generator", str(generator_file), "--data", str(dataset)]
    assert cli("encoder", *common, "--out", str(b), "--steps", "3") == 0
    enc = GRAMEncoder.load(b / "encoder.safetensors", device="cpu")
    assert enc.config.num_ws == GRAMModel.load(generator_file).num_ws
    assert torch.load(b / "state.pt", weights_only=True)["step"] == 3
    torch.manual_seed(1)
    twin = tmp_path / "twin_generator.safetensors"     # the same shape as generator_file, other weights
    GRAMModel(small_gram_config()).save(twin)
    capsys.readouterr()
    assert cli("encoder", "--generator", str(twin), "--data", str(dataset), "--out", str(b), "--steps", "5",
               "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert "was trained against another generator" in err and str(generator_file) in err, err
    assert torch.load(b / "state.pt", weights_only=True)["step"] == 3      # nothing trained, nothing saved
    assert cli("encoder", *common, "--out", str(b), "--steps", "5", "--resume") == 0
    assert "resumed" in capsys.readouterr().out
    assert cli("encoder", *common, "--out", str(a), "--steps", "5", "--image-every", "5") == 0
    sa = torch.load(a / "state.pt", weights_only=True)
    sb = torch.load(b / "state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 5
    for k, v in sa["stage"]["E"].items():
        assert torch.equal(v, sb["stage"]["E"][k]), k
    assert len((b / "scalars.jsonl").read_text().splitlines()) == 5
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(a / "tb"))
    events.Reload()
    assert "inversion/input_recon_novel" in events.Tags()["images"]
    assert {"loss/recon", "loss/delta_reg", "loss/wplus_reg", "eval/recon"} <= set(events.Tags()["scalars"])


def test_cli_tune_writes_a_loadable_generator(substitute_losses, encoder_run, generator_file, dataset, tmp_path):
    out = tmp_path / "tune"
    assert cli("tune", "--generator", str(generator_file), "--encoder", str(encoder_run[4]),
               "--data", str(dataset), "--out", str(out), "--steps", "2", "--image-every", "2") == 0
    tuned, original = GRAMModel.load(out / "generator_tuned.safetensors", device="cpu"), GRAMModel.load(generator_file)
    assert tuned.config == original.config
    t, o = tuned.state_dict(), original.state_dict()
    assert any(not torch.equal(t[k], o[k]) for k in o if k.startswith("decoder."))
    assert all(torch.equal(t[k], o[k]) for k in o if k.startswith(("manifold.", "mapping.")))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert "tune/input_original_tuned_novel" in events.Tags()["images"]
    assert "loss/locality" in events.Tags()["scalars"]


def test_encoder_stage_under_torchrun_two_ranks(generator_file, dataset, tmp_path):
    """DDP on gloo: the ranks stay in sync while delta heads are unlocked mid-run (unused parameters)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    env.pop("GRAMCAST_LPIPS", None)
    env.pop("GRAMCAST_ARCFACE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29541", "-m", "gramcast.training.cli", "encoder", "--config", "tiny",
                           "--generator", str(generator_file), "--data", str(dataset), "--out", str(out),
                           "--steps", "12", "--no-progress", "--device", "cpu", "--log-every", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [json.loads(line) for line in (out / "scalars.jsonl").read_text().splitlines()]
    assert len(logs) == 12 and logs[-1]["train/active_deltas"] == 1.0   # tiny: one delta per 10 steps
    assert all(row["dist/param_spread"] == 0.0 for row in logs)
    assert GRAMEncoder.load(out / "encoder.safetensors", device="cpu").active_deltas == 1


def test_cli_bad_inputs_give_one_line_errors(substitute_losses, generator_file, encoder_run, dataset, tmp_path,
                                             capsys):
    out = str(tmp_path / "x")
    other = tmp_path / "other_encoder.safetensors"     # made for the tiny preset: 11 w's, not 8
    GRAMEncoder(EncoderConfig.for_model(GRAMConfig.preset("tiny"), "tiny")).save(other)
    torch.manual_seed(1)
    twin = tmp_path / "twin_generator.safetensors"     # the same shape as generator_file, other weights
    GRAMModel(small_gram_config()).save(twin)
    runs = {
        "encoder trained for another generator of the same shape": (
            ["tune", "--generator", str(twin), "--encoder", str(encoder_run[4]), "--data", str(dataset)],
            "was trained against generator"),
        "encoder of another generator": (["tune", "--generator", str(generator_file), "--encoder", str(other),
                                          "--data", str(dataset)], "pass the encoder trained for this generator"),
        "missing generator": (["encoder", "--generator", str(tmp_path / "none.safetensors"), "--data", str(dataset)],
                              "no such file"),
        "generator passed as encoder": (["tune", "--generator", str(generator_file), "--encoder", str(generator_file),
                                         "--data", str(dataset)], "not a gramcast w+ encoder"),
        "missing data": (["encoder", "--generator", str(generator_file), "--data", str(tmp_path / "nodata")],
                         "not a prepared dataset"),
        "GAN-only option": (["encoder", "--generator", str(generator_file), "--data", str(dataset),
                             "--eval-every", "5"], "only the gan stage"),
    }
    for name, (args, message) in runs.items():
        assert cli(*args, "--out", out) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (name, err)

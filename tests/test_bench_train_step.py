"""bench/train_step.py: variants are timed as configured and the profile finds the step's named ranges."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_bench_times_variants_and_splits_a_step(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    sys.modules.pop("train_step", None)
    import train_step
    from test_training_gan import make_dataset

    data = make_dataset(tmp_path / "faces", n=8)
    out = tmp_path / "bench.json"
    assert train_step.main(["--data", str(data), "--preset", "tiny", "--batch", "2", "--steps", "1", "--warmup", "0",
                            "--variant", "default", "--variant", "batch_size=3,r1_every=1",
                            "--profile-steps", "1", "--top", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["variant"] for r in rows] == ["default", "batch_size=3,r1_every=1"]
    assert rows[0]["batch"] == 2 and rows[1]["batch"] == 3   # a variant's batch_size wins over --batch
    assert all(r["s_per_step"] > 0 for r in rows)
    prof = result["profile"]
    assert set(prof["range_host_s_per_step"]) == {"gan/data", "gan/D_step", "gan/G_step", "gan/ema"}
    # the named ranges nest inside the step: together no longer than the profiled wall time
    assert sum(prof["range_host_s_per_step"].values()) <= prof["wall_s_per_step"] * 1.05
    assert len(prof["top_ops"]) == 5 and all(op["calls_per_step"] > 0 for op in prof["top_ops"])

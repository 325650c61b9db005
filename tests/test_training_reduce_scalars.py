"""A step's logged scalars: one all-reduce for all of them, the mean over ranks, floats out."""
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gramcast.training.engine.distributed import DistInfo, StepScalars, reduce_scalars


def test_one_process_gives_back_the_values_as_floats():
    out = reduce_scalars({"loss": torch.tensor(0.25), "step_s": 1.5, "n": 3, "half": torch.tensor(0.5).half(),
                          "lr": 1e-3}, DistInfo())
    assert out == {"loss": 0.25, "step_s": 1.5, "n": 3.0, "half": 0.5, "lr": 1e-3}     # floats exactly
    assert all(type(v) is float for v in out.values())
    assert reduce_scalars({}, DistInfo()) == {}


def _rank(rank: int, init: str, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        info = DistInfo(rank=rank, world_size=2)
        scalars = {"a": torch.tensor(float(rank)), "b": 10.0 * rank + 1, "c": torch.tensor(-2.0)}
        out = reduce_scalars(scalars, info)
        torch.manual_seed(0)
        same = torch.nn.Linear(3, 2)
        torch.manual_seed(rank)
        apart = torch.nn.Linear(3, 2)
        out["spread_same"] = reduce_scalars({}, info, [same])["dist/param_spread"]
        out["spread_apart"] = reduce_scalars({}, info, [apart])["dist/param_spread"]
        # a step's result: its values reduced like the rest, rank 0's own evaluation passed through as it is
        lazy = StepScalars({"loss": torch.tensor(2.0 * rank, requires_grad=True) * 1.0}, info, [same],
                           main_only={"eval/fid": 99.0} if rank == 0 else {})
        out["lazy"] = lazy.reduce()
        results[rank] = out
    finally:
        dist.destroy_process_group()


def test_two_ranks_get_the_mean_of_every_scalar(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(f"file://{tmp_path / 'store'}", results), nprocs=2, join=True)
    for rank in (0, 1):
        r = results[rank]
        assert r["a"] == 0.5 and r["b"] == 6.0 and r["c"] == -2.0
        assert r["dist/param_spread"] == 0.0          # no modules: nothing can differ
        assert r["spread_same"] == 0.0 and r["spread_apart"] > 1e-3
        expected = {"loss": 1.0, "dist/param_spread": 0.0, **({"eval/fid": 99.0} if rank == 0 else {})}
        assert r["lazy"] == expected

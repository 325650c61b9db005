"""CUDA graph replay of the cached renderer (gramcast.avatar.cuda_graphs).

The replay tests need a GPU (CI has none; bench/gpu_suite.sh runs this file on a lent one). On a CPU:
that a frame's operations are all capturable (nothing read back to or copied from the host), and the
pass-through.
"""
import threading

import pytest
import torch

from torch.utils._python_dispatch import TorchDispatchMode

from gramcast.avatar import Renderer, heightfield
from gramcast.avatar.bake import bake_model
from gramcast.avatar.cuda_graphs import GraphedCall
from gramcast.avatar.renderer import CachedRenderModule

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_suite.sh runs it)")


@pytest.fixture(scope="module")
def avatar():
    from gramcast.model import GRAMModel

    torch.manual_seed(0)
    model = GRAMModel.from_config("tiny").eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.manifold.out.weight, std=0.01)   # bent manifolds: frames differ by pose
    return bake_model(model, model.sample_ws(1, seed=0), 64, 128)


def test_on_a_cpu_nothing_is_captured_and_the_call_passes_through():
    calls = []

    def fn(x):
        calls.append(x)
        return (x * 2,)

    g = GraphedCall(fn)
    x = torch.arange(3.0)
    assert torch.equal(g(x)[0], x * 2) and calls == [x] and g.num_graphs == 0


def test_a_cpu_renderer_does_not_use_graphs(avatar):
    assert not Renderer(avatar, device="cpu").cuda_graphs


class HostTraffic(TorchDispatchMode):
    """Records the operations a CUDA graph capture refuses: tensors made from host data (``torch.tensor``
    of a list: a host-to-device copy), values read back to the host (``.item()``, ``float()``, ``bool()``)
    and data-dependent shapes (``nonzero``)."""

    REFUSED = {"lift_fresh", "lift_fresh_copy", "_local_scalar_dense", "item", "nonzero", "masked_select"}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.REFUSED:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("compositing", ["ordered", "general"])
def test_a_frame_as_a_gpu_renders_it_never_goes_to_the_host(avatar, compositing, monkeypatch):
    # checked on the CPU, op by op: what a GPU's capture would refuse. The CPU's eager frames choose some of
    # their work by the values (heightfield.may_branch_on_values); a GPU's take the static path, run here.
    monkeypatch.setattr(heightfield, "may_branch_on_values", lambda t: False)
    module = CachedRenderModule(avatar, 64, compositing=compositing, pass_pixels=None)
    poses = torch.tensor([[0.3, -0.1], [0.0, 0.2]])
    with torch.no_grad(), HostTraffic() as traffic:
        rgb, alpha, _ = module(poses)
    assert traffic.seen == []
    assert alpha.max() > 0.5                              # a real frame was drawn
    probe = HostTraffic()
    with probe:
        float(torch.ones(2).sum())
        torch.tensor([1.0, 2.0])
    assert probe.seen                                     # the probe itself sees such operations


@cuda
def test_graphed_frames_equal_eager_frames_for_every_pose_and_shape(avatar):
    graphed = Renderer(avatar, device="cuda")
    eager = Renderer(avatar, device="cuda", cuda_graphs=False)
    assert graphed.cuda_graphs and not eager.cuda_graphs
    for res, poses in [(64, [[0.0, 0.0]]), (64, [[0.4, -0.1]]), (96, [[-0.3, 0.2], [0.1, 0.0], [0.5, 0.3]]),
                       (64, [[0.2, 0.1]])]:
        a, b = graphed.render(poses, res), eager.render(poses, res)
        for x, y in zip((a.rgb, a.alpha, a.depth), (b.rgb, b.alpha, b.depth)):
            assert x.shape == y.shape and torch.equal(x, y), (res, poses)
    assert graphed.cuda_graph_fallback(64) is None and graphed.cuda_graph_fallback(96) is None
    assert graphed._graphed[64].num_graphs == 1     # (1, 2) poses at 64²: one graph
    assert graphed._graphed[96].num_graphs == 1
    # the poses reach the replay: two poses give two different frames
    f0, f1 = (graphed.render([p], 64).rgb for p in ([0.0, 0.0], [0.4, 0.0]))
    assert (f0 - f1).abs().max() > 0.05


@cuda
def test_returned_frames_are_copies_that_the_next_replay_leaves_alone(avatar):
    r = Renderer(avatar, device="cuda")
    first = r.render([[0.3, 0.0]], 64).rgb
    kept = first.clone()
    r.render([[-0.3, 0.0]], 64)
    assert torch.equal(first, kept)


@cuda
def test_a_function_that_cannot_be_captured_runs_eagerly_with_the_same_result():
    def synchronising(x):
        scale = float(x.abs().max())          # a host sync: not capturable
        return (x / scale,)

    g = GraphedCall(synchronising)
    x = torch.tensor([1.0, -4.0, 2.0], device="cuda")
    assert torch.equal(g(x)[0], synchronising(x)[0])
    assert g.disabled_reason is not None and g.num_graphs == 0
    assert torch.equal(g(x * 2)[0], synchronising(x * 2)[0])


@cuda
def test_concurrent_renders_from_threads_each_get_their_own_pose(avatar):
    r = Renderer(avatar, device="cuda")
    eager = Renderer(avatar, device="cuda", cuda_graphs=False)
    poses = [[0.1 * i - 0.3, 0.0] for i in range(6)]
    expected = [eager.render([p], 64).rgb for p in poses]
    got: dict[int, torch.Tensor] = {}

    def worker(i):
        for _ in range(5):
            got[i] = r.render([poses[i]], 64).rgb

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(poses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        assert torch.equal(got[i], e), i


@cuda
def test_host_to_device_copies_through_pinned_memory_in_stream_order():
    from gramcast.device import host_to_device

    x = torch.randn(1000, 64)
    big = torch.randn(4096, 4096, device="cuda")
    pending = big @ big                                   # work queued ahead of the copy
    y = host_to_device(x, "cuda")
    assert y.device.type == "cuda" and torch.equal(y.cpu(), x)
    assert torch.isfinite(pending).all()
    assert host_to_device(x, "cpu") is x or torch.equal(host_to_device(x, "cpu"), x)

"""The cached renderer of this tree against the one of an earlier commit, in one process, calls alternating.

    python bench/render_ab.py --ref 049af7a [--sizes 256 512] [--batches 1 8] [--threads 2]
                              [--avatars tiny,small,mesh,graminverter] [--json docs/bench/render_ab_2core.json]

The reference is that commit's renderer modules (``sdk/avatar/renderer.py``, ``heightfield.py``, ``layer_order.py``,
``layer_compositing.py``, ``layer_hits.py``; read with ``git show``)
over this tree's other modules, so it measures changes to the renderer's modules. Avatars: bakes of random-init
``tiny`` and ``small`` GRAMModels (12 and 24 layers, as ``render_cache.py``), ``mesh``: the sample portrait
enrolled with the mesh method (1 layer), and ``graminverter``: the
sample portrait enrolled by random-init ``small`` networks (24 layers bounded by the portrait's matte,
the background manifold dropped: the layer structure of a product avatar; its colours mean nothing).
For each avatar, size and batch: best and median seconds per call of both renderers over rounds of one
call each (a change in the machine's load hits both alike), the speed-up (reference over this tree)
and the largest difference of their outputs.
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import emit
import render_cache
from render_cache import ROOT, poses_for, time_alternating

import torch


def load_reference(ref: str, into: Path):
    """The reference commit's renderer module, importing its own heightfield (and, from 344d402 on,
    layer_compositing, and from the split of the renderer on, layer_hits) module."""
    def show(path: str) -> str | None:
        done = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    def own_modules(src: str) -> str:
        return re.sub(r"from gramcast\.avatar\.(heightfield|layer_compositing|layer_hits|layer_order) import",
                      r"from ref_\1 import", src)

    for name in ("heightfield", "layer_order", "layer_compositing", "layer_hits", "renderer"):
        src = show(f"sdk/avatar/{name}.py")
        if src is None and name not in ("layer_compositing", "layer_hits", "layer_order"):
            raise SystemExit(f"{ref} has no sdk/avatar/{name}.py")
        if src is not None:
            (into / f"ref_{name}.py").write_text(own_modules(src))
    sys.path.insert(0, str(into))
    return importlib.import_module("ref_renderer")


def make_avatars(names: list[str]) -> dict:
    bakes, _ = render_cache.make_avatars(with_enrolled=False, presets=[p for p in ("tiny", "small") if p in names])
    out = {e["name"]: e["avatar"] for e in bakes}
    if "graminverter" in names:
        out["graminverter (random small)"] = render_cache.graminverter_avatar()
    if "mesh" in names:
        import gramcast

        out["enrolled (mesh, 1 layer)"] = gramcast.enroll(render_cache.SAMPLE)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the commit to compare against (e.g. the last landed one)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--avatars", default="tiny,small,graminverter")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--budget", type=float, default=15.0, help="seconds per renderer and row at most")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from gramcast.avatar import Renderer

    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        ref = load_reference(args.ref, Path(tmp))
        avatars = make_avatars(args.avatars.split(","))
        rows = []
        for name, avatar in avatars.items():
            new, old = Renderer(avatar, device="cpu"), ref.Renderer(avatar, device="cpu")
            for res in args.sizes:
                for batch in args.batches:
                    poses = torch.from_numpy(poses_for(batch))
                    a, b = new.render(poses, res), old.render(poses, res)
                    diff = max(float((x - y).abs().max()) for x, y in zip((a.rgb, a.alpha, a.depth * a.alpha),
                                                                           (b.rgb, b.alpha, b.depth * b.alpha)))
                    calls = {"ref": lambda: old.render(poses, res), "this": lambda: new.render(poses, res)}
                    t = time_alternating(calls, dev, args.repeats, args.budget)
                    row = {"avatar": name, "layers": avatar.num_layers, "resolution": res, "batch": batch,
                           "ref_fps": batch / t["ref"]["best_s"], "this_fps": batch / t["this"]["best_s"],
                           "speedup_best": t["ref"]["best_s"] / t["this"]["best_s"],
                           "speedup_median": t["ref"]["median_s"] / t["this"]["median_s"],
                           "calls": t["this"]["calls"], "max_abs_diff": diff}
                    rows.append(row)
                    print(f"{name:28s} {res}² B{batch}: {row['ref_fps']:7.1f} -> {row['this_fps']:7.1f} frames/s, "
                          f"{row['speedup_best']:.2f}x best, {row['speedup_median']:.2f}x median "
                          f"({row['calls']} calls each), max diff {diff:.1e}", flush=True)
    emit({"bench": "render_ab", "ref": args.ref, "threads": torch.get_num_threads(), "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Compositing the avatar's layers front to back (paper eq. 3), layers first: ``(L, [C,] *S)``.

Two paths. ``composite_layers`` orders the layers per pixel by depth (O(L²) per pixel).
``composite_ordered`` takes a fixed front-to-back order (O(L) per pixel): exact where the layers' height
fields do not cross (``gramcast.avatar.layer_order.layer_depth_order``), as in a GRAM bake, whose
layers are iso-surfaces of one scalar field; the background plane, which the shells' rims dip behind,
is then the one *pivot* layer placed per pixel by a depth test. ``compositing_plan`` checks an avatar
for the ordered path. Both are static loops over the layers with no sort, gather or scatter, so that
they trace into the ONNX export.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gramcast.avatar.avatar import Avatar
from gramcast.avatar.layer_order import layer_depth_order, layers_above_plane

__all__ = ["composite_layers", "composite_ordered", "OrderedCompositor", "CompositingPlan", "compositing_plan"]


def composite_layers(rgb: Tensor, alpha: Tensor, depth: Tensor,
                     valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back compositing (paper eq. 3) of a small, static number of layers, export-friendly.

    Layers first: alpha, depth, valid ``(L, *S)`` (valid None: every layer valid at every pixel), rgb
    ``(L, C, *S)``. Returns rgb ``(C, *S)``, alpha and depth ``(*S)``: the results of
    ``gramcast.model.renderers.composite`` (layers in depth order along every ray, ties in layer order,
    invalid layers contributing nothing), to float rounding.

    No sort, gather or scatter: the transmittance in front of layer i, prod (1 - a_j) over the layers
    j in front of it, is built from one depth comparison per pair of layers. The loop over i is
    unrolled (L is the avatar's layer count, fixed when traced); step i compares layer i with all
    later layers at once, finishes T_i and passes i's factor on to the later layers.
    """
    nl = alpha.shape[0]
    dtype = alpha.dtype
    if valid is None:
        a, t = alpha, depth
    else:
        vf = valid.to(dtype)
        a = alpha * vf
        t = depth * vf              # invalid layers have a = 0: their depth and order do not matter
    if nl == 1:
        return rgb[0] * a, a[0], (a[0] * t[0]) / a[0].clamp_min(1e-8)
    one = torch.ones((), dtype=dtype, device=alpha.device)
    pending: Tensor | None = None          # (L - i, *S): products so far of the layers not yet finished
    total = out_rgb = depth_sum = None
    # In-place steps only on arrays made in the same step (fewer fresh arrays per frame; each costs page
    # faults on CPU). 1 - x is computed as -x + 1: the same float.
    for i in range(nl):
        if i < nl - 1:
            later_first = (t[i + 1:] < t[i]).to(dtype)         # ties keep the layer order: i first
            own = torch.addcmul(one, a[i + 1:], later_first, value=-1.0).prod(0)    # 1 - a_j where j is in front
            w = own if pending is None else own.mul_(pending[0])
            passed = later_first.neg_().add_(1.0).mul_(a[i]).neg_().add_(1.0)      # 1 - a_i where i is in front
            pending = passed if pending is None else passed.mul_(pending[1:])
        else:
            w = pending[0]
        w = w * a[i]                                                                # T_i a_i
        if total is None:
            total, out_rgb, depth_sum = w, rgb[i] * w, w * t[i]
        else:
            total = total + w
            out_rgb = torch.addcmul(out_rgb, rgb[i], w)
            depth_sum = torch.addcmul(depth_sum, w, t[i])
    return out_rgb, total, depth_sum / total.clamp_min(1e-8)


@dataclass(frozen=True)
class CompositingPlan:
    """A fixed front-to-back ``order`` of the layers other than ``pivot`` (None: of all layers); the
    pivot, where there is one, is placed per pixel by its depth, but for the layers ``in_front_of_pivot``,
    which are in front of it wherever both show (``layers_above_plane``): no depth test. See
    ``composite_ordered``."""

    order: tuple[int, ...]
    pivot: int | None = None
    in_front_of_pivot: tuple[int, ...] = ()

    def describe(self) -> dict:
        return {"order": list(self.order), "pivot": self.pivot, "in_front_of_pivot": list(self.in_front_of_pivot)}


def compositing_plan(avatar: Avatar) -> CompositingPlan | None:
    """The ordered-compositing plan of ``avatar``, or None where its layers cross (``layer_depth_order``
    on its heights and its textures' alpha): then only ``composite_layers`` is exact."""
    found = layer_depth_order(avatar.heights, avatar.textures[:, 3])
    if found is None:
        return None
    order, pivot = found
    # a GRAM bake's background plane crosses only the shells' rims that dip behind it: the shells above it
    # wherever they show skip its per-pixel depth test (four passes a layer fewer)
    front = () if pivot is None else layers_above_plane(avatar.heights, avatar.textures[:, 3], pivot)
    return CompositingPlan(order, pivot, front)


class OrderedCompositor:
    """The running state of ``composite_ordered``: feed the layers of ``plan.order`` one at a time.

    ``pivot``: the pivot layer's (rgb ``(C, *S)``, alpha, depth and valid ``(*S)``); None when the plan has
    none. ``add`` takes the layers of ``plan.order`` the same way; ``result`` returns (rgb ``(C, *S)``,
    alpha, depth). Holding one layer at a time lets a renderer
    sample each layer just before it is composited, so a frame's working set is one layer, not L.
    """

    def __init__(self, plan: CompositingPlan, pivot: tuple[Tensor, Tensor, Tensor, Tensor] | None = None):
        if (plan.pivot is None) != (pivot is None):
            raise ValueError("give the pivot layer's samples exactly when the plan has a pivot")
        self.p = plan.pivot
        self.front = frozenset(plan.in_front_of_pivot)
        self.rgb_p = self.ap = self.tp = self.keep_p = None
        if pivot is not None:
            self.rgb_p, self.ap, self.tp = self._masked(*pivot)
            self.keep_p = 1.0 - self.ap         # (1 - a_p): the factor p puts on what is behind it
        self.trans = self.pass_p = self.out_rgb = self.depth_sum = None

    @staticmethod
    def _masked(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        # invalid: a = 0, so their colour, depth and order do not matter (every term they enter is a
        # product with a): the depth need not be masked, one pass less per layer
        return rgb, alpha if valid is None else torch.where(valid, alpha, 0.0), depth

    @staticmethod
    def _in_front(t: Tensor, tp: Tensor, ties_first: bool) -> Tensor:
        """1.0 where depth ``t`` is in front of ``tp`` (``ties_first``: ties too), else 0.0."""
        if torch.jit.is_tracing():       # the ONNX export: out= variants do not trace
            return (t <= tp if ties_first else t < tp).to(t.dtype)
        # written as floats in the same pass (a bool array then converted is two)
        return (torch.le if ties_first else torch.lt)(t, tp, out=t.new_empty(t.shape))

    def add(self, i: int, rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor | None) -> None:
        """Layer ``i`` (the next of ``plan.order``): rgb ``(C, *S)``, alpha, depth and valid ``(*S)`` (None:
        valid at every pixel)."""
        rgb, a, t = self._masked(rgb, alpha, depth, valid)
        # In-place steps only on arrays this object made (fewer fresh arrays per frame; see composite_layers).
        trans = self.trans
        w = a if trans is None else trans * a                                     # T_i a_i (chain only)
        self.trans = 1.0 - a if trans is None else trans.sub_(w)
        if self.p is not None and i in self.front:                                 # m_i = 1: p behind i
            pp = self.pass_p
            self.pass_p = 1.0 - a if pp is None else pp.addcmul_(pp, a, value=-1.0)
        elif self.p is not None:
            in_front = self._in_front(t, self.tp, i < self.p)                       # m_i: i in front of p
            front_a = a * in_front
            pp = self.pass_p
            self.pass_p = 1.0 - front_a if pp is None else pp.addcmul_(pp, front_a, value=-1.0)
            w = w * torch.addcmul(self.keep_p, self.ap, in_front)                 # x (1 - a_p (1 - m_i))
        if self.out_rgb is None:
            self.out_rgb, self.depth_sum = rgb * w, w * t
        else:
            self.out_rgb.addcmul_(rgb, w)
            self.depth_sum.addcmul_(w, t)

    def result(self) -> tuple[Tensor, Tensor, Tensor]:
        out_rgb, depth_sum = self.out_rgb, self.depth_sum
        if self.p is not None:
            wp = self.ap * self.pass_p
            out_rgb.addcmul_(self.rgb_p, wp)
            depth_sum.addcmul_(wp, self.tp)
            total = (self.trans * self.keep_p).neg_().add_(1.0)
        else:
            total = self.trans.neg().add_(1.0)
        return out_rgb, total, depth_sum / total.clamp_min(1e-8)


def composite_ordered(rgb: Tensor, alpha: Tensor, depth: Tensor, valid: Tensor,
                      plan: CompositingPlan) -> tuple[Tensor, Tensor, Tensor]:
    """``composite_layers`` for layers in a known front-to-back order: O(L) per pixel, no depth sort.

    Same layout and results as ``composite_layers`` (to float rounding) wherever ``plan.order`` is the
    depth order of the layers along every ray (``compositing_plan`` checks that once per avatar). The
    transmittance is a running product, T <- T - T a (= T (1 - a)), unrolled over the static order.

    With a pivot p (a layer that crosses the others: the background plane of a GRAM bake), p is in front
    of layer i at a pixel where its depth is smaller (ties: the lower index first, as in
    ``composite_layers``); m_i = 1 where i is in front of p. One pass over the order: layer i's weight is
    T_i a_i (1 - a_p (1 - m_i)) (the chain's transmittance, times p's where p is in front of i), and p's
    is a_p prod_i (1 - a_i m_i), a second running product. The total alpha is 1 - T (1 - a_p).
    (``OrderedCompositor`` holds that running state.)
    """
    p = plan.pivot
    comp = OrderedCompositor(plan, None if p is None else (rgb[p], alpha[p], depth[p], valid[p]))
    for i in plan.order:
        comp.add(i, rgb[i], alpha[i], depth[i], valid[i])
    return comp.result()

"""Paired comparisons of ``gramcast evaluate`` results: when a learned enrollment method may replace
``mesh`` (the model card's shipping rule), and what a change did to a method (``evaluate --compare``).

A candidate (``graminverter``) ships when, on people left out of training, it beats the baseline (``mesh``)
on novel-view identity -- ``id_xpose`` (enrolled from one photo, compared with the person's other photos
at their poses) and ``ID_nv`` (the photo against renders at yaw +-0.4) -- while its own renders stay
consistent (PSNR_mv >= 35 dB) and its heads turn with the camera (``yaw_slope`` >= 0.9). "Beats" is paired
and with a margin for chance: the same portraits (and photo pairs) under both methods, the mean
difference's bootstrap interval (over people) above 0. The evaluation sets are a few dozen pairs of a
few dozen people, so a verdict on the means alone would turn on which people happen to be in them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ShipRule", "paired_differences", "bootstrap_interval", "ship_verdict", "verdict_markdown", "paired_report",
           "report_markdown"]


@dataclass(frozen=True)
class ShipRule:
    min_psnr_mv: float = 35.0
    min_yaw_slope: float = 0.9
    #: bootstrap of the paired differences' mean: resamples, two-sided confidence, seed
    resamples: int = 4000
    confidence: float = 0.95
    seed: int = 0


def paired_differences(candidate: list[dict], baseline: list[dict], key: str,
                       pair: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``key`` of the candidate minus the baseline's over the rows both have a value for, matched on the
    fields ``pair`` (e.g. person and target photo): the differences ``(P,)`` and each pair's person (the
    unit the bootstrap resamples, so that one person's several pairs move together)."""
    base = {tuple(r.get(f) for f in pair): r.get(key) for r in baseline}
    diffs, people = [], []
    for r in candidate:
        b = base.get(tuple(r.get(f) for f in pair))
        c = r.get(key)
        if b is None or c is None or not np.isfinite(b) or not np.isfinite(c):
            continue
        diffs.append(float(c) - float(b))
        people.append(r.get("person"))
    return np.asarray(diffs, np.float64), np.asarray(people, object)


def bootstrap_interval(diffs: np.ndarray, people: np.ndarray, resamples: int = 4000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` under resampling of whole people (with replacement)."""
    groups = [diffs[people == p] for p in dict.fromkeys(people.tolist())]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    means = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def _verdict(lo: float, hi: float, sign: int = +1) -> str:
    """A paired change's interval read as "better" / "worse" (it excludes 0; ``sign`` -1: lower is better)
    or "within noise"."""
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (sign > 0) else "worse"
    return "within noise"


def _paired_summary(diffs: np.ndarray, people: np.ndarray, rule: ShipRule, sign: int = +1) -> dict:
    """Pairs, people, mean change, its interval and verdict of non-empty paired differences."""
    lo, hi = bootstrap_interval(diffs, people, rule.resamples, rule.confidence, rule.seed)
    return {"pairs": int(len(diffs)), "people": len(set(people.tolist())), "mean_difference": float(diffs.mean()),
            "interval": [lo, hi], "verdict": _verdict(lo, hi, sign)}


def _beats(name: str, diffs: np.ndarray, people: np.ndarray, rule: ShipRule) -> dict:
    if len(diffs) == 0:
        return {"check": name, "passed": False, "pairs": 0, "detail": "no portraits that both methods scored"}
    summary = _paired_summary(diffs, people, rule)
    (lo, hi), mean = summary["interval"], summary["mean_difference"]
    return {"check": name, "passed": lo > 0, **summary,
            "detail": f"{name} {mean:+.3f} ({rule.confidence:.0%} interval {lo:+.3f} .. {hi:+.3f}, "
                      f"{len(diffs)} pairs): " + summary["verdict"]}


def _at_least(name: str, value, bound: float) -> dict:
    passed = value is not None and np.isfinite(value) and value >= bound
    shown = "none" if value is None else f"{value:.3f}"
    return {"check": name, "passed": bool(passed), "value": value, "bound": bound,
            "detail": f"{name} {shown} (at least {bound})"}


def ship_verdict(results: dict, candidate: str = "graminverter", baseline: str = "mesh",
                 rule: ShipRule = ShipRule()) -> dict:
    """The rule applied to ``gramcast evaluate``'s results (both methods evaluated): every check with its
    figures, and ``ships`` where all pass."""
    methods = results["methods"]
    for m in (candidate, baseline):
        if m not in methods:
            raise ValueError(f"the results hold no {m!r} rows: evaluate with --methods {baseline},{candidate}")
    c, b = methods[candidate], methods[baseline]
    checks = [
        _beats("id_xpose", *paired_differences(c["cross_pose"], b["cross_pose"], "id_xpose", ("person", "target")),
               rule),
        _beats("id_nv", *paired_differences(c["portraits"], b["portraits"], "id_nv", ("person", "photo")), rule),
        _at_least("psnr_mv", c["means"].get("psnr_mv"), rule.min_psnr_mv),
        _at_least("yaw_slope", c["means"].get("yaw_slope"), rule.min_yaw_slope),
    ]
    return {"candidate": candidate, "baseline": baseline, "ships": all(ch["passed"] for ch in checks),
            "checks": checks, "rule": asdict(rule)}


def verdict_markdown(verdict: dict) -> str:
    """The verdict as a few lines under the evaluation's table."""
    head = (f"Shipping rule, {verdict['candidate']} against {verdict['baseline']}: "
            + ("**ships**" if verdict["ships"] else "does not ship"))
    return head + "\n" + "".join(f"\n- {'pass' if ch['passed'] else 'FAIL'}: {ch['detail']}"
                                 for ch in verdict["checks"]) + "\n"


#: ``gramcast evaluate --compare``: the per-portrait scores compared, and which way is better
PORTRAIT_SCORES = {"psnr": +1, "ssim": +1, "lpips": -1, "id": +1, "id_nv": +1, "psnr_mv": +1, "ssim_mv": +1,
                   "yaw_error": -1}


def paired_report(before: dict, after: dict, method: str, rule: ShipRule = ShipRule()) -> list[dict]:
    """Each score of ``method`` in two ``gramcast evaluate`` results on the same portraits (``before``, e.g.
    an earlier commit's, and ``after``), paired: the mean change after - before with its bootstrap interval
    (people resampled) and a verdict, "better" / "worse" where the interval excludes 0, else "within noise".
    One row per score that both results hold for at least one portrait."""
    b, a = before["methods"][method], after["methods"][method]
    rows = []
    scores = [(k, s, "portraits", ("person", "photo")) for k, s in PORTRAIT_SCORES.items()]
    scores.append(("id_xpose", +1, "cross_pose", ("person", "target")))
    for key, sign, table, pair in scores:
        diffs, people = paired_differences(a.get(table, []), b.get(table, []), key, pair)
        if len(diffs) == 0:
            continue
        rows.append({"score": key, **_paired_summary(diffs, people, rule, sign)})
    return rows


def report_markdown(rows: list[dict], method: str, before: str) -> str:
    """``paired_report``'s rows as a table."""
    lines = [f"Paired against {before} ({method}):", "",
             "| score | pairs | change | 95 % interval | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["interval"]
        lines.append(f"| {r['score']} | {r['pairs']} | {r['mean_difference']:+.4f} | {lo:+.4f} .. {hi:+.4f} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"

"""Paired comparisons of ``gramcast evaluate`` results: when a learned enrollment method may replace
``mesh`` (the model card's shipping rule), and what a change did to a method (``evaluate --compare``).

A candidate (``graminverter``) ships when, on people left out of training, it beats the baseline (``mesh``)
on novel-view identity -- ``id_xpose`` (enrolled from one photo, compared with the person's other photos
at their poses) and ``ID_nv`` (the photo against renders at yaw +-0.4) -- while its own renders stay
consistent (PSNR_mv >= 35 dB) and its heads turn with the camera (``yaw_slope`` >= 0.9). "Beats" is paired
and with a margin for chance: the same portraits (and photo pairs) under both methods, the mean
difference's bootstrap interval (over people) above 0. The evaluation sets are a few dozen pairs of a
few dozen people, so a verdict on the means alone would turn on which people happen to be in them.
Below ``ShipRule.min_people`` people the rule decides nothing ("too few people to decide"), and
``--compare`` gives no verdict either: see ``ShipRule.min_people``.
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
    #: fewest people a paired verdict is drawn from. A percentile bootstrap over n people has only as many
    #: distinct resamples as n allows (one person: one, an interval of zero width; five: 126) and its
    #: interval comes out too narrow for small n, so "beyond chance" would be a claim about the resampling,
    #: not the people. The validation set is 20 LFW people, of whom 16 were scored by both methods
    #: (docs/eval/lfw20_*); 10 is what a set of that kind keeps when a few of its people are refused.
    min_people: int = 10


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


#: a paired change's verdict when fewer than ``ShipRule.min_people`` people carry it
TOO_FEW = "too few people"


def _verdict(lo: float, hi: float, sign: int = +1) -> str:
    """A paired change's interval read as "better" / "worse" (it excludes 0; ``sign`` -1: lower is better)
    or "within noise"."""
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (sign > 0) else "worse"
    return "within noise"


def _paired_summary(diffs: np.ndarray, people: np.ndarray, rule: ShipRule, sign: int = +1) -> dict:
    """Pairs, people, mean change, its interval and verdict of non-empty paired differences (``TOO_FEW``
    below ``rule.min_people`` people, whatever the interval)."""
    lo, hi = bootstrap_interval(diffs, people, rule.resamples, rule.confidence, rule.seed)
    n_people = len(set(people.tolist()))
    return {"pairs": int(len(diffs)), "people": n_people, "mean_difference": float(diffs.mean()),
            "interval": [lo, hi], "verdict": _verdict(lo, hi, sign) if n_people >= rule.min_people else TOO_FEW}


def _people(n: int) -> str:
    return f"{n} person" if n == 1 else f"{n} people"


def _beats(name: str, diffs: np.ndarray, people: np.ndarray, rule: ShipRule, scored_by_baseline: int) -> dict:
    """The paired check. Undecided (``decided`` False) where the baseline itself scored fewer than
    ``rule.min_people`` people: the evaluation set is too small. Where the baseline scored enough of them
    but the candidate kept fewer, the candidate lost them: that fails."""
    n_people = len(set(people.tolist()))
    if scored_by_baseline < rule.min_people:
        check = {"check": name, "passed": False, "decided": False, "pairs": int(len(diffs)), "people": n_people,
                 "detail": f"{name}: the baseline scored {_people(scored_by_baseline)}, too few to decide (the "
                           f"rule needs {rule.min_people}): evaluate more people"}
        if len(diffs):
            summary = _paired_summary(diffs, people, rule)
            lo, hi = summary["interval"]
            check.update(summary)
            check["detail"] += (f"; {name} {summary['mean_difference']:+.3f} ({rule.confidence:.0%} interval "
                                f"{lo:+.3f} .. {hi:+.3f}, {len(diffs)} pairs) says nothing yet")
        return check
    if n_people < rule.min_people:
        return {"check": name, "passed": False, "decided": True, "pairs": int(len(diffs)), "people": n_people,
                "detail": f"{name}: the candidate kept {_people(n_people)} of the "
                          f"{scored_by_baseline} the baseline scored"}
    summary = _paired_summary(diffs, people, rule)
    (lo, hi), mean = summary["interval"], summary["mean_difference"]
    return {"check": name, "passed": lo > 0, "decided": True, **summary,
            "detail": f"{name} {mean:+.3f} ({rule.confidence:.0%} interval {lo:+.3f} .. {hi:+.3f}, "
                      f"{len(diffs)} pairs of {_people(summary['people'])}): " + summary["verdict"]}


def _scored_people(rows: list[dict], key: str) -> int:
    return len({r.get("person") for r in rows if r.get(key) is not None and np.isfinite(r[key])})


def _at_least(name: str, value, bound: float) -> dict:
    passed = value is not None and np.isfinite(value) and value >= bound
    shown = "none" if value is None else f"{value:.3f}"
    return {"check": name, "passed": bool(passed), "value": value, "bound": bound,
            "detail": f"{name} {shown} (at least {bound})"}


def ship_verdict(results: dict, candidate: str = "graminverter", baseline: str = "mesh",
                 rule: ShipRule = ShipRule()) -> dict:
    """The rule applied to ``gramcast evaluate``'s results (both methods evaluated): every check with its
    figures, ``ships`` where all pass, and ``outcome``: "ships", "does not ship", or "too few people to
    decide" where a paired check had fewer than ``rule.min_people`` people to go on (never ships)."""
    methods = results["methods"]
    for m in (candidate, baseline):
        if m not in methods:
            raise ValueError(f"the results hold no {m!r} rows: evaluate with --methods {baseline},{candidate}")
    c, b = methods[candidate], methods[baseline]
    checks = [
        _beats("id_xpose", *paired_differences(c["cross_pose"], b["cross_pose"], "id_xpose", ("person", "target")),
               rule, _scored_people(b["cross_pose"], "id_xpose")),
        _beats("id_nv", *paired_differences(c["portraits"], b["portraits"], "id_nv", ("person", "photo")), rule,
               _scored_people(b["portraits"], "id_nv")),
        _at_least("psnr_mv", c["means"].get("psnr_mv"), rule.min_psnr_mv),
        _at_least("yaw_slope", c["means"].get("yaw_slope"), rule.min_yaw_slope),
    ]
    ships = all(ch["passed"] for ch in checks)
    undecided = not all(ch.get("decided", True) for ch in checks)
    outcome = "too few people to decide" if undecided else ("ships" if ships else "does not ship")
    return {"candidate": candidate, "baseline": baseline, "ships": ships, "outcome": outcome,
            "checks": checks, "rule": asdict(rule)}


def verdict_markdown(verdict: dict) -> str:
    """The verdict as a few lines under the evaluation's table."""
    if verdict["ships"]:
        said = "**ships**"
    elif verdict.get("outcome") == "too few people to decide":
        need = verdict.get("rule", {}).get("min_people", ShipRule.min_people)
        said = f"does not ship: too few people to decide (the rule needs {need} people scored by both methods)"
    else:
        said = "does not ship"
    head = f"Shipping rule, {verdict['candidate']} against {verdict['baseline']}: {said}"

    def mark(ch: dict) -> str:
        return "pass" if ch["passed"] else ("undecided" if ch.get("decided", True) is False else "FAIL")

    return head + "\n" + "".join(f"\n- {mark(ch)}: {ch['detail']}" for ch in verdict["checks"]) + "\n"


#: ``gramcast evaluate --compare``: the per-portrait scores compared, and which way is better
PORTRAIT_SCORES = {"psnr": +1, "ssim": +1, "lpips": -1, "id": +1, "id_nv": +1, "psnr_mv": +1, "ssim_mv": +1,
                   "yaw_error": -1, "sil": +1}
#: the same for the scores of each pair (enrolled from one photo, rendered at another's pose)
PAIR_SCORES = {"id_xpose": +1, "sil_xpose": +1}


def paired_report(before: dict, after: dict, method: str, rule: ShipRule = ShipRule()) -> list[dict]:
    """Each score of ``method`` in two ``gramcast evaluate`` results on the same portraits (``before``, e.g.
    an earlier commit's, and ``after``), paired: the mean change after - before with its bootstrap interval
    (people resampled) and a verdict, "better" / "worse" where the interval excludes 0, else "within noise"
    ("too few people" below ``rule.min_people``, whatever the interval). One row per score that both results
    hold for at least one portrait; none where they share no portrait (``report_markdown`` says so)."""
    b, a = before["methods"][method], after["methods"][method]
    rows = []
    scores = [(k, s, "portraits", ("person", "photo")) for k, s in PORTRAIT_SCORES.items()]
    scores += [(k, s, "cross_pose", ("person", "target")) for k, s in PAIR_SCORES.items()]
    for key, sign, table, pair in scores:
        diffs, people = paired_differences(a.get(table, []), b.get(table, []), key, pair)
        if len(diffs) == 0:
            continue
        rows.append({"score": key, **_paired_summary(diffs, people, rule, sign)})
    return rows


def report_markdown(rows: list[dict], method: str, before: str, rule: ShipRule = ShipRule()) -> str:
    """``paired_report``'s rows as a table; a line saying why where there are none, and where some rows
    have too few people for a verdict."""
    if not rows:
        # an empty table reads as "nothing changed"; it means the two runs share no scored portrait
        return (f"Paired against {before} ({method}): no portraits in common (none scored in both runs), "
                "nothing to compare: the runs evaluated different people or photos; compare two runs over the "
                "same folder, which pair by person and photo name\n")
    lines = [f"Paired against {before} ({method}):", "",
             f"| score | pairs | people | change | {rule.confidence * 100:g} % interval | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["interval"]
        lines.append(f"| {r['score']} | {r['pairs']} | {r.get('people', '–')} | {r['mean_difference']:+.4f} | "
                     f"{lo:+.4f} .. {hi:+.4f} | {r['verdict']} |")
    if any(r["verdict"] == TOO_FEW for r in rows):
        lines += ["", f"Too few people: fewer than {rule.min_people} people carry those changes, so their "
                      "intervals say nothing yet about people not evaluated; evaluate more people before drawing "
                      "a conclusion from them."]
    return "\n".join(lines) + "\n"

"""The shipping rule of a learned enrollment method against mesh, on results with known answers."""
import json
from pathlib import Path

import numpy as np
import pytest

from gramcast.training.eval_report import markdown_table
from gramcast.training.ship_rule import (ShipRule, bootstrap_interval, paired_differences, ship_verdict,
                                        verdict_markdown)

ROOT = Path(__file__).resolve().parents[1]


def _results(xpose_gain: float, nv_gain: float, psnr_mv: float = 40.0, yaw_slope: float = 1.0,
             noise: float = 0.0, people: int = 12) -> dict:
    """Two methods on the same people: the candidate's identities are the baseline's plus a gain (and, with
    ``noise``, a per-person deviation of alternating sign)."""
    rng = np.random.default_rng(1)
    base_p, cand_p, base_x, cand_x = [], [], [], []
    for i in range(people):
        person = f"p{i}"
        nv = float(rng.uniform(0.6, 0.9))
        wobble = noise * (1 if i % 2 else -1)
        base_p.append({"person": person, "photo": "a.jpg", "id_nv": nv})
        cand_p.append({"person": person, "photo": "a.jpg", "id_nv": nv + nv_gain + wobble})
        for target in ("b.jpg", "c.jpg"):
            x = float(rng.uniform(0.4, 0.7))
            base_x.append({"person": person, "target": target, "id_xpose": x})
            cand_x.append({"person": person, "target": target, "id_xpose": x + xpose_gain + wobble})
    return {"methods": {
        "mesh": {"means": {"psnr_mv": 48.0, "yaw_slope": 0.96}, "portraits": base_p, "cross_pose": base_x},
        "graminverter": {"means": {"psnr_mv": psnr_mv, "yaw_slope": yaw_slope}, "portraits": cand_p,
                         "cross_pose": cand_x}}}


def test_paired_differences_match_rows_and_skip_missing_values():
    cand = [{"person": "a", "target": "1", "v": 0.5}, {"person": "b", "target": "1", "v": None},
            {"person": "c", "target": "2", "v": 0.9}, {"person": "d", "target": "1", "v": float("nan")}]
    base = [{"person": "c", "target": "2", "v": 0.4}, {"person": "a", "target": "1", "v": 0.2},
            {"person": "b", "target": "1", "v": 0.3}, {"person": "d", "target": "1", "v": 0.1}]
    diffs, people = paired_differences(cand, base, "v", ("person", "target"))
    assert np.allclose(diffs, [0.3, 0.5]) and people.tolist() == ["a", "c"]


def test_bootstrap_interval_of_a_constant_difference_is_that_value_and_of_one_person_its_mean():
    diffs = np.full(10, 0.1)
    people = np.array([f"p{i}" for i in range(10)], object)
    assert bootstrap_interval(diffs, people) == pytest.approx((0.1, 0.1))
    # one person's pairs always move together: every resample draws that person, mean 0.2
    one = np.array(["x"] * 4, object)
    assert bootstrap_interval(np.array([0.0, 0.1, 0.3, 0.4]), one) == pytest.approx((0.2, 0.2))
    # symmetric differences: the interval straddles 0
    lo, hi = bootstrap_interval(np.array([0.1, -0.1] * 8), np.array([f"p{i}" for i in range(16)], object))
    assert lo < 0 < hi


def test_a_clear_gain_on_both_identities_with_consistent_turning_views_ships():
    verdict = ship_verdict(_results(0.1, 0.05))
    assert verdict["ships"] and all(c["passed"] for c in verdict["checks"])
    xpose = verdict["checks"][0]
    assert xpose["pairs"] == 24 and xpose["people"] == 12
    assert xpose["mean_difference"] == pytest.approx(0.1) and xpose["interval"][0] > 0


@pytest.mark.parametrize("kwargs, failing", [
    (dict(xpose_gain=0.01, nv_gain=0.15, noise=0.1), {"id_xpose"}),     # a gain inside the people's spread
    (dict(xpose_gain=0.1, nv_gain=-0.05), {"id_nv"}),                    # worse at yaw +-0.4
    (dict(xpose_gain=0.1, nv_gain=0.05, psnr_mv=34.0), {"psnr_mv"}),     # inconsistent views
    (dict(xpose_gain=0.1, nv_gain=0.05, yaw_slope=0.5), {"yaw_slope"}),  # a flattened head
])
def test_each_condition_alone_stops_shipping(kwargs, failing):
    verdict = ship_verdict(_results(**kwargs))
    assert not verdict["ships"]
    assert {c["check"] for c in verdict["checks"] if not c["passed"]} == failing


def test_the_verdict_needs_both_methods_and_reads_in_the_markdown_table():
    with pytest.raises(ValueError, match="--methods mesh,graminverter"):
        ship_verdict({"methods": {"mesh": _results(0.1, 0.1)["methods"]["mesh"]}})
    results = _results(0.1, 0.05)
    results["verdict"] = ship_verdict(results, rule=ShipRule(resamples=500))
    assert "graminverter against mesh: **ships**" in markdown_table(results)


def test_the_recorded_tiny_inverter_evaluation_does_not_ship():
    """The model card's first inverter (a 64² prior, encoder trained for an hour on a CPU) against mesh on
    the LFW validation people: worse on both identities beyond noise."""
    results = json.loads((ROOT / "docs/eval/lfw20_graminverter_tiny/results.json").read_text())
    verdict = ship_verdict(results)
    assert not verdict["ships"]
    xpose, nv = verdict["checks"][:2]
    assert xpose["interval"][1] < 0 and nv["interval"][1] < 0


def test_paired_report_reads_direction_and_noise():
    """Known changes: identity up by a constant (better), LPIPS up by a constant (worse: lower is better),
    PSNR changed by alternating +-1 (within noise), a score only one run holds (no row)."""
    before = _results(0.0, 0.0)
    after = json.loads(json.dumps(before))
    m_before, m_after = before["methods"]["mesh"], after["methods"]["mesh"]
    for i, (rb, ra) in enumerate(zip(m_before["portraits"], m_after["portraits"])):
        rb.update(lpips=0.30, psnr=30.0)
        ra.update(lpips=0.31, psnr=30.0 + (1 if i % 2 else -1), ssim=0.9)
        ra["id_nv"] = rb["id_nv"] + 0.02
    for rb, ra in zip(m_before["cross_pose"], m_after["cross_pose"]):
        ra["id_xpose"] = rb["id_xpose"] - 0.05
    from gramcast.training.ship_rule import paired_report, report_markdown

    rows = {r["score"]: r for r in paired_report(before, after, "mesh")}
    assert set(rows) == {"psnr", "lpips", "id_nv", "id_xpose"}          # no ssim before: no row
    assert rows["id_nv"]["verdict"] == "better" and rows["id_nv"]["interval"] == pytest.approx([0.02, 0.02])
    assert rows["lpips"]["verdict"] == "worse" and rows["lpips"]["mean_difference"] == pytest.approx(0.01)
    assert rows["id_xpose"]["verdict"] == "worse" and rows["id_xpose"]["pairs"] == 24
    assert rows["psnr"]["verdict"] == "within noise"
    assert "| id_nv | 12 | 12 | +0.0200 |" in report_markdown(list(rows.values()), "mesh", "old.json")


def test_too_few_people_never_ship_however_clear_the_gain():
    """One person's +0.001 once shipped: a one-person bootstrap interval has zero width. Below the rule's
    minimum of people the verdict is "too few people to decide", never "ships"; at the minimum it decides."""
    rule = ShipRule(resamples=500)
    one = ship_verdict(_results(0.001, 0.001, people=1), rule=rule)
    assert not one["ships"] and one["outcome"] == "too few people to decide"
    assert [c.get("decided", True) for c in one["checks"]] == [False, False, True, True]
    text = verdict_markdown(one)
    assert "does not ship: too few people to decide" in text and "**ships**" not in text
    assert "the baseline scored 1 person" in text and "undecided: id_xpose" in text
    short = ship_verdict(_results(0.1, 0.05, people=rule.min_people - 1), rule=rule)
    assert not short["ships"] and short["outcome"] == "too few people to decide"
    enough = ship_verdict(_results(0.1, 0.05, people=rule.min_people), rule=rule)
    assert enough["ships"] and enough["outcome"] == "ships"
    assert ShipRule().min_people == 10


def test_a_candidate_that_loses_people_fails_rather_than_waiting_for_more():
    """The baseline scored 12 people, the candidate's renders showed a face for 3: that is the candidate's
    failure, not a set too small to judge."""
    results = _results(0.1, 0.05)
    for row in results["methods"]["graminverter"]["portraits"][3:]:
        row["id_nv"] = None
    verdict = ship_verdict(results, rule=ShipRule(resamples=500))
    nv = verdict["checks"][1]
    assert not verdict["ships"] and verdict["outcome"] == "does not ship"
    assert nv["decided"] and not nv["passed"] and "kept 3 people of the 12" in nv["detail"]


def test_compare_draws_no_conclusion_from_few_people_and_says_when_nothing_is_shared():
    from gramcast.training.ship_rule import paired_report, report_markdown

    before = _results(0.0, 0.0, people=3)
    after = json.loads(json.dumps(before))
    for row in after["methods"]["mesh"]["portraits"]:
        row["id_nv"] += 0.2                       # a constant gain: "better" beyond doubt, were there people
    rows = {r["score"]: r for r in paired_report(before, after, "mesh")}
    assert rows["id_nv"]["interval"] == pytest.approx([0.2, 0.2]) and rows["id_nv"]["verdict"] == "too few people"
    text = report_markdown(list(rows.values()), "mesh", "old.json")
    assert "| better |" not in text and "| too few people |" in text and "Too few people: fewer than 10" in text
    # other people altogether: no rows, and the report says why instead of an empty table
    for row in after["methods"]["mesh"]["portraits"] + after["methods"]["mesh"]["cross_pose"]:
        row["person"] = "someone else " + row["person"]
    assert paired_report(before, after, "mesh") == []
    assert "no portraits in common" in report_markdown([], "mesh", "old.json")

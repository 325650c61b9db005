"""What ``gramcast evaluate`` writes: the results table, the contact sheet, the failure lines, the run's files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["SHEET_TILE", "RUN_OUTPUTS", "write_outputs", "contact_sheet", "failure_summary", "markdown_table"]


SHEET_TILE = 128


#: what a run leaves in its output folder (comparison.md: ``evaluate --compare``). Those of an earlier run
#: that this one does not write are removed, so that a folder never holds two runs' files side by side
RUN_OUTPUTS = ("results.json", "results.md", "contact_sheet.png", "comparison.md")


def write_outputs(out: Path, results: dict, sheet: np.ndarray | None) -> None:
    """This run's files into ``out``; an earlier run's files that this one does not replace are removed
    first (a stale contact sheet beside new results would be read as this run's). results.json goes last:
    where it is new, so is everything beside it."""
    from gramcast.media_io import atomic_output, save_image

    results["outputs"] = ["results.json", "results.md"] + (["contact_sheet.png"] if sheet is not None else [])
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        if name not in results["outputs"]:
            (out / name).unlink(missing_ok=True)
    if sheet is not None:
        save_image(out / "contact_sheet.png", sheet)
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text(markdown_table(results))
    with atomic_output(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1))


def _put_text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45, thickness: int = 1,
              width: int | None = None) -> None:
    """``text`` at ``origin`` (its baseline's left end), in black; cut with "..." to ``width`` pixels. OpenCV's
    fonts draw ASCII only: other letters show as "?"."""
    import cv2

    text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    font = cv2.FONT_HERSHEY_SIMPLEX
    fits = lambda t: width is None or cv2.getTextSize(t, font, scale, thickness)[0][0] <= width  # noqa: E731
    if not fits(text):
        while text and not fits(text + "..."):
            text = text[:-1]
        text += "..."
    cv2.putText(image, text, origin, font, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def contact_sheet(cells: dict[str, dict[int, np.ndarray]], people: list[tuple[str, int]],
                  methods: tuple[str, ...], yaws: tuple[float, ...], tile: int = SHEET_TILE) -> np.ndarray:
    """One row per person (``people``: name and index into ``cells``), one block of renders at ``yaws`` per
    method side by side, so that each row compares the methods on one person. Method names and yaws head
    the columns, person names start the rows; a method that failed on a person leaves its block grey,
    marked "failed". ``cells[method][index]``: that person's strip ``(tile, tile * len(yaws), 3)``."""
    label_w, head_h, gap = 160, 44, 8
    block_w = tile * len(yaws)
    sheet = np.full((head_h + tile * len(people), label_w + len(methods) * (block_w + gap) - gap, 3), 255, np.uint8)
    for j, method in enumerate(methods):
        x0 = label_w + j * (block_w + gap)
        if j:
            sheet[:, x0 - gap:x0] = 220
        _put_text(sheet, method, (x0 + 4, 18), 0.6, 2, width=block_w - 8)
        for k, yaw in enumerate(yaws):
            _put_text(sheet, f"yaw {yaw:+.2f}", (x0 + k * tile + 4, 38), 0.4, width=tile - 8)
    for i, (person, index) in enumerate(people):
        y0 = head_h + i * tile
        _put_text(sheet, person, (6, y0 + tile // 2 + 5), 0.5, width=label_w - 12)
        for j, method in enumerate(methods):
            x0 = label_w + j * (block_w + gap)
            strip = cells.get(method, {}).get(index)
            if strip is None:
                sheet[y0:y0 + tile, x0:x0 + block_w] = 200
                _put_text(sheet, "failed", (x0 + 8, y0 + tile // 2 + 5), 0.5)
            else:
                sheet[y0:y0 + tile, x0:x0 + block_w] = strip
    return sheet


def failure_summary(results: dict, method: str, shown: int = 2) -> str | None:
    """One line of what ``method`` lost: portraits that failed and photo pairs not scored, counted, with the
    first ``shown`` reasons; None where it lost nothing."""
    r = results["methods"][method]
    failed = [row for row in r["portraits"] if "error" in row]
    lost = r.get("cross_pose_failed", [])

    def reasons(rows: list[dict], photo: str) -> str:
        said = "; ".join(f"{row['person']}/{row[photo]}: {_short(row['error'])}" for row in rows[:shown])
        return said + (f"; {len(rows) - shown} more in results.json" if len(rows) > shown else "")

    parts = []
    if failed:
        parts.append(f"{len(failed)} of {len(r['portraits'])} portraits failed ({reasons(failed, 'photo')})")
    if lost:
        n = len(lost) + len(r.get("cross_pose", []))
        parts.append(f"{len(lost)} of {n} cross-pose pairs not scored ({reasons(lost, 'target')})")
    return f"{method}: " + "; ".join(parts) if parts else None


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def markdown_table(results: dict) -> str:
    cols = ["portraits", "failed", "psnr", "ssim", "lpips", "id", "id_nv", "psnr_mv", "ssim_mv", "yaw_slope",
            "yaw_error", "id_xpose", "id_xpose_mirror", "id_photos", "sil", "sil_xpose", "pairs", "pairs_failed",
            "enroll_s"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for method, r in results["methods"].items():
        cells = []
        for c in cols:
            v = r["means"].get(c)
            cells.append("–" if v is None else (f"{v:d}" if isinstance(v, int) else f"{v:.3f}"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    notes = "".join(f"\n- {n}" for n in results.get("notes", []))
    table = "\n".join(lines) + ("\n\nNotes:" + notes if notes else "") + "\n"
    if results.get("verdict"):
        from gramcast.training.ship_rule import verdict_markdown

        table += "\n" + verdict_markdown(results["verdict"])
    return table

"""`gramcast evaluate` at its edges: options and the inverter bundle refused before any enrollment, flat
folders grouped by person, a contact sheet that holds every method, and failures counted and reported
rather than dropped.

Where a test is about what the run reports (the sheet, the counts), enrollment, scoring and rendering are
stubbed: a real evaluation takes ~10 s a person. Failing photos are real, and fail in the real face
tracker.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gramcast.training.enroll_eval as ee
import gramcast.training.eval_placement as placement
from gramcast.training.eval_portraits import find_portraits
from gramcast.cli import main
from gramcast.errors import GramcastError

FACES = Path(__file__).parent / "data" / "faces"


def _grey(path: Path) -> Path:
    """A photo with no face in it."""
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def enrolls(monkeypatch):
    """Records every enrollment evaluate asks for, and refuses it (as a photo without a face would)."""
    calls = []

    def spy(image, method="mesh", **kwargs):
        calls.append(method)
        raise GramcastError("stub: no enrollment in this test")

    monkeypatch.setattr("gramcast.enrollment.enroll", spy)
    return calls


@pytest.fixture
def one_person(tmp_path):
    data = tmp_path / "portraits"
    (data / "person001").mkdir(parents=True)
    shutil.copy(FACES / "london_neutral_001_03.jpg", data / "person001" / "a.jpg")
    return data


# ------------------------------------------------------------------------------ checked before enrolling
def test_a_missing_bundle_is_refused_before_the_mesh_pass_in_evaluates_words(one_person, tmp_path, enrolls,
                                                                               monkeypatch, capsys):
    out = tmp_path / "out"
    code = main(["evaluate", str(one_person), "--methods", "mesh,graminverter", "--weights",
                 str(tmp_path / "no-such.safetensors"), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and enrolls == [] and not out.exists()
    assert "--weights" in err and "no-such.safetensors" in err and len(err.splitlines()) == 1
    # none installed: the way out is evaluate's option, --methods, not enroll's --method
    monkeypatch.delenv("GRAMCAST_INVERTER", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    code = main(["evaluate", str(one_person), "--methods", "mesh,graminverter", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and enrolls == [] and not out.exists()
    assert "needs trained weights" in err and "--methods mesh" in err and "--method mesh" not in err


def test_a_bundle_whose_networks_do_not_fit_is_refused_before_the_mesh_pass(one_person, tmp_path, enrolls,
                                                                             capsys):
    """Each network loads (each is valid alone), but the detail reconstructor was made for a prior with
    other manifolds: it fails only when the networks run, which evaluate now does once, first."""
    from gramcast.avatar.graminverter import save_inverter
    from gramcast.model import GRAMModel
    from gramcast.model.detail import DetailConfig, DetailReconstructor
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder

    gen = GRAMModel.from_config("tiny").eval()
    enc = GRAMEncoder(EncoderConfig.for_model(gen.config, "tiny")).eval()
    other = dataclasses.replace(gen.config, num_manifolds=gen.config.num_manifolds + 4)
    bundle = tmp_path / "mixed.safetensors"
    save_inverter(bundle, gen, enc, DetailReconstructor(DetailConfig.for_model(other, "tiny")).eval())
    out = tmp_path / "out"
    code = main(["evaluate", str(one_person), "--methods", "mesh,graminverter", "--weights", str(bundle),
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and enrolls == [] and not out.exists()
    assert "do not work together" in err and "export-inverter" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("options", [["--weights", "any.safetensors"], ["--refine-steps", "3"]])
def test_inverter_options_without_the_inverter_are_refused(one_person, tmp_path, enrolls, capsys, options):
    out = tmp_path / "out"
    assert main(["evaluate", str(one_person), "--methods", "mesh", "--out", str(out), *options]) == 2
    err = capsys.readouterr().err
    assert options[0] in err and "--methods mesh,graminverter" in err
    assert enrolls == [] and not out.exists()


def test_the_default_output_folder_is_its_own(capsys):
    from gramcast.cli import build_parser

    assert build_parser().parse_args(["evaluate", "portraits"]).out == Path("evaluation")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--help"])
    assert "./evaluation" in capsys.readouterr().out


# ------------------------------------------------------------------------------ people
def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_a_flat_folder_is_grouped_by_the_person_number_in_the_names_where_they_say_it(tmp_path):
    london = _touch(tmp_path / "london", "neutral_001_03.jpg", "smiling_001_08.jpg", "neutral_002_03.jpg",
                    "smiling_002_08.jpg", "neutral_003_03.jpg", "notes.txt")
    people = {person: [p.name for p in photos] for person, photos in find_portraits(london)}
    # enrolled from the first by name: the neutral photo
    assert people == {"001": ["neutral_001_03.jpg", "smiling_001_08.jpg"],
                      "002": ["neutral_002_03.jpg", "smiling_002_08.jpg"], "003": ["neutral_003_03.jpg"]}
    # where the names do not say it unambiguously, each loose photo stays a person of its own
    for i, (names, why) in enumerate([
        (["003f.jpg", "008f.jpg"], "no number field"),
        (["a_001_x.jpg", "b_001_y.jpg", "portrait.jpg"], "one name outside the scheme"),
        (["photo_2024_05_01.jpg", "photo_2024_05_02.jpg"], "two numbers: which is the person?"),
        (["IMG_20240501_1.jpg", "IMG_20240501_2.jpg"], "a date, not a person number"),
        (["a_001_x.jpg", "a_002_x.jpg"], "nobody has two photos"),
    ]):
        people = find_portraits(_touch(tmp_path / f"set{i}", *names))
        assert [(person, [p.name for p in photos]) for person, photos in people] == \
            [(Path(n).stem, [n]) for n in sorted(names)], why
    # beside sub-folders (the layout to use) loose photos are not grouped
    root = _touch(tmp_path / "mixed", "neutral_001_03.jpg", "smiling_001_08.jpg")
    _touch(root / "alice", "2.jpg", "1.jpg")
    people = [(person, [p.name for p in photos]) for person, photos in find_portraits(root)]
    assert people == [("alice", ["1.jpg", "2.jpg"]), ("neutral_001_03", ["neutral_001_03.jpg"]),
                      ("smiling_001_08", ["smiling_001_08.jpg"])]


# ------------------------------------------------------------------------------ reporting (stubbed scoring)
COLOURS = {"mesh": (200, 30, 30), "graminverter": (30, 30, 200)}


@pytest.fixture
def stubbed(monkeypatch):
    """Enrollment returns a stand-in avatar that renders as its method's colour; the input-view scores,
    the matte, the identity network and the inverter bundle are stand-ins; the face tracker is real.
    ``refuse``: (method, photo name) pairs enrollment refuses."""
    refuse: set[tuple[str, str]] = set()

    def enroll(image, method="mesh", **kwargs):
        if (method, enroll.photo) in refuse:
            raise GramcastError(f"stub: {method} refuses {enroll.photo}")
        return types.SimpleNamespace(colour=COLOURS[method])

    def load_image(path):
        enroll.photo = Path(path).name
        return np.asarray(Image.open(path).convert("RGB"))

    class Renderer:
        def __init__(self, avatar, device="cpu"):
            self.colour = avatar.colour

        def render_rgba(self, pose, res):
            return np.full((res, res, 3), self.colour, np.uint8), np.ones((res, res), np.float32)

    class Metrics:
        notes: list = []

        def identity(self, a, b):
            return 0.5

    monkeypatch.setattr("gramcast.enrollment.enroll", enroll)
    monkeypatch.setattr("gramcast.images.load_image", load_image)
    monkeypatch.setattr("gramcast.avatar.Renderer", Renderer)
    monkeypatch.setattr("gramcast.face.foreground_matte", lambda crop: np.ones(crop.shape[:2], np.float32))
    monkeypatch.setattr(ee, "evaluate_portrait", lambda *a, **k: {"psnr": 30.0})
    monkeypatch.setattr(ee, "LearnedScores", Metrics)
    monkeypatch.setattr(ee, "_load_inverter", lambda weights: None, raising=False)
    monkeypatch.setattr("gramcast.avatar.graminverter.require_inverter", lambda *a, **k: None)
    return refuse


def test_the_contact_sheet_holds_every_method_for_the_people_it_shows_labelled(tmp_path, stubbed, monkeypatch):
    """41 people, two methods: 40 rows (the first 40 people), each with both methods' renders side by
    side; a method that failed on a person leaves a marked grey block; method names and people label it."""
    photo = np.asarray(Image.open(FACES / "london_neutral_001_03.jpg").convert("RGB"))
    face = placement.align_photo(photo, 256)
    # the tracker's answer for this photo, for every photo: 41 real alignments would be the test's whole time
    monkeypatch.setattr(placement, "align_photo", lambda *a, **k: face)
    data = tmp_path / "portraits"
    data.mkdir()
    for i in range(41):
        _grey(data / f"p{i:02d}.png")
    stubbed.add(("graminverter", "p03.png"))
    out = tmp_path / "out"
    results = ee.evaluate_methods(data, out, ee.EvalConfig(methods=("mesh", "graminverter")), progress=False)
    assert results["methods"]["graminverter"]["means"]["failed"] == 1
    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    tile, yaws = 128, len(ee.EvalConfig().strip_yaws)           # the sheet's renders are 128 px
    head = sheet.shape[0] - 40 * tile
    assert 0 < head < tile                                   # a header, then the 40 people
    row_of = lambda i: sheet[head + i * tile: head + (i + 1) * tile]  # noqa: E731
    for i in (0, 3, 39):
        row = row_of(i)
        for method, colour in COLOURS.items():
            found = int((np.abs(row.astype(int) - colour).sum(-1) < 10).sum())
            expected = 0 if (i, method) == (3, "graminverter") else tile * tile * yaws
            assert found == expected, (i, method)
        label = row[:, : sheet.shape[1] - 2 * tile * yaws]       # left of both blocks: the person's name
        assert (label.min(-1) < 100).sum() > 20
    failed_block = row_of(3)[:, -tile * yaws:]
    assert (failed_block == 200).mean() > 0.8 and (failed_block.min(-1) < 100).any()   # grey, with "failed"
    header = sheet[:head]
    assert (header.min(-1) < 100).sum() > 100                                           # method names, yaws
    assert results["outputs"] == ["results.json", "results.md", "contact_sheet.png"]
    assert any("41 people" in n for n in results["notes"])
    assert any("sub-folder of their own" in n for n in results["notes"])   # nobody has a second photo


def test_failed_portraits_and_unscored_pairs_are_counted_and_reported(tmp_path, stubbed, capsys):
    """alice's second photo has no face: her pair cannot be scored; bob's first photo has no face: he is
    not enrolled, and his pair is lost with him. Both are counted, in the JSON, the table and on stderr."""
    data = tmp_path / "portraits"
    (data / "alice").mkdir(parents=True)
    (data / "bob").mkdir()
    shutil.copy(FACES / "london_neutral_001_03.jpg", data / "alice" / "a.jpg")
    _grey(data / "alice" / "b.png")
    _grey(data / "bob" / "a.png")
    shutil.copy(FACES / "london_neutral_002_03.jpg", data / "bob" / "b.jpg")
    out = tmp_path / "out"
    assert main(["evaluate", str(data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    mesh = json.loads((out / "results.json").read_text())["methods"]["mesh"]
    means = mesh["means"]
    assert (means["portraits"], means["failed"], means["pairs"], means["pairs_failed"]) == (1, 1, 0, 2)
    assert {(r["person"], r["target"]) for r in mesh["cross_pose_failed"]} == {("alice", "b.png"), ("bob", "b.jpg")}
    assert "| portraits | failed |" in captured.out and "| mesh | 1 | 1 |" in captured.out
    err = [line for line in captured.err.splitlines() if line.startswith("gramcast evaluate")]
    assert len(err) == 1 and "1 of 2 portraits failed" in err[0] and "bob/a.png" in err[0]
    assert "2 of 2 cross-pose pairs not scored" in err[0]


def test_a_run_where_every_portrait_fails_exits_non_zero_and_leaves_no_earlier_runs_files(tmp_path, capsys):
    """Real enrollment of photos without a face. The folder held an earlier run's sheet and comparison:
    they are not this run's, so they go, and only what was written is said to be."""
    data = tmp_path / "portraits"
    data.mkdir()
    _grey(data / "grey.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(data / "noise.png")
    out = tmp_path / "out"
    out.mkdir()
    _grey(out / "contact_sheet.png")
    (out / "comparison.md").write_text("an earlier run's\n")
    assert main(["evaluate", str(data), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("gramcast evaluate")]
    assert len(errors) == 1 and "every portrait failed" in errors[0] and "2 of 2" in errors[0]
    assert "no face" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
    wrote = [line for line in captured.out.splitlines() if line.startswith("wrote")]
    assert len(wrote) == 1 and "results.json" in wrote[0] and "contact_sheet" not in wrote[0]
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["mesh"]["means"]["failed"] == 2 and results["outputs"] == ["results.json",
                                                                                          "results.md"]


# ------------------------------------------------------------------------------ resuming an interrupted run
LOAD_INVERTER = ee._load_inverter     # the real one (``stubbed`` replaces it)


@pytest.fixture
def people_run(tmp_path, stubbed, monkeypatch):
    """Six people (two with a second photo), enrolled by a stand-in whose figures and renders differ from
    person to person (one ssim is NaN; ``carol`` fails under graminverter). ``calls``: every enrollment
    asked for, as (method, photo); ``interrupt_at``: the number of the enrollment that meets Ctrl-C."""
    photo = np.asarray(Image.open(FACES / "london_neutral_001_03.jpg").convert("RGB"))
    face = placement.align_photo(photo, 256)
    monkeypatch.setattr(placement, "align_photo", lambda *a, **k: face)   # the tracker's answer, for every photo
    data = tmp_path / "portraits"
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]     # grace: a person added later
    for i, name in enumerate(names[:6]):
        _grey(_touch(data / name) / "1.png")
        if i in (1, 4):
            _grey(data / name / "2.png")
    state = types.SimpleNamespace(calls=[], interrupt_at=None, photo=None)

    def load_image(path):
        state.photo = f"{Path(path).parent.name}/{Path(path).name}"
        return np.asarray(Image.open(path).convert("RGB"))

    def enroll(image, method="mesh", **kwargs):
        state.calls.append((method, state.photo))
        if state.interrupt_at is not None and len(state.calls) == state.interrupt_at:
            raise KeyboardInterrupt
        who = names.index(state.photo.split("/")[0])
        if (method, who) == ("graminverter", 2):
            raise GramcastError(f"stub: graminverter refuses {state.photo}")
        shade = 40 * who + (7 if method == "mesh" else 0)
        return types.SimpleNamespace(colour=(shade, 255 - shade, 90), who=who, method=method)

    def evaluate_portrait(avatar, *args, **kwargs):
        return {"psnr": 20.0 + avatar.who / 3 + (avatar.method == "mesh") / 7,
                "ssim": float("nan") if avatar.who == 3 else 0.5 + avatar.who / 11}

    monkeypatch.setattr("gramcast.enrollment.enroll", enroll)
    monkeypatch.setattr("gramcast.images.load_image", load_image)
    monkeypatch.setattr(ee, "evaluate_portrait", evaluate_portrait)
    state.data = data
    return state


def _evaluate(run, out: Path, *options: str, capsys) -> tuple[int, str]:
    run.calls.clear()
    capsys.readouterr()
    code = main(["evaluate", str(run.data), "--methods", "mesh,graminverter", "--out", str(out), *options])
    return code, capsys.readouterr().err


def _figures(out: Path) -> dict:
    """results.json without the enrollment times (a clock's reading, different in every run)."""
    results = json.loads((out / "results.json").read_text())
    for r in results["methods"].values():
        r["means"].pop("enroll_s")
    return results


def _left(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _interrupted(people_run, out, at: int, *options: str, capsys) -> None:
    """A run into ``out`` whose ``at``-th enrollment meets Ctrl-C (exit 130); later runs go through."""
    people_run.interrupt_at = at
    assert _evaluate(people_run, out, *options, capsys=capsys)[0] == 130
    people_run.interrupt_at = None


def test_an_interrupted_run_resumes_where_it_stopped_with_the_figures_of_an_uninterrupted_one(people_run,
                                                                                              tmp_path, capsys):
    whole = tmp_path / "whole"
    assert _evaluate(people_run, whole, capsys=capsys)[0] == 0
    assert len(people_run.calls) == 12 and _left(whole) == ["contact_sheet.png", "results.json", "results.md"]
    out = tmp_path / "out"
    people_run.interrupt_at = 4        # Ctrl-C while dave is enrolled, in the mesh pass
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 130 and not (out / "results.json").exists()
    # alice, bob and carol are kept, each whole: no temp file, nothing half-written
    kept = _left(out)
    assert kept == [f".evaluate-progress/mesh/0000{i}.json" for i in range(3)] + [".evaluate-progress/run.json"], kept
    for name in kept:
        json.loads((out / name).read_text())
    assert "kept 3 finished person results" in err and "run the same command again" in err, err
    people_run.interrupt_at = None
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 0, err
    assert "resuming" in err and "3 of 12" in err
    # only what was not done: dave on in the mesh pass, then everyone under graminverter
    assert people_run.calls == [("mesh", f"{n}/1.png") for n in ("dave", "erin", "frank")] + \
        [("graminverter", f"{n}/1.png") for n in ("alice", "bob", "carol", "dave", "erin", "frank")]
    assert _figures(out) == _figures(whole)
    assert (out / "results.md").read_text().count("|") == (whole / "results.md").read_text().count("|")
    sheet = lambda o: np.asarray(Image.open(o / "contact_sheet.png").convert("RGB"))  # noqa: E731
    assert np.array_equal(sheet(out), sheet(whole))
    # the run is complete: its progress has gone, and the next run starts from nothing
    assert _left(out) == ["contact_sheet.png", "results.json", "results.md"]
    assert _evaluate(people_run, out, capsys=capsys)[0] == 0 and len(people_run.calls) == 12


def test_a_rerun_with_other_options_is_refused_not_mixed_and_fresh_starts_over(people_run, tmp_path, capsys):
    out = tmp_path / "out"
    _interrupted(people_run, out, 8, capsys=capsys)     # in the graminverter pass: at bob
    before = {name: (out / name).read_bytes() for name in _left(out)}
    assert len(before) == 8            # run.json, six under mesh, alice under graminverter
    (people_run.data / "grace").mkdir()
    for options, says in ((["--face", "largest"], "options"), (["--max", "5"], "options"),
                          (["--methods", "mesh"], "--methods"), ([], "portraits")):
        if options == []:
            _grey(people_run.data / "grace" / "1.png")      # a person more than the interrupted run had
        code, err = _evaluate(people_run, out, *options, capsys=capsys)    # a later --methods wins
        err = err.strip()
        assert code == 2 and people_run.calls == [], (options, err)
        assert len(err.splitlines()) == 1 and says in err and "--fresh" in err and "7 person results" in err, err
        assert {name: (out / name).read_bytes() for name in _left(out)} == before     # left as it was
    # --fresh: the kept results go, and everyone is evaluated under the new options
    code, err = _evaluate(people_run, out, "--fresh", "--face", "largest", capsys=capsys)
    assert code == 0 and len(people_run.calls) == 14 and "resuming" not in err, err
    assert _left(out) == ["contact_sheet.png", "results.json", "results.md"]


def test_another_bundle_is_not_resumed_but_the_same_bundle_elsewhere_is(people_run, tmp_path, capsys, monkeypatch):
    """The bundle is named by its weights' content hashes, not its path."""
    import torch

    from gramcast.avatar.graminverter import save_inverter
    from gramcast.model import GRAMModel
    from gramcast.model.detail import DetailConfig, DetailReconstructor
    from gramcast.model.encoder import EncoderConfig, GRAMEncoder

    monkeypatch.setattr(ee, "_load_inverter", LOAD_INVERTER)
    gen = GRAMModel.from_config("tiny").eval()
    enc = GRAMEncoder(EncoderConfig.for_model(gen.config, "tiny"))
    det = DetailReconstructor(DetailConfig.for_model(gen.config, "tiny"))
    bundles = [tmp_path / "b0.safetensors", tmp_path / "b1.safetensors"]
    save_inverter(bundles[0], gen, enc, det)
    with torch.no_grad():
        next(gen.parameters()).add_(0.01)      # another generator of the same shape
    save_inverter(bundles[1], gen, enc, det)
    moved = tmp_path / "moved" / "b0.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(bundles[0].read_bytes())
    out = tmp_path / "out"
    _interrupted(people_run, out, 3, "--weights", str(bundles[0]), capsys=capsys)
    code, err = _evaluate(people_run, out, "--weights", str(bundles[1]), capsys=capsys)
    assert code == 2 and people_run.calls == [] and "--weights bundle" in err and "--fresh" in err, err
    code, err = _evaluate(people_run, out, "--weights", str(moved), capsys=capsys)
    assert code == 0 and len(people_run.calls) == 10 and "resuming" in err, err


def test_a_damaged_record_is_evaluated_again_not_read(people_run, tmp_path, capsys):
    """Records are written whole (temp file, then rename); one damaged by something else, and a temp file a
    killed run left, are not taken for results."""
    out = tmp_path / "out"
    _interrupted(people_run, out, 4, capsys=capsys)
    mesh = out / ".evaluate-progress" / "mesh"
    (mesh / "00001.json").write_text('{"person": "bob", "row": {"psn')
    (mesh / ".00003.k2j4.json").write_text('{"person": "dave"}')
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 0, err
    assert [c for c in people_run.calls if c[0] == "mesh"] == [("mesh", f"{n}/1.png")
                                                              for n in ("bob", "dave", "erin", "frank")]


def test_a_second_run_into_the_same_out_while_one_runs_is_refused_and_leaves_it_alone(people_run, tmp_path,
                                                                                       capsys, monkeypatch):
    """Without a hold on OUT, the second run took the running one's progress for an interrupted run's
    (resuming it, or deleting it under --fresh) and wrote its files over the other's."""
    import gramcast.enrollment

    out = tmp_path / "out"
    first = gramcast.enrollment.enroll
    second: list[tuple[int, str, list]] = []

    def enroll(image, method="mesh", **kwargs):
        if len(people_run.calls) == 3 and not second:       # alice, bob and carol kept: start another run
            for options in ([], ["--fresh"]):
                second.append(None)
                code = main(["evaluate", str(people_run.data), "--methods", "mesh,graminverter", "--out", str(out),
                             *options])
                second[-1] = (code, capsys.readouterr().err, sorted(p.name for p in out.rglob("*.json")))
        return first(image, method, **kwargs)

    monkeypatch.setattr("gramcast.enrollment.enroll", enroll)
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 0, err
    for code, err, left in second:
        assert code == 2 and "another gramcast evaluate is running" in err and "--out" in err, err
        assert left == ["00000.json", "00001.json", "00002.json", "run.json"], left    # the running one's
    assert len(people_run.calls) == 12             # the second runs enrolled nobody
    assert _left(out) == ["contact_sheet.png", "results.json", "results.md"]
    # the hold goes with the run: the next one runs
    assert _evaluate(people_run, out, capsys=capsys)[0] == 0 and len(people_run.calls) == 12


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_a_file_where_the_progress_folder_goes_is_refused_in_words(people_run, tmp_path, capsys, fresh):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".evaluate-progress").write_text("not ours")
    code, err = _evaluate(people_run, out, *fresh, capsys=capsys)
    assert code == 2 and people_run.calls == [] and "is not a folder" in err and "another --out" in err, err
    assert (out / ".evaluate-progress").read_text() == "not ours"


def test_a_refusal_says_what_differs_in_words(people_run, tmp_path, capsys):
    out = tmp_path / "out"
    _interrupted(people_run, out, 2, capsys=capsys)
    run = out / ".evaluate-progress" / "run.json"
    run.write_text(json.dumps({**json.loads(run.read_text()), "gramcast": "0.0.1"}))
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 2 and people_run.calls == []
    assert "(1 person result) that differs from this run in the gramcast version:" in err, err
    code, err = _evaluate(people_run, out, "--face", "largest", capsys=capsys)
    assert "differs from this run in the gramcast version and the options" in err, err


def test_an_interruption_once_the_files_are_written_does_not_promise_a_resume(people_run, tmp_path, capsys,
                                                                             monkeypatch):
    """Ctrl-C while a completed run's progress is being removed: its record of the run goes first, so a rerun
    starts from nothing, and the hint must not say the results are kept for it."""
    from gramcast.training.eval_progress import EvalProgress

    def discard(self):
        (self.dir / "run.json").unlink(missing_ok=True)
        raise KeyboardInterrupt

    out = tmp_path / "out"
    monkeypatch.setattr(EvalProgress, "discard", discard)
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 130 and (out / "results.json").exists()
    assert "kept" not in err and "resume" not in err, err


@pytest.mark.parametrize("inside", [".", "evaluation"])
def test_an_out_inside_the_portraits_folder_is_refused(people_run, capsys, monkeypatch, inside):
    """`cd portraits && gramcast evaluate .` (OUT ./evaluation): the next run took the contact sheet for a
    portrait, a person more who fails."""
    monkeypatch.chdir(people_run.data)
    before = _left(people_run.data)
    code = main(["evaluate", ".", "--methods", "mesh", "--out", inside])
    err = capsys.readouterr().err
    assert code == 2 and people_run.calls == [] and "inside the portraits folder" in err, err
    assert _left(people_run.data) == before


def test_a_record_changed_into_other_json_is_evaluated_again_not_read(people_run, tmp_path, capsys):
    out = tmp_path / "out"
    _interrupted(people_run, out, 4, capsys=capsys)
    mesh = out / ".evaluate-progress" / "mesh"
    (mesh / "00001.json").write_text('{"person": "bob", "method": "mesh"}')        # no results in it
    alice = json.loads((mesh / "00000.json").read_text())
    (mesh / "00000.json").write_text(json.dumps({**alice, "strip": "bm90IGEgUE5H"}))   # a strip that is no PNG
    code, err = _evaluate(people_run, out, capsys=capsys)
    assert code == 0, err
    assert [c for c in people_run.calls if c[0] == "mesh"] == [("mesh", f"{n}/1.png")
                                                              for n in ("alice", "bob", "dave", "erin", "frank")]

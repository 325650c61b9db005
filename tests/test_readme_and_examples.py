"""What the documentation shows runs as shown: the README's GRAMModel snippet, and the example's way of
failing on a photo it cannot use (people copy both)."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gram_model_snippet_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    snippet = [b for b in blocks if "from gramcast.model import GRAMModel" in b]
    assert len(snippet) == 1
    # a fresh interpreter: in this one, other tests may already have imported what the snippet forgets to
    done = subprocess.run([sys.executable, "-c", snippet[0] + "\nassert out.rgb.shape == (1, 3, 64, 64)\n"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_enroll_and_orbit_refuses_a_bad_photo_in_one_line_and_makes_no_folder(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "enroll_and_orbit.py"), str(bad),
                           str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.splitlines() == [f"enroll_and_orbit.py: {bad} is not an image gramcast can read: "
                                        "use JPEG, PNG, WebP or HEIC"]
    assert not (tmp_path / "out").exists()

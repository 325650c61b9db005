"""A normal (non-editable) install has the same import tree as the editable one."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_the_three_folders_onto_gramcast(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(ROOT), "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("gramcast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ["gramcast/__init__.py", "gramcast/camera.py", "gramcast/model/gram.py",
                     "gramcast/server/app.py", "gramcast/server/static/index.html",
                     "gramcast/server/static/vendor/msgpack-3.1.3.min.js", "gramcast/training/cli.py",
                     "gramcast/training/stages/gan.py", "gramcast/face/assets/reference_face.npz",
                     "gramcast/assets/sample_portrait.png", "gramcast/assets/prior_gram_tiny_lfw64.safetensors"]:
        assert required in names, required
    assert not [n for n in names if n.startswith(("sdk/", "server/", "training/", "tests/"))]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "gramcast = gramcast.cli:main" in text and "gramcast-train = gramcast.training.cli:main" in text

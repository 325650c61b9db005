"""A prepared dataset packed into one .zip trains exactly like the folder it came from."""
import torch

from gramcast.training.cli import main
from gramcast.training.data import FaceDataset, read_manifest
from test_training_gan import make_dataset


def test_packed_zip_reads_like_the_folder(tmp_path):
    folder = make_dataset(tmp_path / "data", n=6, res=64)
    assert main(["pack-dataset", str(folder), str(tmp_path / "same.zip"), "--quality", "95"]) == 0
    a, b = FaceDataset(folder, 64), FaceDataset(tmp_path / "same.zip", 64)
    assert torch.equal(a.images, b.images) and torch.equal(a.poses, b.poses)     # bytes copied as they are
    assert [r.person for r in read_manifest(folder)] == [r.person for r in read_manifest(tmp_path / "same.zip")]
    assert main(["pack-dataset", str(folder), str(tmp_path / "small.zip"), "--size", "32", "--quality", "90"]) == 0
    small, ref = FaceDataset(tmp_path / "small.zip", 32), FaceDataset(folder, 32)
    assert small.images.shape == (6, 3, 32, 32)
    assert (small.images.float() - ref.images.float()).abs().mean() < 4.0       # JPEG re-encoding only
    assert main(["pack-dataset", str(tmp_path / "nothing"), str(tmp_path / "x.zip")]) == 2
    assert not (tmp_path / "x.zip").exists()

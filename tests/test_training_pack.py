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


def test_excluded_people_are_left_out_of_the_pack(tmp_path):
    folder = make_dataset(tmp_path / "data", n=8, res=64)          # people "0".."3", two photos each
    people = tmp_path / "validation.txt"
    people.write_text("# held out\n1\n3\n")
    assert main(["pack-dataset", str(folder), str(tmp_path / "train.zip"), "--quality", "95",
                 "--exclude-people", str(people)]) == 0
    kept = read_manifest(tmp_path / "train.zip")
    assert sorted({r.person for r in kept}) == ["0", "2"] and len(kept) == 4
    assert len(FaceDataset(tmp_path / "train.zip", 64)) == 4
    assert main(["pack-dataset", str(folder), str(tmp_path / "y.zip"), "--exclude-people", str(tmp_path / "no.txt")]) == 2

"""Every command with --device refuses a device this machine cannot use, in one line, before it
loads or writes anything."""
from __future__ import annotations

import pytest
import torch

from gramcast.cli import main as gramcast_main
from gramcast.device import device_option
from gramcast.errors import GramcastError
from gramcast.training.cli import main as train_main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_a_usable_device_is_returned_and_auto_resolves():
    assert device_option("cpu") == torch.device("cpu")
    assert device_option("auto").type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("value,words", [("banana", "--device 'banana' is not a device: use auto, cpu, cuda"),
                                         pytest.param("cuda", "--device cuda: this machine has no such CUDA device",
                                                      marks=NO_CUDA)])
def test_enroll_refuses_the_device_before_reading_the_photo_or_writing(value, words, tmp_path, capsys):
    out = tmp_path / "me.gca"
    # the photo does not exist: the device is what the command must complain about, first
    assert gramcast_main(["enroll", str(tmp_path / "missing.jpg"), "-o", str(out), "--device", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value,words", [("banana", "is not a device: use auto, cpu, cuda"),
                                         pytest.param("cuda:0", "no such CUDA device", marks=NO_CUDA)])
def test_training_stages_and_report_refuse_the_device_before_any_run_folder_exists(value, words, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["gan", "--data", str(tmp_path / "no-data"), "--out", str(run), "--device", value]) == 2
    assert words in capsys.readouterr().err and not run.exists()
    assert train_main(["report", str(tmp_path / "g.safetensors"), "--data", str(tmp_path),
                       "-o", str(tmp_path / "card"), "--device", value]) == 2
    assert words in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_the_refusal_is_a_gramcast_error_naming_the_option():
    with pytest.raises(GramcastError, match=r"^--weights-device 'x'"):
        device_option("x", option="--weights-device")

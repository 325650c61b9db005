"""The avatar and its ``.gca`` file at their edges: value ranges, headers that are not what they say, metadata
that is not plain JSON, byte-stable files, identity equality, ``describe``, the arguments ``load``, ``save`` and
``from_bytes`` take, and ``content_radius`` without a list of texels."""
import json
import math
import re
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gramcast.avatar import Avatar, bake_model
from gramcast.avatar import avatar as avatar_module
from gramcast.avatar.avatar import RANGE_SLACK
from gramcast.errors import AvatarFormatError, GramcastError, InvalidArgumentError
from gramcast.model.gram import GRAMModel


def _tiny(meta=None) -> Avatar:
    g = torch.linspace(0, 1, 8)
    return Avatar(torch.zeros(2, 8, 8) + g[:, None] * 0.01,
                  torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), 0.14,
                  {"method": "test"} if meta is None else meta)


def _write(path, heights: torch.Tensor, textures: torch.Tensor, **header_changes) -> None:
    """A .gca written around the checks (as a damaged or foreign writer would): these arrays, a good header
    changed by ``header_changes``."""
    from safetensors.torch import save_file

    header = {"format": "gramcast-avatar", "format_version": "1", "extent": "0.14",
              "camera": json.dumps(avatar_module.camera_conventions()), "meta": "{}", **header_changes}
    save_file({"heights": heights.half(), "textures": textures.half()}, str(path), metadata=header)


# ---------------------------------------------------------------- value ranges (finding 2)
def test_a_baked_avatar_lies_in_the_documented_ranges_and_loads(tmp_path):
    """A random-init tiny model's bake (the enrolled sample is in tests/test_avatar.py) round-trips."""
    model = GRAMModel.from_config("tiny")
    baked = bake_model(model, model.sample_ws(1, seed=0), geometry_resolution=32, texture_resolution=64)
    baked.save(tmp_path / "b.gca")
    back = Avatar.load(tmp_path / "b.gca")
    assert back.num_layers == baked.num_layers and float(back.textures[:, 3].max()) <= 1.0


@pytest.mark.parametrize("change,says", [
    (lambda t: t + 100, "colour (textures[:, :3]) holds values in"),
    (lambda t: t * 3, "outside [-1, 1]"),
    (lambda t: torch.cat([t[:, :3], t[:, 3:] - 0.5], 1), "opacity (textures[:, 3]) holds values in [-0.49"),
])
def test_textures_out_of_range_are_refused_when_made_and_when_loaded(tmp_path, change, says):
    a = _tiny()
    bad = change(a.textures)
    with pytest.raises(InvalidArgumentError, match=re.escape(says)):
        Avatar(a.heights, bad, a.extent)
    _write(tmp_path / "bad.gca", a.heights, bad.clamp(-60000, 60000))
    with pytest.raises(AvatarFormatError, match=r"bad\.gca is damaged: .*(colour|opacity).* outside \["):
        Avatar.load(tmp_path / "bad.gca")


def test_float16_rounding_is_within_the_slack_and_a_step_beyond_is_not():
    a = _tiny()
    t = a.textures.clone()
    t[0, 3, 0, 0], t[1, 0, 0, 0] = 1.0 + RANGE_SLACK, -1.0 - RANGE_SLACK
    Avatar(a.heights, t, a.extent).to_bytes()          # a hair over: float arithmetic, kept
    t[0, 3, 0, 0] = 1.0 + 4 * RANGE_SLACK
    with pytest.raises(InvalidArgumentError, match="opacity"):
        Avatar(a.heights, t, a.extent)


def test_heights_float16_cannot_hold_are_refused_before_anything_is_written(tmp_path):
    a = _tiny()
    with pytest.raises(InvalidArgumentError, match=r"heights holds values in \[.*70000.*outside \[-65504, 65504\]"):
        Avatar(a.heights + 70000.0, a.textures, a.extent)
    a.heights = a.heights + 70000.0                    # assigned after the checks: the writer checks again
    with pytest.raises(InvalidArgumentError, match="cannot write this avatar: heights holds"):
        a.save(tmp_path / "a.gca")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidArgumentError, match="cannot write this avatar"):
        a.to_bytes()


# ---------------------------------------------------------------- headers that are not objects (finding 3)
@pytest.mark.parametrize("field,value", [("meta", "null"), ("meta", "[1, 2]"), ("meta", '"text"'),
                                         ("camera", "[]"), ("camera", "3"), ("meta", '{"x": NaN}')])
def test_a_header_whose_meta_or_camera_is_not_a_json_object_is_a_format_error(tmp_path, field, value):
    a = _tiny()
    _write(tmp_path / "odd.gca", a.heights, a.textures, **{field: value})
    with pytest.raises(AvatarFormatError, match=r"odd\.gca has a damaged header"):
        Avatar.load(tmp_path / "odd.gca")


@pytest.mark.parametrize("meta", [None, [("method", "x")], "method"])
def test_meta_that_is_not_a_dict_is_refused_when_made(meta):
    a = _tiny()
    with pytest.raises(InvalidArgumentError, match="meta must be a dict"):
        Avatar(a.heights, a.textures, a.extent, meta)


# ---------------------------------------------------------------- metadata as plain JSON (finding 4)
@pytest.mark.parametrize("meta,says", [
    ({"x": np.float32(1.0)}, "plain JSON"), ({"x": {"y": [float("nan")]}}, "plain JSON"),
    ({"x": float("inf")}, "plain JSON"), ({1: "one"}, "str keys"), ({"x": [{2: "two"}]}, "str keys"),
    ({"x": object()}, "plain JSON"),
])
def test_meta_that_is_not_plain_json_is_refused_by_the_constructor_and_both_writers(tmp_path, meta, says):
    from gramcast.avatar.onnx_export import export_onnx_bytes

    with pytest.raises(InvalidArgumentError, match=says):
        _tiny(meta)
    a = _tiny()
    a.meta.update(meta)                                # what enrollment does after making an avatar
    with pytest.raises(InvalidArgumentError, match=says):
        a.save(tmp_path / "a.gca")
    with pytest.raises(InvalidArgumentError, match=says):
        export_onnx_bytes(a, 16)                       # had written str() of the value (default=str)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- one check, one conversion (finding 8)
def test_loading_checks_the_arrays_once(tmp_path, monkeypatch):
    _tiny().save(tmp_path / "a.gca")
    calls = []
    original = avatar_module._check_arrays
    monkeypatch.setattr(avatar_module, "_check_arrays", lambda *a: calls.append(1) or original(*a))
    loaded = Avatar.load(tmp_path / "a.gca")
    assert len(calls) == 1 and loaded.textures.dtype == torch.float32


def _old_content_radius(a: Avatar) -> float:
    """The formula content_radius had: every opaque texel's indices (torch.nonzero)."""
    alpha = a.textures[:, 3]
    if not bool((alpha > 0).any()):
        return 0.0
    n_g, n_t, e = a.geometry_resolution, a.texture_resolution, float(a.extent)
    if n_g < 2 or n_t < 2:
        return math.hypot(e * math.sqrt(2.0), float(a.heights.abs().max()))
    lends = F.max_pool2d((alpha > 0).float()[:, None], 3, 1, 1)[:, 0] > 0
    layer, row, col = torch.nonzero(lends, as_tuple=True)
    to_cell = (n_g - 1) / max(n_t - 1, 1)
    cells = torch.zeros(a.num_layers, n_g - 1, n_g - 1)
    cells[layer, (row * to_cell).long().clamp_(max=n_g - 2), (col * to_cell).long().clamp_(max=n_g - 2)] = 1.0
    cells = F.max_pool2d(cells[:, None], 3, 1, 1)[:, 0] > 0
    coords = torch.linspace(-e, e, n_g, dtype=torch.float64)
    xy2 = coords[None, :] ** 2 + coords[:, None] ** 2
    corner_max = lambda g: F.max_pool2d(g[:, None], 2, 1)[:, 0]    # noqa: E731
    r2 = corner_max(xy2[None]) + corner_max(a.heights.double() ** 2)
    return math.sqrt(float(r2[cells].max()))


def test_content_radius_is_the_old_formula_without_a_list_of_texels(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    for layers, g, t in ((3, 9, 20), (2, 17, 7), (1, 5, 33), (4, 2, 2), (1, 1, 4), (2, 12, 1)):
        textures = torch.rand(layers, 4, t, t, generator=gen)
        textures[:, 3] *= torch.rand(layers, t, t, generator=gen) < 0.1   # sparse opacity: the bounds differ
        textures[0, 3] = 0.0                                              # a layer that shows nowhere
        a = Avatar((torch.rand(layers, g, g, generator=gen) - 0.5) * 0.3, textures, 0.2)
        assert a.content_radius() == _old_content_radius(a), (layers, g, t)
    # no per-texel index list: nonzero is not called (it held int64 indices of every opaque texel)
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: pytest.fail("content_radius listed texels"))
    Avatar(torch.zeros(2, 9, 9), torch.ones(2, 4, 20, 20), 0.2).content_radius()


# ---------------------------------------------------------------- byte-stable files (finding 10)
def test_the_same_avatar_is_the_same_bytes_every_time(tmp_path):
    a = _tiny({"method": "test", "b": 1, "a": [1, 2], "c": {"x": "ü"}})
    first = a.to_bytes()
    assert all(a.to_bytes() == first for _ in range(8))
    a.save(tmp_path / "one.gca")
    a.save(tmp_path / "two.gca")
    assert (tmp_path / "one.gca").read_bytes() == (tmp_path / "two.gca").read_bytes() == first
    # still safetensors' layout: a header padded to 8 bytes that safetensors reads, the arrays as it writes them
    from safetensors.torch import load

    n = struct.unpack("<Q", first[:8])[0]
    assert n % 8 == 0 and json.loads(first[8:8 + n])["__metadata__"]["format"] == "gramcast-avatar"
    arrays = load(first)
    assert torch.equal(arrays["textures"], a.textures.half()) and torch.equal(arrays["heights"], a.heights.half())


# ---------------------------------------------------------------- equality and describe (findings 11, 12)
def test_avatars_are_equal_only_to_themselves_and_hashable():
    a = _tiny()
    b = Avatar.from_bytes(a.to_bytes())
    assert a == a and a != b and not (a == b)
    assert {a: 1, b: 2}[a] == 1 and len({a, b, a}) == 2


def test_describe_keeps_the_real_fields_over_meta_entries_of_the_same_name():
    a = _tiny({"method": "test", "layers": 99, "format": "other", "extent": 5, "note": "kept"})
    info = a.describe()
    assert info["layers"] == 2 and info["format"] == "gramcast-avatar" and info["extent"] == 0.14
    assert info["method"] == "test" and info["note"] == "kept"
    assert list(info)[:6] == ["format", "format_version", "layers", "geometry_resolution", "texture_resolution",
                              "extent"]


# ---------------------------------------------------------------- what load, save, from_bytes take (finding 13)
def test_a_folder_is_named_a_folder(tmp_path):
    with pytest.raises(AvatarFormatError, match="is a folder, not an avatar file"):
        Avatar.load(tmp_path)


def test_from_bytes_of_something_else_says_it_needs_bytes():
    with pytest.raises(AvatarFormatError, match="the avatar must be the bytes of a .gca file, got str"):
        Avatar.from_bytes("abc")
    with pytest.raises(AvatarFormatError, match="is empty"):
        Avatar.from_bytes(b"")


@pytest.mark.parametrize("thing", [None, 3, ["a.gca"]])
def test_load_and_save_refuse_what_is_no_path_in_one_error(tmp_path, thing):
    with pytest.raises(InvalidArgumentError, match=f"Avatar.load takes the path of a .gca file .*got "
                                                   f"{type(thing).__name__}"):
        Avatar.load(thing)
    with pytest.raises(InvalidArgumentError, match=f"Avatar.save takes the path .*got {type(thing).__name__}"):
        _tiny().save(thing)


def test_bytes_paths_and_binary_file_objects_work_and_text_files_say_rb(tmp_path):
    a = _tiny()
    a.save(str(tmp_path / "a.gca").encode())
    assert (tmp_path / "a.gca").read_bytes() == a.to_bytes()
    assert Avatar.load(str(tmp_path / "a.gca").encode()).meta == a.meta
    with open(tmp_path / "a.gca", "rb") as fh:
        assert torch.equal(Avatar.load(fh).textures, a.textures.half().float())
    with open(tmp_path / "a.gca", "r", encoding="latin-1") as fh, pytest.raises(InvalidArgumentError, match="'rb'"):
        Avatar.load(fh)


def test_numpy_arrays_make_an_avatar_and_other_things_are_one_error():
    a = _tiny()
    b = Avatar(a.heights.numpy(), a.textures.double().numpy(), np.float64(0.14))
    assert b.heights.dtype == b.textures.dtype == torch.float32 and torch.equal(b.textures, a.textures)
    for heights, says in (([[0.0]], "heights must be a torch tensor or a numpy array"),
                          (torch.zeros(2, 8, 8, dtype=torch.bool), "heights must hold real numbers")):
        with pytest.raises(InvalidArgumentError, match=says) as caught:
            Avatar(heights, a.textures, a.extent)
        assert isinstance(caught.value, GramcastError)
    with pytest.raises(InvalidArgumentError, match="grid extent '0.14' must be a number"):
        Avatar(a.heights, a.textures, "0.14")

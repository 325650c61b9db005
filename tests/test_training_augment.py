"""DiffAugment for the discriminator: each transform against a known answer, and differentiable."""
import pytest
import torch

from gramcast.training.augment import color, cutout, diff_augment, parse_policy, shift, translation


def ramp(b=3, c=2, h=9, w=11) -> torch.Tensor:
    """Distinct positive values everywhere, so a zero can only come from the transform."""
    return torch.arange(1, b * c * h * w + 1, dtype=torch.float32).view(b, c, h, w)


def test_shift_moves_each_image_by_its_own_integers_and_fills_zeros():
    x = ramp()
    dx, dy = torch.tensor([2, -3, 0]), torch.tensor([-1, 0, 4])
    out = shift(x, dx, dy)
    for i in range(3):
        want = torch.zeros_like(x[i])
        h, w = x.shape[-2:]
        sy, sx = int(dy[i]), int(dx[i])
        want[:, max(sy, 0):h + min(sy, 0), max(sx, 0):w + min(sx, 0)] = \
            x[i][:, max(-sy, 0):h + min(-sy, 0), max(-sx, 0):w + min(-sx, 0)]
        assert torch.equal(out[i], want)


def test_translation_is_a_shift_of_at_most_an_eighth():
    x = ramp(b=16, h=16, w=16)
    out = translation(x, torch.Generator().manual_seed(0))
    seen = set()
    for i in range(16):
        hits = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                if torch.equal(out[i], shift(x[i:i + 1], torch.tensor([dx]), torch.tensor([dy]))[0])]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 3        # the shift is drawn per image


def test_cutout_zeros_one_clipped_square_of_half_the_side_and_keeps_the_rest():
    x = ramp(b=32, h=12, w=12)
    out = cutout(x, torch.Generator().manual_seed(1))
    areas = set()
    for i in range(32):
        zero = out[i, 0] == 0
        assert torch.equal(out[i, 1] == 0, zero)            # the same hole in every channel
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 6 and 0 < len(cols) <= 6
        assert zero.sum() == len(rows) * len(cols)             # a rectangle...
        assert rows[-1] - rows[0] + 1 == len(rows) and cols[-1] - cols[0] + 1 == len(cols)
        # ...that is the 6x6 square unless the border clips it
        assert len(rows) == 6 or rows[0] == 0 or rows[-1] == 11
        assert len(cols) == 6 or cols[0] == 0 or cols[-1] == 11
        areas.add(int(zero.sum()))
    assert 36 in areas and len(areas) > 1


def test_color_on_a_grey_image_is_only_a_brightness_shift():
    # Equal channels have no saturation to scale and one value has no contrast to scale.
    x = torch.full((64, 3, 4, 4), 0.25, requires_grad=True)
    out = color(x, torch.Generator().manual_seed(2))
    delta = (out - 0.25).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-6)
    assert delta.min() >= -0.5 and delta.max() < 0.5 and delta[:, 0].std() > 0.2
    out.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x.grad), atol=1e-5)


def test_policies_chain_are_differentiable_and_unknown_names_are_refused():
    x = ramp(b=4, c=3, h=16, w=16).requires_grad_(True)
    policy = parse_policy(" color, translation ,cutout")
    assert policy == ["color", "translation", "cutout"]
    out = diff_augment(x, policy, torch.Generator().manual_seed(3))
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert diff_augment(x, [], torch.Generator()) is x
    with pytest.raises(ValueError, match="colour.*choose from color, translation, cutout"):
        parse_policy("colour,translation")

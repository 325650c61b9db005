"""Closed-form matting against images whose opacity is known: two colour layers blended by a known alpha."""
import cv2
import numpy as np

from gramcast.compositing import over
from gramcast.face.closed_form_matting import solve_alpha, window_laplacians
from gramcast.face.matte import refine_matte


def strands_alpha(size=160):
    """A disc with a 3-pixel soft edge and thin, half-opaque strands leaving it: what a segmentation's smooth
    ramp cannot follow. (H, W) float64 in [0, 1]."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    radius = np.hypot(xx - size / 2, yy - size / 2)
    alpha = np.clip((size * 0.3 - radius) / 3.0, 0.0, 1.0)
    for angle in np.linspace(0.3, 2.8, 6):
        line = np.abs((xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle))
        along = (xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)
        alpha = np.maximum(alpha, 0.6 * np.clip(1.5 - line, 0, 1) * (along > 0) * (radius < size * 0.45))
    return alpha


def trimap(alpha, width=6):
    """Known where the truth is 0 or 1 at least ``width`` pixels from any partial value."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return cv2.erode((alpha >= 1.0).astype(np.uint8), kernel) | cv2.erode((alpha <= 0.0).astype(np.uint8), kernel)


def test_a_window_of_two_colours_has_its_opacity_in_the_null_space():
    """Within one window, colours a F + (1 - a) B make a an affine function of the colour: the window's
    Laplacian part sends that a (and the constant) to ~0, and is symmetric with rows summing to 0."""
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (50, 9))
    f, b = np.array([0.9, 0.6, 0.4]), np.array([0.1, 0.2, 0.8])
    colours = a[..., None] * f + (1 - a[..., None]) * b
    lap = window_laplacians(colours, eps=1e-9)
    assert np.allclose(lap, lap.transpose(0, 2, 1))
    assert np.abs(lap.sum(2)).max() < 1e-6
    assert np.abs(np.einsum("kij,kj->ki", lap, a)).max() < 1e-4
    # a random opacity that is not affine in the colour costs energy
    other = rng.uniform(0, 1, (50, 9))
    assert np.einsum("ki,kij,kj->k", other, lap, other).min() > 1e-3


def test_two_flat_layers_give_back_their_opacity():
    alpha = strands_alpha()
    image = over(np.full(alpha.shape + (3,), [230.0, 150.0, 90.0]), alpha,
                 np.full(alpha.shape + (3,), [30.0, 60.0, 200.0])) / 255.0
    known = trimap(alpha) > 0
    guess = cv2.GaussianBlur(alpha, (0, 0), 4)          # a segmentation's smooth ramp
    out = solve_alpha(image, np.where(known, alpha, guess), known, rtol=1e-6)
    unknown = ~known
    guess_error = np.abs(guess - alpha)[unknown].mean()
    error = np.abs(out - alpha)[unknown].mean()
    assert guess_error > 0.1
    assert error < 0.01, (error, guess_error)
    assert (out[known] == alpha[known]).all() and out.min() >= 0 and out.max() <= 1


def test_smooth_layers_are_separated_far_better_than_the_guess():
    alpha = strands_alpha()
    yy, xx = np.mgrid[:alpha.shape[0], :alpha.shape[1]].astype(np.float64) / alpha.shape[0]
    fg = np.stack([200 + 40 * xx, 120 + 60 * yy, 60 + 30 * xx * yy], -1)
    bg = np.stack([20 + 30 * yy, 90 + 50 * xx, 220 - 40 * yy], -1)
    image = over(fg, alpha, bg) / 255.0
    known = trimap(alpha) > 0
    guess = cv2.GaussianBlur(alpha, (0, 0), 4)
    out = solve_alpha(image, np.where(known, alpha, guess), known)
    unknown = ~known
    assert np.abs(out - alpha)[unknown].mean() < 0.2 * np.abs(guess - alpha)[unknown].mean()


def test_refine_matte_sharpens_a_segmentations_ramp_and_keeps_the_sure_regions():
    alpha = strands_alpha(200)
    image = np.clip(np.rint(over(np.full(alpha.shape + (3,), [90.0, 60.0, 40.0]), alpha,
                                 np.full(alpha.shape + (3,), [235.0, 235.0, 230.0]))), 0, 255).astype(np.uint8)
    ramp = cv2.GaussianBlur(alpha, (0, 0), 3).astype(np.float32)
    out = refine_matte(image, ramp)
    edge = cv2.dilate(((alpha > 0) & (alpha < 1)).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.abs(out - alpha)[edge].mean() < 0.3 * np.abs(ramp - alpha)[edge].mean()
    far = cv2.erode((ramp <= 0.05).astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    assert (out[far] == 0).all()
    # an image beyond max_side is solved smaller and upsampled: coarser, still far nearer than the ramp
    halved = refine_matte(image, ramp, max_side=100)
    assert np.abs(halved - alpha)[edge].mean() < 0.6 * np.abs(ramp - alpha)[edge].mean()
    assert (halved[far] == 0).all()
    # a matte with no soft edge at all is returned as it is
    hard = (alpha > 0.5).astype(np.float32)
    assert np.array_equal(refine_matte(image, np.zeros_like(hard)), np.zeros_like(hard))

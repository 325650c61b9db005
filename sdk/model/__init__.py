"""The efficient GRAM generator: radiance manifolds + tri-plane generator + manifold renderer."""
from gramcast.model.config import GRAMConfig
from gramcast.model.gram import GRAMModel
from gramcast.model.renderers import RenderOutput, composite

__all__ = ["GRAMConfig", "GRAMModel", "RenderOutput", "composite"]

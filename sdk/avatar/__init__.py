"""The avatar: the baked manifold cache (``.gca``), its fast renderer, baking and enrollment."""
from gramcast.avatar.avatar import FORMAT_VERSION, Avatar
from gramcast.avatar.bake import bake_model
from gramcast.avatar.renderer import Renderer, RenderResult, RenderSettings

__all__ = ["Avatar", "FORMAT_VERSION", "Renderer", "RenderResult", "RenderSettings", "bake_model"]

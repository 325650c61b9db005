"""The efficient GRAM generator: radiance manifolds + tri-plane generator + manifold renderer, and
GRAMInverter's networks (the w+ encoder and the detail manifolds reconstructor).

Only torch, numpy and safetensors are needed to import and run everything here.
"""
from gramcast.model.checkpoint import model_id
from gramcast.model.config import GRAMConfig
from gramcast.model.decoder import RadianceDecoder, sample_triplanes
from gramcast.model.detail import DetailConfig, DetailReconstructor, manifold_height_grid
from gramcast.model.encoder import EncoderConfig, GRAMEncoder
from gramcast.model.gram import GRAMModel
from gramcast.model.intersection import (intersect_levels, intersect_lowres_upsampled, intersect_plane_z,
                                         upsample_hits)
from gramcast.model.manifold import ManifoldPredictor
from gramcast.model.renderers import Composite, RenderOutput, composite, normal_map, opacity_gradient
from gramcast.model.triplane import MappingNetwork, TriplaneSynthesis

__all__ = [
    "GRAMConfig", "GRAMModel", "RenderOutput", "model_id",
    "EncoderConfig", "GRAMEncoder", "DetailConfig", "DetailReconstructor", "manifold_height_grid",
    "ManifoldPredictor", "MappingNetwork", "TriplaneSynthesis", "RadianceDecoder", "sample_triplanes",
    "intersect_levels", "intersect_lowres_upsampled", "intersect_plane_z", "upsample_hits",
    "Composite", "composite", "normal_map", "opacity_gradient",
]

"""gramcast: one selfie in, a 3D-consistent avatar out, streamed into video calls.

The top-level API grows as the parts land; every name here is importable with only torch and numpy
installed (mediapipe and aiortc are imported where they are used).
"""
from gramcast.camera import Pose

__version__ = "0.1.0"

__all__ = ["Pose", "__version__"]

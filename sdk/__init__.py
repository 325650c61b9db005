"""gramcast: one selfie in, a 3D-consistent avatar out, streamed into video calls.

    import gramcast
    avatar = gramcast.enroll("me.jpg")                  # align, invert, bake
    avatar.save("me.gca")
    rgb = gramcast.Renderer(gramcast.Avatar.load("me.gca")).render([(0.3, 0.0)], 256).rgb

Every name here is importable with only torch and numpy installed (mediapipe and aiortc are
imported where they are used). The errors gramcast raises on purpose are here too, each a ``GramcastError``
whose message says what was wrong and what to do (``gramcast.errors``)::

    try:
        avatar = gramcast.enroll("me.jpg")
    except gramcast.FaceTurnedError as exc:      # or any gramcast.GramcastError
        print(exc)
"""
from gramcast import errors as _errors
from gramcast.camera import Pose
from gramcast.errors import (AvatarFormatError, CheckpointError, FaceNotFoundError, FaceTooSmallError, FaceTurnedError,
                             GramcastError, InvalidArgumentError, InvalidImageError, MultipleFacesError, OutputPathError)

__version__ = "0.1.0"

__all__ = ["Pose", "Avatar", "Renderer", "RenderSettings", "enroll", "AvatarSession", "SessionConfig", "__version__",
           *_errors.__all__]


def enroll(image, method: str = "mesh", **options):
    """One portrait -> ``Avatar``; see ``gramcast.enrollment.enroll``."""
    from gramcast.enrollment import enroll as _enroll

    return _enroll(image, method=method, **options)


def __getattr__(name):
    if name in ("Avatar", "Renderer", "RenderSettings"):
        from gramcast import avatar

        return getattr(avatar, name)
    if name in ("AvatarSession", "SessionConfig"):
        from gramcast import session

        return getattr(session, name)
    raise AttributeError(f"module 'gramcast' has no attribute {name!r}")

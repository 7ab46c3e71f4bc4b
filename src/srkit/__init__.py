"""srkit: train and run super-resolution GANs.

Importing ``srkit`` is cheap and pulls in no training-only dependency; the inference API
(``srkit.load_model``, ``srkit.upscale``, ``srkit.upscale_video``) lives in ``srkit.infer`` and
is re-exported lazily: torch is imported on first use of these names, never by ``import srkit``
itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "upscale", "upscale_video"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from srkit.infer.api import load_model, upscale
    from srkit.infer.video import upscale_video


def __getattr__(name: str) -> Any:
    if name in ("load_model", "upscale"):
        from srkit.infer import api

        return getattr(api, name)
    if name == "upscale_video":
        from srkit.infer.video import upscale_video

        return upscale_video
    raise AttributeError(f"module 'srkit' has no attribute '{name}'")

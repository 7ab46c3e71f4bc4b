"""Inference and interop: upscaling images with a trained generator, exporting models.

* :mod:`srkit.infer.api`: ``load_model`` and ``upscale`` (numpy / PIL / tensor in, same out);
* :mod:`srkit.infer.tiling`: overlapping tiles with cosine-feathered blending, ``--tile auto``;
* :mod:`srkit.infer.video`: ``upscale_video`` (a video file in, a video file out; PyAV);
* :mod:`srkit.infer.upscale`: the ``srkit upscale`` command;
* :mod:`srkit.infer.export`: ``srkit export`` to ONNX (verified with onnxruntime) and to
  safetensors in the community ESRGAN layout.

The names below are imported on first use, so ``import srkit.infer`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_model", "upscale", "upscale_video"]


def __getattr__(name: str) -> Any:
    if name == "upscale_video":
        from srkit.infer.video import upscale_video

        return upscale_video
    if name in __all__:
        from srkit.infer import api

        return getattr(api, name)
    raise AttributeError(f"module 'srkit.infer' has no attribute '{name}'")

"""srkit: train and run super-resolution GANs.

Importing ``srkit`` is cheap and pulls in no training-only dependency; the inference API
(``srkit.load_model``, ``srkit.upscale``) lives in ``srkit.infer`` and is re-exported lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

"""Image quality metrics for validation (PSNR and SSIM with the SR literature's conventions)."""

from __future__ import annotations

from srkit.metrics.psnr_ssim import psnr, rgb_to_y, ssim

__all__ = ["psnr", "rgb_to_y", "ssim"]

"""Validation every ``logging.val_every`` steps (and at the last step, and at step 0 with
``logging.validate_at_start``): PSNR/SSIM, colour drift (``data.val.colour_drift``), LPIPS when
configured (``run.lpips``, built with the other networks), the monitored loss terms, and an
LR | SR | HR sheet, of the generator and of its EMA copy. Main process only; the others wait
at a barrier."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from srkit.errors import DataError
from srkit.evaluation import evaluate_generator
from srkit.log.console import format_scalars
from srkit.losses.tensors import StepTensors
from srkit.nets.switch import SwitchTemperatureWarning
from srkit.train.distributed import barrier
from srkit.train.services.base import Service, StepDone, every

if TYPE_CHECKING:
    from srkit.train.trainer import Trainer

log = logging.getLogger("srkit.train")


class Validation(Service):
    def __init__(self, run: Trainer) -> None:
        val = run.config.data.val
        self.enabled = val is not None
        self.dataset: Any = None
        if self.enabled and run.group.is_main:
            self.validation_set(run)  # a bad validation folder is found now, not mid-run

    def start(self, run: Trainer) -> None:
        if self.enabled and run.config.logging.validate_at_start and run.step == 0:
            run.validate()

    def after_step(self, run: Trainer, done: StepDone) -> None:
        if self.enabled and every(run, run.config.logging.val_every):
            run.validate()  # (through the trainer, so that a caller can wrap it)

    def validation_set(self, run: Trainer) -> Any:
        if self.dataset is None:
            from srkit.data.datasets import SRDataset

            val = run.config.data.val
            try:
                self.dataset = SRDataset(
                    hr_root=val.hr, lr_root=val.lr, scale=run.config.scale, patch_size=None
                )
            except DataError as error:
                raise DataError(f"data.val: {error}") from None
        return self.dataset

    @torch.no_grad()
    def validate(self, run: Trainer) -> dict[str, float]:
        """Metrics of the generator (and its EMA) on the validation images; rank 0 only."""
        if not run.group.is_main:
            barrier(run.group)
            return {}
        variants = []
        if run.ema is not None:
            variants.append(("val_ema", run.ema.module))
            if run.config.train.ema.validate_raw:
                variants.append(("val", run.generator))
        else:
            variants.append(("val", run.generator))
        results: dict[str, float] = {}
        for prefix, network in variants:
            with warnings.catch_warnings():
                # Validating mid-anneal at the current temperature is intended here.
                warnings.simplefilter("ignore", SwitchTemperatureWarning)
                metrics, sheet = self.evaluate(run, network)
            results.update({f"{prefix}/{k}": v for k, v in metrics.items()})
            if sheet is not None:
                run.guarded_write("validation pictures", self._save_sheet, run, prefix, sheet)
        run.guarded_write("metrics", run.logger.scalars, run.step, results)
        log.info("validation at step %d: %s", run.step, format_scalars(results))
        barrier(run.group)
        return results

    def evaluate(self, run: Trainer, network: nn.Module) -> tuple[dict[str, float], Any]:
        """Validation metrics of ``network`` and its LR | SR | HR sheet.

        Image metrics when the output is an image the size of HR; every loss term without a
        discriminator (monitors of weight 0 included) when ``data.val.losses``.
        """
        val = run.config.data.val
        terms = [t for t in run.terms if t.discriminator is None] if val.losses else []
        generator_input = run.config.train.generator_input
        result = evaluate_generator(
            network,
            self.validation_set(run),
            scale=run.config.scale,
            device=run.device,
            crop_border=val.crop_border,
            y_channel=val.y_channel,
            max_images=val.max_images,
            sheet_images=val.sheet_images,
            autocast=run.optimise.autocast,
            prepare_input=lambda lr: StepTensors({"lr": lr}, run.views)[generator_input],
            loss_terms=terms,
            views=run.views,
            lpips=run.lpips,
            colour_drift=val.colour_drift,
        )
        return result.metrics, result.sheet

    def _save_sheet(self, run: Trainer, prefix: str, sheet: np.ndarray) -> None:
        from srkit.data.io import write_image

        folder = run.run_dir / "images"
        folder.mkdir(exist_ok=True)
        write_image(folder / f"{prefix}_{run.step:08d}.png", sheet)
        run.logger.image(run.step, f"{prefix}/lr_sr_hr", sheet)

"""Training pictures, every ``logging.image_every`` steps: the configured rows of tensor
expressions (``logging.pictures``), and pictures that loss terms (pixgan swaps) and networks
(switch attention) offer, into ``<run>/images/`` and TensorBoard."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from srkit.errors import ConfigError
from srkit.losses.tensors import StepTensors
from srkit.train.build import find_hooks
from srkit.train.services.base import Service, StepDone

if TYPE_CHECKING:
    from srkit.train.step import StepResult
    from srkit.train.trainer import Trainer


class TrainingPictures(Service):
    def __init__(self, run: Trainer) -> None:
        self.source: StepTensors | None = None  # the first image of the step a picture is due
        self.checked = False

    def observe_step(self, run: Trainer, result: StepResult) -> None:
        """Keep the first image of the step's last chunk when a picture is due.

        At the first step every picture expression is tried once, so a wrong name fails at
        once (naming the key) rather than at the first ``image_every`` step.
        """
        if not run.config.logging.pictures or result.tensors is None:
            return
        due = (result.step + 1) % run.config.logging.image_every == 0
        if not due and self.checked:
            return
        source = result.tensors.first(1)
        if not self.checked:
            check_expressions(run, source)
            self.checked = True
        if due:
            self.source = source

    def after_step(self, run: Trainer, done: StepDone) -> None:
        if run.group.is_main and run.step % run.config.logging.image_every == 0:
            run.guarded_write("training pictures", self.write, run)

    def write(self, run: Trainer) -> None:
        from srkit.data.io import write_image

        pictures = self.collect(run)
        if not pictures:
            return
        folder = run.run_dir / "images"
        folder.mkdir(exist_ok=True)
        for tag, picture in pictures.items():
            run.logger.image(run.step, f"train/{tag}", picture)
            write_image(folder / f"{tag.replace('/', '_')}_{run.step:08d}.png", picture)

    def collect(self, run: Trainer) -> dict[str, np.ndarray]:
        """Every picture due now, HWC float in [0, 1], by tag."""
        from srkit.log.pictures import tensor_row

        pictures: dict[str, np.ndarray] = {}
        if self.source is not None:
            with torch.no_grad():
                for name, picture in run.config.logging.pictures.items():
                    row = [self.source[expression] for expression in picture.tensors]
                    pictures[name] = tensor_row(row, picture.scale)
            self.source = None
        for term in run.terms:
            for tag, picture in term.pictures().items():
                pictures[f"{term.name}/{tag}"] = (
                    picture.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
                )
        for name in run.trained:
            for training_pictures in find_hooks(run.networks[name], "training_pictures"):
                for tag, picture in training_pictures().items():
                    picture = np.asarray(picture)
                    if picture.dtype == np.uint8:
                        picture = picture.astype(np.float32) / 255
                    if picture.ndim == 2:
                        picture = np.repeat(picture[..., None], 3, axis=2)
                    pictures[f"{name}/{tag}"] = picture
        return pictures


def check_expressions(run: Trainer, source: StepTensors) -> None:
    """Every ``logging.pictures`` expression names an (N, C, H, W) image of this step."""
    with torch.no_grad():
        for name, picture in run.config.logging.pictures.items():
            for index, expression in enumerate(picture.tensors):
                where = f"logging.pictures.{name}.tensors.{index}"
                try:
                    value = source[expression]
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                if not isinstance(value, torch.Tensor) or value.dim() != 4:
                    raise ConfigError(
                        f"{where}: '{expression}' is not an (N, C, H, W) image tensor"
                    )

"""Where scalars and pictures go: TensorBoard and ``metrics.jsonl`` in the run folder.

``metrics.jsonl`` holds one JSON object per logged step, so runs can be compared and plotted
without TensorBoard (and tests can read the exact logged losses).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from srkit.fsutil import atomic_write

log = logging.getLogger("srkit.train")


class RunLogger:
    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError as exc:  # TensorBoard is a dependency; this is a broken install
                log.warning("TensorBoard logging off: %s", exc)

    def truncate_after(self, step: int) -> None:
        """Drop logged steps after ``step`` (they are redone when a run resumes from there)."""
        if not self.metrics_path.is_file():
            return
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except ValueError:
                continue  # a line torn by a crash
        text = "".join(k + "\n" for k in kept)
        # Atomically: a crash here must not lose the metrics of the steps being kept.
        atomic_write(self.metrics_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(key, value, step)

    def image(self, step: int, tag: str, picture: np.ndarray) -> None:
        """``picture``: HWC float in [0,1] or uint8."""
        if self._writer is not None:
            self._writer.add_image(tag, picture, step, dataformats="HWC")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

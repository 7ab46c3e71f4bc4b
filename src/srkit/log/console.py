"""Console and file logging for training: a progress bar plus readable log lines.

Log lines go to ``<run>/train.log`` and to the terminal; while a progress bar is showing,
terminal lines are written through tqdm so they do not tear the bar.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class _TqdmHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):  # e.g. an error the CLI prints itself
            return
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never break training
            self.handleError(record)


class _EarlyRecords(logging.Handler):
    """Holds records logged before the run folder exists, for the log file to replay."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def setup_logging(quiet: bool = False) -> None:
    """Configure the ``srkit`` logger for the terminal (unless quiet).

    Records are also kept until :func:`attach_log_file` names the run's log file, so that what
    was logged while checking the config and data (skipped images, say) lands in the file too.
    """
    logger = logging.getLogger("srkit")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = False
    if not quiet:
        console = _TqdmHandler()
        console.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        logger.addHandler(console)
    logger.addHandler(_EarlyRecords())


def attach_log_file(log_file: Path) -> None:
    """Send ``srkit`` log records to ``log_file`` as well, starting with the held ones."""
    logger = logging.getLogger("srkit")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    for handler in list(logger.handlers):
        if isinstance(handler, _EarlyRecords):
            for record in handler.records:
                file_handler.handle(record)
            logger.removeHandler(handler)
    logger.addHandler(file_handler)


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """A step progress bar with ETA and it/s; disabled automatically when not on a terminal."""
    return tqdm(
        total=total,
        initial=initial,
        disable=(not enabled) or None,
        dynamic_ncols=True,
        unit="step",
        file=sys.stderr,
        leave=True,
    )


def format_scalars(values: dict[str, float], keys: list[str] | None = None) -> str:
    """``name=value`` pairs, compact, for log lines and the progress bar."""
    chosen = keys if keys is not None else sorted(values)
    return " ".join(f"{k}={values[k]:.4g}" for k in chosen if k in values)

"""Discriminator health: every ``logging.print_every`` steps, how each discriminator of the run
judges (D's probabilities on real and fake, accuracy, logit gap, for map discriminators trained
on region swaps how well its map points at the swapped regions, its gradient norm) and which
loss term drives the generator (each term's share of the gradient at G's output, measured every
``logging.health.gradient_every`` steps), to the console, TensorBoard and metrics.jsonl as
``health/<network>/<figure>``. A one-line warning names a discriminator that has collapsed, no
longer points at swapped regions, or wins outright for ``logging.health.patience`` consecutive
logs, and what usually helps; another names the terms that hold the output's colours (pixel
distances between images, the colour term) when the other terms drown them out
(``logging.health.anchor_share``), because colours then drift within tens of steps.

The figures are defined in :mod:`srkit.losses.judgement`; reading them: docs/gan-health.md.
Figures are means over the steps since the last log, of the main process's share of the batch
(no collective: a swap figure may exist on one process and not on another).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import TYPE_CHECKING

import torch

from srkit.log.console import format_scalars
from srkit.losses.judgement import gradient_shares, judgement_figures
from srkit.train.services.base import Service

if TYPE_CHECKING:
    from srkit.train.step import StepResult
    from srkit.train.trainer import Trainer

log = logging.getLogger("srkit.train")

COLLAPSE_ADVICE = (
    "it no longer tells generated from real, so the generator learns nothing from it; what "
    "usually helps: let it judge detail (the term's real: detail(hr), fake: [detail(sr)]) "
    "with the discriminator's norm: none, as group/batch norm divide out how much detail an "
    "image has; a gradient penalty or spectral norm instead of instance noise; a smaller "
    "adversarial weight; or D steps before G's (train.d_init_iters)"
)
WIN_ADVICE = (
    "its verdicts saturate and give the generator no gradient; what usually helps: a lower D "
    "learning rate or fewer D steps, label smoothing or instance noise (train.d_noise), a "
    "gradient penalty or spectral norm, or a larger adversarial weight"
)
BLIND_ADVICE = (
    "it judges whole images, so the generator is not told where it fails; what usually "
    "helps: swaps in every chunk (the term's swap_probability: 1) and rectangles of several "
    "output cells (its min_size), D steps alone first (train.d_init_iters), or less instance "
    "noise (train.d_noise)"
)

ANCHOR_ADVICE = (
    "colours and brightness drift within tens of steps (watch val/colour_mean_de); what "
    "usually helps: raise the weight of {anchors} or lower the others' until {they} a "
    "few per cent of it (benchmarks/RESULTS.md: 0.06 % drifted by 19 ΔE in 20 steps, 6 % "
    "held)"
)


class HealthJudge:
    """Counts consecutive logs at which a discriminator looks collapsed (logit gap below
    ``collapse_gap``), blind to region swaps (swap gap below it, logit gap not) or winning
    outright, and words the warning once per episode (when the count reaches ``patience``)."""

    def __init__(self, health_cfg: object) -> None:
        self.cfg = health_cfg
        self.counts: dict[tuple[str, str], int] = defaultdict(int)

    def warnings(
        self, name: str, figures: dict[str, float], adversarial_share: float | None
    ) -> list[str]:
        """The warnings due for discriminator ``name`` at this log (each at most once per
        episode). ``adversarial_share``: its terms' latest share of G's gradient (None: not
        measured)."""
        cfg = self.cfg
        found = []
        collapsed = figures.get("logit_gap", math.inf) < cfg.collapse_gap
        blind = not collapsed and figures.get("swap_gap", math.inf) < cfg.collapse_gap
        winning = (
            adversarial_share is not None
            and figures.get("accuracy", 0.0) >= cfg.win_accuracy
            and adversarial_share < cfg.win_share
        )
        for kind, holds in (("collapse", collapsed), ("blind", blind), ("win", winning)):
            key = (name, kind)
            self.counts[key] = self.counts[key] + 1 if holds else 0
            if self.counts[key] == cfg.patience:
                found.append(self._message(name, kind, figures, adversarial_share))
        return found

    def anchor_warning(self, shares: dict[str, float], anchors: list[str]) -> str | None:
        """The warning due when the colour-anchoring terms ``anchors`` together hold less than
        ``anchor_share`` of G's gradient: at the first measurement below it, again only after
        a measurement above it. None when ``anchors`` is empty or no share was measured."""
        measured = [t for t in anchors if t in shares]
        if not measured:
            return None
        share = sum(shares[t] for t in measured)
        key = ("generator", "anchor")
        self.counts[key] = self.counts[key] + 1 if share < self.cfg.anchor_share else 0
        if self.counts[key] != 1:
            return None
        others = {t: v for t, v in shares.items() if t not in measured}
        shown = ", ".join(f"{t} {100 * v:.3g} %" for t, v in others.items())
        names = ", ".join(measured)
        advice = ANCHOR_ADVICE.format(
            anchors=names, they="it holds" if len(measured) == 1 else "they hold"
        )
        return (
            f"health: the terms that hold colours ({names}) have {100 * share:.3g} % of the "
            f"generator's gradient ({shown}): {advice}"
        )

    def _message(self, name: str, kind: str, figures: dict[str, float], share: float | None) -> str:
        logs = self.cfg.patience
        below = f"below {self.cfg.collapse_gap:g} for {logs} logs"
        if kind == "collapse":
            shown = format_scalars(figures, ["logit_gap", "accuracy"])
            return f"health: discriminator '{name}' has collapsed ({shown}, {below}): " + (
                COLLAPSE_ADVICE
            )
        if kind == "blind":
            shown = format_scalars(figures, ["swap_gap", "swap_iou", "logit_gap"])
            return (
                f"health: discriminator '{name}' does not point at the swapped regions "
                f"({shown}, swap gap {below}): {BLIND_ADVICE}"
            )
        return (
            f"health: discriminator '{name}' wins outright (accuracy={figures['accuracy']:.3f}, "
            f"adversarial gradient share={share:.2g} for {logs} logs): {WIN_ADVICE}"
        )


class Health(Service):
    def __init__(self, run: Trainer) -> None:
        self.cfg = run.config.logging.health
        self.pending: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.shares: dict[str, float] = {}  # the latest measured, by term name
        self.shares_new = False
        self.judge = HealthJudge(self.cfg)
        # Each discriminator's terms (whose share of G's gradient is its adversarial share).
        self.terms_of = {
            name: [t.name for t in run.terms if t.discriminator == name] for name in run.trained[1:]
        }
        weighted = [t for t in run.terms if t.weight]
        # Terms that pin the output's colours, watched only beside other terms to drown them.
        anchors = [t.name for t in weighted if t.anchors_colour()]
        self.anchors = anchors if len(anchors) < len(weighted) else []
        # (One weighted term has the whole gradient: nothing to measure.)
        if self.cfg.enabled and len(weighted) > 1:
            run.optimise.output_gradient_every = self.cfg.gradient_every

    def observe_step(self, run: Trainer, result: StepResult) -> None:
        if not self.cfg.enabled or result.verdict != "ok" or not run.group.is_main:
            return
        for name, judgements in result.judgements.items():
            if not judgements:
                continue
            for figure, value in judgement_figures(judgements).items():
                self.pending[f"health/{name}/{figure}"].append(value.detach())
            norm = result.norms.get(f"grad_norm/{name}")
            if norm is not None:
                self.pending[f"health/{name}/grad_norm"].append(norm.detach().float())
        if result.output_gradient_norms:
            shares = gradient_shares(result.output_gradient_norms)
            self.shares = {term: float(share) for term, share in shares.items()}
            self.shares_new = True

    def row_scalars(self, run: Trainer) -> dict[str, float]:
        """The figures since the last row (they join the Scalars service's row), after
        printing them and any warning due."""
        if not self.cfg.enabled:
            return {}
        values = {k: float(torch.stack(v).float().mean()) for k, v in self.pending.items() if v}
        self.pending.clear()
        shares_measured = self.shares_new
        if shares_measured:
            values.update({f"health/generator/share/{t}": s for t, s in self.shares.items()})
            self.shares_new = False
        if values:
            log.info("health at step %d  %s", run.step, console_line(values))
            if shares_measured:
                warning = self.judge.anchor_warning(self.shares, self.anchors)
                if warning:
                    log.warning("%s", warning)
            self.warn(values)
        return values

    def warn(self, values: dict[str, float]) -> None:
        for name, terms in self.terms_of.items():
            prefix = f"health/{name}/"
            figures = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
            if not figures:
                continue
            share = sum(self.shares[t] for t in terms if t in self.shares) if self.shares else None
            for warning in self.judge.warnings(name, figures, share):
                log.warning("%s", warning)


def console_line(values: dict[str, float]) -> str:
    """``<network>: figure=value ... | ...``: the figures grouped by network, without the
    ``health/`` prefix (the full keys are in metrics.jsonl and TensorBoard)."""
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in values.items():
        _, network, figure = key.split("/", 2)
        groups[network][figure] = value
    return " | ".join(
        f"{network}: {format_scalars(figures)}" for network, figures in groups.items()
    )

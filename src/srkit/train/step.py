"""One optimisation step of every trained network (SPEC section 1), top to bottom.

Every method is a configuration of this step: a generator whose named outputs feed a list of
weighted loss terms, and one discriminator step per discriminator that a term names. Nothing in
here knows a method or a network by name.

1. The batch is split into ``train.megabatch`` equal chunks (gradient accumulation).
2. Generator pass (unless ``step < d_init_iters`` or ``step % d_update_ratio``): per chunk, G
   runs, every term's generator loss is computed, and ``sum(weight * loss) / megabatch`` is
   back-propagated with the discriminators frozen.
3. One discriminator pass per discriminator in use (unless ``step < g_warmup``), on the detached
   outputs of the same generator pass.
4. Gradient norms (clipped to ``train.grad_clip``), then one finiteness check over every loss
   and norm. Every backward pass runs before any optimizer updates, so a NaN/Inf step can be
   dropped whole (``train.nan_policy: skip``) or stopped with every network still at its last
   good state (``abort``); otherwise every network that computed gradients is updated.

The step is pure with respect to the run folder: it writes no file and logs nothing. The
trainer sets the step's schedules before it (learning rates, ``train_only``, network hooks) and
acts on its :class:`StepResult` after it (EMA, the non-finite policy's messages, the services).

Logged losses are means over chunks of the undivided per-chunk losses, so they do not depend on
``megabatch``.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from srkit.evaluation import named_outputs
from srkit.hardware import precision_context
from srkit.losses.base import LossTerm
from srkit.losses.judgement import Judgement, output_gradient_norms
from srkit.losses.tensors import StepTensors, View
from srkit.train.distributed import ProcessGroup
from srkit.train.nonfinite import NonFiniteGuard, nonfinite_values
from srkit.train.optim import TrainOnly

Scalars = dict[str, torch.Tensor]


def step_rng(seed: int, step: int, *where: int) -> torch.Generator:
    """A CPU generator for random draws within one step (pixgan swaps, D noise): a pure function
    of (seed, step, *where), so a resumed run draws exactly what the uninterrupted run drew.

    The step passes (discriminator index, global chunk index), the chunk counted over all
    processes (rank x megabatch + chunk): a run with P processes and megabatch M then draws what
    one process with megabatch P x M draws, so resuming with another process count continues
    the same random stream too."""
    generator = torch.Generator()
    words = [seed % 2**32, step, *where]
    mixed = np.random.SeedSequence(words).generate_state(2, np.uint32)
    generator.manual_seed(int(mixed[0]) << 32 | int(mixed[1]))
    return generator


def split_batch(batch: dict[str, Any], chunks: int) -> list[dict[str, Any]]:
    """Split every tensor (and list) of a batch into ``chunks`` equal parts along dim 0."""
    if chunks == 1:
        return [batch]
    parts: list[dict[str, Any]] = [{} for _ in range(chunks)]
    for key, value in batch.items():
        size = len(value) // chunks
        for index in range(chunks):
            parts[index][key] = value[index * size : (index + 1) * size]
    return parts


def _has_history(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _as_float(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


@dataclass
class StepResult:
    """What one step did, for the trainer and its services to act on."""

    step: int
    # Detached losses (``g/<term>``, ``d/<term>[/<scalar>]``), plus ``grad_norm/<network>`` when
    # asked for; the trainer logs these.
    scalars: Scalars
    # Batch and generator outputs of the last chunk (for training pictures); None when nothing
    # trained at this step.
    tensors: StepTensors | None
    generator_trained: bool
    # ``grad_norm/<network>`` of every network that computed gradients (before clipping).
    norms: Scalars = field(default_factory=dict)
    # Networks whose optimizers stepped (empty for a dropped step).
    updated: list[str] = field(default_factory=list)
    # ``train.nan_policy``'s verdict: "ok", "skip" (dropped, nothing updated) or "abort".
    verdict: str = "ok"
    # (key, network, value) of the non-finite scalars that caused a "skip" or "abort".
    nonfinite: list[tuple[str, str, float]] = field(default_factory=list)
    # What each discriminator judged (its terms' judgements, every chunk), for health figures.
    judgements: dict[str, list[Judgement]] = field(default_factory=dict)
    # ``||d(weight * loss)/d(generator outputs)||`` per generator term, on the last chunk; only
    # at steps where ``TrainStep.output_gradient_every`` asks for it (extra backward passes).
    output_gradient_norms: Scalars = field(default_factory=dict)


class TrainStep:
    """The optimisation step over a run's trained networks, loss terms and optimizers."""

    def __init__(
        self,
        *,
        train_cfg: Any,
        seed: int,
        device: torch.device,
        group: ProcessGroup,
        wrapped: dict[str, nn.Module],
        networks: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        terms: list[LossTerm],
        views: dict[str, View],
        train_only: TrainOnly,
        nonfinite: NonFiniteGuard,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        self.cfg = train_cfg
        self.seed = seed
        self.device = device
        self.group = group
        self.wrapped = wrapped  # what the step calls: DDP / torch.compile around the network
        self.networks = networks
        # Batch tensors the generator takes besides its input, as keyword arguments (e.g. a
        # whole-image reference); the dataset supplies them (see srkit.data.reference).
        self.extra_inputs = tuple(getattr(networks["generator"], "extra_inputs", ()))
        self.optimizers = optimizers
        self.trained = list(optimizers)  # the generator first, then the discriminators
        self.discriminators = self.trained[1:]
        self.terms = terms
        self.terms_of = {d: [t for t in terms if t.discriminator == d] for d in self.discriminators}
        self.views = views
        self.train_only = train_only
        self.nonfinite = nonfinite
        self.scaler = scaler
        # Every k-th step, measure each generator term's gradient at G's outputs (0: never);
        # set by the service that reads them.
        self.output_gradient_every = 0

    def __call__(self, batch: dict[str, Any], step: int, with_norms: bool = False) -> StepResult:
        """Step ``step`` (0-based) of every trained network."""
        chunks = split_batch(self._to_device(batch), self.cfg.megabatch)
        train_generator = self.generator_active(step)
        train_discriminators = self.discriminators_active(step)
        scalars: Scalars = {}
        updated: list[str] = []  # networks whose gradients this step computed
        detached: list[StepTensors] = []  # D's inputs: each chunk's outputs, detached
        last: StepTensors | None = None
        judgements: dict[str, list[Judgement]] = {}
        output_norms: Scalars = {}
        if train_generator:
            last, detached = self._generator_pass(
                chunks, step, train_discriminators, scalars, output_norms
            )
            updated.append("generator")
        elif train_discriminators:
            detached = [self._chunk_tensors(chunk, grad=False) for chunk in chunks]
            last = detached[-1]
        if train_discriminators:
            for name in self.discriminators:
                judgements[name] = []
                scalars.update(self._discriminator_pass(name, detached, step, judgements[name]))
                updated.append(name)
        norms = {f"grad_norm/{name}": self._gradient_norm(name) for name in updated}
        result = StepResult(step, scalars, last, train_generator, norms)
        result.judgements, result.output_gradient_norms = judgements, output_norms
        self._update_if_finite(result, updated)
        if with_norms:
            scalars.update(norms)
        return result

    # ------------------------------------------------------------------ who trains when

    def generator_active(self, step: int) -> bool:
        if not self.discriminators:
            return True
        return step >= self.cfg.d_init_iters and step % self.cfg.d_update_ratio == 0

    def discriminators_active(self, step: int) -> bool:
        return bool(self.discriminators) and step >= self.cfg.g_warmup

    def noise_std(self, step: int) -> float:
        """Standard deviation of the instance noise added to D's inputs (``train.d_noise``)."""
        noise = self.cfg.d_noise
        if noise is None:
            return 0.0
        progress = min(1.0, step / noise.until)
        return noise.start + (noise.floor - noise.start) * progress

    # ------------------------------------------------------------------ forward and backward

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        moved = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                if self.cfg.channels_last and value.dim() == 4:
                    value = value.contiguous(memory_format=torch.channels_last)
            moved[key] = value
        return moved

    def autocast(self) -> contextlib.AbstractContextManager:
        return precision_context(self.cfg.precision, self.device)

    def _chunk_tensors(self, chunk: dict[str, Any], grad: bool) -> StepTensors:
        """Run the generator on one chunk and expose batch + outputs as named tensors."""
        base = {k: v for k, v in chunk.items() if isinstance(v, torch.Tensor)}
        generator_input = StepTensors(base, self.views)[self.cfg.generator_input]
        extra = {name: base[name] for name in self.extra_inputs}
        with torch.set_grad_enabled(grad), self.autocast():
            output = self.wrapped["generator"](generator_input, **extra)
        outputs = {k: _as_float(v) for k, v in named_outputs(output).items()}
        return StepTensors({**base, **outputs}, self.views)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _no_sync(self, name: str, last_chunk: bool) -> contextlib.AbstractContextManager:
        """DDP averages gradients once, after the last chunk's backward."""
        wrapped = self.wrapped[name]
        if not last_chunk and hasattr(wrapped, "no_sync"):
            return wrapped.no_sync()
        return contextlib.nullcontext()

    def _generator_pass(
        self,
        chunks: list[dict[str, Any]],
        step: int,
        keep_detached: bool,
        scalars: Scalars,
        output_norms: Scalars,
    ) -> tuple[StepTensors, list[StepTensors]]:
        """Forward and backward of the generator over every chunk, discriminators frozen.
        Returns the last chunk's tensors and (when the discriminators train) every chunk's
        detached outputs; fills ``output_norms`` when they are due at this step."""
        for name in self.discriminators:
            self.networks[name].requires_grad_(False)
        self.optimizers["generator"].zero_grad(set_to_none=True)
        megabatch = len(chunks)
        weighted_terms = [t for t in self.terms if t.weight]
        totals: Scalars = defaultdict(lambda: torch.zeros((), device=self.device))
        detached: list[StepTensors] = []
        for index, chunk in enumerate(chunks):
            with self._no_sync("generator", index == megabatch - 1):
                tensors = self._chunk_tensors(chunk, grad=True)
                with self.autocast():
                    losses = {
                        f"g/{t.name}": t.generator_loss(tensors).float() for t in weighted_terms
                    }
                weighted = sum(t.weight * losses[f"g/{t.name}"] for t in weighted_terms)
                if index == megabatch - 1 and self._output_gradients_due(step):
                    output_norms.update(self._output_gradient_norms(tensors, losses))
                if isinstance(weighted, torch.Tensor) and weighted.requires_grad:
                    # (No graph when no term reaches a parameter that trains at this step.)
                    self._backward(weighted / megabatch)
            for key, value in losses.items():
                totals[key] = totals[key] + value.detach() / megabatch
            totals["g/total"] = totals["g/total"] + weighted.detach() / megabatch
            if keep_detached:
                detached.append(tensors.detached())
        for name in self.discriminators:
            self.train_only.apply(name, step)
        scalars.update(totals)
        return tensors, detached

    def _output_gradients_due(self, step: int) -> bool:
        every = self.output_gradient_every
        return every > 0 and step % every == 0

    def _output_gradient_norms(self, tensors: StepTensors, losses: Scalars) -> Scalars:
        """Each weighted term's gradient norm at the generator's outputs (the chunk's tensors
        that carry autograd history)."""
        outputs = [tensors[n] for n in tensors.names if _has_history(tensors[n])]
        weighted = {t.name: t.weight * losses[f"g/{t.name}"] for t in self.terms if t.weight}
        return output_gradient_norms(weighted, outputs) if outputs else {}

    def _discriminator_pass(
        self, name: str, chunks: list[StepTensors], step: int, judgements: list[Judgement]
    ) -> Scalars:
        """Forward and backward of discriminator ``name`` on the detached generator outputs."""
        megabatch = len(chunks)
        self.optimizers[name].zero_grad(set_to_none=True)
        totals: Scalars = defaultdict(lambda: torch.zeros((), device=self.device))
        which = self.discriminators.index(name)
        first_chunk = self.group.rank * megabatch  # this process's first chunk, counted globally
        noise_std = self.noise_std(step)
        for index, tensors in enumerate(chunks):
            rng = step_rng(self.seed, step, which, first_chunk + index)
            with self._no_sync(name, index == megabatch - 1):
                loss = torch.zeros((), device=self.device)
                for term in self.terms_of[name]:
                    with self.autocast():
                        term_loss, extra = term.discriminator_loss(
                            tensors, self.wrapped[name], rng, noise_std
                        )
                    term_loss = term_loss.float()
                    judged = term.judgement()
                    if judged is not None:
                        judgements.append(judged)
                    loss = loss + term_loss
                    regulariser, logged = term.discriminator_penalty(tensors, step)
                    if regulariser is not None:  # in float32: the term turns autocast off
                        loss = loss + regulariser
                    key = f"d/{term.name}"
                    totals[key] = totals[key] + term_loss.detach().float() / megabatch
                    for scalar, value in {**extra, **logged}.items():
                        totals[f"{key}/{scalar}"] = totals[f"{key}/{scalar}"] + value / megabatch
                self._backward(loss / megabatch)
        return totals

    # ------------------------------------------------------------------ the update

    def _gradient_norm(self, name: str) -> torch.Tensor:
        """Unscale (fp16) and clip ``name``'s gradients; their norm before clipping.

        The norm is computed every step (one cheap pass over the gradients) so that a NaN/Inf
        gradient behind finite losses is caught too.
        """
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizers[name])
        parameters = [p for p in self.networks[name].parameters() if p.grad is not None]
        clip = self.cfg.grad_clip
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        elif hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
            norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        else:
            norm = torch.nn.utils.clip_grad_norm_(parameters, math.inf)
        return norm.detach()

    def _all_finite(self, checked: Scalars) -> bool:
        """Whether every checked scalar of this step (on every process) is finite: one
        device sync per step instead of one per loss term and chunk."""
        if not checked:
            return True
        finite = torch.stack([v.detach().float().reshape(()) for v in checked.values()])
        finite = torch.isfinite(finite).all()
        if self.group.distributed:
            # Gradients are averaged across processes, so a NaN on one process reaches all.
            import torch.distributed as dist

            flag = finite.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = flag.bool()
        return bool(finite)

    def _update_if_finite(self, result: StepResult, updated: list[str]) -> None:
        """Step every optimizer that has gradients, or none when anything is non-finite."""
        norms = result.norms
        # Every loss term, and the gradient norms except under fp16, whose scaler handles
        # overflowing gradients itself (it skips those steps).
        checked = {k: v for k, v in result.scalars.items() if k.count("/") == 1}
        if self.scaler is None:
            checked.update(norms)
        if self._all_finite(checked):
            self.nonfinite.step_ok()
            for name in updated:
                if self.scaler is not None:
                    self.scaler.step(self.optimizers[name])
                else:
                    self.optimizers[name].step()
            if self.scaler is not None:
                self.scaler.update()
            result.updated = updated
            return
        for name in updated:
            self.optimizers[name].zero_grad(set_to_none=True)
        if self.scaler is not None and updated:
            self.scaler.update()  # the scaler was unscaled for this step; close it
        network_of = {key: key.split("/", 1)[1] for key in norms}
        for key in result.scalars:
            if key.startswith(("g/", "d/")):
                network_of[key] = self._network_of_loss(key)
        result.nonfinite = nonfinite_values(checked, network_of)
        result.verdict = self.nonfinite.verdict()

    def _network_of_loss(self, key: str) -> str:
        """The network a logged loss key belongs to: ``g/...`` the generator, ``d/<term>...``
        the discriminator that term trains."""
        if key.startswith("g/"):
            return "generator"
        term_name = key.split("/")[1]
        return next((t.discriminator for t in self.terms if t.name == term_name), "?")

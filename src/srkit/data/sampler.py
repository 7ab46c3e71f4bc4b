"""Deterministic, resumable, shardable training sample stream.

The data a training step sees is a pure function of ``(seed, step)``:

* epoch ``e`` visits the dataset in the order ``torch.randperm(n)`` drawn from a generator
  seeded with a value derived from ``(seed, e)``;
* the epochs' permutations are concatenated into one endless sequence of *positions*; the
  global batch of step ``s`` is positions ``[s * B, (s + 1) * B)`` (B = global batch size over
  all processes), so a batch may straddle an epoch boundary and no sample is ever dropped;
* each position ``p`` also gets a 63-bit ``sample_seed`` derived from ``(seed, p)``, which the
  dataset uses for its random crop and augmentation.

Consequences: resuming at step ``s`` (``start_step=s``) continues exactly where an
uninterrupted run would be; rank ``r`` of ``W`` processes takes the contiguous slice
``[r * B / W, (r + 1) * B / W)`` of each global batch, so the union over ranks is the
single-process batch; and the number of DataLoader workers cannot change anything, because the
randomness travels with the index instead of living in worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["TrainSampler", "derive_seed"]

# Domain tags keep the seeds derived for different purposes independent of each other.
_PERMUTATION_TAG = 0x5045524D  # "PERM"
_SAMPLE_TAG = 0x53414D50  # "SAMP"
_SEED_MASK = (1 << 63) - 1


def derive_seed(*words: int) -> int:
    """A 63-bit seed that is a pure function of the given non-negative integers."""
    state = np.random.SeedSequence([int(word) for word in words]).generate_state(2, np.uint64)
    return ((int(state[0]) << 32) ^ int(state[1])) & _SEED_MASK


class TrainSampler:
    """Endless batch sampler for ``DataLoader(dataset, batch_sampler=TrainSampler(...))``.

    Each yielded batch is this rank's list of ``(dataset_index, sample_seed)`` tuples, which
    :class:`srkit.data.datasets.SRDataset` accepts as item indices.

    Args:
        dataset_len: number of items in the dataset (>= 1).
        batch_size: the *global* batch size, summed over all ``world_size`` processes.
        seed: the run's seed (>= 0).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of processes sharing each global batch; must divide batch_size.
        start_step: first step to yield (resume); step ``s`` yields global batch ``s``.
    """

    def __init__(
        self,
        dataset_len: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if dataset_len < 1:
            raise ValueError(f"dataset_len must be at least 1, got {dataset_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(
                f"global batch_size {batch_size} is not divisible by world_size {world_size}"
            )
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if start_step < 0:
            raise ValueError(f"start_step must be non-negative, got {start_step}")
        self.dataset_len = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_step = start_step
        # Only the current epoch's permutation is kept; it is recomputed on demand, so the
        # sampler stays small to pickle and cheap to recreate on resume.
        self._epoch: int | None = None
        self._permutation: np.ndarray | None = None

    @property
    def local_batch_size(self) -> int:
        """Items per batch on this rank."""
        return self.batch_size // self.world_size

    def epoch_permutation(self, epoch: int) -> np.ndarray:
        """The dataset order of ``epoch`` (int64 array of length ``dataset_len``)."""
        if self._epoch != epoch or self._permutation is None:
            generator = torch.Generator()
            generator.manual_seed(derive_seed(self.seed, _PERMUTATION_TAG, epoch))
            self._permutation = torch.randperm(self.dataset_len, generator=generator).numpy()
            self._epoch = epoch
        return self._permutation

    def item(self, position: int) -> tuple[int, int]:
        """``(dataset_index, sample_seed)`` at a global position of the endless sequence."""
        epoch, offset = divmod(position, self.dataset_len)
        index = int(self.epoch_permutation(epoch)[offset])
        return index, derive_seed(self.seed, _SAMPLE_TAG, position)

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """The whole batch of ``step`` across all ranks."""
        first = step * self.batch_size
        return [self.item(position) for position in range(first, first + self.batch_size)]

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's share of the batch of ``step``."""
        first = step * self.batch_size + self.rank * self.local_batch_size
        return [self.item(position) for position in range(first, first + self.local_batch_size)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.batch(step)
            step += 1

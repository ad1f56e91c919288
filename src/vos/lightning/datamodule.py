"""The LightningDataModule: training clips and validation videos from `dataset=` sources."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vos.data.clips import ClipDataset, ResumableSampler
from vos.data.source import VideoSource
from vos.lightning.extra_eval import ExtraEval


def _rank_and_world(module: pl.LightningDataModule) -> tuple[int, int]:
    trainer = module.trainer
    return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)


class ResumableLoader(DataLoader):
    """The training batches of a whole run, whose position travels in the checkpoint.

    Lightning saves the ``state_dict`` of a training loader that has one and gives it back
    through ``load_state_dict`` before it iterates again (`CombinedLoader`'s stateful
    loaders), with its own loop counters restored to the same batch. The position is the number
    of batches the training loop has consumed: optimiser steps × gradient accumulation, read
    from the trainer when the checkpoint is written (a count of batches drawn from the loader
    would include the one Lightning prefetches). A resumed loader skips those batches; its
    length stays the whole run's, so the loop ends where an uninterrupted run ends."""

    def __init__(self, dataset, *, batch_size, rank, world_size, num_workers, trainer=None):
        sampler = ResumableSampler(len(dataset), rank, world_size)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            drop_last=True,
        )
        self.trainer = trainer

    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        steps = 0 if trainer is None else trainer.global_step * trainer.accumulate_grad_batches
        return {"batches_consumed": int(steps)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.skip = int(state["batches_consumed"]) * self.batch_size


class _VideoNames(Dataset):
    def __init__(self, names: list[str]):
        self.names = names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> str:
        return self.names[index]


class _RunDataModule(pl.LightningDataModule):
    """Training batches for the whole run, ``total_steps`` of them per rank (each rank its
    share of one deterministic sequence), resumable at any step (`ResumableLoader`)."""

    def __init__(self, train_source, eval_source, *, batch_size, num_workers, total_steps, seed):
        super().__init__()
        self.train_source = train_source
        self.eval_source = eval_source
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.total_steps = total_steps
        self.seed = seed

    def training_dataset(self, length: int) -> Dataset:
        """``length`` training items, deterministic by index."""
        raise NotImplementedError

    def train_dataloader(self) -> ResumableLoader:
        rank, world = _rank_and_world(self)
        return ResumableLoader(
            self.training_dataset(self.total_steps * self.batch_size * world),
            batch_size=self.batch_size,
            rank=rank,
            world_size=world,
            num_workers=self.num_workers,
            trainer=self.trainer,
        )


@dataclass(frozen=True)
class ValidationSet:
    """A split validation scores: the eval split (``prefix="val"``, ``extra=None``) or an
    entry of ``dataset.extra_eval`` (``extra/<name>``)."""

    prefix: str
    source: VideoSource
    extra: ExtraEval | None = None


class VOSDataModule(_RunDataModule):
    """Training clips; validation videos of the eval split (``eval_source``; None: not
    validated) and of each extra set, one loader per set in `validation_sets` order."""

    def __init__(
        self,
        train_source: VideoSource | None,
        eval_source: VideoSource | None,
        *,
        batch_size: int,
        num_workers: int,
        total_steps: int,
        clip: dict[str, Any],
        seed: int = 0,
        val_videos: int | None = None,
        with_flow: bool = False,
        extra_eval: Sequence[ExtraEval] = (),
    ):
        super().__init__(
            train_source,
            eval_source,
            batch_size=batch_size,
            num_workers=num_workers,
            total_steps=total_steps,
            seed=seed,
        )
        self.clip = dict(clip)
        self.val_videos = val_videos
        self.with_flow = with_flow
        self.extra_eval = list(extra_eval)

    def training_dataset(self, length: int) -> ClipDataset:
        return ClipDataset(
            self.train_source, length=length, seed=self.seed, with_flow=self.with_flow, **self.clip
        )

    def validation_sets(self) -> list[ValidationSet]:
        """What validation scores: the eval split (unless None), then the extra sets."""
        main = [] if self.eval_source is None else [ValidationSet("val", self.eval_source)]
        return main + [
            ValidationSet(extra.prefix, extra.source, extra) for extra in self.extra_eval
        ]

    def validation_videos(self, source: VideoSource | None = None) -> list[str]:
        """The videos validation runs on: of ``source``, by default the eval split's (none
        without an eval source); the first ``val_videos`` of them when that is set."""
        source = self.eval_source if source is None else source
        # no eval source (dataset.eval=null): no videos of it to validate on
        names = [] if source is None else source.videos()
        return names if self.val_videos is None else names[: self.val_videos]

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per validation set (`validation_sets`), one video per step; under DDP
        each rank takes every world-th video. The sampler pads the last round by repeating
        videos; JAndF scores each (video, object) once."""
        rank, world = _rank_and_world(self)
        loaders = []
        for validation_set in self.validation_sets():
            videos = _VideoNames(self.validation_videos(validation_set.source))
            sampler = (
                DistributedSampler(videos, num_replicas=world, rank=rank, shuffle=False)
                if world > 1
                else None
            )
            loaders.append(DataLoader(videos, batch_size=None, sampler=sampler, num_workers=0))
        return loaders


class FlowDataModule(_RunDataModule):
    """Frame pairs with ground-truth backward flow, for training a flow network on its own
    (``python -m vos.train_flow``); resumable like `VOSDataModule`."""

    def __init__(
        self,
        train_source: VideoSource,
        eval_source: VideoSource,
        *,
        batch_size: int,
        num_workers: int,
        total_steps: int,
        seed: int = 0,
        crop: list[int] | None = None,
        val_pairs: int = 64,
        max_skip: int = 1,
    ):
        super().__init__(
            train_source,
            eval_source,
            batch_size=batch_size,
            num_workers=num_workers,
            total_steps=total_steps,
            seed=seed,
        )
        self.crop = crop
        self.val_pairs = val_pairs
        self.max_skip = max_skip

    def training_dataset(self, length: int) -> Dataset:
        from vos.data.flow_pairs import FlowPairDataset

        return FlowPairDataset(
            self.train_source, length=length, seed=self.seed, crop=self.crop, max_skip=self.max_skip
        )

    def val_dataloader(self) -> DataLoader:
        from vos.data.flow_pairs import FlowPairDataset

        # a fixed set of whole-frame adjacent pairs from the eval split (the pairs RMNet warps
        # with at inference): the EPE is comparable across runs. Not split under DDP: every
        # rank scores all pairs with the same weights, so every rank logs the same EPE
        dataset = FlowPairDataset(
            self.eval_source, length=self.val_pairs, seed=self.seed + 1, flip_prob=0.0
        )
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=0)

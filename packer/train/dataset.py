"""``PackedDataset``: a torch ``IterableDataset`` over a ``packer build`` output: which rows each
rank and DataLoader worker reads, in which order, and where a resumed run picks up.

Each epoch has one global order (a permutation seeded by ``(seed, epoch)``, the same on every rank).
Rank ``r`` of ``R`` takes every ``R``-th row of it from ``r``; the rank's DataLoader workers are dealt
whole batches of its rows in turn, and the DataLoader takes their batches in the same turn, so the
rank sees its rows in order whatever ``num_workers`` is. Ten rows, ``world_size=2``, ``batch_size=2``,
two workers::

    epoch order          : 7 2 9 0 4 1 8 3 6 5
    rank 0 (rows 0, 2..) : 7 9 4 8 6
    worker 0 / worker 1  : [7 9] [6]  /  [4 8]
    rank 0's batches     : [7 9] [4 8] [6]
    resume (rows_seen=4) : [6]
    on 3 ranks, from 2   : the rows neither rank consumed, dealt to the 3 (packer.train.resume)

Reading the rows is :mod:`packer.train.rows`' job, making each into tensors :mod:`packer.train.items`'.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..output import roles as R
from ..output.layout import SUPPORTED_VERSIONS, MissingShardError, ShardError, read_manifest, split_shards
from ..output.shards import mask_column
from .items import IGNORE_INDEX, NORMALIZE_MODES, ItemSpec, make_item
from .resume import is_loader_state, loader_position, merge, rest_of_epoch, rows_left, share_sizes
from .rows import ShardReader, check_shards, open_root

__all__ = ["IGNORE_INDEX", "SUPPORTED_VERSIONS", "MissingShardError", "PackedDataset", "ShardError"]

#: DataLoader worker ids that get their own "resume consumed" flag in shared memory (see _take_resume)
_WORKER_SLOTS = 1024
#: shared memory: [epoch, passes begun, one flag per worker slot]
_EPOCH, _PASSES, _SLOT0 = 0, 1, 2


@dataclass
class _Progress:
    """Where this process's current pass stands (for ``state_dict``)."""

    epoch: int
    rows_skipped: int  # rank rows skipped at the start (a resume)
    worker_skipped: int  # rows of this worker's own stream skipped (a StatefulDataLoader resume)
    yielded: int  # items yielded since
    worker: tuple[int, int] | None  # (id, num_workers) inside a DataLoader worker
    deal: tuple[tuple, int] = ((), 0)  # (earlier deals of the epoch, rows_seen the deal began at): see resume.py


def _deal_of(state: Mapping[str, Any]) -> tuple[tuple, int]:
    """(earlier deals, the rows_seen this deal began at) of a state; ((), 0) for a plain one."""
    return tuple(state.get("earlier_deals", ())), int(state.get("deal_start", 0))


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return rank, world_size


class PackedDataset(IterableDataset):
    """Packed rows of a ``packer build`` output as dicts of tensors, for ``torch.utils.data.DataLoader``.

    ::

        ds = PackedDataset("shards/", strategy="instruction_modelling", seed=0, batch_size=8)
        dl = DataLoader(ds, batch_size=8, num_workers=4, collate_fn=collate_docs)  # + build_attention_mask

    Items (one packed row of ``T`` tokens and ``D`` documents; :mod:`packer.train.items` draws one):

    - ``input_ids`` int64 [T]; ``labels`` int64 [T]: the token where the strategy puts loss, else -100,
      and -100 at the first token of each document; NOT shifted (the model shifts, as in HF);
    - ``position_ids`` int64 [T]: 0, 1, ... restarting at each document; ``seq_lens`` int32 [D];
    - ``loss_weights`` float32 [T], only with ``prompt_loss_weight`` or ``normalize``;
    - ``doc_ids`` int64 [D], only with ``return_doc_ids=True``: each document's record index;
    - ``branch`` uint8 [T], rows of a preference-pair build only (0 a pair's shared prefix, 1 chosen, 2
      rejected; ``seq_lens`` then has one entry per pair, and a rejected suffix's ``position_ids`` continue its
      prefix): collate with :func:`packer.train.pairs.pair_collator`;
    - ``doc_labels`` bool [D], rows of a KTO build only: each document's label (True: desirable).

    Args:
        output: the output directory: a local path, a ``file://`` URI or any URI pyarrow's
            ``FileSystem.from_uri`` understands (``s3://...``), or a path within ``filesystem``.
        strategy: the name of a strategy of the manifest (``ds.strategies``; its ``mask_<name>`` column is
            read), or a collection of role names, the mask then computed from ``roles`` (``last_turn``
            is only available by name). Under every strategy but ``full``, role sets included, tokens of
            messages marked untrained (``"weight": 0`` / ``"training": false``; the shards' ``trainable``
            column) get no label and no weight; the content of a message other than the assistant's
            marked ``"training": true`` (the ``forced`` column, format version 3) gets loss under every
            strategy, role sets included.
        shuffle: shuffle the global row order with a permutation seeded by ``(seed, epoch)``;
            ``False`` reads the rows in shard order.
        seed: the shuffle seed; the same on every rank.
        rank, world_size: this process's share; by default from ``torch.distributed`` when it is
            initialised, else a single process. Row ``i`` of the epoch's order goes to rank
            ``i % world_size``.
        drop_uneven: drop the last ``num_rows % world_size`` rows of each epoch's order so every rank
            gets the same number of rows (different rows each epoch when shuffling) and no rank waits
            for another at the end of an epoch. Without it the first ranks may get one row more.
        batch_size: the DataLoader's ``batch_size``. Workers are dealt whole batches of the rank's row
            order in turn (worker ``w`` gets batches ``w, w + W, ...``), which the DataLoader takes
            from them in the same turn, so it yields exactly the rank's order whatever ``num_workers``
            is. Resuming from ``rows_seen`` relies on it; with a different value every row is still
            read once per epoch, only the order across workers differs.
        prompt_loss_weight: ``w`` in [0, 1]: adds ``loss_weights`` in which prompt tokens (roles
            system, instruction, input) weigh ``w`` whatever the strategy says, other tokens with loss
            under the strategy weigh 1 and the rest 0; prompt tokens of a message marked
            ``"training": true`` weigh 1, as a response does. With ``instruction_tuning``, ``w = 0`` is
            instruction tuning and ``w = 1`` is ``boilerplate_masked`` (instruction modelling without
            the template's fixed prose); between, it interpolates.
        normalize: ``"sequence"``: adds ``loss_weights`` divided by each document's total, so each
            document with loss sums to 1 and weighs the same however long it is, as in the per-example
            mean of unpacked training. ``None``: weights are not normalised.
        verify: also check each shard's sha256 against the manifest (reads every byte once).
        filesystem: a ``pyarrow.fs.FileSystem`` in which ``output`` is a path.
        return_doc_ids: add ``doc_ids`` to each item.
        split: ``"train"`` (the output's rows to train on) or ``"eval"``: the held-out rows of an output
            built with ``--eval-fraction``/``--eval-records`` (no document is in both); ``ShardError`` if
            it has none. For evaluation, ``shuffle=False`` reads them in shard order.

    Errors: a missing manifest or shard raises :class:`MissingShardError`; a manifest of another format or
    version, a shard whose size (or, with ``verify``, sha256) differs from the manifest, raise
    :class:`ShardError`; both name the file. An unknown strategy raises ``ValueError`` listing the known.

    **Loss in a training step.** Labels are unshifted, so logits at ``t`` predict the label at ``t + 1``::

        weights = batch.pop("loss_weights")              # [B, T]; 0 at padding
        labels = batch.pop("labels")                      # or the model computes its own unweighted loss
        logits = model(**batch).logits                    # [B, T, V]
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                    reduction="none", ignore_index=-100)
        w = weights[:, 1:].flatten()
        loss = (per_token * w).sum() / w.sum()   # = packer.train.collate.weighted_loss(logits, labels, weights)

    In a weighted item ``labels`` is a :class:`packer.train.collate.WeightedLabels`: it raises
    ``LossWeightsIgnored`` in an unweighted loss (the model's own, a stock HF ``Trainer`` dropping the
    weights), so the weights are never ignored silently. With the HF Trainer use :mod:`packer.train.hf`.

    With ``normalize="sequence"`` every document with loss contributes weights summing to 1, so ``w.sum()``
    is the number of such documents and ``loss`` is the mean of the per-document mean losses (what
    unpacked training with a per-example mean computes). Without it, ``loss`` is the weighted token
    mean. Over gradient accumulation or DDP, divide by the sum of ``w`` over all micro-batches and ranks
    instead. Without ``loss_weights``, HF's own ``model(**batch, labels=...)`` loss is the token mean.

    **Epochs and resuming.** Call ``set_epoch(epoch)`` before each epoch (it reaches persistent workers
    too). Checkpoint with ``ds.state_dict(rows_seen=n)``, ``n`` the rows of this rank the trainer has
    consumed since the epoch began (resumed ones included); restore with ``ds.load_state_dict(state)``
    before the DataLoader starts its workers. The next pass over that epoch then skips the rank's first
    ``n`` rows and yields exactly what an uninterrupted run would have, provided ``batch_size`` here is
    the DataLoader's and it keeps its default ``in_order=True``; ``num_workers`` may differ on resume.
    Mid-epoch every batch is full, so ``n`` is ``batch_size`` times the batches taken this epoch::

        ds = PackedDataset("shards/", batch_size=8)
        dl = DataLoader(ds, batch_size=8, num_workers=4, collate_fn=collate)
        start_epoch, seen = 0, 0
        if ckpt:
            ds.load_state_dict(ckpt["data"])                # or every rank's: see below
            start_epoch, seen = ds.epoch, ds.state_dict()["rows_seen"]
        for epoch in range(start_epoch, epochs):
            ds.set_epoch(epoch)
            for batch in dl:
                seen += 8                                   # rows in this batch
                ...                                         # the step
                if time_to_save:
                    save({"data": ds.state_dict(rows_seen=seen), ...})
            seen = 0

    The state is a small dict of ints, bools and lists (JSON-safe). With ``num_workers=0``, ``state_dict()``
    without ``rows_seen`` counts the items yielded itself. torchdata's ``StatefulDataLoader`` needs none
    of this: it calls ``state_dict``/``load_state_dict`` inside its workers (each state then also holds
    that worker's position under ``"worker"``, and must be restored with the same ``num_workers``).

    **Resuming on another number of ranks.** A rank's ``rows_seen`` says which rows it consumed (the
    first ``n`` of its share), so the states of all ``W`` ranks say which rows of the epoch are gone, and
    ``load_state_dict`` on ``W'`` ranks deals the rest, in epoch order, to them (``rest[rank::W']``, trimmed
    under ``drop_uneven``); every row of the epoch is read once, ``num_workers`` may change, and the
    next epoch is dealt as usual. Give it the list of every rank's states, or one state saved with
    ``state_dict(rows_seen=n, synchronous=True)`` (each rank consumed the same ``n``: a DDP loop taking
    one full batch per step), or one state and ``synchronous=True``. A single state of one of ``W > 1``
    ranks without that is refused: it cannot tell what the other ranks consumed. After the load, go on
    counting from ``ds.state_dict()["rows_seen"]`` (the loaded ``rows_seen`` for one state);
    :mod:`packer.train.resume` has the details.
    """

    def __init__(
        self,
        output: str | os.PathLike,
        strategy: str | Collection[str] = "instruction_tuning",
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_uneven: bool = False,
        batch_size: int = 1,
        prompt_loss_weight: float | None = None,
        normalize: str | None = None,
        verify: bool = False,
        filesystem: pafs.FileSystem | None = None,
        return_doc_ids: bool = False,
        split: str = "train",
    ) -> None:
        super().__init__()
        self._fs, self._root = open_root(output, filesystem)
        self.manifest: dict = read_manifest(self._root, self._fs)
        self.split = split
        self._shards: list[dict] = split_shards(self.manifest, split, self._root)
        self.strategies: list[str] = list(self.manifest["strategies"])
        self.strategy: str | frozenset[str] = self._resolve_strategy(strategy)
        if prompt_loss_weight is not None and not 0.0 <= float(prompt_loss_weight) <= 1.0:
            raise ValueError(f"prompt_loss_weight {prompt_loss_weight} is not in [0, 1]")
        if normalize is not None and normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize {normalize!r} is not one of None, {', '.join(map(repr, NORMALIZE_MODES))}")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} is not >= 1")
        check_shards(self._fs, self._root, self._shards, verify)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.drop_uneven = bool(drop_uneven)
        self.batch_size = int(batch_size)
        self._spec = ItemSpec(
            role_lut=None if isinstance(self.strategy, str) else R.role_lut(self.strategy),
            prompt_lut=R.role_lut(R.PROMPT_ROLES),
            prompt_loss_weight=None if prompt_loss_weight is None else float(prompt_loss_weight),
            normalize=normalize,
            return_doc_ids=bool(return_doc_ids),
            flagged=self.strategy not in R.UNFLAGGED_STRATEGIES,
        )
        # [epoch, passes begun, consumed flag per worker] in shared memory: a DataLoader's workers hold
        # copies of the dataset, and persistent ones would otherwise never see set_epoch
        self._shared = torch.zeros(_SLOT0 + _WORKER_SLOTS, dtype=torch.int64).share_memory_()
        self._resume: dict | None = None
        self._resume_pass = 0  # passes begun when the state was loaded: the next one resumes
        self._progress: _Progress | None = None
        self._reader: ShardReader | None = None
        self._reader_pid = -1

    def _resolve_strategy(self, strategy: str | Collection[str]) -> str | frozenset[str]:
        if isinstance(strategy, str):
            if strategy not in self.manifest["strategies"]:
                raise ValueError(
                    f"unknown strategy {strategy!r}; this output has {', '.join(self.strategies)} "
                    f"(or give a set of roles: {', '.join(R.ROLES)})"
                )
            return strategy
        roles = frozenset(strategy)
        if not roles:
            raise ValueError("the strategy names no role")
        R.role_codes(sorted(roles))  # ValueError naming an unknown role
        return roles

    # -- sizes ---------------------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        """Rows in the whole split (all ranks)."""
        return sum(int(s["rows"]) for s in self._shards)

    def __len__(self) -> int:
        """Rows this rank reads per epoch."""
        n = self.num_rows
        if self.drop_uneven:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    # -- order ---------------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._shared[_EPOCH])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next pass reads (the shuffle changes per epoch)."""
        self._shared[_EPOCH] = int(epoch)
        if self._progress is not None and self._progress.epoch != epoch:
            self._progress = None

    def rank_rows(self, epoch: int | None = None) -> np.ndarray:
        """Global row indices this rank reads in ``epoch`` (default: the current one), in order."""
        return self._deal_rows(self.epoch if epoch is None else epoch, ())

    def _deal_rows(self, epoch: int, earlier: Collection[Mapping[str, Any]]) -> np.ndarray:
        """This rank's rows of ``epoch`` in a deal of what the ``earlier`` deals (resume.py) left."""
        n = self.num_rows
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        order = rest_of_epoch(order, list(earlier))
        if self.drop_uneven:
            order = order[: len(order) - len(order) % self.world_size]
        return order[self.rank :: self.world_size]

    def _deal_size(self, earlier: Collection[Mapping[str, Any]]) -> int:
        """``len(self._deal_rows(epoch, earlier))``, from the sizes alone."""
        return share_sizes(rows_left(self.num_rows, list(earlier)), self.world_size, self.drop_uneven)[self.rank]

    def _worker_rows(self, rows: np.ndarray, worker: int, num_workers: int) -> np.ndarray:
        if num_workers == 1:
            return rows
        batch = np.arange(len(rows)) // self.batch_size
        return rows[batch % num_workers == worker]

    # -- iteration -----------------------------------------------------------------------------------

    def _get_reader(self) -> ShardReader:
        # opened per process: memory maps and file handles are never pickled into workers
        if self._reader is None or self._reader_pid != os.getpid():
            mask = mask_column(self.strategy) if isinstance(self.strategy, str) else None
            # the trainable column matters where labels or weights come from roles, not a mask column
            spec = self._spec
            trainable = spec.flagged and (spec.role_lut is not None or spec.prompt_loss_weight is not None)
            # so does the forced column (a mask column has the forced tokens' loss already)
            forced = spec.role_lut is not None or spec.prompt_loss_weight is not None
            self._reader = ShardReader(self._fs, self._root, self._shards, mask, trainable, forced)
            self._reader_pid = os.getpid()
        return self._reader

    def _take_resume(self, epoch: int, worker: tuple[int, int] | None) -> dict | None:
        """The loaded state this pass resumes from, used once.

        In-process, "once" is clearing the attribute. DataLoader workers hold copies, made anew for
        each pass unless persistent, so each worker marks its slot in shared memory instead;
        ``load_state_dict`` clears the slots.
        """
        r = self._resume
        if r is None:
            return None
        if "worker" in r:
            # a StatefulDataLoader worker state: the loader decided this pass resumes; its epoch rules
            self._resume = None
            return r
        if r["epoch"] != epoch:
            return None
        if worker is None:
            self._resume = None
            return r
        slot = _SLOT0 + worker[0]
        if slot < len(self._shared):
            if int(self._shared[slot]):
                return None
            self._shared[slot] = 1
        self._resume = None
        return r

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker = (info.id, info.num_workers) if info is not None else None
        if worker is None or worker[0] == 0:
            self._shared[_PASSES] += 1
        epoch = self.epoch
        resume = self._take_resume(epoch, worker)
        rows_skipped = worker_skipped = 0
        deal: tuple[tuple, int] = ((), 0)
        if resume is not None:
            epoch = int(resume["epoch"])
            deal = _deal_of(resume)
            rows_skipped = int(resume["rows_seen"]) - deal[1]
            worker_skipped = int(resume.get("worker", {}).get("rows", 0))
        rows = self._deal_rows(epoch, deal[0])[rows_skipped:]
        if worker is not None:
            rows = self._worker_rows(rows, *worker)
        rows = rows[worker_skipped:]
        progress = _Progress(epoch, rows_skipped, worker_skipped, 0, worker, deal)
        self._progress = progress
        reader = self._get_reader()
        for g in rows.tolist():
            item = make_item(reader.row(g), self._spec)
            # counted before the yield: a generator suspended at `yield` has handed the item over,
            # and StatefulDataLoader asks for the state right after taking a batch's items
            progress.yielded += 1
            yield item

    # -- checkpointing -------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_rows": self.num_rows,
            "rank": self.rank,
            "world_size": self.world_size,
            "drop_uneven": self.drop_uneven,
            "batch_size": self.batch_size,
        }

    def _current_deal(self) -> tuple[tuple, int]:
        """The deal of the pass a state describes: the one this process reads, else the loaded resume's
        until its pass is over (DataLoader workers read it; this process only loaded it)."""
        if self._progress is not None:
            return self._progress.deal
        r = self._resume
        if r is not None and r["epoch"] == self.epoch and int(self._shared[_PASSES]) <= self._resume_pass + 1:
            return _deal_of(r)
        return (), 0

    def state_dict(self, rows_seen: int | None = None, *, synchronous: bool = False) -> dict[str, Any]:
        """The position to resume from: ``{"epoch", "rows_seen", ...}`` (plain ints, bools and lists).

        ``rows_seen``: rows of this rank consumed since the epoch began. Without it, the rows this
        process has yielded in the current pass are counted: exact with ``num_workers=0`` (and inside
        StatefulDataLoader workers, which then add their own position under ``"worker"``), but a
        dataset iterated by DataLoader workers sees none of their progress: pass ``rows_seen`` then.
        After a resume on other ranks the count goes on from ``ds.state_dict()["rows_seen"]`` read right
        after ``load_state_dict`` (the loaded ``rows_seen`` when one state was loaded).

        ``synchronous=True`` records that every rank has consumed the same ``rows_seen`` (one synchronous
        step per batch, as DDP's): this one state then resumes every rank of another world size.
        """
        state: dict[str, Any] = {"epoch": self.epoch, "rows_seen": 0}
        p = self._progress
        earlier, start = self._current_deal()
        if rows_seen is not None:
            size = self._deal_size(earlier)
            if not start <= rows_seen <= start + size:
                raise ValueError(f"rows_seen {rows_seen} is not in [{start}, {start + size}] (rows of this rank)")
            state["rows_seen"] = int(rows_seen)
        elif p is not None and p.worker is None:
            state.update(epoch=p.epoch, rows_seen=start + p.rows_skipped + p.yielded)
        elif p is not None and p.worker is not None:
            state.update(epoch=p.epoch, rows_seen=start + p.rows_skipped)
            state["worker"] = {"id": p.worker[0], "num_workers": p.worker[1], "rows": p.worker_skipped + p.yielded}
        elif self._resume is not None:
            return {**self._resume, "synchronous": bool(synchronous or self._resume.get("synchronous", False))}
        state.update(self._identity())
        if earlier or start:
            state.update(earlier_deals=list(earlier), deal_start=start)
        state["synchronous"] = bool(synchronous)
        return state

    def load_state_dict(
        self, state: Mapping[str, Any] | Sequence[Mapping[str, Any]], *, synchronous: bool = False
    ) -> None:
        """Resume the epoch of ``state`` from its position on the next pass (sets the epoch too).

        ``state``: this rank's own state (same ``rank`` and ``world_size``), or, to resume on another
        number of ranks (or on ranks other than those that saved), the list of every rank's states, or
        one state saved with ``synchronous=True`` (or loaded with ``synchronous=True``: every rank had
        consumed the same rows). torchdata ``StatefulDataLoader.state_dict()`` results are accepted
        for either. The rows no rank consumed are then dealt to the ranks here in epoch order::

            ds = PackedDataset("shards/", rank=rank, world_size=3, batch_size=8)
            ds.load_state_dict(ckpt_of_rank_0["data"])           # saved with synchronous=True on 2 ranks
            ds.load_state_dict([c["data"] for c in ckpts])        # or every rank's, in any order
        """
        info = get_worker_info()
        states = [state] if isinstance(state, Mapping) else list(state)
        if info is None:
            states = [loader_position(s) if is_loader_state(s) else dict(s) for s in states]
        for s in states:
            for key in ("epoch", "rows_seen"):
                if key not in s:
                    raise ValueError(f"not a PackedDataset state: no {key!r}")
        one = dict(states[0]) if len(states) == 1 else {}
        if one and (one.get("rank", self.rank), one.get("world_size", self.world_size)) == (self.rank, self.world_size):
            resume = self._checked_own(one, info)
        elif info is not None:
            raise ValueError(
                f"a state of rank {one.get('rank')} of world_size={one.get('world_size')} loaded in a DataLoader "
                f"worker of rank {self.rank} of world_size={self.world_size}: to resume on other ranks, give every "
                "rank's StatefulDataLoader.state_dict() to ds.load_state_dict (a list) and start a fresh loader"
            )
        else:
            resume = merge(states, self._identity(), synchronous)  # checks the states, deals what is left anew
            if all(int(s["world_size"]) == self.world_size for s in states):
                # the same number of ranks: each goes on in the deal it was in (as from its own state), so the
                # ranks' next states describe the epoch alike and load together again (a list) on any ranks
                own = states[0] if len(states) == 1 else next(s for s in states if int(s["rank"]) == self.rank)
                resume = self._checked_own({**own, "rank": self.rank}, info)
        self._resume = resume
        self._progress = None
        if info is None:
            self._shared[_EPOCH] = int(resume["epoch"])
            self._shared[_SLOT0:] = 0
            self._resume_pass = int(self._shared[_PASSES])
        elif _SLOT0 + info.id < len(self._shared):
            self._shared[_SLOT0 + info.id] = 0

    def _checked_own(self, state: dict[str, Any], info: Any) -> dict[str, Any]:
        """``state`` if this rank can resume from it in the deal it was saved in (ValueError if not)."""
        for key, value in self._identity().items():
            if key == "batch_size" and "worker" not in state:
                continue  # a rank-level position does not depend on how rows were dealt to workers
            if key in state and state[key] != value:
                raise ValueError(f"state was saved with {key}={state[key]!r}, this dataset has {key}={value!r}")
        earlier, start = _deal_of(state)
        size = self._deal_size(earlier)
        if not start <= int(state["rows_seen"]) <= start + size:
            raise ValueError(f"rows_seen {state['rows_seen']} is not in [{start}, {start + size}] (rows of this rank)")
        if "worker" in state:
            w = state["worker"]
            if info is None:
                raise ValueError(
                    "this state is one DataLoader worker's (saved by torchdata's StatefulDataLoader); "
                    "restore it with StatefulDataLoader.load_state_dict"
                )
            if (w["id"], w["num_workers"]) != (info.id, info.num_workers):
                raise ValueError(
                    f"state of worker {w['id']} of {w['num_workers']} loaded into worker {info.id} of "
                    f"{info.num_workers}: resume with the same num_workers"
                )
        return state

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = None  # memory maps and file handles stay in the process that opened them
        state["_reader_pid"] = -1
        state["_progress"] = None
        return state

    def __repr__(self) -> str:
        return (
            f"PackedDataset({self._root!r}, split={self.split!r}, strategy={self.strategy!r}, rows={self.num_rows}, "
            f"rank={self.rank}/{self.world_size}, shuffle={self.shuffle}, seed={self.seed})"
        )

"""Where a resumed epoch of :class:`packer.train.dataset.PackedDataset` picks up, on the same ranks or on
another number of them (an elastic resume). Plain dicts and numpy, no torch.

An epoch's rows are *dealt* to ``W`` ranks: rank ``r`` reads ``order[r::W]`` of what is left (trimmed to a
multiple of ``W`` under ``drop_uneven``), and a rank that has consumed ``k`` rows has consumed exactly the
first ``k`` of its share (the DataLoader yields the rank's order whatever ``num_workers`` is). So a deal's
``W`` and every rank's ``k`` say which rows are gone. A resume on other ranks (or from other ranks'
states) starts a new deal of the rows left, in epoch order; a state records the deals before its own
under ``"earlier_deals"`` and the ``rows_seen`` its deal started from under ``"deal_start"``::

    order (10 rows)          : 7 2 9 0 4 1 8 3 6 5
    W=2, both ranks at k=2   : rank 0 read 7 9, rank 1 read 2 0 -> left 4 1 8 3 6 5
    W'=3 deals the rest      : rank 0: 4 3, rank 1: 1 6, rank 2: 8 5
    W=2 at k=(2, 1)          : gone 7 9 2 -> left 0 4 1 8 3 6 5 -> W'=3: 0 8 5 / 4 3 / 1 6
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: what makes two states positions in the same epoch order (rank and world_size say how it was dealt)
ORDER_KEYS = ("split", "seed", "shuffle", "num_rows", "drop_uneven")


def share_sizes(left: int, world_size: int, drop_uneven: bool) -> list[int]:
    """Rows each of ``world_size`` ranks gets when ``left`` rows are dealt: ``share_sizes(7, 3, False)``
    is ``[3, 2, 2]``, with ``drop_uneven`` ``[2, 2, 2]``."""
    dealt = left - left % world_size if drop_uneven else left
    return [len(range(r, dealt, world_size)) for r in range(world_size)]


def rows_left(num_rows: int, deals: Sequence[Mapping[str, Any]]) -> int:
    """Rows of the epoch not consumed in ``deals``."""
    return num_rows - sum(sum(d["rows_seen"]) for d in deals)


def rest_of_epoch(order: np.ndarray, deals: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The rows of the epoch's ``order`` that ``deals`` left, in epoch order (``drop_uneven`` only trims the
    end of a deal's rows, so it does not move a rank's first ``k``).

    ``rest_of_epoch(np.arange(10), [{"world_size": 2, "rows_seen": [2, 1]}])`` is ``[3, 4, ..., 9]``
    (rank 0 read rows 0 and 2, rank 1 row 1).
    """
    for deal in deals:
        w = int(deal["world_size"])
        keep = np.ones(len(order), dtype=bool)
        for r, k in enumerate(deal["rows_seen"]):
            keep[r : r + w * int(k) : w] = False  # rank r's first k rows: positions r, r + w, ...
        order = order[keep]
    return order


def _describe(state: Mapping[str, Any]) -> str:
    return f"rank {state.get('rank', '?')} of world_size={state.get('world_size', '?')}"


def _check_order(state: Mapping[str, Any], mine: Mapping[str, Any]) -> None:
    for key in ("epoch", "rows_seen", "rank", "world_size"):
        if key not in state:
            raise ValueError(f"not a PackedDataset state (or one too old to resume on other ranks): no {key!r}")
    if "worker" in state:
        raise ValueError(
            f"the state of {_describe(state)} is one DataLoader worker's: pass the StatefulDataLoader's own "
            "state_dict() (every worker's position), not a worker's"
        )
    for key in ORDER_KEYS:
        if key in state and state[key] != mine[key]:
            raise ValueError(
                f"the state of {_describe(state)} was saved with {key}={state[key]!r}, "
                f"this dataset has {key}={mine[key]!r}"
            )


def _same(states: Sequence[Mapping[str, Any]], key: str, default: Any) -> Any:
    values = [s.get(key, default) for s in states]
    if any(v != values[0] for v in values):
        pairs = ", ".join(f"{_describe(s)}: {v!r}" for s, v in zip(states, values, strict=True))
        raise ValueError(f"the states are not of one checkpoint: they differ in {key} ({pairs})")
    return values[0]


def _counts(states: Sequence[Mapping[str, Any]], world_size: int, start: int, synchronous: bool,
            here: str) -> list[int]:
    """Rows each rank of the states' deal consumed, one state per rank or one synchronous state."""
    if len(states) == 1 and world_size > 1:
        if not (synchronous or states[0].get("synchronous", False)):
            raise ValueError(
                f"this is the state of {_describe(states[0])}, and this dataset is {here}: a resume on other "
                f"ranks needs every rank's position. Pass the list of all {world_size} ranks' states "
                f"(ds.load_state_dict([state_0, ..., state_{world_size - 1}])); when every rank consumed the same "
                "rows (one synchronous step per batch), save with ds.state_dict(rows_seen=n, synchronous=True) "
                "or load with ds.load_state_dict(state, synchronous=True)"
            )
        return [int(states[0]["rows_seen"]) - start] * world_size
    ranks = [int(s["rank"]) for s in states]
    missing = sorted(set(range(world_size)) - set(ranks))
    problems = [f"missing ranks {missing}"] if missing else []
    problems += [f"rank {r} given {ranks.count(r)} times" for r in sorted(set(ranks)) if ranks.count(r) > 1]
    problems += [f"rank {r} is not in [0, {world_size})" for r in sorted(set(ranks)) if not 0 <= r < world_size]
    if problems:
        raise ValueError(f"the states must be every rank's of world_size={world_size}, once each: "
                         f"{'; '.join(problems)}")
    by_rank = {int(s["rank"]): int(s["rows_seen"]) - start for s in states}
    return [by_rank[r] for r in range(world_size)]


def merge(states: Sequence[Mapping[str, Any]], mine: Mapping[str, Any], synchronous: bool = False) -> dict[str, Any]:
    """The position a dataset of identity ``mine`` resumes from after ``states`` (one synchronous state,
    or every rank's) of a deal on other ranks: a new deal of the rows left.

    ``merge([{"epoch": 0, "rows_seen": 3, "rank": 0, "world_size": 2, "synchronous": True, ...}], mine)``
    (10 rows) is ``{"epoch": 0, "rows_seen": 3, "deal_start": 3, "earlier_deals": [{"world_size": 2,
    "rows_seen": [3, 3]}], ...mine}``: the new deal is of the last 4 rows of the epoch order.
    """
    if not states:
        raise ValueError("no state to resume from")
    for state in states:
        _check_order(state, mine)
    world_size = int(_same(states, "world_size", None))
    epoch = int(_same(states, "epoch", None))
    deals = list(_same(states, "earlier_deals", []))
    start = int(_same(states, "deal_start", 0))
    here = f"rank {mine['rank']} of world_size={mine['world_size']}"
    counts = _counts(states, world_size, start, synchronous, here)
    sizes = share_sizes(rows_left(int(mine["num_rows"]), deals), world_size, bool(mine["drop_uneven"]))
    for r, (k, size) in enumerate(zip(counts, sizes, strict=True)):
        if not 0 <= k <= size:
            if len(states) == 1:
                raise ValueError(
                    f"synchronous rows_seen {k + start} is not in [{start}, {start + size}], the rows rank {r} of "
                    f"world_size={world_size} had: the ranks cannot all have consumed as many; pass every rank's state"
                )
            raise ValueError(
                f"rows_seen {k + start} of rank {r} of world_size={world_size} is not in [{start}, {start + size}] "
                "(the rows it had)"
            )
    if any(counts):  # a deal of which nothing was consumed leaves the order as it was
        deals.append({"world_size": world_size, "rows_seen": counts})
    rows_seen = start + min(counts)
    return {**mine, "epoch": epoch, "rows_seen": rows_seen, "earlier_deals": deals, "deal_start": rows_seen,
            "synchronous": False}


def is_loader_state(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is a torchdata ``StatefulDataLoader.state_dict()`` (not a dataset's)."""
    return "_snapshot" in state or "dataset_state" in state


def loader_position(state: Mapping[str, Any]) -> dict[str, Any]:
    """The rank's position in a ``StatefulDataLoader.state_dict()`` over a ``PackedDataset``, as a state of
    the dataset: the rows the workers' snapshots count (each worker reads whole batches in turn, so
    together they are a prefix of the rank's rows), plus the batches taken since the last snapshot.
    """
    if "dataset_state" in state:  # num_workers=0: the dataset counted in the loader's process
        ds = state["dataset_state"]
        if not isinstance(ds, Mapping) or "rows_seen" not in ds:
            raise ValueError("this StatefulDataLoader state holds no PackedDataset state")
        return dict(ds)
    snapshot = state["_snapshot"]
    workers = snapshot.get("_worker_snapshots", {})
    expected = snapshot.get("_main_snapshot", {}).get("_num_workers", len(workers))
    found = [w.get("dataset_state") for w in workers.values()]
    if len(found) != expected or not all(isinstance(w, Mapping) and "rows_seen" in w for w in found):
        raise ValueError(
            f"this StatefulDataLoader state holds {len(found)} PackedDataset worker states of {expected} workers"
        )
    base = {k: v for k, v in found[0].items() if k != "worker"}
    _same(found, "rows_seen", 0)
    _same(found, "epoch", 0)
    start = int(base.get("deal_start", 0))
    size = share_sizes(
        rows_left(int(base["num_rows"]), base.get("earlier_deals", [])), int(base["world_size"]),
        bool(base["drop_uneven"]),
    )[int(base["rank"])]
    end = start + size
    if state.get("_iterator_finished"):
        base["rows_seen"] = end
        return base
    done = sum(int(w.get("worker", {}).get("rows", 0)) for w in found)
    # batches yielded after the last snapshot are whole but the rank's last one
    done += int(state.get("_steps_since_snapshot", 0)) * int(base["batch_size"])
    base["rows_seen"] = min(int(base["rows_seen"]) + done, end)
    return base

"""``packer inspect`` of a preference output: what sharing saved, and the length bias DPO is known for.

A pair output's documents.arrow has, per packed pair, its shared prefix and each side's own tokens; the report's
``preference`` section (None for supervised outputs) is computed from those columns and the manifest::

    pairs 300 | prompt (shared) median 598 | chosen median 262 | rejected median 214
    tokens stored 315,410 of 443,729 (28.9% saved by storing each prefix once)
    chosen - rejected: mean +61.3 tokens, chosen longer in 61.0% of pairs   (DPO learns length: check it)

A KTO output's section counts the labels (desirable / undesirable) of its packed records.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def summary(values: np.ndarray) -> dict:
    """Mean, median, p10, p90, min and max of ``values`` (all None where there are none): the report's
    summary of any per-document quantity."""
    if values.size == 0:
        return {"mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    p10, med, p90 = np.percentile(values, [10, 50, 90])
    return {
        "mean": round(float(values.mean()), 4),
        "median": round(float(med), 4),
        "p10": round(float(p10), 4),
        "p90": round(float(p90), 4),
        "min": round(float(values.min()), 4),
        "max": round(float(values.max()), 4),
    }


def preference(m: dict, col: Callable[..., np.ndarray]) -> dict | None:
    """The report's ``preference``: for a pair output (manifest ``kind`` "pairs") the pairs' lengths, the share
    of tokens the shared prefix saves and chosen-minus-rejected lengths; for a KTO output its labels; None for
    a supervised output. ``col``: documents.arrow's columns over the train split's packed records."""
    kind = m.get("kind")
    if kind == "kto":
        label = col("label", np.float64)
        return {"kind": "kto", "desirable": int((label == 1).sum()), "undesirable": int((label == 0).sum())}
    if kind != "pairs":
        return None
    prefix, chosen, rejected = (col(n, np.float64) for n in ("shared_tokens", "chosen_tokens", "rejected_tokens"))
    both = float((2 * prefix + chosen + rejected).sum())  # the two sides whole, as a trainer without sharing runs
    stored = float((prefix + chosen + rejected).sum()) + (m.get("pairs") == "separate") * float(prefix.sum())
    diff = chosen - rejected
    rejected_counts = m["counts"]["rejected"]
    return {
        "kind": "pairs",
        "layout": m.get("pairs", "shared"),
        "pairs": len(prefix),
        "chosen_tokens": summary(prefix + chosen),
        "rejected_tokens": summary(prefix + rejected),
        "shared_tokens": summary(prefix),
        "tokens_both_sides": int(both),
        "tokens_stored": int(stored),
        "saved_share": round(1 - stored / both, 6) if both else 0.0,
        "chosen_minus_rejected": {**summary(diff), "chosen_longer_share": round(float((diff > 0).mean()), 6)
                                  if len(diff) else None},
        "identical_sides": int(rejected_counts.get("identical_sides", 0)),
        "different_prompts": int(rejected_counts.get("different_prompts", 0)),
    }


def print_preference(r: dict, console) -> None:  # type: ignore[no-untyped-def]
    """The ``preference`` section as a table (nothing for a supervised output)."""
    from rich.table import Table

    p = r.get("preference")
    if not p:
        return
    if p["kind"] == "kto":
        console.print(f"KTO labels: {p['desirable']:,} desirable, {p['undesirable']:,} undesirable", markup=False)
        return
    t = Table(title=f"Preference pairs ({p['pairs']:,}, layout {p['layout']})", title_justify="left")
    for h in ("tokens", "mean", "median", "p90", "max"):
        t.add_column(h, justify="left" if h == "tokens" else "right")
    for name, key in (("prompt (shared prefix)", "shared_tokens"), ("prompt + chosen", "chosen_tokens"),
                      ("prompt + rejected", "rejected_tokens"), ("chosen - rejected", "chosen_minus_rejected")):
        s = p[key]
        t.add_row(name, *("n/a" if s[k] is None else f"{s[k]:,.1f}" for k in ("mean", "median", "p90", "max")))
    console.print(t)
    console.print(f"tokens stored {p['tokens_stored']:,} of {p['tokens_both_sides']:,} for the two sides whole "
                  f"({p['saved_share']:.1%} saved by storing each prefix once)", markup=False)
    longer = p["chosen_minus_rejected"]["chosen_longer_share"]
    if longer is not None:
        console.print(f"chosen longer than rejected in {longer:.1%} of pairs (DPO is known to learn a length bias "
                      "from this: compare with a length-normalised loss)", markup=False)
    if p["identical_sides"] or p["different_prompts"]:
        console.print(f"rejected: {p['identical_sides']:,} pairs with identical sides, {p['different_prompts']:,} "
                      "whose sides have different prompts", markup=False)

"""Outputs of format version 1 (before tool_call, reasoning, tool and the trainable column) stay
readable: the dataset, verify and the role sets read them as every token trainable; a strategy they
lack is refused by name, with the ones they have."""

from __future__ import annotations

import numpy as np
import pytest

from packer.inspect.verify import verify
from packer.output.layout import read_manifest
from packer.train.dataset import PackedDataset

from .helpers import as_version_1


@pytest.fixture(scope="module")
def v1(demo_output, tmp_path_factory):
    return as_version_1(demo_output, tmp_path_factory.mktemp("v1") / "shards")


def items(out, strategy, **kw):
    ds = PackedDataset(out, strategy=strategy, shuffle=False, **kw)
    return [{k: v.numpy() for k, v in item.items()} for item in ds]


def test_version_1_reads_as_before(demo_output, v1):
    assert read_manifest(v1)["format"]["version"] == 1 and verify(v1) == []
    for strategy, kw in (("instruction_modelling", {}), ({"response", "end"}, {}),
                         ("instruction_tuning", {"prompt_loss_weight": 0.5}), ({"instruction", "response"}, {})):
        old, new = items(v1, strategy, **kw), items(demo_output, strategy, **kw)
        assert len(old) == len(new) > 0
        for a, b in zip(old, new, strict=True):
            assert a.keys() == b.keys()
            assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_strategy_version_1_lacks_is_refused_by_name(v1):
    with pytest.raises(ValueError, match="unknown strategy 'answer_only'; this output has full, "):
        PackedDataset(v1, strategy="answer_only")
    # the same roles as a set work on any version
    assert len(items(v1, {"response", "end", "tool_call"})) > 0

"""The training examples run and learn, and the build side of packer never needs torch."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from .helpers import EXAMPLES, ROOT, training_env


def run(*args: str, timeout: int = 300) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
        env=training_env(),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def first_last(stdout: str) -> tuple[float, float]:
    m = re.search(r"loss: first .*? ([\d.]+) -> last .*? ([\d.]+)", stdout)
    assert m, stdout[-2000:]
    return float(m.group(1)), float(m.group(2))


def test_import_packer_does_not_import_torch():
    code = (
        "import sys, packer, packer.cli, packer.inspect.report, packer.inspect.verify\n"
        "assert 'torch' not in sys.modules, 'the build side imported torch'\n"
        "from packer import PackedDataset, collate_4d\n"
        "assert PackedDataset.__module__ == 'packer.train.dataset' and callable(collate_4d)\n"
    )
    if importlib.util.find_spec("torch") is None:
        code = code.split("from packer")[0]
    run("-c", code)


@pytest.mark.slow
def test_train_torch_loss_goes_down(tmp_path, demo_output):
    pytest.importorskip("torch")
    out = run(str(EXAMPLES / "train_torch.py"), "--data", str(demo_output), "--steps", "40",
              "--log-every", "10", "--strategy", "instruction_modelling")
    first, last = first_last(out)
    # from about ln(2048) = 7.6 for a random model: 40 steps on the demo rows learn the common tokens
    assert last < first - 1.0, out


@pytest.mark.slow
def test_train_hf_trainer_with_loss_weights(tmp_path, demo_output):
    pytest.importorskip("transformers", reason="transformers not installed (extra packer[hf])")
    pytest.importorskip("accelerate", reason="accelerate not installed (extra packer[hf])")
    out = run(str(EXAMPLES / "train_hf.py"), "--data", str(demo_output), "--steps", "12",
              "--output-dir", str(tmp_path / "trainer"), "--strategy", "instruction_tuning",
              "--prompt-loss-weight", "0.1", "--normalize", "sequence")
    first, last = first_last(out)
    assert last < first, out


@pytest.mark.slow
def test_train_hf_stock_trainer_refuses_weights(tmp_path):
    # the one example run that builds its demo shards itself (the others train on the session's demo build)
    pytest.importorskip("transformers", reason="transformers not installed (extra packer[hf])")
    pytest.importorskip("accelerate", reason="accelerate not installed (extra packer[hf])")
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_hf.py"), "--data", str(tmp_path / "shards"), "--steps", "4",
         "--output-dir", str(tmp_path / "trainer"), "--prompt-loss-weight", "0.1", "--stock-trainer", "--workers", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=training_env(),
    )
    assert done.returncode != 0 and "LossWeightsIgnored" in done.stderr, done.stderr[-4000:]


@pytest.mark.slow
def test_train_trl_sft_trainer_on_shards(tmp_path, demo_output):
    pytest.importorskip("trl", reason="trl not installed (extra packer[test])")
    out = run(str(EXAMPLES / "train_trl.py"), "--data", str(demo_output), "--steps", "10",
              "--output-dir", str(tmp_path / "trl"), "--prompt-loss-weight", "0.1", "--normalize", "sequence",
              timeout=600)
    first, last = first_last(out)
    assert last < first, out

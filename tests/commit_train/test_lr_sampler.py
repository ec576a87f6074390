"""Base LR schedule and the deterministic, resumable batch order."""

import itertools

import pytest

from commit_train.config import TrainConfig
from commit_train.errors import DataError
from commit_train.lr import lr_factor
from commit_train.sampler import ResumableBatchSampler


def test_warmup_then_cosine_to_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] == pytest.approx(0.1, abs=2e-3)


def test_linear_and_constant():
    lin = TrainConfig(steps=20, warmup_steps=0, schedule="linear")
    assert lr_factor(0, lin) == pytest.approx(1.0)
    assert lr_factor(10, lin) == pytest.approx(0.5)
    const = TrainConfig(steps=20, warmup_steps=0, schedule="constant")
    assert {lr_factor(s, const) for s in range(20)} == {1.0}


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_resume_position_gives_the_same_batches():
    full = _take(ResumableBatchSampler(23, 4, seed=3), 20)
    resumed = _take(ResumableBatchSampler(23, 4, seed=3, start_micro_batch=7), 13)
    assert resumed == full[7:]


def test_epochs_reshuffle_and_cover():
    s = ResumableBatchSampler(20, 5, seed=0)
    batches = _take(s, 8)
    assert sorted(sum(batches[:4], [])) == list(range(20))
    assert batches[:4] != batches[4:8]


def test_ranks_split_each_global_batch():
    r0 = _take(ResumableBatchSampler(16, 2, seed=1, rank=0, world_size=2), 4)
    r1 = _take(ResumableBatchSampler(16, 2, seed=1, rank=1, world_size=2), 4)
    one = _take(ResumableBatchSampler(16, 4, seed=1), 4)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one


def test_too_small_dataset():
    with pytest.raises(DataError, match="fewer than one global batch"):
        ResumableBatchSampler(3, 4, seed=0)

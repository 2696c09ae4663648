"""Length-bucketed batching: every example once per epoch, budgets kept, reproducible, shardable; padding."""

import random

import pytest
import torch

from bertsent.modeling.batching import Collator, LengthBucketBatchSampler


def _lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [rng.randint(5, 512) for _ in range(n)]


@pytest.mark.parametrize("bucketing", [True, False])
@pytest.mark.parametrize("max_tokens", [None, 4096])
def test_every_example_exactly_once_per_epoch(bucketing, max_tokens):
    lengths = _lengths()
    sampler = LengthBucketBatchSampler(lengths, batch_size=32, max_tokens=max_tokens, seed=3, sort_by_length=bucketing)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen = [i for batch in sampler for i in batch]
        assert sorted(seen) == list(range(len(lengths)))
        assert len(sampler) == len(sampler.batches())


def test_batch_size_and_token_budget_respected():
    lengths = _lengths(seed=1) + [900]  # one example over the budget on its own
    sampler = LengthBucketBatchSampler(lengths, batch_size=32, max_tokens=2048, seed=0)
    for batch in sampler:
        assert 1 <= len(batch) <= 32
        padded = max(lengths[i] for i in batch) * len(batch)
        assert padded <= 2048 or len(batch) == 1
    assert [b for b in sampler if len(lengths) - 1 in b] == [[len(lengths) - 1]]  # the long one rides alone


def test_bucketing_pads_far_less_than_random_batches():
    lengths = _lengths(seed=2)

    def padded(sort_by_length):
        batches = LengthBucketBatchSampler(lengths, 32, seed=0, sort_by_length=sort_by_length).batches()
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    assert padded(True) < 0.6 * padded(False)
    assert padded(True) < 1.1 * sum(lengths)


def test_order_changes_per_epoch_and_repeats_for_same_seed_and_epoch():
    lengths = _lengths()
    a = LengthBucketBatchSampler(lengths, batch_size=16, seed=7)
    b = LengthBucketBatchSampler(lengths, batch_size=16, seed=7)
    epoch0 = a.batches()
    a.set_epoch(1)
    epoch1 = a.batches()
    assert epoch0 != epoch1
    assert {tuple(sorted(x)) for x in epoch0} != {tuple(sorted(x)) for x in epoch1}  # make-up changes too
    b.set_epoch(1)
    assert b.batches() == epoch1
    b.set_epoch(0)
    assert b.batches() == epoch0
    assert LengthBucketBatchSampler(lengths, batch_size=16, seed=8).batches() != epoch0


def test_no_shuffle_is_stable_and_sorted_within_pools():
    lengths = _lengths(200)
    sampler = LengthBucketBatchSampler(lengths, batch_size=10, shuffle=False)
    flat = [i for b in sampler for i in b]
    assert [lengths[i] for i in flat] == sorted(lengths)  # one pool: globally sorted
    sampler.set_epoch(5)
    assert [i for b in sampler for i in b] == flat


@pytest.mark.parametrize("replicas", [2, 3, 4])
def test_replicas_share_the_global_batches_of_one_process(replicas):
    lengths = _lengths(997)
    one = LengthBucketBatchSampler(lengths, batch_size=16 * replicas, seed=5).batches()
    samplers = [
        LengthBucketBatchSampler(lengths, batch_size=16, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)
    ]
    assert all(s.batches() == one for s in samplers)  # the same global batches as one process with N x 16
    for batch in one:
        shards = [s.shard(batch) for s in samplers]
        assert sorted(i for shard in shards for i in shard) == sorted(batch)  # every example once, no drops
        assert max(map(len, shards)) - min(map(len, shards)) <= 1 and max(map(len, shards)) <= 16
    per_rank = [list(s) for s in samplers]
    assert len({len(p) for p in per_rank}) == 1  # the same number of steps on every process


def test_token_budget_holds_for_each_replica():
    lengths = _lengths(600)
    for replicas in (1, 2, 3):
        samplers = [
            LengthBucketBatchSampler(lengths, batch_size=64, max_tokens=300, seed=1, num_replicas=replicas, rank=r)
            for r in range(replicas)
        ]
        for batch in samplers[0].batches():
            for sampler in samplers:
                shard = sampler.shard(batch)
                assert not shard or len(shard) * max(lengths[i] for i in shard) <= 300 or len(shard) == 1
        one = LengthBucketBatchSampler(lengths, batch_size=64 * replicas, max_tokens=300 * replicas, seed=1).batches()
        # N replicas with budget T cut no bigger batches than one process with budget N x T
        assert len(samplers[0].batches()) >= len(one)


def test_invalid_batch_size():
    with pytest.raises(ValueError):
        LengthBucketBatchSampler([3, 4], batch_size=0)


def test_collator_pads_right_or_left_and_to_multiples():
    examples = [([101, 5, 6, 102], 1), ([101, 7, 102], 0)]
    right = Collator(pad_token_id=0)(examples)
    assert right["input_ids"].tolist() == [[101, 5, 6, 102], [101, 7, 102, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert right["labels"].tolist() == [1, 0] and right["labels"].dtype == torch.long
    left = Collator(pad_token_id=0, padding_side="left")(examples)
    assert left["input_ids"].tolist()[1] == [0, 101, 7, 102]
    assert left["attention_mask"].tolist()[1] == [0, 1, 1, 1]
    assert Collator(0, pad_to_multiple_of=8)(examples)["input_ids"].shape == (2, 8)
    assert Collator(0, pad_to=10)(examples)["input_ids"].shape == (2, 10)
    assert "labels" not in Collator(0)([([1, 2], None)])

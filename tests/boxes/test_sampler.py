"""Tests for npmaskrcnn/boxes/sampler.py: sample_balanced, sampled_first."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.backend import asnumpy
from npmaskrcnn.boxes.sampler import sample_balanced, sampled_first


def make_labels(num_pos, num_neg, num_ignored, seed=0):
    """Shuffled labels: positives with class ids 1..3, zeros, and -1s."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.integers(1, 4, num_pos), np.zeros(num_neg, np.int64),
                             -np.ones(num_ignored, np.int64)])
    return rng.permutation(labels)


def sample(xp, labels, batch, fraction, seed=0):
    keys = np.random.default_rng(seed).random(np.shape(labels))
    pos, neg = sample_balanced(xp.asarray(labels), xp.asarray(keys), batch, fraction)
    return asnumpy(pos), asnumpy(neg), keys


def check(labels, pos, neg, want_pos, want_neg):
    assert pos.dtype == bool and neg.dtype == bool and not (pos & neg).any()
    assert pos.sum(-1).tolist() == want_pos and neg.sum(-1).tolist() == want_neg
    assert (labels[pos] >= 1).all() and (labels[neg] == 0).all()


@pytest.mark.parametrize("counts, batch, fraction, want", [
    ((10, 100, 30), 16, 0.25, (4, 12)),  # int(16 * 0.25) = 4 positives, 12 negatives
    ((3, 1000, 5), 256, 0.5, (3, 253)),  # too few positives: filled with negatives
    ((500, 40, 5), 512, 0.25, (128, 40)),  # too few negatives
    ((0, 0, 6), 8, 0.5, (0, 0)),  # all ignored
])
def test_hand_computed_counts(xp, counts, batch, fraction, want):
    labels = make_labels(*counts)
    pos, neg, _ = sample(xp, labels, batch, fraction)
    check(labels, pos, neg, want[0], want[1])


def test_smallest_keys_are_chosen(xp):
    """The rule: the num_pos positives (num_neg negatives) with the smallest keys."""
    labels = make_labels(7, 20, 4, seed=3)
    pos, neg, keys = sample(xp, labels, 10, 0.5, seed=7)
    positive, negative = np.flatnonzero(labels >= 1), np.flatnonzero(labels == 0)
    want_pos = positive[np.argsort(keys[positive])[:5]]
    want_neg = negative[np.argsort(keys[negative])[:5]]
    np.testing.assert_array_equal(np.flatnonzero(pos), np.sort(want_pos))
    np.testing.assert_array_equal(np.flatnonzero(neg), np.sort(want_neg))


def test_each_image_of_a_batch_is_sampled_on_its_own(xp):
    images = [make_labels(10, 100, 30, seed=s) for s in range(3)]
    images[1][:] = -1  # an image with nothing to sample
    labels = np.stack(images)
    pos, neg, keys = sample(xp, labels, 16, 0.25)
    check(labels, pos, neg, [4, 0, 4], [12, 0, 12])
    for i in (0, 2):  # the same as sampling the image alone with its keys
        p1, n1 = sample_balanced(xp.asarray(labels[i]), xp.asarray(keys[i]), 16, 0.25)
        np.testing.assert_array_equal(asnumpy(p1), pos[i])
        np.testing.assert_array_equal(asnumpy(n1), neg[i])


def test_every_subset_is_equally_likely():
    """2 of 4 positives: each of the 6 pairs about 1/6 of the time (uniform subsets)."""
    labels = np.array([1, 1, 1, 1, -1])
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(3000):
        pos, _ = sample_balanced(labels, rng.random(5), 4, 0.5)
        key = tuple(np.flatnonzero(pos))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6 and all(abs(c / 3000 - 1 / 6) < 0.03 for c in counts.values())


def test_sampled_first_compacts_positives_then_negatives(xp):
    labels = np.stack([make_labels(6, 30, 4, seed=s) for s in range(2)])
    labels[1, :] = np.where(labels[1] >= 0, 0, -1)  # no positive in image 1
    keys = np.random.default_rng(1).random(labels.shape)
    pos, neg = sample_balanced(xp.asarray(labels), xp.asarray(keys), 12, 0.25)
    index, valid = sampled_first(pos, neg, xp.asarray(keys), 12)
    index, valid, pos, neg = (asnumpy(a) for a in (index, valid, pos, neg))
    assert index.shape == valid.shape == (2, 12) and valid.all()
    for i in range(2):
        n_pos = int(pos[i].sum())
        assert pos[i][index[i, :n_pos]].all() and neg[i][index[i, n_pos:]].all()
        assert sorted(index[i].tolist()) == np.flatnonzero(pos[i] | neg[i]).tolist()


def test_sampled_first_marks_the_filler(xp):
    labels = np.array([[1, 0, -1, -1, 0, -1]])  # 3 sampleable, 4 slots
    keys = np.linspace(0, 1, 6)[None]
    pos, neg = sample_balanced(xp.asarray(labels), xp.asarray(keys), 4, 0.5)
    index, valid = sampled_first(pos, neg, xp.asarray(keys), 4)
    assert asnumpy(valid).tolist() == [[True, True, True, False]]
    assert asnumpy(index)[0, :3].tolist() == [0, 1, 4]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-1, 3), min_size=0, max_size=40), st.integers(1, 20),
       st.sampled_from([0.25, 0.5, 1.0]), st.integers(0, 99))
def test_contract_property(labels, batch, fraction, seed):
    labels = np.asarray(labels, dtype=np.int64)
    pos, neg, _ = sample(np, labels, batch, fraction, seed)
    n_pos = min(int(batch * fraction), int((labels >= 1).sum()))
    n_neg = min(batch - n_pos, int((labels == 0).sum()))
    check(labels, pos, neg, n_pos, n_neg)

import numpy as np
import pytest

from npmaskrcnn.data.transforms import COCO_KEYPOINT_FLIP, BatchLoader, hflip


def test_hflip_by_hand():
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)[:1].repeat(3, 0)
    masks = np.zeros((1, 3, 4), np.uint8)
    masks[0, :, 0] = 1  # the leftmost column, box x in [0, 1)
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, 1] = [0.5, 1.0, 2]  # left eye near the left edge
    kp[0, 3] = [9.0, 9.0, 0]  # invisible: coordinates left alone
    target = {"boxes": np.array([[0.0, 0.0, 1.0, 3.0]]), "masks": masks, "keypoints": kp,
              "labels": np.array([1])}
    im2, t2 = hflip(image, target)
    np.testing.assert_array_equal(im2[0, 0], image[0, 0, ::-1])
    np.testing.assert_array_equal(t2["boxes"], [[3.0, 0.0, 4.0, 3.0]])
    assert t2["masks"][0, :, 3].all() and t2["masks"][0, :, :3].sum() == 0
    np.testing.assert_array_equal(t2["keypoints"][0, 2], [3.5, 1.0, 2])  # now the right eye
    np.testing.assert_array_equal(t2["keypoints"][0, 4], [9.0, 9.0, 0])
    np.testing.assert_array_equal(t2["labels"], [1])
    assert target["boxes"][0, 0] == 0.0  # the input is not modified


def test_keypoint_flip_is_an_involution():
    assert [COCO_KEYPOINT_FLIP[i] for i in COCO_KEYPOINT_FLIP] == list(range(17))


def test_double_flip_is_identity():
    rng = np.random.default_rng(0)
    image = rng.random((3, 5, 7))
    target = {"boxes": np.array([[1.0, 2.0, 4.5, 5.0]]),
              "masks": (rng.random((1, 5, 7)) > 0.5).astype(np.uint8)}
    im, t = hflip(*hflip(image, target))
    np.testing.assert_array_equal(im, image)
    np.testing.assert_allclose(t["boxes"], target["boxes"])
    np.testing.assert_array_equal(t["masks"], target["masks"])


class Items:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((3, 2, 2), float(i)), {"boxes": np.zeros((0, 4)), "id": i}


def test_loader_order_depends_only_on_iteration():
    a, b = BatchLoader(Items(5), 2, seed=3), BatchLoader(Items(5), 2, seed=3)
    seq = [[t["id"] for t in a.batch(i)[1]] for i in range(10)]
    assert [[t["id"] for t in b.batch(i)[1]] for i in (7, 2, 9)] == [seq[7], seq[2], seq[9]]
    flat = sum(seq, [])
    for e in range(4):  # every epoch visits every item once
        assert sorted(flat[5 * e:5 * e + 5]) == list(range(5))
    other = [[t["id"] for t in BatchLoader(Items(5), 2, seed=4).batch(i)[1]] for i in range(10)]
    assert other != seq


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        BatchLoader(Items(0), 2)

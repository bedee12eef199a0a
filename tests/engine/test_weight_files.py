"""Reading and writing weight files: .npz, .safetensors (without torch), torch .pth."""

import json
import os
import struct
import sys

import numpy as np
import pytest

from npmaskrcnn.config import tiny
from npmaskrcnn.engine.checkpoint import save_checkpoint
from npmaskrcnn.engine.optim import SGD
from npmaskrcnn.engine.weight_files import (
    WeightsError,
    load_module,
    read_safetensors,
    read_weights,
    save_module,
    write_npz_atomic,
    write_safetensors,
)
from npmaskrcnn.model.mask_rcnn import MaskRCNN


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


# ----------------------------------------------------------------------------- .safetensors


def _read_bytes(tmp_path, blob: bytes):
    path = tmp_path / "hand.safetensors"
    path.write_bytes(blob)
    return read_safetensors(path)


def test_safetensors_hand_written_file_is_read(tmp_path):
    # the format written out by hand: F32 (2, 2) = 1..4 at [0, 16), I64 (1,) = -7 at
    # [16, 24), BF16 (2,) = 1.0, -2.5 at [24, 28) (bf16 = the top 16 bits of a float32:
    # 1.0 = 0x3F80, -2.5 = 0xC020), metadata as strings
    data = (struct.pack("<4f", 1, 2, 3, 4) + struct.pack("<q", -7)
            + struct.pack("<2H", 0x3F80, 0xC020))
    header = {"__metadata__": {"format": "pt"},
              "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
              "n": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]},
              "h": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]}}
    arrays, metadata = _read_bytes(tmp_path, _safetensors_bytes(header, data))
    assert metadata == {"format": "pt"}
    np.testing.assert_array_equal(arrays["w"], [[1, 2], [3, 4]])
    assert arrays["w"].dtype == np.float32
    assert arrays["n"].tolist() == [-7] and arrays["n"].dtype == np.int64
    assert arrays["h"].tolist() == [1.0, -2.5] and arrays["h"].dtype == np.float32


def test_safetensors_round_trip_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # no torch anywhere on this path
    rng = np.random.default_rng(0)
    arrays = {"a.weight": rng.standard_normal((3, 4, 2, 2)).astype(np.float32),
              "a.bias": rng.standard_normal(3),  # float64
              "half": rng.standard_normal(5).astype(np.float16),
              "count": np.array(7, np.int64),  # 0-d
              "mask": np.array([True, False]), "bytes": np.arange(5, dtype=np.uint8),
              "empty": np.zeros((0, 3), np.float32),
              "strided": rng.standard_normal((4, 6))[:, ::2]}  # not contiguous
    path = write_safetensors(tmp_path / "x.safetensors", arrays, metadata={"step": 3})
    back, metadata = read_safetensors(path)
    assert metadata == {"step": "3"}
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        np.testing.assert_array_equal(back[k], v)
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0  # the data starts 8-byte aligned, as the reference writer pads
    wf = read_weights(path)
    assert wf.container == "safetensors" and set(wf.arrays) == set(arrays)


def test_safetensors_agrees_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.arange(3)}
    write_safetensors(tmp_path / "ours.safetensors", arrays)
    theirs = st.load_file(str(tmp_path / "ours.safetensors"))
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    ours, _ = read_safetensors(tmp_path / "theirs.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(theirs[k], v)
        np.testing.assert_array_equal(ours[k], v)


def test_truncated_safetensors_names_the_file_and_the_tensor(tmp_path):
    arrays = {"a": np.ones((4, 4), np.float32), "b": np.ones(8, np.float32)}
    path = write_safetensors(tmp_path / "t.safetensors", arrays)
    blob = open(path, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(blob[:-4])  # the last tensor ("b", in name order) loses its end
    with pytest.raises(WeightsError) as err:
        read_weights(cut)
    msg = str(err.value)
    assert msg.startswith(f"{cut}: b: truncated") and "\n" not in msg
    cut.write_bytes(blob[:20])  # inside the header
    with pytest.raises(WeightsError, match=r"cut\.safetensors: truncated or not"):
        read_weights(cut)
    cut.write_bytes(blob[:5])
    with pytest.raises(WeightsError, match="shorter than the 8-byte header length"):
        read_weights(cut)


def test_bad_safetensors_entries_are_named(tmp_path):
    bad_dtype = {"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}
    with pytest.raises(WeightsError, match=r": w: unsupported dtype 'C64'"):
        _read_bytes(tmp_path, _safetensors_bytes(bad_dtype, bytes(8)))
    wrong_size = {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}
    with pytest.raises(WeightsError, match=r": w: data_offsets \[0, 8\) hold 8 bytes"):
        _read_bytes(tmp_path, _safetensors_bytes(wrong_size, bytes(8)))
    with pytest.raises(WeightsError, match="header is not JSON"):
        _read_bytes(tmp_path, struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(WeightsError, match=r": w: malformed header entry"):
        _read_bytes(tmp_path, _safetensors_bytes({"w": {"dtype": "F32"}}, b""))


# ----------------------------------------------------------------------------- .npz


def test_npz_state_dict_and_checkpoint(tmp_path):
    model = MaskRCNN(tiny())
    save_module(model, tmp_path / "plain.npz")
    wf = read_weights(tmp_path / "plain.npz")
    assert wf.container == "npz state dict" and list(wf.arrays) == list(model.state_dict())

    opt = SGD(model, lr=0.01, momentum=0.9)
    model.zero_grad()
    for g in model.gradients().values():
        g += 1.0
    opt.step()  # momentum buffers exist now
    save_checkpoint(str(tmp_path / "ckpt.npz"), model, opt, {"iteration": 7,
                                                             "model_config": {"x": 1}})
    wf = read_weights(tmp_path / "ckpt.npz")
    assert wf.container == "npmaskrcnn checkpoint (iteration 7)"
    assert list(wf.arrays) == list(model.state_dict())  # model/ prefix removed
    assert wf.meta["model_config"] == {"x": 1}
    (reason, names), = wf.dropped.items()
    assert "optimiser" in reason and names and all(n.startswith("optim/") for n in names)


def test_truncated_npz_and_pickled_entries_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, a=np.ones(1000), b=np.array([{"x": 1}], dtype=object))
    blob = path.read_bytes()
    with pytest.raises(WeightsError, match=r"w\.npz: b: unreadable entry"):
        read_weights(path)  # allow_pickle=False: the object array is never unpickled
    (tmp_path / "cut.npz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(WeightsError, match=r"cut\.npz: not a readable \.npz \(truncated"):
        read_weights(tmp_path / "cut.npz")


def test_unknown_suffix_and_missing_file(tmp_path):
    (tmp_path / "w.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(WeightsError, match=r"w\.pkl: unknown weights format '\.pkl'"):
        read_weights(tmp_path / "w.pkl")
    with pytest.raises(WeightsError, match=r"nope\.npz: no such file"):
        read_weights(tmp_path / "nope.npz")


def test_write_npz_atomic_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.npz"
    write_npz_atomic(path, {"a": np.zeros(2)})

    def broken(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        write_npz_atomic(path, {"a": np.ones(2)})
    monkeypatch.undo()
    with np.load(path) as z:
        assert z["a"].tolist() == [0, 0]
    assert os.listdir(tmp_path) == ["out.npz"]  # no temporary file left behind


# ----------------------------------------------------------------------------- torch .pth


def test_pth_without_torch_says_torch_is_needed(tmp_path, monkeypatch):
    path = tmp_path / "resnet50.pth"
    path.write_bytes(b"PK\x03\x04")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(WeightsError) as err:
        read_weights(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: reading a .pth/.pt file needs PyTorch")
    assert ".safetensors" in msg and "\n" not in msg


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_pth_bare_and_wrapped_state_dicts(tmp_path, wrapper):
    torch = pytest.importorskip("torch")
    sd = {"conv1.weight": torch.randn(2, 3, 1, 1), "bn1.num_batches_tracked": torch.tensor(5),
          "h": torch.randn(4).to(torch.bfloat16)}
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 3, "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "w.pth")
    wf = read_weights(tmp_path / "w.pth")
    assert set(wf.arrays) == set(sd)
    np.testing.assert_array_equal(wf.arrays["conv1.weight"], sd["conv1.weight"].numpy())
    assert wf.arrays["h"].dtype == np.float32  # NumPy has no bfloat16
    if wrapper is None:
        assert wf.container == "torch .pth state dict" and not wf.dropped
    else:
        assert wf.container == f"torch .pth, state dict under {wrapper!r}"
        assert list(wf.dropped.values()) == [["epoch", "optimizer"]]


def test_pth_that_is_not_a_state_dict_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"conv1.weight": torch.ones(1), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match=r"mixed\.pth: epoch: a int, not a tensor"):
        read_weights(tmp_path / "mixed.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match=r"list\.pth: holds a list, not a state dict"):
        read_weights(tmp_path / "list.pth")


def test_pth_truncated_or_unsafe_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.randn(100)}, tmp_path / "w.pth")
    blob = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(WeightsError, match=r"cut\.pth: torch\.load\(weights_only=True\) cannot"):
        read_weights(tmp_path / "cut.pth")
    # an arbitrary object needs full unpickling, which weights_only=True refuses
    torch.save({"w": torch.ones(1), "obj": _Arbitrary()}, tmp_path / "obj.pth")
    with pytest.raises(WeightsError) as err:
        read_weights(tmp_path / "obj.pth")
    assert "weights_only=True" in str(err.value) and "\n" not in str(err.value)


class _Arbitrary:
    pass


def test_save_module_and_load_module_in_both_formats_and_from_a_checkpoint(tmp_path):
    model = MaskRCNN(tiny())

    def shifted():
        other = MaskRCNN(tiny())
        for v in other.state_dict().values():
            v += 1
        return other

    save_checkpoint(str(tmp_path / "ckpt.npz"), model)
    for name in ("m.npz", "m.safetensors", "ckpt.npz"):
        if name != "ckpt.npz":
            save_module(model, tmp_path / name)
        other = shifted()
        load_module(other, tmp_path / name)
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=f"{name}: {k}")

"""Run directories: what counts as a run, what --overwrite removes, when data is remade."""

from npmaskrcnn.data.figures import make_figures_dataset
from npmaskrcnn.data.shapes import make_shapes_dataset
from npmaskrcnn.engine.rundir import (
    data_to_make,
    holds_run,
    remove_run_files,
    run_files,
    wanted_data,
)


def test_a_run_is_its_checkpoint_or_log_and_overwrite_removes_only_its_files(tmp_path):
    assert not holds_run(tmp_path) and run_files(tmp_path) == []
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "example_0.png").write_bytes(b"png")
    (tmp_path / "examples" / "holiday.png").write_bytes(b"mine")
    assert not holds_run(tmp_path)  # drawings alone are not a run
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert holds_run(tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes(b"PK")
    (tmp_path / ".tmp-abc.npz").write_bytes(b"PK")
    removed = {p.relative_to(tmp_path).as_posix() for p in remove_run_files(tmp_path)}
    assert removed == {"checkpoint.npz", "log.jsonl", "examples/example_0.png", ".tmp-abc.npz"}
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "examples" / "holiday.png").exists()
    assert not holds_run(tmp_path)


def test_generated_data_is_made_when_missing_or_different(tmp_path):
    assert data_to_make(tmp_path, "shapes", "train", wanted_data("shapes", 2, 32, 0)) == (
        True, [])
    make_shapes_dataset(tmp_path, 2, image_size=32, seed=0)
    assert data_to_make(tmp_path, "shapes", "train", wanted_data("shapes", 2, 32, 0)) == (
        False, [])
    make, why = data_to_make(tmp_path, "shapes", "train", wanted_data("shapes", 3, 48, 0))
    assert make and why == ["num_images 2 (asked: 3)", "image_size [32, 32] (asked: [48, 48])"]
    # the stick figures: their own files in the same folder, their own settings
    assert data_to_make(tmp_path, "figures", "train", wanted_data("figures", 2, 32, 0)) == (
        True, [])
    make_figures_dataset(tmp_path, 2, image_size=32, seed=0, min_height=10, max_height=20)
    assert data_to_make(tmp_path, "figures", "train", wanted_data("figures", 2, 32, 0)) == (
        False, [])
    make, why = data_to_make(tmp_path, "figures", "train", wanted_data("figures", 2, 32, 1))
    assert make and why == ["seed 0 (asked: 1)"]

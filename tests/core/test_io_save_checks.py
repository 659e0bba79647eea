"""gc.save writes only what gc.load reads back (arrays without Python objects: np.savez would
pickle them and gc.load reads without pickle), checks everything before it writes, and a
refused save leaves the previous file as it was."""

import numpy as np
import pytest

import graphc as gc
from graphc.io import FormatError

W_VALUE = np.arange(4, dtype=np.float32).reshape(2, 2)


def _good_file(tmp_path):
    path = tmp_path / "ckpt.gcf"
    w = gc.parameter("W", W_VALUE)
    gc.save([w], path, extra_arrays={"best": np.ones(2)}, metadata={"epoch": 1})
    return path, w


OBJECTS = {
    "object array": np.array([{"loss": 1.0}, None], dtype=object),
    "mixed object array": np.array([1, "x", None], dtype=object),
    "function": lambda: 1,
    "dict": {"a": 1},
    "ragged list": [[1, 2], [3]],
    "struct with an object field": np.zeros(2, [("a", "f4"), ("b", "O")]),
    "tensor": gc.placeholder("t", (2,)),
}


@pytest.mark.parametrize("what", sorted(OBJECTS))
def test_extra_arrays_holding_objects_are_refused_and_the_old_file_kept(tmp_path, what):
    path, w = _good_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(FormatError, match=r"gc\.save: extra_arrays\['history'\] is"):
        gc.save([w], path, extra_arrays={"best": np.ones(2), "history": OBJECTS[what]})
    assert path.read_bytes() == before
    np.testing.assert_array_equal(gc.load(path)["W"], W_VALUE)


@pytest.mark.parametrize("what", sorted(OBJECTS))
def test_a_dict_holding_objects_is_refused_and_the_old_file_kept(tmp_path, what):
    path, _ = _good_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(FormatError, match=r"gc\.save: array 'a' is"):
        gc.save({"ok": np.ones(3), "a": OBJECTS[what]}, path)
    assert path.read_bytes() == before
    assert not (tmp_path / "other.gcf").exists()


def test_metadata_json_cannot_hold_is_refused_and_the_old_file_kept(tmp_path):
    path, w = _good_file(tmp_path)
    before = path.read_bytes()
    for bad in ({"epoch": {1, 2}}, {"arr": np.ones(2)}, ["not", "a", "dict"]):
        with pytest.raises(FormatError, match="metadata"):
            gc.save([w], path, metadata=bad)
    assert path.read_bytes() == before
    assert gc.io.read_metadata(path) == {"epoch": 1}


def test_every_array_save_accepts_load_reads_back(tmp_path):
    arrays = {"f16": np.ones(3, np.float16), "c": np.array([1 + 2j]), "u": np.array(["ab", "c"]),
              "s": np.array([b"xy"]), "b": np.array([True, False]), "str": "text", "list": [1, 2],
              "scalar": 3.5, "dt": np.array(["2020-01-01"], "datetime64[D]"),
              "struct": np.zeros(2, [("a", "f4"), ("b", "i8", (2,))]),
              "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    gc.save(arrays, tmp_path / "a.gcf")
    back = gc.load(tmp_path / "a.gcf")
    assert back.keys() == arrays.keys()
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], np.asarray(v), err_msg=k)
    w = gc.parameter("W", W_VALUE)
    gc.save([w], tmp_path / "e.gcf", extra_arrays=arrays)
    extra = gc.io.read_extra_arrays(tmp_path / "e.gcf")
    assert extra.keys() == arrays.keys()

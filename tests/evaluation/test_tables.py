"""Results on disk and as text: write_json, json_default, flatten."""

import json

import numpy as np

from exactdgn.evaluation import flatten, json_default, markdown_table, write_json


def test_write_json_takes_a_str_path_and_numpy_scalars(tmp_path):
    """A str path (as every other writer takes) gave AttributeError; numpy booleans (e.g. a
    comparison's result) were refused as 'not JSON serialisable: bool'."""
    path = str(tmp_path / "r.json")
    obj = {"ok": np.bool_(True), "n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2)}
    write_json(path, obj)
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "ok": True,
        "n": 3,
        "x": 0.5,
        "a": [0, 1],
    }
    assert json_default(np.bool_(False)) is False


def test_flatten_keeps_numpy_scalars():
    """numpy integers and booleans were dropped without a word (numpy floats were kept)."""
    out = flatten({"a": {"n": np.int64(3), "ok": np.bool_(True)}, "x": np.float64(0.5)})
    assert out == {"a.n": 3, "a.ok": True, "x": 0.5}
    assert type(out["a.n"]) is int and type(out["a.ok"]) is bool


def test_markdown_table_without_rows_or_columns():
    """No rows gave the malformed '|  |\\n|' (a header row without cells); rows and no columns
    give nothing too, and given columns with no rows a header-only table."""
    from exactdgn.evaluation import markdown_table

    assert markdown_table([]) == ""
    assert markdown_table([{}, {}]) == ""
    assert markdown_table([{"a": 1}], columns=[]) == ""
    assert markdown_table([], columns=["a", "b"]) == "| a | b |\n|---|---|"
    assert markdown_table([{"a": 1.0, "b": None}]) == "| a | b |\n|---|---|\n| 1.0000 |  |"


def test_numpy_scalars_in_lists_and_cells():
    """A short list with a numpy integer (e.g. layer sizes from an array) was dropped by
    ``flatten`` without a word; a numpy float32 cell was printed unformatted by
    ``markdown_table`` (``1.2345679`` beside ``1.2346``)."""
    from exactdgn.evaluation import markdown_table

    sizes = list(np.array([1, 12, 2]))
    assert flatten({"sizes": sizes, "x": [np.float32(0.5), 1]}) == {
        "sizes": "[1,12,2]",
        "x": "[0.5,1]",
    }
    row = {"a": np.float32(1.23456789), "b": np.int64(3), "c": np.bool_(True)}
    assert markdown_table([row]) == "| a | b | c |\n|---|---|---|\n| 1.2346 | 3 | True |"


def test_markdown_table_cells_keep_their_meaning():
    # a key that is not a str was a TypeError; "|" in a cell split it; 3e-5 printed 0.0000
    table = markdown_table([{1: 2.0, "a|b": "x|y", "gap": 3e-5, "neg": -2e-6, "zero": 0.0}])
    head, _, row = table.splitlines()
    assert head == "| 1 | a\\|b | gap | neg | zero |"
    assert row == "| 2.0000 | x\\|y | 3e-05 | -2e-06 | 0.0000 |"

"""File loaders: IDX/MNIST (real test set and corrupt files), CSV/.npy/.npz, digits, get_dataset."""

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from exactdgn.datasets import get_dataset, load_array, load_digits, load_mnist, read_idx

# the shared copy beside the checkout (../shared), or wherever EXACTDGN_MNIST_DIR points
MNIST_DIR = Path(
    os.environ.get("EXACTDGN_MNIST_DIR", Path(__file__).parents[2] / "../shared/data/mnist")
)
# class counts of the MNIST t10k test set (LeCun et al.)
T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def write_idx(path, arr, code=0x08, *, compress=False, extra=b"", cut=0):
    """Write an IDX file independently of the reader (struct-packed header, big-endian data)."""
    arr = np.asarray(arr)
    dt = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(dt).tobytes() + extra
    if cut:
        raw = raw[:-cut]
    path = Path(path)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


# ----------------------------------------------------------------------------- IDX reader
@pytest.mark.parametrize("code", [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, code, compress):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, (3, 4, 5)) if code != 0x09 else rng.integers(-100, 100, (3, 4, 5))
    p = write_idx(tmp_path / "a.idx", arr, code, compress=compress)
    out = read_idx(p)
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, arr)


def _mnist_pair(tmp_path, n=6, *, kind="t10k", img_kw=None, lab_kw=None, images=None, labels=None):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28)) if images is None else images
    labels = rng.integers(0, 10, n) if labels is None else labels
    write_idx(tmp_path / f"{kind}-images-idx3-ubyte", images, **(img_kw or {}))
    write_idx(tmp_path / f"{kind}-labels-idx1-ubyte", labels, **(lab_kw or {}))
    return images, labels


def test_load_mnist_synthetic_pair(tmp_path):
    images, labels = _mnist_pair(tmp_path, kind="train")
    X, y = load_mnist(tmp_path, kind="train", normalize=False)
    np.testing.assert_array_equal(X, images.reshape(6, 784))
    np.testing.assert_array_equal(y, labels)
    X, _ = load_mnist(tmp_path / "train-images-idx3-ubyte", kind="train")
    np.testing.assert_allclose(X, images.reshape(6, 784) / 255.0, rtol=1e-15)


def test_load_mnist_downsample_must_be_an_integer(tmp_path):
    """A fractional side length was truncated (2.5 gave 2x2 images without a word)."""
    _mnist_pair(tmp_path, kind="train")
    for bad in (2.5, "14", True, 0):
        with pytest.raises(ValueError, match=f"downsample={bad!r} is invalid"):
            load_mnist(tmp_path, kind="train", downsample=bad)
    X, _ = load_mnist(tmp_path, kind="train", downsample=np.int64(14))
    assert X.shape == (6, 196)


CORRUPT_IMAGES = [
    ({"extra": b"\x00"}, "trailing bytes"),
    ({"cut": 5}, "truncated"),
    ({"code": 0x0C}, "unsigned-byte"),
]


@pytest.mark.parametrize(("kw", "msg"), CORRUPT_IMAGES)
def test_corrupt_image_file_is_rejected(tmp_path, kw, msg):
    _mnist_pair(tmp_path, img_kw=kw)
    with pytest.raises(ValueError, match=msg) as info:
        load_mnist(tmp_path)
    assert "t10k-images-idx3-ubyte" in str(info.value)


def test_bad_headers_are_rejected(tmp_path):
    p = tmp_path / "t10k-images-idx3-ubyte"
    _mnist_pair(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*magic"):
        load_mnist(tmp_path)
    p.write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(ValueError, match="type code 0x07"):
        load_mnist(tmp_path)
    p.write_bytes(raw[:3] + b"\x00")
    with pytest.raises(ValueError, match="0 dimensions"):
        load_mnist(tmp_path)
    p.write_bytes(raw[:9])
    with pytest.raises(ValueError, match="truncated IDX header"):
        load_mnist(tmp_path)
    p.write_bytes(b"\x00")
    with pytest.raises(ValueError, match="too short"):
        load_mnist(tmp_path)


def test_a_header_whose_size_overflows_int64_is_a_truncated_file(tmp_path):
    """Four sizes of 2**32 - 1 make (2**32 - 1)**4 bytes, past int64: the size wrapped around
    and a header-only file was reported as having 'unexpected trailing bytes'."""
    p = tmp_path / "big.idx"
    p.write_bytes(struct.pack(">BBBB4I", 0, 0, 0x08, 4, *[2**32 - 1] * 4))
    with pytest.raises(ValueError, match=r"truncated IDX data.*but only 0 bytes follow"):
        read_idx(p)


def test_wrong_dimensions_and_label_problems(tmp_path):
    # image file with 2-D data
    _mnist_pair(tmp_path, images=np.zeros((6, 784), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"images-idx3-ubyte: expected a 3-D"):
        load_mnist(tmp_path)
    # label file with 2-D data
    _mnist_pair(tmp_path, labels=np.zeros((6, 1)))
    with pytest.raises(ValueError, match=r"labels-idx1-ubyte: expected a 1-D"):
        load_mnist(tmp_path)
    # count mismatch
    _mnist_pair(tmp_path, labels=np.zeros(5))
    with pytest.raises(ValueError, match="5 labels but"):
        load_mnist(tmp_path)
    # label out of range
    _mnist_pair(tmp_path, labels=np.array([0, 1, 2, 3, 4, 10]))
    with pytest.raises(ValueError, match=r"0\.\.9, found 10"):
        load_mnist(tmp_path)


def test_bad_gzip(tmp_path):
    _mnist_pair(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    gz = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((6, 28, 28)), compress=True)
    X, _ = load_mnist(tmp_path)
    assert X.shape == (6, 784)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_mnist(tmp_path)
    gz.write_bytes(b"\x00\x00\x08\x03 not gzip")
    with pytest.raises(ValueError, match=r"\.gz suffix but is not gzip"):
        load_mnist(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no MNIST images file"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(FileNotFoundError, match="no labels file next to"):
        load_mnist(tmp_path / "t10k-images-idx3-ubyte")
    with pytest.raises(ValueError, match="kind"):
        load_mnist(tmp_path, kind="validation")
    with pytest.raises(ValueError, match="classes"):
        load_mnist(tmp_path, classes=[12])


# ----------------------------------------------------------------------------- real MNIST
def test_real_mnist_test_set():
    assert MNIST_DIR.is_dir(), (
        f"the shared MNIST copy is missing at {MNIST_DIR.resolve()} "
        "(put the shared/ folder beside the checkout or set EXACTDGN_MNIST_DIR)"
    )
    X, y = load_mnist(MNIST_DIR)
    assert X.shape == (10000, 784) and X.dtype == np.float64
    assert y.shape == (10000,)
    assert X.min() == 0.0 and X.max() == 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y, minlength=10).tolist() == T10K_COUNTS
    # a blank border: the corner pixels of every test digit are zero
    assert np.all(X.reshape(-1, 28, 28)[:, 0, 0] == 0)

    X3, y3 = load_mnist(MNIST_DIR / "t10k-images-idx3-ubyte.gz", kind="test", classes=3)
    assert X3.shape == (1010, 784) and np.all(y3 == 3)
    np.testing.assert_array_equal(X3, X[y == 3])

    X14, y14 = load_mnist(MNIST_DIR, classes=[1, 7], downsample=14)
    assert X14.shape == (1135 + 1028, 196)
    assert set(y14.tolist()) == {1, 7}
    big = X[(y == 1) | (y == 7)].reshape(-1, 28, 28)
    # independent block average on a few images
    for i in (0, 5, 1000):
        ref = np.array(
            [
                [big[i, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean() for c in range(14)]
                for r in range(14)
            ]
        )
        np.testing.assert_allclose(X14[i].reshape(14, 14), ref, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="downsample"):
        load_mnist(MNIST_DIR, downsample=5)


def test_real_mnist_uncompressed_copy(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((MNIST_DIR / f"{name}.gz").read_bytes()))
    Xa, ya = load_mnist(tmp_path, classes=0)
    Xb, yb = get_dataset(f"mnist:{MNIST_DIR}", classes=0, return_labels=True)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    assert Xa.shape == (980, 784)


# ----------------------------------------------------------------------------- CSV / npy / npz
def test_csv_variants(tmp_path):
    X = np.array([[1.0, -2.5, 3e-3], [4.0, 5.0, 6.0]])
    (tmp_path / "a.csv").write_text("1,-2.5,3e-3\n4,5,6\n")
    (tmp_path / "h.csv").write_text("# comment\nx,y,z\n1, -2.5, 3e-3\n\n4,5,6\n")
    (tmp_path / "w.txt").write_text("1 -2.5 3e-3\n4   5 6\n")
    (tmp_path / "t.tsv").write_text("1\t-2.5\t3e-3\n4\t5\t6\n")
    for name in ("a.csv", "h.csv", "w.txt", "t.tsv"):
        out = load_array(tmp_path / name)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, X)
    (tmp_path / "one.csv").write_text("1.5\n2.5\n")
    assert load_array(tmp_path / "one.csv").shape == (2, 1)


def test_csv_first_row_is_data_despite_a_bom_or_a_trailing_comment(tmp_path):
    """The first row of numbers is data: a UTF-8 byte-order mark (Excel's "CSV UTF-8") or a
    trailing ``# comment`` on it made it look non-numeric, and it was skipped as a header."""
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    (tmp_path / "bom.csv").write_bytes("\ufeff1,2\n3,4\n".encode())
    (tmp_path / "bomh.csv").write_bytes("\ufeffx,y\n1,2\n3,4\n".encode())
    (tmp_path / "note.csv").write_text("1,2  # first point\n3,4\n")
    (tmp_path / "note.txt").write_text("1 2 # first point\n3 4\n")
    for name in ("bom.csv", "bomh.csv", "note.csv", "note.txt"):
        np.testing.assert_array_equal(load_array(tmp_path / name), X, err_msg=name)


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        ("1,2,3\n4,5\n", "line 2 has 2 fields but the first data row has 3"),
        ("1,2,3\n4,abc,6\n", "non-numeric value 'abc' on line 2, column 2"),
        ("a,b\n1,2\n3,,4\n", "line 3 has 3 fields"),
        ("a,b\n1,2\n3,\n", "missing value '' on line 3, column 2"),
        ("1,2\nnan,4\n", r"NaN or infinite values \(first bad rows, 0-based: \[1\]\)"),
        ("1,2\n3,inf\n", "NaN or infinite"),
        ("x,y\n", "only a header row"),
        ("\n# nothing\n", "no data rows"),
    ],
)
def test_malformed_csv(tmp_path, content, msg):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=msg) as info:
        load_array(p)
    assert "bad.csv" in str(info.value)


def test_npy_npz(tmp_path):
    X = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "a.npy", X.astype(np.float32))
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), X)
    np.save(tmp_path / "i.npy", X.astype(np.int16))
    np.testing.assert_array_equal(load_array(tmp_path / "i.npy"), X)
    np.savez(tmp_path / "one.npz", anything=X)
    np.testing.assert_array_equal(load_array(tmp_path / "one.npz"), X)
    np.savez(tmp_path / "two.npz", X=X, y=np.arange(4))
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz"), X)
    np.savez(tmp_path / "three.npz", a=X, b=2 * X)
    np.testing.assert_array_equal(load_array(tmp_path / "three.npz", key="b"), 2 * X)


@pytest.mark.parametrize(
    ("maker", "msg"),
    [
        (lambda p: np.save(p, np.arange(5.0)), r"must be 2-D .*shape \(5,\).*\(N, 1\)"),
        (lambda p: np.save(p, np.zeros((2, 2, 2))), "must be 2-D"),
        (lambda p: np.save(p, np.array([["a", "b"]])), "real numbers"),
        (lambda p: np.save(p, np.ones((2, 2), dtype=complex)), "real numbers"),
        (lambda p: np.save(p, np.array([[1, None]], dtype=object)), "valid numeric"),
        (lambda p: np.save(p, np.array([[1.0, np.nan]])), "NaN"),
        (lambda p: np.save(p, np.zeros((0, 3))), "empty"),
        (lambda p: p.write_bytes(b"garbage"), "not a .npy file"),
        (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"\x10\x00{'descr'"), "not a valid"),
    ],
)
def test_malformed_npy(tmp_path, maker, msg):
    p = tmp_path / "bad.npy"
    maker(p)
    with pytest.raises(ValueError, match=msg) as info:
        load_array(p)
    assert "bad.npy" in str(info.value)


def test_malformed_npz_and_suffix(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, a=np.zeros((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(ValueError, match=re.escape("holds several arrays ['a', 'b']")):
        load_array(p)
    with pytest.raises(ValueError, match="no array named 'c'"):
        load_array(p, key="c")
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"bad\.npz: not a valid \.npz"):
        load_array(p)
    p.write_bytes(b"plain text")
    with pytest.raises(ValueError, match=r"not a \.npz"):
        load_array(p)
    q = tmp_path / "data.json"
    q.write_text("[]")
    with pytest.raises(ValueError, match=r"unsupported file type '\.json'"):
        load_array(q)
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- digits, names
def test_load_array_of_a_directory_says_so(tmp_path):
    """It said the directory 'does not exist'."""
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(ValueError, match="is a directory, not a data file"):
        load_array(tmp_path / "data.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_array(tmp_path / "none.csv")


def test_load_digits():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64 and y.shape == (1797,)
    assert X.min() == 0 and X.max() == 16
    X3, y3 = load_digits(classes=3)
    assert X3.shape == (183, 64) and np.all(y3 == 3)
    X35, y35 = load_digits(classes=[5, 3], normalize=True)
    assert set(y35.tolist()) == {3, 5} and X35.max() == 1.0
    with pytest.raises(ValueError, match="classes"):
        load_digits(classes="3")


def test_get_dataset(tmp_path):
    X = get_dataset("wave", n_samples=30, noise=0.0, random_state=0)
    np.testing.assert_array_equal(X[:, 1], np.cos(1.4 * X[:, 0]))
    for name in ("circle", "two_moons", "moons", "mixture", "gaussian_mixture"):
        assert get_dataset(name, n_samples=7, random_state=1).shape == (7, 2)
    X, y = get_dataset("digits:3,5", return_labels=True)
    assert X.shape == (365, 64) and set(y.tolist()) == {3, 5}
    assert get_dataset("digits").shape == (1797, 64)
    np.save(tmp_path / "d.npy", np.ones((3, 2)))
    assert get_dataset(str(tmp_path / "d.npy")).shape == (3, 2)
    X, y = get_dataset(tmp_path / "d.npy", return_labels=True)
    assert y is None and X.shape == (3, 2)
    with pytest.raises(ValueError, match="unknown data set 'spiral'"):
        get_dataset("spiral")
    with pytest.raises(ValueError, match="bad class list"):
        get_dataset("digits:x")
    with pytest.raises(ValueError, match="mnist:PATH"):
        get_dataset("mnist")
    with pytest.raises(ValueError, match="either in the name"):
        get_dataset("digits:3", classes=[4])


def test_allow_nan_keeps_missing_values_and_refuses_inf(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("1,2\nnan,4\n")
    X = load_array(p, allow_nan=True)
    assert np.isnan(X[1, 0]) and X[1, 1] == 4.0
    p.write_text("1,2\nnan,inf\n")
    with pytest.raises(ValueError, match=r"1 infinite values \(first bad rows, 0-based: \[1\]\)"):
        load_array(p, allow_nan=True)


def test_allow_nan_reads_empty_cells_and_na_as_missing(tmp_path):
    """``allow_nan=True`` keeps missing values, but a CSV writes them as empty cells or ``NA``
    (pandas, R, spreadsheets): those were 'non-numeric value' errors, only a literal ``nan``
    was read."""
    p = tmp_path / "m.csv"
    p.write_text("a,b,c\n1,,3\nNA,5,N/A\n7,8,\n")
    X = load_array(p, allow_nan=True)
    expected = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, np.nan], [7.0, 8.0, np.nan]])
    np.testing.assert_array_equal(X, expected)
    (tmp_path / "w.tsv").write_text("1\t\t3\n4\tNaN\t6\n")
    np.testing.assert_array_equal(
        load_array(tmp_path / "w.tsv", allow_nan=True), [[1.0, np.nan, 3.0], [4.0, np.nan, 6.0]]
    )
    np.testing.assert_array_equal(get_dataset(str(p), allow_nan=True), expected)
    # without allow_nan a missing value is still an error, which now says how to keep it
    with pytest.raises(ValueError, match=r"missing value .. on line 2, column 2.*allow_nan=True"):
        load_array(p)
    # a first row with a missing value is data, not a header row to skip
    p.write_text("1,,3\n4,5,6\n")
    np.testing.assert_array_equal(load_array(p, allow_nan=True), [[1.0, np.nan, 3.0], [4, 5, 6]])
    with pytest.raises(ValueError, match=r"missing value '' on line 1, column 2"):
        load_array(p)
    # other text is still refused, naming it
    p.write_text("1,2\nx,4\n")
    with pytest.raises(ValueError, match="non-numeric value 'x' on line 2, column 1"):
        load_array(p, allow_nan=True)


@pytest.mark.parametrize("content", ["1000,?,0.3\n", "1000,?,0.3\n2,3,4\n"])
def test_a_first_row_of_numbers_and_text_is_data_and_its_text_named(tmp_path, content):
    # it was taken for a header row: "only a header row, no data", or the row dropped unsaid
    p = tmp_path / "q.csv"
    p.write_text(content)
    for allow_nan in (False, True):
        with pytest.raises(ValueError, match=r"q.csv: non-numeric value '\?' on line 1, column 2"):
            load_array(p, allow_nan=allow_nan)


def test_csv_header(tmp_path):
    from exactdgn.datasets import csv_header

    cases = {
        "a.csv": ("a, b,c\n1,2,3\n", ["a", "b", "c"]),
        "b.csv": ("# note\n1,2,3\n", None),
        "c.tsv": ("x\ty\n1\t2\n", ["x", "y"]),
        "d.csv": (",a,b\n0,1,2\n", ["", "a", "b"]),  # pandas' unnamed index column
        "e.csv": ("1,,3\n4,5,6\n", None),
    }
    for name, (text, names) in cases.items():
        (tmp_path / name).write_text(text)
        if name == "d.csv":  # a nameless first column is read as data, and said so
            with pytest.warns(UserWarning, match="d.csv: the first column has no name"):
                assert csv_header(tmp_path / name) == names, name
            continue
        assert csv_header(tmp_path / name) == names, name
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    assert csv_header(tmp_path / "x.npy") is None


def test_csv_quoted_numbers_and_trailing_delimiters(tmp_path):
    """Spreadsheet exports: double-quoted numbers (``csv.QUOTE_ALL``) and a delimiter ending
    every row were errors ("non-numeric value '"1"'", "missing value '' ... column 3")."""
    from exactdgn.datasets import csv_header

    X = np.array([[1.0, -2.5], [3e-3, 4.0]])
    cases = {
        "q.csv": '"a","b"\n"1","-2.5"\n"3e-3", "4"\n',
        "t.csv": "a,b\n1,-2.5,\n3e-3,4,\n",
        "th.csv": "a,b,\n1,-2.5,\n3e-3,4,\n",
        "tn.csv": "1,-2.5,\n3e-3,4,  # note\n",
        "tt.tsv": "1\t-2.5\t\n3e-3\t4\t\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        for allow_nan in (False, True):
            np.testing.assert_array_equal(load_array(tmp_path / name, allow_nan=allow_nan), X)
        expected = None if name in ("tn.csv", "tt.tsv") else ["a", "b"]
        assert csv_header(tmp_path / name) == expected, name
    # a named column left empty in every row stays a column (of missing values)
    (tmp_path / "c.csv").write_text("a,b,c\n1,2,\n3,4,\n")
    assert csv_header(tmp_path / "c.csv") == ["a", "b", "c"]
    np.testing.assert_array_equal(
        load_array(tmp_path / "c.csv", allow_nan=True), [[1, 2, np.nan], [3, 4, np.nan]]
    )
    with pytest.raises(ValueError, match="missing value '' on line 2, column 3"):
        load_array(tmp_path / "c.csv")
    # a row without the trailing delimiter leaves the others' empty field a missing value
    (tmp_path / "m.csv").write_text("1,2,\n3,4,5\n")
    with pytest.raises(ValueError, match="missing value '' on line 1, column 3"):
        load_array(tmp_path / "m.csv")
    (tmp_path / "x.csv").write_text('"1","x"\n')
    with pytest.raises(ValueError, match="non-numeric value 'x' on line 1, column 2"):
        load_array(tmp_path / "x.csv")


def test_csv_trailing_delimiter_keeps_the_ragged_row_check(tmp_path):
    """With a delimiter ending every row, a row with an extra value was read without it (the
    trailing field's column was cut off by ``usecols``): now the ragged-row error as without."""
    for name, text, line in [
        ("a.csv", "1,2,\n3,4,5,\n", 2),
        ("b.csv", "a,b,\n1,2,\n3,4,5,6,\n", 3),
        ("c.tsv", "1\t2\t\n3\t4\t5\t\n", 2),
    ]:
        (tmp_path / name).write_text(text)
        for allow_nan in (False, True):
            with pytest.raises(ValueError, match=f"line {line} has"):
                load_array(tmp_path / name, allow_nan=allow_nan)


def test_csv_header_names_agree_with_the_columns(tmp_path):
    """pandas quotes a name holding the delimiter ("income, USD"): csv_header split it in two
    (3 names for 2 columns: the CLI's fit then wrote a model that could not be loaded); a
    header alone ending with the delimiter kept an empty third name; a header that does not
    name every column is an error naming both lines."""
    from exactdgn.datasets import csv_header

    (tmp_path / "q.csv").write_text('"income, USD",age\n1.5,2\n3,4\n')
    assert csv_header(tmp_path / "q.csv") == ["income, USD", "age"]
    assert load_array(tmp_path / "q.csv").shape == (2, 2)
    (tmp_path / "h.csv").write_text('"count #",b\n1,2\n')
    assert csv_header(tmp_path / "h.csv") == ["count #", "b"]
    np.testing.assert_array_equal(load_array(tmp_path / "h.csv"), [[1, 2]])
    (tmp_path / "t.csv").write_text("a,b,\n1,2\n3,4\n")
    assert csv_header(tmp_path / "t.csv") == ["a", "b"]
    assert load_array(tmp_path / "t.csv").shape == (2, 2)
    for text in ("a,b,c\n1,2\n", "a,b\n1,2,3\n"):
        (tmp_path / "w.csv").write_text(text)
        for call in (csv_header, load_array):
            with pytest.raises(ValueError, match=r"w.csv: the header row \(line 1\) names"):
                call(tmp_path / "w.csv")


def test_csv_review_cases(tmp_path):
    """Review of the CSV changes: quoted names with blanks in a whitespace-separated file
    ("header names 4 columns"), R's row names read silently as a data column, a header the
    CLI wrote and could not read back (names holding a comma), Python's ``1_000``."""
    from exactdgn.datasets import csv_header, csv_line

    (tmp_path / "w.txt").write_text('"sepal length" "sepal width"\n1 2\n3 4\n')
    assert csv_header(tmp_path / "w.txt") == ["sepal length", "sepal width"]
    np.testing.assert_array_equal(load_array(tmp_path / "w.txt"), [[1, 2], [3, 4]])
    (tmp_path / "r.csv").write_text('"","x","y"\n"1",0.5,0.3\n"2",0.1,0.2\n')
    with pytest.warns(UserWarning, match="r.csv: the first column has no name.*row.names=FALSE"):
        X = load_array(tmp_path / "r.csv")
    np.testing.assert_array_equal(X, [[1, 0.5, 0.3], [2, 0.1, 0.2]])
    names = ["height, cm", "weight", 'q"x', "a#b"]
    (tmp_path / "h.csv").write_text(csv_line(names) + "\n1,2,3,4\n")
    assert csv_header(tmp_path / "h.csv") == names
    assert load_array(tmp_path / "h.csv").shape == (1, 4)
    (tmp_path / "u.csv").write_text("1,1_000\n")
    for allow_nan in (False, True):
        with pytest.raises(ValueError, match="non-numeric value '1_000' on line 1, column 2"):
            load_array(tmp_path / "u.csv", allow_nan=allow_nan)

"""Loaders for data on disk: MNIST IDX files (gzip or raw), CSV, ``.npy`` and ``.npz``.

Every malformed file is rejected with a ``ValueError`` that names the file and the problem.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
import shlex
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import is_int

__all__ = ["csv_header", "csv_line", "load_array", "load_digits", "load_mnist", "read_idx"]

logger = logging.getLogger(__name__)

# IDX type codes -> big-endian numpy dtypes
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """Whole file content, transparently gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise ValueError(f"{path}: is a directory, expected a file") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if path.suffix == ".gz":
        raise ValueError(f"{path}: has a .gz suffix but is not gzip data")
    return raw


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Layout: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions ``k``, ``k`` big-endian uint32 sizes,
    then the data in C order, big-endian.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    ndarray
        Shape given by the header, native-endian dtype.

    Raises
    ------
    ValueError
        For a bad magic number, unknown type code, zero dimensions, or a data size that does not
        match the header (truncated file or trailing bytes), naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: only {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} (must start with two zero bytes); "
            "not an IDX file"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    dims = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no int64 overflow
    found = len(data) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated IDX data: header says shape {dims} ({expected} bytes) but only "
            f"{found} bytes follow"
        )
    if found > expected:
        raise ValueError(
            f"{path}: {found - expected} unexpected trailing bytes after the IDX data "
            f"of shape {dims}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _check_classes(classes) -> np.ndarray | None:
    if classes is None:
        return None
    if is_int(classes):
        vals = [int(classes)]
    elif isinstance(classes, Iterable) and not isinstance(classes, str | bytes):
        vals = list(classes)
        if not vals or not all(is_int(v) for v in vals):
            raise ValueError(f"classes must be an int or a non-empty list of ints, got {classes!r}")
    else:
        raise ValueError(f"classes must be an int or a non-empty list of ints, got {classes!r}")
    arr = np.array(sorted(set(int(v) for v in vals)))
    if arr.min() < 0 or arr.max() > 9:
        raise ValueError(f"classes must lie in 0..9, got {classes!r}")
    return arr


def _filter_classes(X, y, classes, source: str):
    sel = _check_classes(classes)
    if sel is None:
        return X, y
    keep = np.isin(y, sel)
    if not keep.any():
        raise ValueError(f"{source}: no samples of classes {sel.tolist()}")
    return X[keep], y[keep]


def load_digits(classes=None, *, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1,797 images shipped with scikit-learn).

    Parameters
    ----------
    classes : int or sequence of int, optional
        Keep only these digit classes (0-9).
    normalize : bool
        Divide the pixel values (0..16) by 16 to get [0, 1].

    Returns
    -------
    X : ndarray of shape (N, 64), float64
    y : ndarray of shape (N,), int64
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    if normalize:
        X = X / 16.0
    X, y = _filter_classes(X, y, classes, "digits")
    return np.ascontiguousarray(X), y


_MNIST_KINDS = {"train": "train", "t10k": "t10k", "test": "t10k"}


def _find_mnist_file(directory: Path, kind: str, what: str) -> Path:
    idx = "idx3" if what == "images" else "idx1"
    names = [f"{kind}-{what}-{idx}-ubyte", f"{kind}-{what}.{idx}-ubyte"]
    tried = []
    for name in names:
        for suffix in ("", ".gz"):
            p = directory / (name + suffix)
            tried.append(p.name)
            if p.is_file():
                return p
    raise FileNotFoundError(f"no MNIST {what} file in {directory}; looked for {', '.join(tried)}")


def _resolve_mnist(path, kind: str, labels_path) -> tuple[Path, Path]:
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"MNIST path {path} does not exist")
    if path.is_dir():
        images = _find_mnist_file(path, kind, "images")
        labels = Path(labels_path) if labels_path is not None else None
        if labels is None:
            labels = _find_mnist_file(path, kind, "labels")
        return images, labels
    images = path
    if labels_path is not None:
        return images, Path(labels_path)
    name = path.name
    for a, b in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if a in name:
            cand = path.with_name(name.replace(a, b))
            if cand.is_file():
                return images, cand
            # the labels file may be compressed differently from the images file
            alt = cand.with_name(cand.name[:-3]) if cand.suffix == ".gz" else Path(f"{cand}.gz")
            if alt.is_file():
                return images, alt
            raise FileNotFoundError(f"no labels file next to {path} (looked for {cand} and {alt})")
    raise FileNotFoundError(
        f"cannot infer the labels file for {path}; pass labels_path= or the directory"
    )


def load_mnist(
    path,
    *,
    kind: str = "t10k",
    classes=None,
    downsample: int | None = None,
    normalize: bool = True,
    labels_path=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST (or any IDX image/label pair in its layout) from local files.

    Parameters
    ----------
    path : str or os.PathLike
        A directory holding ``{kind}-images-idx3-ubyte[.gz]`` and ``{kind}-labels-idx1-ubyte[.gz]``
        (also the ``images.idx3`` spelling), or the images file itself (the labels file is found
        next to it, or given by ``labels_path``).
    kind : {"t10k", "test", "train"}
    classes : int or sequence of int, optional
        Keep only these digit classes.
    downsample : int, optional
        Target side length ``s`` (e.g. 14): each ``(28/s) x (28/s)`` block is averaged. ``s`` must
        divide the image side.
    normalize : bool
        Scale pixel values from 0..255 to [0, 1].
    labels_path : str or os.PathLike, optional

    Returns
    -------
    X : ndarray of shape (N, s*s), float64
        Row-major flattened images.
    y : ndarray of shape (N,), int64

    Raises
    ------
    ValueError
        Malformed file (bad magic number, wrong type or number of dimensions, truncated data,
        label values outside 0..9, image/label count mismatch), naming the file.
    FileNotFoundError
        Missing files.
    """
    if kind not in _MNIST_KINDS:
        raise ValueError(f"kind must be one of {sorted(_MNIST_KINDS)}, got {kind!r}")
    _check_classes(classes)  # fail before reading files
    if downsample is not None and not is_int(downsample, 1):
        raise ValueError(
            f"downsample={downsample!r} is invalid: give the target side length as an integer "
            "that divides the image side (e.g. 14 or 7 for 28x28 MNIST)"
        )
    images_path, lab_path = _resolve_mnist(path, _MNIST_KINDS[kind], labels_path)
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: expected a 3-D unsigned-byte IDX image file (magic 2051), got "
            f"{images.ndim}-D data of type {images.dtype}"
        )
    labels = read_idx(lab_path)
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{lab_path}: expected a 1-D unsigned-byte IDX label file (magic 2049), got "
            f"{labels.ndim}-D data of type {labels.dtype}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lab_path}: holds {labels.shape[0]} labels but {images_path} holds "
            f"{images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_path}: label values must be 0..9, found {int(labels.max())}")
    n, h, w = images.shape
    y = labels.astype(np.int64)
    X = images.astype(np.float64)
    if normalize:
        X /= 255.0
    if downsample is not None:
        s = int(downsample)
        if s < 1 or h % s or w % s:
            raise ValueError(f"downsample={downsample} must divide the image size {h}x{w}")
        fh, fw = h // s, w // s
        X = X.reshape(n, s, fh, s, fw).mean(axis=(2, 4))
        h = w = s
    X = X.reshape(n, h * w)
    X, y = _filter_classes(X, y, classes, str(images_path))
    logger.info("loaded %d MNIST images (%dx%d) from %s", X.shape[0], h, w, images_path)
    return np.ascontiguousarray(X), y


def _validate_loaded(arr: np.ndarray, path: Path, allow_nan: bool = False) -> np.ndarray:
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.floating)
        or arr.dtype == bool
    ):
        raise ValueError(f"{path}: data must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        hint = " (save a single feature as shape (N, 1))" if arr.ndim == 1 else ""
        raise ValueError(
            f"{path}: data must be 2-D (samples x features), got shape {arr.shape}{hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: data is empty (shape {arr.shape})")
    X = np.ascontiguousarray(arr, dtype=np.float64)
    bad = np.isinf(X) if allow_nan else ~np.isfinite(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        what = "infinite" if allow_nan else "NaN or infinite"
        raise ValueError(
            f"{path}: {int(bad.sum())} {what} values (first bad rows, 0-based: "
            f"{rows[:5].tolist()}); remove them first"
            + ("" if allow_nan else " (NaN marks a missing value where missing data is allowed)")
        )
    return X


# how CSV writers (pandas, R, spreadsheets) spell a missing value; read as NaN with allow_nan
_MISSING = frozenset({"", "na", "n/a", "nan", "null"})


def _is_number(field: str, allow_nan: bool) -> bool:
    try:
        _float(field)
    except ValueError:
        return allow_nan and field.lower() in _MISSING
    return True


def _unquote(field: str) -> str:
    """One CSV field without its surrounding blanks and one pair of double quotes
    (``"1.5"``, as spreadsheets and ``csv.QUOTE_ALL`` writers quote numbers)."""
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        field = field[1:-1].strip()
    return field


def _csv_float(field: str) -> float:
    """``float`` of one CSV field, NaN for a missing-value spelling (``allow_nan``)."""
    field = _unquote(field)
    return np.nan if field.lower() in _MISSING else _float(field)


def _blank_field(field: str) -> float:
    """The empty field after a row's trailing delimiter (NaN; dropped by the caller)."""
    if _unquote(field):
        raise ValueError(f"a value {field!r} after the trailing delimiter")
    return np.nan


def _csv_float_strict(field: str) -> float:
    """``float`` of one quoted or unquoted CSV field (no missing values)."""
    return _float(_unquote(field))


def _float(field: str) -> float:
    """``float`` as np.loadtxt parses a field (Python's also takes ``1_000``)."""
    if "_" in field:
        raise ValueError(f"could not convert string to float: {field!r}")
    return float(field)


@dataclass(frozen=True)
class _CsvLayout:
    """How a CSV file is read: its (1-based line number, content) pairs of non-blank,
    non-comment lines, the delimiter, the header's names (``None`` without one) and whether
    every data row ends with the delimiter (a spreadsheet's trailing comma: that empty last
    field is not a column), and the first data row's number of values (``width``)."""

    lines: list
    delimiter: str | None
    header: list[str] | None
    trailing: bool
    width: int = 0

    @property
    def start(self) -> int:
        """Index in ``lines`` of the first data row."""
        return 0 if self.header is None else 1


def _strip_comment(line: str) -> str:
    """``line`` without a ``#`` comment (a ``#`` inside double quotes is part of a name)."""
    if "#" not in line:
        return line
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _split_fields(line: str, delimiter: str | None) -> list[str]:
    """A CSV line's fields, unquoted (a quoted field may hold the delimiter, as ``csv`` and
    np.loadtxt read it), without a trailing ``#`` comment."""
    line = _strip_comment(line)
    if delimiter is None:  # blanks: quoted names may hold blanks ("sepal length")
        try:
            return [_unquote(f) for f in shlex.split(line, posix=False)]
        except ValueError:  # an unclosed quote: the plain split (its field is then reported)
            return [_unquote(f) for f in line.split()]
    if len(delimiter) != 1:
        return [_unquote(f) for f in line.split(delimiter)]
    fields = next(csv.reader([line], delimiter=delimiter, skipinitialspace=True), [])
    return [_unquote(f) for f in fields]


def csv_line(names) -> str:
    """One CSV line of ``names``, quoted where a name holds a comma, a quote or a ``#`` (as
    ``csv`` writes them): what :func:`csv_header` reads back as the same names."""

    def field(name) -> str:
        name = str(name)
        if any(c in name for c in ',"#\r\n') or name != name.strip():
            return '"' + name.replace('"', '""') + '"'
        return name

    return ",".join(field(n) for n in names)


def _diagnose_csv(layout: _CsvLayout, path: Path) -> None:
    """Raise a precise error for the first ragged or non-numeric row (slow path, errors only)."""
    lines, start, delimiter = layout.lines, layout.start, layout.delimiter

    def split(ln):
        fields = _split_fields(ln, delimiter)
        return fields[:-1] if layout.trailing else fields

    width = layout.width
    for lineno, ln in lines[start:]:
        fields = split(ln)
        if len(fields) != width:
            raise ValueError(
                f"{path}: line {lineno} has {len(fields)} fields but the first data row has {width}"
            )
        for j, f in enumerate(fields):
            if f.lower() in _MISSING and f.lower() != "nan":
                raise ValueError(
                    f"{path}: missing value {f!r} on line {lineno}, column {j + 1}: pass "
                    "allow_nan=True to read missing values as NaN"
                )
            if not _is_number(f, False):
                # a first row of names and numbers is data, not a header (headers: names only)
                hint = (
                    " (a header row holds names only; this row also holds numbers, so it is "
                    "read as data: fix the value, or name every column)"
                    if start == 0 and lineno == lines[0][0]
                    else ""
                )
                raise ValueError(
                    f"{path}: non-numeric value {f!r} on line {lineno}, column {j + 1}{hint}"
                )


def _csv_layout(path: Path, delimiter: str | None, stacklevel: int = 4) -> _CsvLayout:
    """The :class:`_CsvLayout` of a CSV file (the delimiter guessed from the first row unless
    given); ``stacklevel`` of its warning, for the public caller's caller."""
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first field
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text (CSV) file ({exc})") from exc
    raw = text.splitlines()
    lines = [(i + 1, ln) for i, ln in enumerate(raw) if ln.strip() and not ln.lstrip()[:1] == "#"]
    if not lines:
        raise ValueError(f"{path}: no data rows")
    first = _strip_comment(lines[0][1])
    if delimiter is None:
        delimiter = "," if "," in first else ("\t" if "\t" in first else None)
    fields = _split_fields(first, delimiter)
    # a header row holds names: no number, and a field that is not a missing value either
    # ("1,,3" is data; so is "1000,?,0.3", whose '?' is then reported, not the row dropped)
    header = None
    if not any(_is_number(f, False) for f in fields) and not all(
        _is_number(f, True) for f in fields
    ):
        header = fields
        logger.debug("%s: treating line %d as a header", path, lines[0][0])
        if len(header) > 1 and header[0] == "":
            warnings.warn(
                f"{path}: the first column has no name in the header (line {lines[0][0]}): a row "
                "index (pandas' to_csv, R's write.csv)? It is read as data; drop it, or write "
                "the file without it (index=False, row.names=FALSE)",
                UserWarning,
                stacklevel=stacklevel,
            )
    data = lines[0 if header is None else 1 :]
    if not data:
        return _CsvLayout(lines, delimiter, header, False, len(header or ()))
    n_fields = len(_split_fields(data[0][1], delimiter))
    blanks = " \t\r\f\v".replace(delimiter or " ", "")  # a tab can be the delimiter
    trailing = delimiter is not None and all(
        _strip_comment(ln).rstrip(blanks).endswith(delimiter) for _, ln in data
    )
    if trailing and header is not None and header[-1] != "" and len(header) == n_fields:
        trailing = False  # a named column left empty in every row: a column, not a comma
    width = n_fields - trailing
    if header is not None:
        if len(header) == width + 1 and header[-1] == "":
            header = header[:-1]  # the header ends with the delimiter
        if len(header) != width:
            raise ValueError(
                f"{path}: the header row (line {lines[0][0]}) names {len(header)} columns but "
                f"the first data row (line {data[0][0]}) has {width} values: give every column "
                "one name"
            )
    if trailing:
        logger.debug(
            "%s: every data row ends with %r; its empty last field is dropped", path, delimiter
        )
    return _CsvLayout(lines, delimiter, header, trailing, width)


def csv_header(path, *, delimiter: str | None = None) -> list[str] | None:
    """The column names of a CSV file's header row as :func:`load_array` reads it (a first row
    of names, no numbers); ``None`` when the file has none (or is not a CSV / TSV / TXT file)."""
    path = Path(os.fspath(path)).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt"):
        return None
    if suffix == ".tsv" and delimiter is None:
        delimiter = "\t"
    return _csv_layout(path, delimiter, stacklevel=3).header


def _load_csv(path: Path, delimiter: str | None, allow_nan: bool) -> np.ndarray:
    layout = _csv_layout(path, delimiter)
    lines = layout.lines
    if layout.start >= len(lines):
        raise ValueError(f"{path}: only a header row, no data")
    kwargs = dict(
        delimiter=layout.delimiter,
        skiprows=lines[0][0] if layout.start else 0,
        comments="#",
        ndmin=2,
        dtype=np.float64,
        encoding="utf-8-sig",
        quotechar='"',
    )
    convert = _csv_float if allow_nan else _csv_float_strict
    width = None
    if layout.trailing:  # read the empty last field too (np.loadtxt checks every row's width)
        width = layout.width
        fast, slow = {width: _blank_field}, {j: convert for j in range(width)}
        slow[width] = _blank_field
    else:
        fast, slow = None, convert
    try:
        try:
            arr = np.loadtxt(path, converters=fast, **kwargs)
        except ValueError:
            # empty cells, "NA", quotes after a blank, ...: the slower per-field conversion
            # (without allow_nan only quotes can need it: else straight to the diagnosis)
            if not allow_nan and not any('"' in ln for _, ln in lines):
                raise
            arr = np.loadtxt(path, converters=slow, **kwargs)
    except ValueError as exc:
        _diagnose_csv(layout, path)
        raise ValueError(f"{path}: cannot parse as numeric CSV ({exc})") from exc
    return arr if width is None else arr[:, :width]


def _check_magic(path: Path, magic: bytes, what: str) -> None:
    with path.open("rb") as fh:
        head = fh.read(len(magic))
    if head != magic:
        raise ValueError(f"{path}: not {what} (its first bytes are {head!r})")


def _load_npz(path: Path, key: str | None) -> np.ndarray:
    # numpy leaks its own file handle when the archive is corrupt: open and close it here
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as npz:
            keys = list(npz.files)
            if key is None:
                if len(keys) == 1:
                    key = keys[0]
                else:
                    key = next((k for k in ("X", "data") if k in keys), None)
                    if key is None:
                        raise ValueError(
                            f"{path}: holds several arrays {keys}; pass key= (command line: "
                            "--key) to pick one"
                        )
            if key not in keys:
                raise ValueError(f"{path}: no array named {key!r} (it holds {keys})")
            return npz[key]
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: not a valid numeric .npz archive ({exc})") from exc
    except (OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
        # (RuntimeError: a zip entry flagged as encrypted; zipfile's "strong encryption" error
        # is a subclass of it)
        raise ValueError(f"{path}: not a valid .npz file ({exc})") from exc


def load_array(
    path, *, key: str | None = None, delimiter: str | None = None, allow_nan: bool = False
) -> np.ndarray:
    """Load a 2-D numeric data matrix from ``.csv``/``.tsv``/``.txt``, ``.npy`` or ``.npz``.

    CSV: comma, tab or whitespace separated (guessed from the first row unless ``delimiter`` is
    given); an optional header row (names only, no number: a first row that mixes numbers and
    text is data, and its text an error) and ``#`` comment lines are skipped. Numbers may be
    double-quoted (``"1.5"``), and a delimiter that ends every data row (a spreadsheet's
    trailing comma) does not make an empty last column. With ``allow_nan``, empty cells and
    ``NA``, ``N/A``, ``NaN``, ``null`` (any case) are missing values (NaN).
    ``.npz``: the single array it holds, or the one named ``key`` (``"X"`` or ``"data"`` are
    tried when there are several). ``allow_nan``: NaN entries (missing values) are kept;
    infinite values are always an error.

    Returns
    -------
    X : ndarray of shape (N, D), float64

    Raises
    ------
    ValueError
        Naming the file: unsupported extension, non-numeric entries, ragged rows, wrong number
        of dimensions, empty data, NaN or infinite values, unreadable ``.npy``/``.npz``.
    """
    path = Path(os.fspath(path)).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a data file (.csv, .tsv, .txt, .npy, .npz)")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        if suffix == ".tsv" and delimiter is None:
            delimiter = "\t"
        arr = _load_csv(path, delimiter, allow_nan)
    elif suffix == ".npy":
        _check_magic(path, b"\x93NUMPY", "a .npy file")
        try:
            with path.open("rb") as fh:
                arr = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:  # object arrays need pickling
            raise ValueError(f"{path}: not a valid numeric .npy file ({exc})") from exc
    elif suffix == ".npz":
        _check_magic(path, b"PK\x03\x04", "a .npz (zip) archive")
        arr = _load_npz(path, key)
    else:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .txt, .npy or .npz"
        )
    return _validate_loaded(np.asarray(arr), path, allow_nan)

"""Arrow arrays from numpy arrays, made from their buffers, without loading pandas or ``pyarrow.compute``.

``pa.array`` asks pyarrow's pandas shim whether its argument is a pandas categorical, whatever the argument is,
and the shim imports pandas to answer (~0.2 s of a one-record build's ~1 s, where pandas is installed).
These build the same arrays from buffers, which pyarrow takes as they are (no copy of a numpy array of the
right type), so the files written from them are the same bytes.

    >>> numpy_array(np.array([3, 0, 5]), pa.int32(), null=np.array([False, True, False])).to_pylist()
    [3, None, 5]
    >>> numpy_array(np.array([True, False, True]), pa.bool_()).to_pylist()
    [True, False, True]
    >>> coded_strings(["a", "hé"], np.array([1, 1, 0])).to_pylist()
    ['hé', 'hé', 'a']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def _bits(values: np.ndarray) -> pa.Buffer:
    """Arrow's bitmap of booleans: bit ``i % 8`` of byte ``i // 8`` (the bits past the end 0, as pyarrow's)."""
    return pa.py_buffer(np.packbits(values, bitorder="little"))


def numpy_array(values: np.ndarray, type: pa.DataType | None = None, null: np.ndarray | None = None) -> pa.Array:
    """``pa.array(values, type=type, mask=null)`` of a 1-D numpy array of integers or booleans (``type``: the
    array's own where None). A value that does not fit ``type`` is an error, as it is for ``pa.array``."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"a 1-D array is needed, got shape {values.shape}")
    type = pa.from_numpy_dtype(values.dtype) if type is None else type
    if pa.types.is_boolean(type):
        data = _bits(values.astype(np.bool_, copy=False))
    elif pa.types.is_integer(type):
        want = np.dtype(type.to_pandas_dtype())
        cast = np.ascontiguousarray(values.astype(want, copy=False))
        if cast.dtype != values.dtype and not np.array_equal(cast, values):
            raise pa.ArrowInvalid(f"integer values do not fit {type}")
        data = pa.py_buffer(cast)
    else:
        raise TypeError(f"numpy_array makes integer and boolean arrays, not {type}")
    nulls = 0 if null is None else int(np.count_nonzero(null))
    validity = _bits(~np.asarray(null, dtype=np.bool_)) if nulls else None
    return pa.Array.from_buffers(type, len(values), [validity, data], null_count=nulls)


def coded_strings(names: Sequence[str], codes: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``string_array(names).take(numpy_array(codes, null=null))``: ``names[codes[i]]`` for each ``i``, null where
    ``null`` (its code is not looked at). ``take`` loads ``pyarrow.compute`` (~50 ms); this gathers the bytes in
    numpy.

        >>> coded_strings(["train", "eval"], np.array([1, 0, 0]), null=np.array([False, False, True])).to_pylist()
        ['eval', 'train', None]
    """
    codes = np.asarray(codes, np.int64)
    nulls = 0 if null is None else int(np.count_nonzero(null))
    if nulls:
        codes = np.where(null, -1, codes)
    encoded = [n.encode("utf-8") for n in names]
    # one more, empty name at the end: a null's code (-1) takes it
    lengths = np.fromiter(map(len, [*encoded, b""]), np.int64, len(encoded) + 1)
    starts = np.cumsum(lengths) - lengths
    taken = lengths[codes]
    offsets = np.zeros(len(codes) + 1, np.int64)
    np.cumsum(taken, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise pa.ArrowInvalid("more than 2 GiB of strings in one array")
    blob = np.frombuffer(b"".join(encoded), np.uint8)
    at = np.repeat(starts[codes] - offsets[:-1], taken) + np.arange(offsets[-1], dtype=np.int64)
    validity = _bits(~np.asarray(null, dtype=np.bool_)) if nulls else None
    return pa.Array.from_buffers(pa.string(), len(codes), [validity, pa.py_buffer(offsets.astype(np.int32)),
                                                           pa.py_buffer(blob[at])], null_count=nulls)


__all__ = ["coded_strings", "numpy_array"]

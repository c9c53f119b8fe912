"""Reading and writing the fields of a netx-style HDF5 file (export/netx_h5.py): strings the way slayer writes
them, integers in the narrowest type, and the reader's checks, which name the file, the layer and the key."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from common.errors import InputError


def put_str(g: h5py.Group, key: str, value: str) -> None:
    """A string the way slayer writes it (netx reads value[0].decode('ascii'))."""
    g.create_dataset(key, (1,), f"S{max(10, len(value))}", [value.encode("ascii")])


def int_dtype(arr: np.ndarray):
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    for dt in (np.int8, np.int16, np.int32):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    return np.int64


def put_ints(g: h5py.Group, key: str, value) -> None:
    arr = np.asarray(value)
    if arr.dtype == bool:
        g.create_dataset(key, data=arr)
        return
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{key}: integers expected, got {arr.dtype}")
    g.create_dataset(key, data=arr.astype(int_dtype(arr)))


def json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"meta value of type {type(obj).__name__} cannot be stored")


def normalize_meta(meta: dict) -> dict:
    """The meta as it comes back from a file (JSON: tuples become lists, numpy scalars plain)."""
    return json.loads(json.dumps(meta, default=json_default))


# ---- the reader's checks -----------------------------------------------------------------

class Where:
    """Names the file and layer in every message."""

    def __init__(self, name: str, layer: int | None = None):
        self.name, self.layer = name, layer

    def error(self, msg: str) -> InputError:
        at = f"layer {self.layer}: " if self.layer is not None else ""
        return InputError(f"{self.name}: {at}{msg}")


def check_keys(g: h5py.Group, expected: set[str], w: Where, prefix: str = "", optional: set[str] = frozenset()) -> None:
    have = set(g.keys())
    missing, unknown = sorted(expected - have), sorted(have - expected - optional)
    if missing:
        raise w.error(f"missing key '{prefix}{missing[0]}'")
    if unknown:
        raise w.error(f"unknown key '{prefix}{unknown[0]}'")


def get_str(g: h5py.Group, key: str, w: Where) -> str:
    ds = g[key]
    if not isinstance(ds, h5py.Dataset) or ds.size != 1:
        raise w.error(f"'{key}' must be one string")
    value = ds[()]
    value = value.reshape(-1)[0] if isinstance(value, np.ndarray) else value
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise w.error(f"'{key}' is not an ASCII string") from None
    if isinstance(value, str):
        return value
    raise w.error(f"'{key}' must be a string, found {type(value).__name__}")


def get_ints(g: h5py.Group, key: str, shape: tuple | None, lo: int, hi: int, w: Where,
              what: str = "") -> np.ndarray:
    """An integer array of `shape` (None: a scalar, stored as () or (1,)) with values in [lo, hi]."""
    ds = g[key]
    if not isinstance(ds, h5py.Dataset):
        raise w.error(f"'{key}' must be a dataset")
    if not (np.issubdtype(ds.dtype, np.integer) or ds.dtype == bool):
        raise w.error(f"'{key}' must hold integers, found {ds.dtype}")
    arr = np.asarray(ds[()]).astype(np.int64)
    if shape is None:
        if arr.size != 1 or arr.ndim > 1:
            raise w.error(f"'{key}' must be one value, found shape {arr.shape}")
        arr = arr.reshape(())
    elif arr.shape != tuple(shape):
        raise w.error(f"'{key}' has shape {arr.shape}, expected {tuple(shape)}")
    if arr.size and (arr.min() < lo or arr.max() > hi):
        bad = int(arr.min()) if arr.min() < lo else int(arr.max())
        raise w.error(f"'{key}' holds {bad}, outside the {what or 'allowed'} range [{lo}, {hi}]")
    return arr


def get_int(g, key, lo, hi, w, what="") -> int:
    return int(get_ints(g, key, None, lo, hi, w, what))



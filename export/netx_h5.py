"""netx-style HDF5 network files: the format, the writer and the validating reader.

Layout (lava-dl netx's, extended for the study's neurons)
--------------------------------------------------------
Root attributes: ``format`` = "spikaudio-netx", ``format_version`` = 1, ``netx_compatible``
(bool), ``meta`` (the QNetwork's meta as JSON: the authoritative copy; tuples come back as
lists) and, for people and other tools, plain copies of its scalar entries (``model``,
``dataset``, ``channels``, ``steps``, ``bin_hz``, ``duration``, ``n_classes``,
``class_names``). netx-compatible files add ``netx_input_message_bits`` = 8 and
``netx_reset_offset`` = 1 (how to call stock netx, see export/netx_stock.py).

``layer/0`` is netx's input entry: ``type`` = 'input', ``shape`` = [channels] (no neuron, so
netx creates no process for it). ``layer/1 .. layer/L`` are the recurrent layers
(``type`` = 'dense_rec'), ``layer/L+1`` the readout (``type`` = 'dense'). Every layer has
``shape`` = [n] and ``neuron/type``; strings are stored as netx/slayer do (1-element
fixed-length ASCII). Integers use the narrowest int type that holds them.

Our neuron types. ``weight*`` are 8-bit mantissas [n, n_in] (recurrent: [n, n]) in
[-128, 127], each with its exponent ``<key>_exp`` in [-8, 7]; ``bias*`` are 13-bit mantissas
[n] with ``<key>_exp`` in [0, 7]; semantics in docs/fixed_point.md.

- ``LIF_SOFT`` (LIF, soft reset), dense_rec: weight, weight_rec, bias (each + _exp);
  neuron/{vDecay[n], vThMant, gradedSpike, stateMin, stateMax}.
- ``CUBA_SOFT`` (the study's Cuba-LIF: soft reset, per-neuron decays, (1 - beta) i), dense_rec:
  as LIF_SOFT; neuron/{iDecay[n], vDecay[n], vThMant, gradedSpike, stateMin, stateMax}.
- ``SPIKGRU``, dense_rec: as CUBA_SOFT plus the gate's own connections weight_gate,
  weight_gate_rec and bias_gate (each + _exp); neuron/{iDecay[n], vThMant, gradedSpike,
  sigmoidTable[256], stateMin, stateMax} (the table must equal this toolchain's).
- ``LAVA_CUBA`` (Lava's CUBA, hard reset, shared decays, with our per-connection exponents:
  a --lava-cuba Cuba-LIF exported without --netx-compatible), dense_rec: as LIF_SOFT;
  neuron/{iDecay, vDecay, vThMant, refDelay, gradedSpike} (one value each).
- ``LEAKY_READOUT``, dense: weight, bias (each + _exp); neuron/{vDecay[n]} and, for a readout with a
  current stage (an imported NIR CubaLI), neuron/iDecay[n].
- A LIF_SOFT or CUBA_SOFT layer without recurrence (an imported NIR graph's spiking output layer) is a
  ``dense`` layer: no weight_rec.

vThMant of LIF_SOFT and CUBA_SOFT (and, optionally, of LEAKY_READOUT, where it sets o's units) is 1..1024: an
imported NIR graph with weights of tens of thresholds gets a lower one (docs/fixed_point.md). Any connection may
carry a second one between the same neurons, ``<key>_fine`` and ``<key>_fine_exp`` (export --split-weights: the
residual of an 8-bit weight), whose dendritic input adds to the first.

LIF_SOFT and CUBA_SOFT take an optional neuron/resetMode string: 'subtract' or 'zero' reset in the step of
the spike (docs/fixed_point.md); absent, the study's one-step-late soft reset.

stateMin/stateMax (LIF_SOFT, CUBA_SOFT, SPIKGRU): the clamp of i and v in state units (the training
clip times THETA; -(2^23 - 1) <= stateMin < stateMax <= 2^23 - 1); files without them mean the 24-bit
range. iDecay/vDecay are the 12-bit decays d (factor (4096 - d)/4096); for LAVA_CUBA and CUBA,
iDecay follows netx (Lava's du = iDecay - 1, so the current decays by 4096 - iDecay) and
decays are one value per layer. vThMant is 1024 (threshold 1024 << 6) for every spiking type but the exception below.

The ``--netx-compatible`` variant (stock netx CUBA layers) is described in export/netx_stock.py; the
writers and readers of each neuron type are in export/h5_blocks.py, the field helpers in export/h5_fields.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from common.atomic import atomic_path
from common.errors import InputError
from export.h5_blocks import BLOCKS, block_for, by_file
from export.h5_fields import Where, check_keys, get_ints, get_str, json_default, put_ints, put_str
from export.netx_stock import NETX_INPUT_MESSAGE_BITS, NETX_RESET_OFFSET
from export.qnet import QNetwork

FORMAT = "spikaudio-netx"
FORMAT_VERSION = 1

_META_ATTRS = ("model", "dataset", "channels", "steps", "bin_hz", "duration", "n_classes")
_ROOT_ATTRS = {"format", "format_version", "netx_compatible", "meta", "class_names",
               "netx_input_message_bits", "netx_reset_offset", *_META_ATTRS}


def _check_structure(net: QNetwork) -> None:
    if not net.layers or net.readout.kind != "readout":
        raise InputError("a network ends with its readout layer")
    if any(l.kind == "readout" for l in net.hidden):
        raise InputError("only the last layer may be a readout")
    for k in range(1, len(net.layers)):
        if net.layers[k].n_in != net.layers[k - 1].n_out:
            raise InputError(f"layer {k} takes {net.layers[k].n_in} inputs, layer {k - 1} gives {net.layers[k - 1].n_out}")


def write_network(path: str | Path, net: QNetwork, netx_compatible: bool = False) -> Path:
    """Writes `net` atomically (temp file, read back and checked, then renamed onto `path`)."""
    path = Path(path)
    _check_structure(net)
    blocks = [block_for(l, netx_compatible) for l in net.layers]
    meta_json = json.dumps(net.meta, default=json_default, sort_keys=True)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["netx_compatible"] = bool(netx_compatible)
            f.attrs["meta"] = meta_json
            for key in _META_ATTRS:
                value = net.meta.get(key)
                if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool):
                    f.attrs[key] = value
            if net.meta.get("class_names"):
                f.attrs["class_names"] = np.array([str(c) for c in net.meta["class_names"]], dtype=h5py.string_dtype())
            if netx_compatible:
                f.attrs["netx_input_message_bits"] = NETX_INPUT_MESSAGE_BITS
                f.attrs["netx_reset_offset"] = NETX_RESET_OFFSET
            g0 = f.create_group("layer/0")
            put_str(g0, "type", "input")
            put_ints(g0, "shape", np.array([net.layers[0].n_in]))
            for i, (block, layer) in enumerate(zip(blocks, net.layers), start=1):
                try:
                    block.write(f.create_group(f"layer/{i}"), layer)
                except ValueError as exc:
                    raise InputError(f"{path}: layer {i}: {exc}") from None
        read_network(tmp, name=str(path))  # the file must pass its own reader
    return path


def read_network(path: str | Path, name: str | None = None) -> QNetwork:
    """Reads and validates a file; anything unknown, missing, mis-shaped or out of range is an InputError
    naming the file, the layer and the key."""
    path = Path(path)
    w = Where(name or str(path))
    if path.is_dir():
        raise w.error("is a directory; name an exported network file (.h5)")
    if not path.is_file():
        raise w.error("no such file")
    if not h5py.is_hdf5(path):
        raise w.error("not an HDF5 file (truncated, damaged or another format)")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, w)
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise w.error(f"cannot be read, truncated or damaged? ({exc.__class__.__name__}: {exc})") from None


def _read(f: h5py.File, w: Where) -> QNetwork:
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise w.error(f"not a {FORMAT} file (format attribute {fmt!r}; a stock netx file or another HDF5?)")
    version = f.attrs.get("format_version")
    if version is None or not np.issubdtype(np.asarray(version).dtype, np.integer) or int(version) != FORMAT_VERSION:
        raise w.error(f"format version {version!r}, this reader reads version {FORMAT_VERSION}")
    unknown = sorted(set(f.attrs) - _ROOT_ATTRS)
    if unknown:
        raise w.error(f"unknown root attribute '{unknown[0]}'")
    try:
        meta = json.loads(f.attrs.get("meta", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise w.error("root attribute 'meta' is not JSON") from None
    if not isinstance(meta, dict):
        raise w.error("root attribute 'meta' must be a JSON object")
    netx = bool(f.attrs.get("netx_compatible", False))
    if set(f.keys()) != {"layer"}:
        extra = sorted(set(f.keys()) - {"layer"})
        raise w.error(f"unknown root key '{extra[0]}'" if extra else "no 'layer' group")
    lg = f["layer"]
    n = len(lg)
    if set(lg.keys()) != {str(i) for i in range(n)}:
        raise w.error(f"layers must be named 0..{n - 1}, found {sorted(lg.keys(), key=str)}")
    if n < 2:
        raise w.error("needs an input entry and at least a readout layer")
    w0 = Where(w.name, 0)
    g0 = lg["0"]
    check_keys(g0, {"type", "shape"}, w0)
    if get_str(g0, "type", w0) != "input":
        raise w0.error("the first layer must be netx's 'input' entry")
    channels = int(get_ints(g0, "shape", (1,), 1, 1 << 30, w0)[0])
    layers, n_in = [], channels
    for i in range(1, n):
        wi = Where(w.name, i)
        g = lg[str(i)]
        if not isinstance(g, h5py.Group):
            raise wi.error("must be a group")
        for key in ("type", "neuron"):
            if key not in g:
                raise wi.error(f"missing key '{key}'")
        if not isinstance(g["neuron"], h5py.Group) or "type" not in g["neuron"]:
            raise wi.error("missing key 'neuron/type'")
        ltype, ntype = get_str(g, "type", wi), get_str(g["neuron"], "type", wi)
        if ltype not in ("dense", "dense_rec"):
            raise wi.error(f"unknown layer type '{ltype}' (this toolchain writes dense_rec and dense)")
        block = by_file(ltype, ntype)
        if block is None:
            known = ", ".join(sorted({f"{b.neuron_type} ({b.layer_type})" for b in BLOCKS}))
            raise wi.error(f"unknown neuron type '{ntype}' in a {ltype} layer (known: {known})")
        if block.netx != netx:
            raise wi.error(f"neuron type '{ntype}' in a file whose netx_compatible attribute is {netx}")
        last = i == n - 1
        if (block.kind == "readout") != last:
            raise wi.error("the readout must be the last layer" if not last
                           else f"the last layer must be a readout, found {ntype}")
        layer = block.read(g, n_in, wi)
        layers.append(layer)
        n_in = layer.n_out
    net = QNetwork(layers, meta)
    for key, value in (("channels", channels), ("n_in", channels), ("n_classes", net.readout.n_out),
                       ("layers", len(net.hidden))):
        if meta.get(key) is not None and meta[key] != value:
            raise w.error(f"meta {key} = {meta[key]!r} but the layers say {value}")
    return net



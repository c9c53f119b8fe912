"""Operations per timestep per sample: the study's Table 2.

m inputs, n outputs, a_in / a_out spikes (events) per neuron per timestep into /
out of the layer. MAC are multiply-accumulates, AC plain accumulates.

Our one addition: the RNN's readout takes real-valued h, so its Wo h is mn MAC
(plus n MAC for the leak, n AC for the bias) rather than the spiking readout's
mn*a_in AC; the table leaves that row implicit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class LayerOps:
    name: str
    kind: str
    m: int
    n: int
    a_in: float
    a_out: float
    mac: float
    ac: float

    def as_dict(self) -> dict:
        return asdict(self)


def layer_ops(kind: str, m: int, n: int, a_in: float = 0.0, a_out: float = 0.0,
              recurrent: bool = True) -> tuple[float, float]:
    """(MAC, AC) per timestep for one layer of the given kind (recurrent False: a LIF / Cuba-LIF layer
    without U, as an imported NIR graph's output layer: no n^2 a_out term)."""
    if kind == "gru":
        return 3 * m * n + 3 * n * n + 3 * n, 3 * n
    if kind == "rnn":
        return m * n + n * n, n
    if kind in ("lif", "cuba-lif"):
        mac = n if kind == "lif" else 3 * n
        return mac, m * n * a_in + (n * n * recurrent + n) * a_out + n
    if kind == "spikgru":
        return 3 * n, 2 * m * n * a_in + (2 * n * n + n) * a_out + 2 * n
    if kind == "readout":
        return n, m * n * a_in + n
    if kind == "current-readout":  # alpha i, beta o, (1 - beta) i; an imported NIR CubaLI readout
        return 3 * n, m * n * a_in + n
    if kind == "readout-dense":  # leaky readout fed by real values (RNN)
        return m * n + n, n
    if kind == "linear-readout":  # the GRU's plain linear readout
        return m * n, n
    raise ValueError(f"unknown layer kind for ops: {kind}")


def model_ops(model_kind: str, sizes: list[int], n_classes: int, rates: list[float],
              recurrent: list[bool] | None = None, readout: str | None = None) -> list[LayerOps]:
    """Per-layer ops of a whole model.

    sizes: [n_in, hidden_1, ..., hidden_L]; rates: [input events per channel per step,
    spikes per neuron per step of each hidden layer] (ignored for the ANNs); recurrent: per hidden
    layer (default all); readout: the readout's kind (default the model kind's).
    """
    rate = lambda k: rates[k] if k < len(rates) else 0.0
    rows = []
    for l in range(1, len(sizes)):
        rec = True if recurrent is None else bool(recurrent[l - 1])
        mac, ac = layer_ops(model_kind, sizes[l - 1], sizes[l], rate(l - 1), rate(l), rec)
        rows.append(LayerOps(f"layer{l}", model_kind, sizes[l - 1], sizes[l], rate(l - 1), rate(l), mac, ac))
    readout = readout or {"gru": "linear-readout", "rnn": "readout-dense"}.get(model_kind, "readout")
    a_last = rate(len(sizes) - 1)
    mac, ac = layer_ops(readout, sizes[-1], n_classes, a_last)
    rows.append(LayerOps("readout", readout, sizes[-1], n_classes, a_last, 0.0, mac, ac))
    return rows


def totals(rows: list[LayerOps]) -> dict[str, float]:
    mac = sum(r.mac for r in rows)
    ac = sum(r.ac for r in rows)
    return {"mac": mac, "ac": ac, "ops": mac + ac}


def config_ops(cfg, rates: list[float]) -> list[LayerOps]:
    """model_ops of a train.models.ModelConfig: its sizes, recurrence and readout."""
    readout = "current-readout" if cfg.options.get("readout_current") else None
    return model_ops(cfg.kind, cfg.sizes, cfg.n_classes, rates,
                     [cfg.is_recurrent(l) for l in range(cfg.layers)], readout)

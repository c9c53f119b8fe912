"""Stock lava-dl netx: how a --netx-compatible file is quantized and run, and its constants.

Only a Cuba-LIF trained with Lava's own CUBA (``train --lava-cuba``, QLayer kind 'lava-cuba')
exports this way. Its layers are stock netx ``CUBA`` neurons with exactly the keys stock
``lava.lib.dl.netx.hdf5.Network`` reads: ``weight``, ``weight_rec``, ``bias``,
``neuron/{type, iDecay, vDecay, vThMant, refDelay, gradedSpike}``.

- Weights: netx passes ``weight`` through ``netx.utils.optimize_weight_bits``, which (for
  integers in [-256, 254]) shifts them up, accumulates and shifts back: the dendritic input
  is exactly ``sum(weight * s)``. So ``weight`` holds mantissa << e, and e must be 0 or 1
  (one exponent shared by ``weight`` and ``weight_rec``, as netx stacks them). With
  vThMant = 1024 that is a weight step of 1/1024 threshold (2/1024 at e = 1) and |w| <= 254/1024;
  larger weights saturate and are reported. ``weight_exp`` is kept (stock netx ignores it) so
  the reader gets the 8-bit mantissas back exactly.
- Bias: netx uses ``bias_exp`` = 6, so the QLayer's bias_exp is 6 and ``bias`` is its 13-bit
  mantissa (|b| <= 4 thresholds, step 1/1024).
- Readout: netx has no leaky integrator, so the readout is a ``dense`` layer of CUBA neurons
  that never spike: iDecay = 4096 (the current is just this step's input), vDecay the
  readout's decay, vThMant = 2**18 - 1 (what slayer's own dense readout writes: above any
  24-bit voltage). Its voltage ``v`` *is* the readout o: read ``net.layers[-1].neuron.v``
  (a Monitor) and take the class with the largest maximum over time. Lava's LIF shares one
  decay per population, so the readout's per-neuron betas are replaced by their mean
  (reported when they differ).
- Running it: ``Network(path, input_message_bits=8, reset_interval=<steps per sample + gap>,
  reset_offset=1)``. The input is graded spike counts (8 bits); netx's ``input`` entry
  without a neuron cannot say so, hence ``input_message_bits``. Every netx layer adds one
  step of delay: the spikes of hidden layer k (0-based) at Lava time step t + 2 + k (1-based;
  Monitor row t + 1 + k) are the fixed-point model's spikes at step t, the readout's at
  t + 2 + L. Layer k runs (on its bias alone) from step 1; ``reset_offset=1`` makes netx zero
  its u and v at step k + 2, just before its first input, which makes the run equal to
  ``export.qnet.run_network`` as long as no hidden neuron spikes on its bias alone before its
  reset (the exporter counts those, ``netx_warmup_spikes``) and no dendritic sum leaves 16
  bits (the spec saturates it, Lava's CPU Dense does not). netx's reset clears u and v but
  not the synapse buffers, so a sample's first step gets, through the recurrent synapse, the
  spikes of the step before: sim.stream works out the silent gap after each sample that makes
  that step silent, and accounts for it exactly when there is none (docs/loihi2.md).
"""
from __future__ import annotations

import numpy as np

from common.errors import InputError
from export import fixed_point as fx
from export.qnet import QLayer, QNetwork, Synapse

# stock netx (lava-dl 0.6.0 netx/hdf5.py, netx/utils.py) and Lava's LIF
NETX_W_MIN, NETX_W_MAX = -256, 254  # optimize_weight_bits clips to this range
NETX_EXP_MIN, NETX_EXP_MAX = 0, 1  # mantissa << e must stay in that range, exactly
NETX_BIAS_EXP = 6  # get_neuron_params: 'bias_exp': 6
NETX_INPUT_MESSAGE_BITS = fx.PAYLOAD_BITS
NETX_RESET_OFFSET = 1
READOUT_I_DECAY = fx.DECAY_UNITY  # du = 4095, current decays by 4096: u = this step's input
READOUT_VTH_MANT = (1 << 18) - 1  # slayer's dense readout: threshold above any 24-bit voltage
REF_DELAY = 1  # slayer writes refDelay 1; Lava's LIF has no refractory period


def _netx_synapse(w: np.ndarray, exp: int, layer: int, name: str, report) -> Synapse:
    mant, sat = fx.quantize_weight(w, exp)
    report.add(layer, name, exp, sat, w, fx.dequantize_weight(mant, exp))
    return Synapse(mant, exp)


def netx_exponent(*ws: np.ndarray) -> int:
    """One exponent for all of a layer's weights (netx stacks weight and weight_rec), in [0, 1]."""
    e = fx.weight_exponent(np.concatenate([np.abs(np.asarray(w, dtype=np.float64)).ravel() for w in ws]))
    return int(np.clip(e, NETX_EXP_MIN, NETX_EXP_MAX))


def _netx_bias(b: np.ndarray, layer: int, report) -> np.ndarray:
    scale = 1 << NETX_BIAS_EXP
    m = np.rint(np.asarray(b, dtype=np.float64) * fx.THETA / scale)
    sat = int(np.sum((m < -fx.BIAS_MANT_MAX - 1) | (m > fx.BIAS_MANT_MAX)))
    m = np.clip(m, -fx.BIAS_MANT_MAX - 1, fx.BIAS_MANT_MAX).astype(np.int64)
    report.add(layer, "b", NETX_BIAS_EXP, sat, b, fx.bias_value(m, NETX_BIAS_EXP) / fx.THETA)
    return m


def quantize_for_netx(ckpt: dict):
    """A lava-cuba checkpoint -> (QNetwork, QuantReport, notes) that stock netx runs exactly.

    Differs from export.quantize only where stock netx needs it: one weight exponent per layer in
    [0, 1], bias_exp 6, and one voltage decay for the readout (the mean of its betas)."""
    from export.quantize import QuantReport, quantize_checkpoint
    from train.models import ModelConfig, model_from_checkpoint

    cfg = ModelConfig(**ckpt["model"])
    if cfg.kind != "cuba-lif" or not cfg.options.get("lava_cuba"):
        what = "Cuba-LIF with the study's dynamics" if cfg.kind == "cuba-lif" else f"{cfg.kind} model"
        raise InputError(f"{ckpt.get('path', 'checkpoint')}: --netx-compatible needs a Cuba-LIF trained with Lava's "
                         f"CUBA (train --model cuba-lif --lava-cuba); this is a {what}")
    base, _ = quantize_checkpoint(ckpt)  # validates and gives the meta
    model = model_from_checkpoint(ckpt)
    report, notes, layers = QuantReport(), [], []
    for l, block in enumerate(model.hidden_layers):
        p = block.export_params()
        e = netx_exponent(p["W"], p["U"])
        layers.append(QLayer("lava-cuba", _netx_synapse(p["W"], e, l, "W", report),
                             _netx_synapse(p["U"], e, l, "U", report), bias_mant=_netx_bias(p["b"], l, report),
                             bias_exp=NETX_BIAS_EXP, du=int(np.ravel(fx.lava_du(fx.decay_to_int(p["alpha"])))[0]),
                             v_decay=fx.decay_to_int(p["beta"])))
    p = model.readout.export_params()
    l = len(layers)
    beta = np.asarray(p["beta"], dtype=np.float64)
    dv = int(fx.decay_to_int(beta.mean()))
    shared = (fx.DECAY_UNITY - dv) / fx.DECAY_UNITY
    report.add(l, "beta", 0, 0, beta, np.full_like(beta, shared))
    if np.unique(fx.decay_to_int(beta)).size > 1:
        notes.append(f"stock netx shares one voltage decay per layer: the readout's betas "
                     f"({beta.min():.4f} .. {beta.max():.4f}) are replaced by their mean ({shared:.4f}); "
                     f"largest change {np.abs(beta - shared).max():.4f}")
    layers.append(QLayer("readout", _netx_synapse(p["W"], netx_exponent(p["W"]), l, "W", report),
                         bias_mant=_netx_bias(p["b"], l, report), bias_exp=NETX_BIAS_EXP,
                         v_decay=np.full(beta.shape, dv, dtype=np.int64)))
    net = QNetwork(layers, dict(base.meta, netx_compatible=True))
    return net, report, notes


def netx_warmup_spikes(net: QNetwork) -> list[tuple[int, int]]:
    """(layer, neurons) of hidden layers that spike on their bias alone in the k + 1 steps stock netx runs
    layer k before its first input (and its reset): there a netx run may differ from run_network."""
    out = []
    for k, layer in enumerate(net.hidden):
        if layer.kind != "lava-cuba":
            continue
        u = v = np.zeros(layer.n_out, dtype=np.int64)
        fired = np.zeros(layer.n_out, dtype=bool)
        for _ in range(k + 1):
            s, u, v = fx.lava_cuba_step(np.zeros(layer.n_out, dtype=np.int64), u, v, layer.du,
                                        int(layer.v_decay.ravel()[0]), layer.bias)
            fired |= s > 0
        if fired.any():
            out.append((k, int(fired.sum())))
    return out


"""Loihi 2 fixed point: the spec (fixed_point), quantization and its reference run (quantize, qnet), hardware
limits (resources), quantization-aware fine-tuning (qat_ops, qat, finetune) and the netx-style HDF5 file
(netx_h5, h5_fields, h5_blocks, netx_stock, exporter)."""

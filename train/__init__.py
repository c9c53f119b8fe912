"""Training: neuron step functions (neurons), fused BPTT kernels (kernels), blocks and models (layers, models),
the loss, recipes and the training loop (recipe, trainer, loader, distributed), cross-validation (crossval),
checkpoints, and what a trained model is measured by (evaluate, ops, neurobench_defs, stats)."""

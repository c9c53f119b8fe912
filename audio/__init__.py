"""Spiking audio in: readers of both spike layouts (spike_files), binning and augmentation (binning), splits and
the speaker-held-out protocol (datasets, speakers), the built-in set (builtin_set), `data info/plot`
(inspect_data), and raw recordings to spikes (frontend, `data convert`: convert)."""

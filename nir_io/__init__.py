"""NIR (Neuromorphic Intermediate Representation) graphs in and out: nir_io.to_model imports, nir_io.from_model exports."""

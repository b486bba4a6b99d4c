"""The index stage on Beam."""

"""embedders: see design.md."""

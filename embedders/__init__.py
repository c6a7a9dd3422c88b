"""embedders: see docs/design.md."""

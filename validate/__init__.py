"""validate: see docs/design.md."""

"""submit: see docs/design.md."""

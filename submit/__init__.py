"""submit: see design.md."""

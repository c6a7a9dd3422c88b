"""validate: see design.md."""

"""competition: see docs/design.md."""

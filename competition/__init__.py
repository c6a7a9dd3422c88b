"""competition: see design.md."""

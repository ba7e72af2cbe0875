"""Migration steps, one module per revision."""

"""Subcommands of the ``linli`` tool, one module per area."""

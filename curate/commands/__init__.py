"""Subcommands of the ``curate`` CLI, one module per command group."""

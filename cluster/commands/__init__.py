"""Subcommands of `trader`, one module each."""

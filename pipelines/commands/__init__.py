"""Subcommand modules of the `longtrove` command line."""

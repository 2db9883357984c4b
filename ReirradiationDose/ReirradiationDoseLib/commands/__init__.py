"""Subcommands of the ``reirradiation`` command line (see ``cli.py``)."""

"""The ``hlvm`` command line: thin typer commands over the :mod:`hlvm` library."""

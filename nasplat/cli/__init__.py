"""The `nasplat` command line (typer). `main.py` assembles the command groups."""

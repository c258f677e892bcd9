"""Entrypoints: the `dropedit` CLI and the modules `ray job submit` runs."""

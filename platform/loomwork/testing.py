"""Pytest fixtures for Loomwork, its plugins and templates (a ``pytest11`` plugin)."""

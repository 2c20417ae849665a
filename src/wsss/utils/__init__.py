"""Shared helpers (file I/O)."""

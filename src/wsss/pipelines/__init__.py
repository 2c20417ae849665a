"""Pipelines: the other commands' steps strung into one run (``wsss route``), above ``runs`` and ``report``."""

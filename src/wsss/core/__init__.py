"""The toolkit's foundation: the config schema (``config``), device and distributed helpers, checkpoint I/O
and the user-error types (``errors``). The method registry and contract are ``wsss.methods.contract``."""

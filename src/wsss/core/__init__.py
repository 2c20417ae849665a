"""The bottom layer: the config schema, the method registry and contract, device and distributed
helpers, checkpoint I/O and the toolkit's user-error types."""

"""The engine: config, training loop, optimiser, checkpoints, validation, inference."""

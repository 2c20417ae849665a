"""The engine: the training loop (trainer.py), its public builders (defaults.py), the optimisers, validation
during training, and the drivers of multi-run methods (rounds.py); ``launch.train`` is ``wsss train``."""

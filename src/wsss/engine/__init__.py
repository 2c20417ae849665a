"""The engine: the training loop (trainer.py), its public builders (defaults.py), the optimisers, validation
during training; ``launch.train`` is ``wsss train`` (a multi-run method brings its own driver:
``Method.train_driver``)."""

"""Trained runs: ``Run`` / ``load_run`` (the model API), the cam / pseudo / predict jobs over a split,
and the VOC test-server export."""

"""The cross-method comparison and the research probes behind BENCHMARKS.md (run each as a script:
``.venv/bin/python experiments/<name>.py --help``; tests import them as ``experiments.<name>``)."""

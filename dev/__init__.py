"""Developer tools (``.venv/bin/python dev/screenshot_report.py --help``)."""

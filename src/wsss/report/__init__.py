"""HTML reports and pictures."""

from wsss.report.html import write_report

__all__ = ["write_report"]

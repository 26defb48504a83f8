"""Readable views of a run's results: terminal tables and Markdown."""

from vlcl.report.tables import markdown_report, render_console

__all__ = ["markdown_report", "render_console"]

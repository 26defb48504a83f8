"""Readable views of a run's results: terminal tables, Markdown, and an HTML page with plots (:mod:`vlcl.report.html`)."""

from vlcl.report.tables import comparison_markdown, markdown_report, render_console

__all__ = ["comparison_markdown", "markdown_report", "render_console"]

"""Jinja2 templates of drcheck's reports (package data; see drcheck.reporting)."""

"""Thin wrappers over every external system drcheck talks to.

This is the only place that starts programs or opens connections; unit tests replace
these modules, nothing deeper.
"""

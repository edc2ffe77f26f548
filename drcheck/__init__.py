"""drcheck: disaster-recovery verification agent.

Proves backups restore by restoring them into a sandbox and checking what came back,
measures RTO and achieved RPO, records every result in SQLite, exports Prometheus
metrics and renders reports for administrators and auditors.
"""

__version__ = "0.1.0"

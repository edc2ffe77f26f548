"""Prometheus metrics, computed from the store at scrape time.

Names are stable (alerts and dashboards depend on them). Timestamps, not ages, are
exported, so an alert computes `time() - drcheck_restore_point_newest_timestamp_seconds`
and a stopped agent cannot freeze an age at a harmless value.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drcheck import __version__
from drcheck.config_loader import LoadedConfig
from drcheck.store import CURRENT_FINDINGS, Store, current_points_sql, newest_per

log = logging.getLogger(__name__)

# The scrape reads only the columns it exports: at 10,000 systems `t.*` costs ~10% more.
_TEST_COLUMNS = ("system, test, started_at, status, restore_seconds, verify_seconds, "
                 "rto_target_seconds, rpo_target_seconds")
SCRAPE_TESTS = newest_per("restore_tests", "system, test", columns=_TEST_COLUMNS)
SCRAPE_PASSED = newest_per("restore_tests", "system, test", "status = 'passed'", "system, test, started_at")
SCRAPE_RTO = newest_per("restore_tests", "system, test", "rto_seconds IS NOT NULL", "system, test, rto_seconds")
SCRAPE_RPO = newest_per("restore_tests", "system, test", "rpo_seconds IS NOT NULL", "system, test, rpo_seconds")
SCRAPE_PROBE_RUNS = newest_per("probe_runs", "probe, action", columns="probe, action, status, finished_at, duration_seconds")
UNPROTECTED = (f"SELECT probe, COUNT(*) AS n FROM ({CURRENT_FINDINGS}) "
               "WHERE code = 'no_restore_point' GROUP BY probe")


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class StoreCollector(Collector):
    """Yields drcheck's metrics from the database at `db_path`. `config` returns the current
    configuration (it changes on SIGHUP), for the targets of systems never tested yet."""

    def __init__(self, db_path: Path, config: Callable[[], LoadedConfig]):
        self.db_path = db_path
        self.config = config

    def collect(self) -> Iterator[Metric]:
        loaded = self.config()
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            yield from self._collect(conn, loaded)
        finally:
            conn.close()

    def _collect(self, conn: sqlite3.Connection, loaded: LoadedConfig) -> Iterator[Metric]:
        cfg = loaded.config
        info = _gauge("drcheck_info", "drcheck agent; value is always 1", ["agent", "version"])
        info.add_metric([cfg.agent.name, __version__], 1)
        yield info

        rpo_target = _gauge("drcheck_system_rpo_target_seconds", "RPO target of a system (runbook)", ["system"])
        rto_target = _gauge("drcheck_system_rto_target_seconds", "RTO target of a system (runbook)", ["system"])
        tier = _gauge("drcheck_system_tier", "criticality tier of a system (1 = most critical)", ["system"])
        for system, rb in loaded.runbooks.items():
            rpo_target.add_metric([system], rb.rpo.total_seconds())
            rto_target.add_metric([system], rb.rto.total_seconds())
            tier.add_metric([system], rb.tier)
        yield from (rpo_target, rto_target, tier)

        newest_of_system: dict[str, float] = dict.fromkeys(loaded.runbooks, 0.0)
        newest = _gauge("drcheck_restore_point_newest_timestamp_seconds",
                        "time of the newest restore point of a system in a copy", ["system", "copy"])
        points = _gauge("drcheck_restore_points", "restore points of a system in a copy", ["system", "copy"])
        for row in conn.execute(current_points_sql()):
            if row["probe"] not in cfg.probes:
                continue
            when = _epoch(row["point_time"])
            newest.add_metric([row["system"], row["copy"]], when)
            if row["point_count"] is not None:
                points.add_metric([row["system"], row["copy"]], row["point_count"])
            if row["system"] in newest_of_system:
                newest_of_system[row["system"]] = max(newest_of_system[row["system"]], when)
        yield from (newest, points)

        tested_at: dict[str, float] = dict.fromkeys(loaded.runbooks, 0.0)
        yield from self._tests(conn, cfg, tested_at)
        yield from self._probes(conn, cfg)
        yield from _per_system(
            ("drcheck_system_newest_restore_point_timestamp_seconds",
             "newest restore point of a system in any copy; 0 when it has none", newest_of_system),
            ("drcheck_system_last_test_timestamp_seconds",
             "start of the latest restore test of a system; 0 when it was never tested", tested_at))

    def _tests(self, conn: sqlite3.Connection, cfg, tested_at: dict[str, float]) -> Iterator[Metric]:
        configured = {(t.system, name) for name, t in cfg.restore_tests.items()}
        labels = ["system", "test"]
        last_run = _gauge("drcheck_restore_test_last_run_timestamp_seconds", "start of the latest restore test", labels)
        passed = _gauge("drcheck_restore_test_last_passed", "1 when the latest restore test passed, else 0", labels)
        restore = _gauge("drcheck_restore_test_restore_seconds", "restore part of the latest restore test", labels)
        verify = _gauge("drcheck_restore_test_verify_seconds", "verify part of the latest restore test", labels)
        rto_t = _gauge("drcheck_restore_test_rto_target_seconds", "RTO target applied to the test", labels)
        rpo_t = _gauge("drcheck_restore_test_rpo_target_seconds", "RPO target applied to the test", labels)
        for row in conn.execute(SCRAPE_TESTS):
            system, test = row["system"], row["test"]
            if (system, test) not in configured:
                continue
            key, started = [system, test], _epoch(row["started_at"])
            last_run.add_metric(key, started)
            tested_at[system] = max(tested_at.get(system, 0.0), started)
            passed.add_metric(key, 1 if row["status"] == "passed" else 0)
            for family, column in ((restore, "restore_seconds"), (verify, "verify_seconds"),
                                   (rto_t, "rto_target_seconds"), (rpo_t, "rpo_target_seconds")):
                if row[column] is not None:
                    family.add_metric(key, row[column])
        success = _gauge("drcheck_restore_test_last_success_timestamp_seconds",
                         "start of the latest restore test that passed", labels)
        for row in conn.execute(SCRAPE_PASSED):
            if (row["system"], row["test"]) in configured:
                success.add_metric([row["system"], row["test"]], _epoch(row["started_at"]))
        rto = _gauge("drcheck_restore_test_rto_seconds",
                     "measured RTO of the latest restore test that measured one (every check passed)", labels)
        rpo = _gauge("drcheck_restore_test_rpo_seconds", "achieved RPO of the latest restore test that measured one",
                     labels)
        for family, sql, column in ((rto, SCRAPE_RTO, "rto_seconds"), (rpo, SCRAPE_RPO, "rpo_seconds")):
            for row in conn.execute(sql):
                if (row["system"], row["test"]) in configured:
                    family.add_metric([row["system"], row["test"]], row[column])
        yield from (last_run, passed, restore, verify, rto_t, rpo_t, success, rto, rpo)

    def _probes(self, conn: sqlite3.Connection, cfg) -> Iterator[Metric]:
        labels = ["probe", "action"]
        up = _gauge("drcheck_probe_up", "1 when the latest probe run could reach and read its source", labels)
        ok = _gauge("drcheck_probe_success", "1 when the latest probe run found nothing wrong", labels)
        duration = _gauge("drcheck_probe_duration_seconds", "duration of the latest probe run", labels)
        last = _gauge("drcheck_probe_last_run_timestamp_seconds", "end of the latest probe run", labels)
        for row in conn.execute(SCRAPE_PROBE_RUNS):
            if row["probe"] not in cfg.probes:
                continue
            key = [row["probe"], row["action"]]
            up.add_metric(key, 0 if row["status"] == "error" else 1)
            ok.add_metric(key, 1 if row["status"] == "ok" else 0)
            duration.add_metric(key, row["duration_seconds"] or 0)
            last.add_metric(key, _epoch(row["finished_at"]))
        unprotected = _gauge("drcheck_unprotected_assets",
                             "configured systems or assets with no restore point", ["source"])
        for probe, n in conn.execute(UNPROTECTED):
            if probe in cfg.probes:
                unprotected.add_metric([probe], n)
        leases = _gauge("drcheck_sandbox_leases_open", "sandboxes currently in use or left behind", [])
        leases.add_metric([], conn.execute("SELECT COUNT(*) FROM sandbox_leases WHERE released_at IS NULL").fetchone()[0])
        yield from (up, ok, duration, last, unprotected, leases)


def _per_system(*families: tuple[str, str, dict[str, float]]) -> Iterator[Metric]:
    for name, doc, values in families:
        gauge = _gauge(name, doc, ["system"])
        for system, value in values.items():
            gauge.add_metric([system], value)
        yield gauge


def registry_for(loaded: LoadedConfig | Callable[[], LoadedConfig]) -> CollectorRegistry:
    """Return a registry holding only drcheck's store collector."""
    provider = loaded if callable(loaded) else (lambda: loaded)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(provider().database_path, provider))
    return registry


def write_textfile(loaded: LoadedConfig, store: Store, path: Path) -> Path:
    """Write the current metrics in the text exposition format (node_exporter textfile)."""
    del store  # the collector opens its own read-only connection; the store ensures the schema
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_for(loaded))
    return path

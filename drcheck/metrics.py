"""Prometheus metrics, computed from the store at scrape time.

Every metric is declared once, in drcheck.metric_catalogue (stable names and labels:
alerts and dashboards depend on them); the collector creates its families only from it
and describes itself with it. A scrape reads one snapshot through a read-only connection,
and the verdicts (`drcheck_compliance_rule_passing`, `drcheck_unprotected_assets`) come
from one evaluation of drcheck.rules over it, the one status and reports show.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from drcheck import __version__
from drcheck.config_loader import LoadedConfig
from drcheck.metric_catalogue import CATALOGUE, family
from drcheck.results import utcnow
from drcheck.store import CURRENT_POINTS, Store, latest_via

log = logging.getLogger(__name__)

# Every scrape query reads a current-state table joined to history by primary key: none
# scans history, so a scrape costs the same after a year as after a day. The scrape reads
# only the columns it exports: at 10,000 systems `t.*` costs ~10% more.
_TEST_COLUMNS = ("system, test, started_at, status, restore_seconds, verify_seconds, "
                 "rto_target_seconds, rpo_target_seconds")
SCRAPE_TESTS = latest_via("test_latest", "last_id", "restore_tests", _TEST_COLUMNS)
SCRAPE_PASSED = latest_via("test_latest", "passed_id", "restore_tests", "system, test, started_at")
SCRAPE_RTO = latest_via("test_latest", "rto_id", "restore_tests", "system, test, rto_seconds")
SCRAPE_RPO = latest_via("test_latest", "rpo_id", "restore_tests", "system, test, rpo_seconds")
SCRAPE_PROBE_RUNS = latest_via("probe_latest", "probe_run_id", "probe_runs",
                               "probe, action, status, finished_at, duration_seconds")
# Leases per kind: open (in use or left behind), and uncleaned (a cleanup of a dead run's
# resource failed at least once and it is still there).
LEASES_OPEN = "SELECT kind, COUNT(*) AS n FROM leases WHERE released_at IS NULL GROUP BY kind"
LEASES_UNCLEANED = ("SELECT kind, COUNT(*) AS n FROM leases WHERE released_at IS NULL AND attempts > 0 "
                    "GROUP BY kind")
SANDBOX_LEASES_OPEN = "SELECT COUNT(*) FROM leases WHERE released_at IS NULL AND kind = 'directory'"


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class StoreCollector(Collector):
    """Yields drcheck's metrics from the database at `db_path`. `config` returns the current
    configuration (it changes on SIGHUP), for the targets of systems never tested yet."""

    def __init__(self, db_path: Path, config: Callable[[], LoadedConfig],
                 clock: Callable[[], datetime] = utcnow):
        self.db_path = db_path
        self.config = config
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        """Every family the collector can yield, empty (from the catalogue)."""
        for spec in CATALOGUE.values():
            yield spec.family()

    def collect(self) -> Iterator[Metric]:
        loaded = self.config()
        try:  # read everything first: a database that fails half-way yields only its health
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
            conn.row_factory = sqlite3.Row
            conn.execute("BEGIN")  # one read snapshot: the rules judge the rows the families show
            try:
                metrics, fault = list(self._collect(conn, loaded)), None
            finally:
                conn.close()
        except sqlite3.Error as exc:
            from drcheck.storefaults import describe

            metrics, fault = [], describe(self.db_path, exc)
            log.debug("metrics scrape: %s", fault.line())
        yield from metrics
        yield from store_health(fault)

    def _collect(self, conn: sqlite3.Connection, loaded: LoadedConfig) -> Iterator[Metric]:
        cfg = loaded.config
        info = family("drcheck_info")
        info.add_metric([cfg.agent.name, __version__], 1)
        yield info

        rpo_target = family("drcheck_system_rpo_target_seconds")
        rto_target = family("drcheck_system_rto_target_seconds")
        tier = family("drcheck_system_tier")
        for system, rb in loaded.runbooks.items():
            rpo_target.add_metric([system], rb.rpo.total_seconds())
            rto_target.add_metric([system], rb.rto.total_seconds())
            tier.add_metric([system], rb.tier)
        yield from (rpo_target, rto_target, tier)

        newest_of_system: dict[str, float] = dict.fromkeys(loaded.runbooks, 0.0)
        newest = family("drcheck_restore_point_newest_timestamp_seconds")
        points = family("drcheck_restore_points")
        for row in conn.execute(CURRENT_POINTS):
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
        yield from self._rules(conn, loaded)
        yield from _per_system(
            ("drcheck_system_newest_restore_point_timestamp_seconds",
             "newest restore point of a system in any copy; 0 when it has none", newest_of_system),
            ("drcheck_system_last_test_timestamp_seconds",
             "start of the latest restore test of a system; 0 when it was never tested", tested_at))

    def _tests(self, conn: sqlite3.Connection, cfg, tested_at: dict[str, float]) -> Iterator[Metric]:
        configured = {(t.system, name) for name, t in cfg.restore_tests.items()}
        last_run = family("drcheck_restore_test_last_run_timestamp_seconds")
        passed = family("drcheck_restore_test_last_passed")
        restore = family("drcheck_restore_test_restore_seconds")
        verify = family("drcheck_restore_test_verify_seconds")
        rto_t = family("drcheck_restore_test_rto_target_seconds")
        rpo_t = family("drcheck_restore_test_rpo_target_seconds")
        for row in conn.execute(SCRAPE_TESTS):
            system, test = row["system"], row["test"]
            if (system, test) not in configured:
                continue
            key, started = [system, test], _epoch(row["started_at"])
            last_run.add_metric(key, started)
            tested_at[system] = max(tested_at.get(system, 0.0), started)
            passed.add_metric(key, 1 if row["status"] == "passed" else 0)
            for fam, column in ((restore, "restore_seconds"), (verify, "verify_seconds"),
                                   (rto_t, "rto_target_seconds"), (rpo_t, "rpo_target_seconds")):
                if row[column] is not None:
                    fam.add_metric(key, row[column])
        success = family("drcheck_restore_test_last_success_timestamp_seconds")
        for row in conn.execute(SCRAPE_PASSED):
            if (row["system"], row["test"]) in configured:
                success.add_metric([row["system"], row["test"]], _epoch(row["started_at"]))
        rto = family("drcheck_restore_test_rto_seconds")
        rpo = family("drcheck_restore_test_rpo_seconds")
        for fam, sql, column in ((rto, SCRAPE_RTO, "rto_seconds"), (rpo, SCRAPE_RPO, "rpo_seconds")):
            for row in conn.execute(sql):
                if (row["system"], row["test"]) in configured:
                    fam.add_metric([row["system"], row["test"]], row[column])
        yield from (last_run, passed, restore, verify, rto_t, rpo_t, success, rto, rpo)

    def _probes(self, conn: sqlite3.Connection, cfg) -> Iterator[Metric]:
        up = family("drcheck_probe_up")
        ok = family("drcheck_probe_success")
        duration = family("drcheck_probe_duration_seconds")
        last = family("drcheck_probe_last_run_timestamp_seconds")
        for row in conn.execute(SCRAPE_PROBE_RUNS):
            if row["probe"] not in cfg.probes:
                continue
            key = [row["probe"], row["action"]]
            up.add_metric(key, 0 if row["status"] == "error" else 1)
            ok.add_metric(key, 1 if row["status"] == "ok" else 0)
            duration.add_metric(key, row["duration_seconds"] or 0)
            last.add_metric(key, _epoch(row["finished_at"]))
        yield from (up, ok, duration, last)
        yield from _leases(conn)

    def _rules(self, conn: sqlite3.Connection, loaded: LoadedConfig) -> Iterator[Metric]:
        """The rule families, from one evaluation (the one status and reports show):
        drcheck_compliance_rule_passing per (rule, system), and drcheck_unprotected_assets
        per probe."""
        from drcheck.rules import evaluate

        results = evaluate(loaded, Store.reading(conn, self.db_path), self.clock())
        gauge = family("drcheck_compliance_rule_passing")
        for (rule, system), ok in sorted(rule_passing(results).items()):
            gauge.add_metric([rule, system], 1 if ok else 0)
        yield gauge
        unprotected = family("drcheck_unprotected_assets")
        for probe, n in sorted(unprotected_by_probe(results).items()):
            unprotected.add_metric([probe], n)
        yield unprotected


def rule_passing(results) -> dict[tuple[str, str], bool]:
    """(rule, system) -> True when every result of the rule for the system passed."""
    passing: dict[tuple[str, str], bool] = {}
    for result in results:
        key = (result.rule, result.system or "")
        passing[key] = passing.get(key, True) and result.passed
    return passing


def unprotected_by_probe(results) -> dict[str, int]:
    """probe -> what it watches that has no protection: for a backup probe, systems whose
    R2.backup_age result for its copy fails because its latest listing holds no restore
    point of them at all; for an inventory probe, its VMs failing R3.vm_protected (0 when
    none). Only probes with a listing or an inventory judged appear."""
    from drcheck.rules import has_no_restore_point

    counts: dict[str, int] = {}
    for result in results:
        if result.rule == "R2.backup_age" and result.probe is not None:
            counts[result.probe] = counts.get(result.probe, 0) + has_no_restore_point(result)
        elif result.rule == "R3.vm_protected" and result.probe is not None:
            counts[result.probe] = counts.get(result.probe, 0) + (not result.passed)
    return counts


def _leases(conn: sqlite3.Connection) -> Iterator[Metric]:
    open_ = family("drcheck_leases_open")
    uncleaned = family("drcheck_leases_uncleaned")
    for fam, sql in ((open_, LEASES_OPEN), (uncleaned, LEASES_UNCLEANED)):
        for kind, n in conn.execute(sql):
            fam.add_metric([kind], n)
    sandboxes = family("drcheck_sandbox_leases_open")
    sandboxes.add_metric([], conn.execute(SANDBOX_LEASES_OPEN).fetchone()[0])
    yield from (open_, uncleaned, sandboxes)


def store_health(fault) -> Iterator[Metric]:
    """drcheck_store_up (1: the database could be read at this scrape) and, when it could
    not, drcheck_store_error_info{cause} (read_only, locked, damaged, disk_full, unreadable)."""
    up = family("drcheck_store_up")
    up.add_metric([], 0 if fault else 1)
    yield up
    info = family("drcheck_store_error_info")
    if fault:
        info.add_metric([fault.cause], 1)
    yield info


def _per_system(*families: tuple[str, str, dict[str, float]]) -> Iterator[Metric]:
    for name, _doc, values in families:
        gauge = family(name)
        for system, value in values.items():
            gauge.add_metric([system], value)
        yield gauge


def registry_for(loaded: LoadedConfig | Callable[[], LoadedConfig],
                 clock: Callable[[], datetime] = utcnow) -> CollectorRegistry:
    """Return a registry holding only drcheck's store collector; `clock` is the time rules
    are judged at (now, at each scrape)."""
    provider = loaded if callable(loaded) else (lambda: loaded)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StoreCollector(provider().database_path, provider, clock))
    return registry


def write_textfile(loaded: LoadedConfig, store: Store, path: Path) -> Path:
    """Write the current metrics in the text exposition format (node_exporter textfile)."""
    del store  # the collector opens its own read-only connection; the store ensures the schema
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry_for(loaded))
    return path

"""One catalogue declares every metric: the collector yields exactly its families (and
describes itself from it), creates none any other way, and the README's table is the
catalogue's (sqlite-utils' docs test, in spirit)."""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from drcheck import metrics
from drcheck.metric_catalogue import CATALOGUE, UnknownMetric, family, markdown_table, readme_with_table
from drcheck.metrics import StoreCollector, registry_for

from .test_metrics import NOW

ROOT = Path(__file__).resolve().parents[2]


def a_busy_store(store, record):
    record.probe({"sis": NOW - timedelta(hours=1)}, at=NOW)
    record.test("sis", "passed", NOW - timedelta(hours=3), rto=timedelta(minutes=5), rpo=timedelta(hours=2))
    store.take_lease("directory", "/tmp/sandbox-1", "sis-files", "drcheck.restore_tests.files")


def check_against_catalogue(families) -> set[str]:
    """Assert each family matches its catalogue entry (help, type, label names); return the names."""
    names = set()
    for fam in families:
        spec = CATALOGUE[fam.name]
        assert (fam.documentation, fam.type) == (spec.help, spec.type), fam.name
        for sample in fam.samples:
            assert tuple(sample.labels) == spec.labels, (fam.name, sample.labels)
        names.add(fam.name)
    return names


def test_a_scrape_yields_every_catalogue_metric_and_nothing_else(loaded, store, record):
    a_busy_store(store, record)
    assert check_against_catalogue(registry_for(loaded).collect()) == set(CATALOGUE)


def test_an_empty_store_still_yields_every_family(loaded, store):
    assert check_against_catalogue(registry_for(loaded).collect()) == set(CATALOGUE)


def test_an_unreadable_store_yields_only_its_health(loaded, tmp_path):
    loaded.database_path.parent.mkdir(parents=True, exist_ok=True)
    loaded.database_path.write_bytes(b"this is not a database" * 100)
    registry = registry_for(loaded)
    assert check_against_catalogue(registry.collect()) == {"drcheck_store_up", "drcheck_store_error_info"}
    assert registry.get_sample_value("drcheck_store_up") == 0
    assert registry.get_sample_value("drcheck_store_error_info", {"cause": "damaged"}) == 1


def test_describe_is_the_catalogue_so_the_registry_needs_no_scrape_to_register(loaded, store, monkeypatch):
    collector = StoreCollector(loaded.database_path, lambda: loaded)
    described = list(collector.describe())
    assert [m.name for m in described] == list(CATALOGUE) and all(not m.samples for m in described)
    check_against_catalogue(described)

    def no_scrape(self):
        raise AssertionError("auto_describe must use describe(), not a scrape")

    monkeypatch.setattr(StoreCollector, "collect", no_scrape)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    with pytest.raises(ValueError, match="Duplicated timeseries"):  # names are known at registration
        registry.register(StoreCollector(loaded.database_path, lambda: loaded))


def test_get_sample_value_and_restricted_registries_work(loaded, store, record):
    a_busy_store(store, record)
    registry = registry_for(loaded)
    assert registry.get_sample_value("drcheck_store_up") == 1
    assert registry.get_sample_value("drcheck_leases_open", {"kind": "directory"}) == 1
    assert registry.get_sample_value("drcheck_sandbox_leases_open") == 1
    only = registry.restricted_registry(["drcheck_probe_up"])
    assert {fam.name for fam in only.collect()} == {"drcheck_probe_up"}


def test_an_unknown_metric_name_is_a_programming_error():
    with pytest.raises(UnknownMetric, match="drcheck_no_such_metric"):
        family("drcheck_no_such_metric")


def test_every_metric_name_the_collector_uses_is_declared():
    tree = ast.parse(Path(metrics.__file__).read_text())
    literals = {node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and re.fullmatch(r"drcheck_[a-z0-9_]+", node.value)}
    assert literals and literals <= set(CATALOGUE), literals - set(CATALOGUE)
    direct = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)
              and getattr(node.func, "id", getattr(node.func, "attr", "")).endswith("MetricFamily")]
    assert direct == [], "families are created only through drcheck.metric_catalogue"


def test_the_readme_table_is_the_catalogue():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_with_table(readme) == readme, \
        "README.md's metric table is stale: run `.venv/bin/python -m drcheck.metric_catalogue README.md`"
    table = markdown_table()
    for spec in CATALOGUE.values():
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "–"
        assert f"| `{spec.name}` | {labels} | {spec.help}" in table


def test_the_readme_names_no_metric_that_is_not_exported():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    mentioned = set(re.findall(r"\bdrcheck_[a-z0-9_]+", readme))
    assert mentioned and mentioned <= set(CATALOGUE), mentioned - set(CATALOGUE)


def test_the_bench_baseline_exports_the_same_text_from_the_catalogue(tmp_path, capsys):
    """bench/bench_metrics.py builds its plain gauges from the catalogue; at a small scale
    both sides must expose the same text (its own honesty check), rule values included."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_metrics", ROOT / "bench" / "bench_metrics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--systems", "60", "--probes", "3", "--repeat", "1", "--tmpdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "identical on both sides" in out


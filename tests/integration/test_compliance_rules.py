"""Every compliance rule (drcheck.compliance_rules) with a passing and a failing case, on
real stored results: a district-like configuration (an office, a site 15 km away, one
500 km away), restore points recorded in each copy by real probe runs, restore tests
recorded as the agent records them. Plus corrective actions and `drcheck compliance`."""

from __future__ import annotations

import copy as copying
import json
import shutil
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner

from drcheck import corrective, evidence
from drcheck.cli import cli
from drcheck.config_loader import load
from drcheck.metrics import registry_for
from drcheck.results import Severity
from drcheck.rules import RULES, evaluate
from drcheck.store import Store
from tests.integration.conftest import Recorder

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.now(timezone.utc).replace(microsecond=0)
H = timedelta(hours=1)
D = timedelta(days=1)
TODAY = NOW.date()


def district(tmp_path: Path, change=None):
    """(loaded, store): the repo's configuration reduced to the restic lab, with three
    restic probes as three copies: `office` (local disk), `near` (15 km, wet-pipe
    sprinklers, the office's flood plain) and `far` (500 km, object storage); `change(data,
    runbooks)` edits the TOML data and runbook dicts first."""
    runbooks = tmp_path / "runbooks"
    shutil.copytree(REPO / "runbooks", runbooks)
    (runbooks / "schools.toml").unlink()
    data = tomllib.loads((REPO / "drcheck.toml").read_text())
    base = copying.deepcopy(data["probes"]["lab-restic"])
    base["systems"] = [s for s in base["systems"] if s["system"] != "schools"]
    data["sites"] = {
        "office": {"description": "server room", "building": "hq", "hazard_zone": "flood-plain",
                   "fire_suppression": "clean-agent"},
        "annex": {"description": "warehouse", "distance_km": 15, "building": "annex", "hazard_zone": "flood-plain",
                  "fire_suppression": "wet-pipe"},
        "remote": {"description": "colocation", "distance_km": 500, "hazard_zone": "mountains",
                   "fire_suppression": "clean-agent"},
    }
    data["agent"]["site"] = "office"
    data["copies"] = {"office": {"site": "office"}, "near": {"site": "annex"},
                      "far": {"site": "remote", "media": "object"}}
    data["probes"] = {name: {**copying.deepcopy(base), "copy": name} for name in ("office", "near", "far")}
    data["restore_tests"] = {k: {**t, "probe": "office"} for k, t in data["restore_tests"].items()
                             if t["probe"] == "lab-restic"}
    data["agent"].update(state_dir=str(tmp_path / "state"), sandbox_root=str(tmp_path / "sandbox"),
                         runbooks_dir=str(runbooks))
    data["reports"]["output_dir"] = str(tmp_path / "reports")
    data.pop("plan", None)
    books = {p.stem: tomllib.loads(p.read_text()) for p in runbooks.glob("*.toml")}
    if change:
        change(data, books)
    for name, book in books.items():
        (runbooks / f"{name}.toml").write_text(tomli_w.dumps(book))
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps(data))
    loaded = load(path)
    return loaded, Store(loaded.database_path, agent="test")


def points_in(loaded, store, copies: dict[str, timedelta], systems=("sis", "fileserver", "payroll")) -> None:
    """Record a probe run per copy seeing every system's newest point `age` old."""
    for copy, age in copies.items():
        Recorder(loaded, store, copy=copy, probe_name=copy).probe({s: NOW - age for s in systems}, at=NOW - 0.1 * H)


def judged(loaded, store, rule: str, system: str | None = "sis", subject: str | None = None):
    found = [r for r in evaluate(loaded, store, NOW) if r.rule == rule and r.system == system
             and (subject is None or r.subject == subject)]
    assert found, f"no {rule} result for {system}"
    return found


def one(loaded, store, rule, system="sis", subject=None):
    (result,) = judged(loaded, store, rule, system, subject)
    return result


# -- R1 ------------------------------------------------------------------------------------


def test_r1_complete_passes_with_alternate_steps_and_validation_and_names_what_is_missing(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        assert one(loaded, store, "R1.complete").passed  # sis names all three
        payroll = one(loaded, store, "R1.complete", "payroll")
        assert not payroll.passed and payroll.message == "runbook lacks an alternate owner, validation steps"


# -- R4 ------------------------------------------------------------------------------------


def test_r4_three_copies_on_two_media_with_one_far_away_pass(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": 2 * H, "far": 3 * H})
        copies = one(loaded, store, "R4.copies")
        assert copies.passed and copies.measured == 4 and "on 2 media (disk, object)" in copies.message
        offsite = one(loaded, store, "R4.offsite")
        assert offsite.passed and offsite.measured == 500 and "far (remote, 500 km)" in offsite.message
        assert offsite.evidence and offsite.evidence[0][0] == "restore_points"


def test_r4_one_medium_and_only_a_near_copy_fail_the_near_copy_as_a_warning(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": 2 * H})
        copies = one(loaded, store, "R4.copies")
        assert not copies.passed and "on 1 media (disk)" in copies.message
        offsite = one(loaded, store, "R4.offsite")
        assert not offsite.passed and offsite.severity is Severity.WARNING and offsite.measured == 15
        assert "nearer than 80 km" in offsite.message


def test_r4_no_copy_away_from_the_office_is_critical_and_a_copy_in_the_same_building_is_not_away(tmp_path):
    def same_building(data, _):
        data["sites"]["annex"]["building"] = "hq"  # a second room of the office building

    loaded, store = district(tmp_path, same_building)
    with store:
        points_in(loaded, store, {"office": H, "near": H})
        offsite = one(loaded, store, "R4.offsite")
        assert not offsite.passed and offsite.severity is Severity.CRITICAL
        assert offsite.message == "no copy away from the primary site holds a point"


def test_r4_a_configured_copy_that_holds_nothing_does_not_count(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": H, "far": H}, systems=("fileserver",))
        points_in(loaded, store, {"office": H}, systems=("sis",))
        assert one(loaded, store, "R4.copies").measured == 2


# -- R5 ------------------------------------------------------------------------------------


def test_r5_an_immutable_copy_and_separate_credentials_pass_as_declared(tmp_path):
    def locked(data, _):
        data["copies"]["far"].update(immutable_days=30, separate_credentials=True)

    loaded, store = district(tmp_path, locked)
    with store:
        points_in(loaded, store, {"office": H, "far": H})
        immutable = one(loaded, store, "R5.immutable")
        assert immutable.passed and immutable.declared and immutable.measured == 30
        credentials = one(loaded, store, "R5.credentials")
        assert credentials.passed and credentials.declared


def test_r5_a_short_lock_or_no_lock_and_shared_credentials_fail(tmp_path):
    def short(data, _):
        data["copies"]["far"]["immutable_days"] = 7

    loaded, store = district(tmp_path, short)
    with store:
        points_in(loaded, store, {"office": H, "far": H})
        immutable = one(loaded, store, "R5.immutable")
        assert not immutable.passed and immutable.measured == 7 and immutable.threshold == 30
        assert not one(loaded, store, "R5.credentials").passed


def test_r5_an_offline_copy_passes(tmp_path):
    def tape(data, _):
        data["copies"]["near"].update(offline=True, media="tape")

    loaded, store = district(tmp_path, tape)
    with store:
        points_in(loaded, store, {"near": H})
        assert one(loaded, store, "R5.immutable").passed


# -- R6 ------------------------------------------------------------------------------------


def test_r6_encryption_per_copy_with_restic_proving_encryption_at_rest(tmp_path):
    def declared(data, _):
        data["copies"]["far"].update(encrypted_in_transit=True, key_offsite=True)
        data["copies"]["near"].update(encrypted_in_transit=True)

    loaded, store = district(tmp_path, declared)
    with store:
        points_in(loaded, store, {"near": H, "far": H})
        far = one(loaded, store, "R6.encryption", subject="far")
        assert far.passed and far.declared  # at rest proven by restic; in transit and key declared
        near = one(loaded, store, "R6.encryption", subject="near")
        assert not near.passed and near.message == "near: not recorded or not true: key off-site"


# -- R7 ------------------------------------------------------------------------------------


def test_r7_the_freshest_offsite_copy_within_rpo_passes_and_a_lagging_one_fails(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": 30 * H, "far": 5 * H})
        lag = one(loaded, store, "R7.offsite_lag")
        assert lag.passed and lag.measured == 5 * 3600 and "(far)" in lag.message
    loaded, store = district(tmp_path / "lagging")
    with store:
        points_in(loaded, store, {"office": H, "far": 40 * H})
        lag = one(loaded, store, "R7.offsite_lag")
        assert not lag.passed and lag.measured == 40 * 3600 and lag.threshold == 24 * 3600


# -- R8 ------------------------------------------------------------------------------------


def test_r8_a_pass_within_the_tiers_window_passes_and_an_older_one_fails(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        record = Recorder(loaded, store, copy="office", probe_name="office")
        record.test("sis", "passed", NOW - 10 * D, rto=H, rpo=4 * H)  # tier 1: 30 days
        record.test("fileserver", "passed", NOW - 100 * D, rto=H, rpo=4 * H)  # tier 2: 90 days
        record.test("fileserver", "failed", NOW - D, reason="checks failed")  # a failure is no proof
        assert one(loaded, store, "R8.test_window").passed
        window = one(loaded, store, "R8.test_window", "fileserver")
        assert not window.passed and window.threshold == 90 * 86400 and "tier 2" in window.message
        assert not one(loaded, store, "R8.test_window", "payroll").passed  # never


def test_r8_the_window_is_policy(tmp_path):
    def strict(data, _):
        data["policy"] = {"test_window": {"1": "7d"}}

    loaded, store = district(tmp_path, strict)
    with store:
        Recorder(loaded, store, copy="office", probe_name="office").test("sis", "passed", NOW - 10 * D, rto=H)
        assert not one(loaded, store, "R8.test_window").passed


# -- R11-R13: the plan's upkeep --------------------------------------------------------------


def upkept(data, books):
    recent = (TODAY - timedelta(days=20)).isoformat()
    data["plan"] = {
        "approved_on": recent, "reviewed_on": recent,
        "changes": [{"on": recent, "by": "IT Director", "description": "annual review"}],
        "contacts": [{"name": "IT Director", "verified_on": recent}],
        "exercises": [{"held_on": recent, "kind": "tabletop", "after_action_report": "tickets/AAR-12"}],
        "training": [{"who": who, "held_on": recent} for who in
                     ("Network Administrator", "Computer Technician III", "IT Director", "Business Services Director")],
    }
    for book in books.values():
        for vendor in book.get("vendors", []):
            vendor["verified_on"] = recent


def test_r11_r12_r13_pass_for_a_plan_kept_up(tmp_path):
    loaded, store = district(tmp_path, upkept)
    with store:
        for rule in ("R11.exercise", "R12.plan_review", "R12.contacts"):
            result = one(loaded, store, rule, None)
            assert result.passed and result.declared, rule
        assert all(r.passed for r in judged(loaded, store, "R13.training", None))


def test_r11_r12_r13_fail_for_a_plan_left_alone(tmp_path):
    def neglected(data, books):
        upkept(data, books)
        old = (TODAY - timedelta(days=500)).isoformat()
        data["plan"]["exercises"] = [{"held_on": old}]
        data["plan"]["reviewed_on"] = data["plan"]["approved_on"] = old
        data["plan"]["contacts"].append({"name": "Network Administrator"})
        data["plan"]["training"] = data["plan"]["training"][:1]

    loaded, store = district(tmp_path, neglected)
    with store:
        exercise = one(loaded, store, "R11.exercise", None)
        assert not exercise.passed and exercise.measured == 500 and "no after-action report" in exercise.message
        review = one(loaded, store, "R12.plan_review", None)
        assert not review.passed and review.measured == 500
        contacts = one(loaded, store, "R12.contacts", None)
        assert not contacts.passed and contacts.message.endswith("not: Network Administrator")
        training = {r.subject: r.passed for r in judged(loaded, store, "R13.training", None)}
        assert training["role:Network Administrator"] and not training["role:Computer Technician III"]


def test_r11_an_exercise_without_after_action_report_fails_and_no_plan_at_all_fails_every_upkeep_rule(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        assert one(loaded, store, "R11.exercise", None).message == "the plan was never exercised"
        assert one(loaded, store, "R12.plan_review", None).message == \
            "the plan was never approved or reviewed; no change record"
        assert not one(loaded, store, "R12.contacts", None).passed


# -- R14 -----------------------------------------------------------------------------------


def test_r14_a_dependency_that_cannot_be_back_first_or_a_cycle_fails(tmp_path):
    def cycle(data, books):
        books["fileserver"]["depends_on"] = ["payroll"]
        books["payroll"]["depends_on"] = ["fileserver"]
        books["payroll"]["rto"] = "8h"

    loaded, store = district(tmp_path, cycle)
    with store:
        sis = one(loaded, store, "R14.recovery_order")
        assert not sis.passed and "fileserver (RTO 8h) cannot be back before it (RTO 4h)" in sis.message
        payroll = one(loaded, store, "R14.recovery_order", "payroll")
        assert "dependency cycle payroll → fileserver → payroll" in payroll.message


def test_r14_dependencies_with_shorter_rtos_pass(tmp_path):
    def faster(_, books):
        books["fileserver"]["rto"] = "2h"
        books["fileserver"]["mtd"] = "1d"

    loaded, store = district(tmp_path, faster)
    with store:
        sis = one(loaded, store, "R14.recovery_order")
        assert sis.passed and sis.message == "recovers after fileserver"


# -- R15 -----------------------------------------------------------------------------------


def test_r15_the_only_copy_away_under_wet_pipe_sprinklers_is_critical(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": H})
        facility = one(loaded, store, "R15.facility")
        assert not facility.passed and facility.severity is Severity.CRITICAL
        assert facility.message == "near at annex is under wet-pipe sprinklers: the only copies away from the primary site"


def test_r15_a_copy_sharing_the_primarys_hazard_zone_is_exposed_too(tmp_path):
    def dry(data, _):
        data["sites"]["annex"]["fire_suppression"] = "dry-pipe"

    loaded, store = district(tmp_path, dry)
    with store:
        points_in(loaded, store, {"near": H})
        assert "shares the primary site's hazard zone flood-plain" in one(loaded, store, "R15.facility").message


def test_r15_a_far_copy_without_facility_risk_passes_as_declared(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": H, "far": H})
        facility = one(loaded, store, "R15.facility")
        assert facility.passed and facility.declared and facility.message.startswith("far (remote, 500 km)")


# -- corrective actions, the command, the metric -------------------------------------------------


def test_a_failing_rule_opens_one_corrective_action_that_closes_when_it_passes_and_history_stays(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": H})
        first = corrective.sync(store, evaluate(loaded, store, NOW), NOW)
        again = corrective.sync(store, evaluate(loaded, store, NOW), NOW + H)
        assert first.opened > 0 and again.opened == again.closed == 0  # idempotent
        open_r15 = [a for a in corrective.actions(store) if a.rule == "R15.facility" and a.system == "sis"]
        assert len(open_r15) == 1 and open_r15[0].opened_at == NOW

        points_in(loaded, store, {"office": H, "near": H, "far": H})  # a far copy arrives
        later = NOW + 2 * H
        changes = corrective.sync(store, evaluate(loaded, store, later), later)
        assert changes.closed >= 1
        assert not [a for a in corrective.actions(store) if a.rule == "R15.facility" and a.system == "sis"]
        (closed,) = [a for a in corrective.actions(store, open_only=False)
                     if a.rule == "R15.facility" and a.system == "sis"]
        assert closed.opened_at == NOW and closed.closed_at == later
        assert evidence.verify(store).ok  # the actions are sealed evidence too


def test_recording_a_result_through_the_engine_updates_corrective_actions(tmp_path):
    from drcheck.engine import track_corrective_actions

    loaded, store = district(tmp_path)
    with store:
        track_corrective_actions(loaded, store)
        assert any(a.rule == "R11.exercise" for a in corrective.actions(store))


def test_compliance_command_prints_the_matrix_and_exits_1_on_a_critical_failure(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H, "near": H})
    runner = CliRunner()
    shown = runner.invoke(cli, ["--config", str(loaded.path), "compliance", "--json"])
    assert shown.exit_code == 1, shown.output
    body = json.loads(shown.output)
    rules = {r["rule"] for r in body["results"]}
    assert {"R4.copies", "R15.facility", "R11.exercise"} <= rules and "R2.backup_age" not in rules
    r15 = next(r for r in body["results"] if r["rule"] == "R15.facility" and r["system"] == "sis")
    assert r15["controls"] and r15["declared"] is False and r15["evidence"][0]["table"] == "restore_points"
    assert any(a["rule"] == "R15.facility" for a in body["corrective_actions"])
    table = runner.invoke(cli, ["--config", str(loaded.path), "compliance"], env={"COLUMNS": "200"})
    assert "drcheck compliance" in table.output and "open corrective action" in table.output


def test_compliance_command_exits_0_when_only_warnings_fail(tmp_path):
    def good(data, books):
        upkept(data, books)
        data["copies"]["far"].update(immutable_days=60, separate_credentials=True, encrypted_in_transit=True,
                                     key_offsite=True)
        for name in ("office", "near"):
            data["copies"][name].update(encrypted_in_transit=True, key_offsite=True)
        for book in books.values():
            book.setdefault("alternate", "IT Director")
            book.setdefault("validation", ["log in"])
            book["depends_on"] = []

    loaded, store = district(tmp_path, good)
    with store:
        points_in(loaded, store, {"office": H, "near": H, "far": H})
        recorder = Recorder(loaded, store, copy="office", probe_name="office")
        for system in ("sis", "fileserver", "payroll"):
            recorder.test(system, "passed", NOW - D, rto=H, rpo=4 * H)
    shown = CliRunner().invoke(cli, ["--config", str(loaded.path), "compliance", "--json"])
    failing = [r for r in json.loads(shown.output)["results"] if not r["passed"]]
    assert all(r["severity"] == "warning" for r in failing), failing
    assert shown.exit_code == 0


def test_every_compliance_rule_is_exported_as_a_metric_with_plan_rules_under_an_empty_system(tmp_path):
    loaded, store = district(tmp_path)
    with store:
        points_in(loaded, store, {"office": H})
    samples = {(s.labels["rule"], s.labels["system"]): s.value for family in registry_for(loaded).collect()
               if family.name == "drcheck_compliance_rule_passing" for s in family.samples}
    assert samples[("R11.exercise", "")] == 0 and samples[("R4.copies", "sis")] == 0
    assert samples[("R1.complete", "sis")] == 1
    compliance_rules = {rule for rule, r in RULES.items() if r.scope == "compliance"}
    # R7 judges the off-site copy's lag only where there is one (R4.offsite says there is none)
    assert compliance_rules - {"R7.offsite_lag"} <= {rule for rule, _ in samples}


@pytest.mark.parametrize("rule", sorted(r for r, spec in RULES.items() if spec.scope == "compliance"))
def test_every_compliance_rule_names_controls(rule):
    assert RULES[rule].controls and RULES[rule].title


def test_restic_and_borg_copies_are_proven_encrypted_at_rest_and_nothing_else_is():
    from drcheck.compliance_rules import proven

    loaded = load(REPO / "drcheck.toml")
    assert proven(loaded, "lab-restic") == {"encrypted_at_rest"}  # restic always encrypts
    assert proven(loaded, "nutrition-borg") == {"encrypted_at_rest"}  # drcheck refuses unencrypted borg
    assert proven(loaded, "barracuda") == set()  # an appliance's encryption is only declared

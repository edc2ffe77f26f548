"""drcheck.toml / runbooks loading: one "<file>: <key.path>: <message>" per problem, every
problem at once, no secret echoed; plus secrets.py and durations.py."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from drcheck.config_loader import ConfigError, LoadedConfig, load
from drcheck.durations import format_duration, parse_duration
from drcheck.secrets import SecretRef, SecretUnavailable

SECRET_HINT = 'use { env = "VAR" }, { file = "/path" } or { credential = "name" }'


@pytest.fixture
def errors_for(builders, config_dir):
    """Write config + runbooks into the working directory, load, return ConfigError.errors."""

    def run(config: dict, runbooks: dict | None = None) -> list[str]:
        path = builders.write_config(config_dir, config, runbooks)
        with pytest.raises(ConfigError) as info:
            load(path)
        assert str(info.value) == "\n".join(info.value.errors)
        return info.value.errors

    return run


# --- valid configuration and path resolution ---------------------------------------------


def test_valid_config_loads(builders, config_dir):
    loaded = load(builders.write_config(config_dir))
    assert isinstance(loaded, LoadedConfig)
    assert set(loaded.runbooks) == {"sis", "fileserver"}
    assert set(loaded.config.probes) == {"local-repo", "offsite-repo"}
    assert loaded.config.agent.job_timeout == timedelta(hours=1)
    assert loaded.config.agent.misfire_grace == timedelta(minutes=10)
    assert loaded.runbooks["sis"].depends_on == ["fileserver"]


def test_relative_paths_resolve_against_the_config_files_directory(builders, tmp_path, monkeypatch):
    config_dir = tmp_path / "etc"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = builders.valid_config()
    cfg["reports"]["output_dir"] = "/srv/reports"
    loaded = load(builders.write_config(config_dir, cfg))
    agent, probe = loaded.config.agent, loaded.config.probes["local-repo"]
    assert agent.state_dir == config_dir / "state"
    assert agent.sandbox_root == config_dir / "state" / "sandbox"
    assert agent.runbooks_dir == config_dir / "runbooks"
    assert loaded.config.reports.output_dir == Path("/srv/reports")
    assert probe.repository == str(config_dir / "repo")
    assert probe.password.file == config_dir / "secrets" / "restic-password"
    assert probe.password.ref().file_path() == config_dir / "secrets" / "restic-password"
    assert probe.systems[0].paths == [config_dir / "src" / "sis"]
    assert loaded.config.probes["offsite-repo"].repository == "s3:https://s3.example.com/backups"
    test = loaded.config.restore_tests["sis-files"]
    assert test.target_dir == config_dir / "state" / "sandbox" / "sis"
    assert test.expected_paths == [Path("db/sis.db")]  # relative to the system's source path
    assert probe.source_paths("sis") == [config_dir / "src" / "sis"]


def test_paths_are_normalised_and_tilde_expanded(builders, config_dir, monkeypatch):
    monkeypatch.setenv("HOME", str(config_dir / "home"))
    cfg = builders.valid_config()
    cfg["agent"]["state_dir"] = "~/drcheck"
    cfg["agent"]["sandbox_root"] = "state/../sandbox"
    cfg["restore_tests"]["sis-files"].pop("target_dir")
    loaded = load(builders.write_config(config_dir, cfg))
    assert loaded.config.agent.state_dir == config_dir / "home" / "drcheck"
    assert loaded.config.agent.sandbox_root == config_dir / "sandbox"


def test_sftp_repository_is_not_treated_as_a_path(builders, config_dir):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["repository"] = "sftp:backup@nas01:/srv/restic"
    loaded = load(builders.write_config(config_dir, cfg))
    assert loaded.config.probes["local-repo"].repository == "sftp:backup@nas01:/srv/restic"


# --- wrong types -------------------------------------------------------------------------


def test_wrong_type_names_file_and_key_path(builders, errors_for):
    cfg = builders.valid_config()
    cfg["agent"]["max_parallel_jobs"] = "two"
    assert errors_for(cfg) == ["drcheck.toml: agent.max_parallel_jobs: Input should be a valid integer"]


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("agent", "max_parallel_jobs", True, "agent.max_parallel_jobs: Input should be a valid integer (got True)"),
        ("agent", "max_parallel_jobs", "2", "agent.max_parallel_jobs: Input should be a valid integer"),
        ("agent", "max_parallel_jobs", 99, "agent.max_parallel_jobs: Input should be less than or equal to 32 (got 99)"),
        ("agent", "name", 7, "agent.name: Input should be a valid string (got 7)"),
        ("agent", "name", ["a"], "agent.name: Input should be a valid string (got a list)"),
        ("metrics", "enabled", "yes", "metrics.enabled: Input should be a valid boolean"),
        ("metrics", "enabled", 1, "metrics.enabled: Input should be a valid boolean (got 1)"),
        ("metrics", "listen", "localhost", "metrics.listen: String should match pattern"),
        ("reports", "weekly_schedule", "mondays", "reports.weekly_schedule: Input should be a valid dictionary"),
    ],
)
def test_wrong_types_in_sections(builders, errors_for, section, key, value, expected):
    cfg = builders.valid_config()
    cfg[section][key] = value
    errors = errors_for(cfg)
    assert len(errors) == 1
    assert errors[0].startswith(f"drcheck.toml: {expected}")


def test_wrong_types_deep_inside_lists_and_tables(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["systems"][1]["hosts"] = "files01"
    cfg["restore_tests"]["sis-files"]["commands"][0]["expect_exit"] = "0"
    cfg["restore_tests"]["sis-files"]["spot_check"]["percent"] = False
    cfg["sites"]["dr"]["distance_km"] = "far"
    cfg["agent"] = "not a table"
    assert errors_for(cfg) == [
        "drcheck.toml: agent: Input should be a valid dictionary or instance of AgentConfig",
        "drcheck.toml: sites.dr.distance_km: Input should be a valid number",
        "drcheck.toml: probes.local-repo.systems[1].hosts: Input should be a valid list",
        "drcheck.toml: restore_tests.sis-files.spot_check.percent: Input should be a valid number (got False)",
        "drcheck.toml: restore_tests.sis-files.commands[0].expect_exit: Input should be a valid integer",
    ]


def test_missing_required_keys(builders, errors_for):
    cfg = builders.valid_config()
    del cfg["probes"]["local-repo"]["copy"]
    del cfg["restore_tests"]["sis-files"]["kind"]
    assert errors_for(cfg) == [
        "drcheck.toml: probes.local-repo.copy: required key is missing",
        "drcheck.toml: restore_tests.sis-files.kind: required key is missing",
    ]


def test_wrong_probe_kind(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["kind"] = "tape"
    (error,) = errors_for(cfg)
    assert error.startswith("drcheck.toml: probes.local-repo.kind: Input should be one of 'restic'")
    assert error.endswith("(got 'tape')")


def test_wrong_probe_kind_does_not_hide_the_tables_other_mistakes(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["kind"] = "tape"
    cfg["probes"]["local-repo"]["copy"] = 7
    errors = errors_for(cfg)
    assert [e.split(":")[1].strip() for e in errors] == ["probes.local-repo.kind", "probes.local-repo.copy"]


def test_missing_probe_kind(builders, errors_for):
    cfg = builders.valid_config()
    del cfg["probes"]["local-repo"]["kind"]
    assert errors_for(cfg) == ["drcheck.toml: probes.local-repo.kind: required key is missing"]


def test_system_mapping_needs_a_criterion(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["offsite-repo"]["systems"][0] = {"system": "sis"}
    assert errors_for(cfg) == [
        "drcheck.toml: probes.offsite-repo.systems[0]: give at least one of hosts, tags, name_glob, paths"
    ]


# --- unknown keys ------------------------------------------------------------------------


def test_unknown_top_level_key_lists_expected_keys(builders, errors_for):
    cfg = builders.valid_config()
    cfg["agnet"] = {"name": "typo"}
    assert errors_for(cfg) == [
        "drcheck.toml: agnet: unknown key "
        "(expected one of: agent, copies, metrics, plan, policy, probes, reports, restore_tests, sites, store)"
    ]


def test_unknown_nested_key_lists_expected_keys(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["repo"] = "typo for repository"
    cfg["probes"]["local-repo"]["systems"][0]["host"] = "sis01"
    cfg["probes"]["offsite-repo"]["password"]["value"] = "x"
    assert sorted(errors_for(cfg)) == [
        "drcheck.toml: probes.local-repo.repo: unknown key (expected one of: check, confine_restores, copy, "
        "environment, kind, password, repository, restic_command, snapshots, systems, wrong_source)",
        "drcheck.toml: probes.local-repo.systems[0].host: unknown key (expected one of: hosts, name_glob, paths, system, tags)",
        "drcheck.toml: probes.offsite-repo.password.value: unknown key (expected one of: credential, env, file)",
    ]


def test_unknown_key_in_runbook(builders, errors_for):
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["owners"] = ["a"]
    runbooks["fileserver"]["recovery_steps"][0]["who"] = "me"
    assert errors_for(builders.valid_config(), runbooks) == [
        "runbooks/fileserver.toml: recovery_steps[0].who: unknown key (expected one of: action, expected_duration, owner)",
        "runbooks/sis.toml: owners: unknown key (expected one of: alternate, assets, depends_on, description, mtd, "
        "name, owner, recovery_steps, rpo, rto, tier, validation, vendors, vms, wrt)",
    ]


# --- unknown references ------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["agent"].update(site="nowhere"),
         "drcheck.toml: agent.site: unknown site 'nowhere' (known: dr, hq)"),
        (lambda c: c["copies"]["offsite"].update(site="moon"),
         "drcheck.toml: copies.offsite.site: unknown site 'moon' (known: dr, hq)"),
        (lambda c: c["probes"]["local-repo"].update(copy="tape"),
         "drcheck.toml: probes.local-repo.copy: unknown copy 'tape' (known: local, offsite)"),
        (lambda c: c["probes"]["offsite-repo"]["systems"][0].update(system="dns"),
         "drcheck.toml: probes.offsite-repo.systems[0].system: unknown system 'dns' (known: fileserver, sis)"),
        (lambda c: c["restore_tests"]["sis-files"].update(probe="nas"),
         "drcheck.toml: restore_tests.sis-files.probe: unknown probe 'nas' (known: local-repo, offsite-repo)"),
    ],
    ids=["agent.site", "copy.site", "probe.copy", "probe.system", "test.probe"],
)
def test_unknown_reference_names_key_and_choices(builders, errors_for, mutate, expected):
    cfg = builders.valid_config()
    mutate(cfg)
    assert errors_for(cfg) == [expected]


def test_unknown_system_in_restore_test(builders, errors_for):
    cfg = builders.valid_config()
    cfg["restore_tests"]["sis-files"]["system"] = "payroll"
    errors = errors_for(cfg)
    assert errors[0] == "drcheck.toml: restore_tests.sis-files.system: unknown system 'payroll' (known: fileserver, sis)"
    assert "drcheck.toml: restore_tests.sis-files.system: probe 'local-repo' maps no restore points to 'payroll'" in errors


def test_unknown_site_when_none_are_defined(builders, errors_for):
    cfg = builders.valid_config()
    del cfg["sites"]
    assert errors_for(cfg) == [
        "drcheck.toml: agent.site: unknown site 'hq' (known: none defined)",
        "drcheck.toml: copies.local.site: unknown site 'hq' (known: none defined)",
        "drcheck.toml: copies.offsite.site: unknown site 'dr' (known: none defined)",
    ]


def test_unknown_depends_on_is_reported_against_the_runbook(builders, errors_for):
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["depends_on"] = ["fileserver", "dns"]
    assert errors_for(builders.valid_config(), runbooks) == [
        "runbooks/sis.toml: depends_on[1]: unknown system 'dns' (known: fileserver, sis)"
    ]


def test_target_dir_outside_sandbox(builders, errors_for, config_dir):
    cfg = builders.valid_config()
    cfg["restore_tests"]["sis-files"]["target_dir"] = "/srv/data"
    assert errors_for(cfg) == [
        f"drcheck.toml: restore_tests.sis-files.target_dir: /srv/data is outside agent.sandbox_root "
        f"({config_dir / 'state' / 'sandbox'}); restores only happen inside the sandbox"
    ]


# --- secrets -----------------------------------------------------------------------------


def test_inline_password_is_refused_without_echoing_it(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["password"] = "hunter2"
    errors = errors_for(cfg)
    assert errors == [f"drcheck.toml: probes.local-repo.password: inline secrets are not allowed; {SECRET_HINT}"]
    assert "hunter2" not in "\n".join(errors)


def test_inline_numeric_password_is_refused_without_echoing_it(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["password"] = 90210777
    errors = errors_for(cfg)
    assert errors == [f"drcheck.toml: probes.local-repo.password: inline secrets are not allowed; {SECRET_HINT}"]
    assert "90210777" not in "\n".join(errors)


def test_inline_secrets_in_environment_are_refused_one_message_each(builders, errors_for):
    cfg = builders.valid_config()
    environment = cfg["probes"]["offsite-repo"]["environment"]
    environment["AWS_SECRET_ACCESS_KEY"] = "hunter2"
    environment["AWS_ACCESS_KEY_ID"] = "AKIAhunter3"
    environment["RESTIC_PACK_SIZE"] = 64  # not secret-like: a plain value is fine
    errors = errors_for(cfg)
    assert errors == [
        f"drcheck.toml: probes.offsite-repo.environment.{name}: inline secrets are not allowed; {SECRET_HINT}"
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    assert "hunter" not in "\n".join(errors)


def test_inline_secret_in_environment_is_reported_with_other_environment_errors(builders, errors_for):
    cfg = builders.valid_config()
    environment = cfg["probes"]["offsite-repo"]["environment"]
    environment["AWS_SECRET_ACCESS_KEY"] = "hunter2"
    environment["AWS_ACCESS_KEY_ID"] = {"env": "A", "file": "b"}
    assert errors_for(cfg) == [
        "drcheck.toml: probes.offsite-repo.environment.AWS_ACCESS_KEY_ID: "
        "give exactly one of env, file, credential (got 2)",
        "drcheck.toml: probes.offsite-repo.environment.AWS_SECRET_ACCESS_KEY: "
        f"inline secrets are not allowed; {SECRET_HINT}",
    ]


def test_bad_secret_reference_in_environment_lists_secret_keys(builders, errors_for):
    cfg = builders.valid_config()
    cfg["probes"]["offsite-repo"]["environment"]["AWS_ACCESS_KEY_ID"] = {"envv": "AWS_KEY_ID"}
    cfg["probes"]["local-repo"]["environment"]["RESTIC_COMPRESSION"] = ["auto"]
    assert errors_for(cfg) == [
        "drcheck.toml: probes.local-repo.environment.RESTIC_COMPRESSION: "
        "expected a string or a secret reference { env | file | credential }",
        "drcheck.toml: probes.offsite-repo.environment.AWS_ACCESS_KEY_ID.envv: "
        "unknown key (expected one of: credential, env, file)",
    ]


@pytest.mark.parametrize(
    "repository",
    [
        "rest:https://backup:hunter2@restic.example.com:8000/sis",
        "s3:https://AKIAEXAMPLE:hunter2@s3.example.com/bucket",
        "rest:https://:hunter2@restic.example.com/sis",  # empty user name, token as password
    ],
)
def test_credentials_in_repository_url_are_refused(builders, errors_for, repository):
    cfg = builders.valid_config()
    cfg["probes"]["offsite-repo"]["repository"] = repository
    errors = errors_for(cfg)
    assert errors == [
        "drcheck.toml: probes.offsite-repo.repository: credentials inside the repository URL are "
        f"inline secrets; {SECRET_HINT}"
    ]
    assert "hunter2" not in "\n".join(errors)


@pytest.mark.parametrize(
    "password, count", [({}, 0), ({"env": "A", "file": "b"}, 2), ({"env": "A", "credential": "c", "file": "f"}, 3)]
)
def test_secret_reference_needs_exactly_one_source(builders, errors_for, password, count):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["password"] = password
    assert errors_for(cfg) == [
        f"drcheck.toml: probes.local-repo.password: give exactly one of env, file, credential (got {count})"
    ]


def test_secret_ref_repr_never_contains_the_value(monkeypatch, tmp_path):
    monkeypatch.setenv("DRCHECK_TEST_PW", "hunter2")
    (tmp_path / "pw").write_text("hunter2\n")
    for ref, where in [
        (SecretRef(env="DRCHECK_TEST_PW"), "env:DRCHECK_TEST_PW"),
        (SecretRef(file=tmp_path / "pw"), f"file:{tmp_path / 'pw'}"),
        (SecretRef(credential="restic"), "credential:restic"),
    ]:
        assert repr(ref) == str(ref) == f"SecretRef({where})"
        assert f"{ref}" == f"{ref!r}" == f"SecretRef({where})"
        assert "hunter2" not in repr([ref]) and "hunter2" not in repr({"k": ref})


def test_reveal_env(monkeypatch):
    monkeypatch.setenv("DRCHECK_TEST_PW", "hunter2")
    ref = SecretRef(env="DRCHECK_TEST_PW")
    assert ref.reveal() == "hunter2"
    assert ref.file_path() is None
    monkeypatch.delenv("DRCHECK_TEST_PW")
    with pytest.raises(SecretUnavailable, match=r"^env:DRCHECK_TEST_PW: environment variable is not set$"):
        ref.reveal()


def test_reveal_file_strips_only_the_line_ending(tmp_path):
    (tmp_path / "pw").write_text("  hunter2 \r\n")
    ref = SecretRef(file=tmp_path / "pw")
    assert ref.reveal() == "  hunter2 "
    assert ref.file_path() == tmp_path / "pw"
    missing = SecretRef(file=tmp_path / "nope")
    with pytest.raises(SecretUnavailable) as info:
        missing.reveal()
    assert str(info.value) == f"file:{tmp_path / 'nope'}: cannot read (No such file or directory)"


def test_reveal_systemd_credential(monkeypatch, tmp_path):
    (tmp_path / "restic").write_text("hunter2\n")
    ref = SecretRef(credential="restic")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(SecretUnavailable, match=r"^credential:restic: \$CREDENTIALS_DIRECTORY is not set"):
        ref.reveal()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert ref.file_path() == tmp_path / "restic"
    assert ref.reveal() == "hunter2"
    with pytest.raises(SecretUnavailable, match=r"^credential:other: cannot read \(No such file or directory\)$"):
        SecretRef(credential="other").reveal()


def test_loaded_secret_specs_become_refs(builders, config_dir, monkeypatch):
    monkeypatch.setenv("OFFSITE_PASSWORD", "hunter2")
    loaded = load(builders.write_config(config_dir))
    probe = loaded.config.probes["offsite-repo"]
    assert probe.password.ref().reveal() == "hunter2"
    assert "hunter2" not in repr(probe) and "hunter2" not in repr(probe.password.ref())
    assert probe.environment["AWS_SECRET_ACCESS_KEY"].ref() == SecretRef(credential="aws-secret")


# --- several errors at once, syntax errors, runbooks ---------------------------------------


def test_every_error_is_reported_at_once(builders, errors_for):
    cfg = builders.valid_config()
    cfg["agent"]["max_parallel_jobs"] = "two"
    cfg["agent"]["colour"] = "blue"
    cfg["probes"]["local-repo"]["password"] = "hunter2"
    cfg["restore_tests"]["sis-files"]["timeout"] = "an hour"
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["rto"] = "soon"
    runbooks["fileserver"]["tier"] = 0
    errors = errors_for(cfg, runbooks)
    assert len(errors) == 6, errors
    assert [e.split(": ")[:2] for e in errors] == [
        ["drcheck.toml", "agent.max_parallel_jobs"],
        ["drcheck.toml", "agent.colour"],
        ["drcheck.toml", "probes.local-repo.password"],
        ["drcheck.toml", "restore_tests.sis-files.timeout"],
        ["runbooks/fileserver.toml", "tier"],
        ["runbooks/sis.toml", "rto"],
    ]


def test_every_cross_reference_error_is_reported_at_once(builders, errors_for):
    cfg = builders.valid_config()
    cfg["agent"]["site"] = "nowhere"
    cfg["probes"]["local-repo"]["copy"] = "tape"
    cfg["restore_tests"]["sis-files"]["probe"] = "nas"
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["depends_on"] = ["dns"]
    assert errors_for(cfg, runbooks) == [
        "drcheck.toml: agent.site: unknown site 'nowhere' (known: dr, hq)",
        "drcheck.toml: probes.local-repo.copy: unknown copy 'tape' (known: local, offsite)",
        "drcheck.toml: restore_tests.sis-files.probe: unknown probe 'nas' (known: local-repo, offsite-repo)",
        "runbooks/sis.toml: depends_on[0]: unknown system 'dns' (known: fileserver, sis)",
    ]


def test_an_invalid_runbook_gives_one_message_not_unknown_system_noise(builders, errors_for):
    runbooks = builders.valid_runbooks()
    runbooks["sis"]["tier"] = 9
    assert errors_for(builders.valid_config(), runbooks) == [
        "runbooks/sis.toml: tier: Input should be less than or equal to 4 (got 9)"
    ]


def test_runbook_errors_are_prefixed_with_the_runbook_file(builders, errors_for):
    runbooks = builders.valid_runbooks()
    runbooks["fileserver"]["rto"] = "eight hours"
    del runbooks["fileserver"]["owner"]
    runbooks["fileserver"]["recovery_steps"][0]["expected_duration"] = "4 hours"
    assert errors_for(builders.valid_config(), runbooks) == [
        "runbooks/fileserver.toml: owner: required key is missing",
        "runbooks/fileserver.toml: rto: expected a duration such as '15m', '4h', '1d12h' or a number of "
        "seconds, got 'eight hours'",
        "runbooks/fileserver.toml: recovery_steps[0].expected_duration: expected a duration such as '15m', "
        "'4h', '1d12h' or a number of seconds, got '4 hours'",
    ]


def test_toml_syntax_error_names_file_and_line(builders, config_dir):
    path = builders.write_config(config_dir)
    path.write_text('[agent]\nname = "x"\nmax_parallel_jobs = = 2\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert len(info.value.errors) == 1
    assert re.fullmatch(r"drcheck\.toml: not valid TOML: .*\(at line 3, column \d+\)", info.value.errors[0])


def test_runbook_syntax_error_names_the_runbook_and_line(builders, config_dir):
    path = builders.write_config(config_dir)
    (config_dir / "runbooks" / "sis.toml").write_text('name = "SIS"\ntier = = 1\nowner = "x"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert len(info.value.errors) == 1, info.value.errors
    assert re.fullmatch(r"runbooks/sis\.toml: not valid TOML: .*\(at line 2, column \d+\)", info.value.errors[0])


def test_unreadable_inputs_are_errors_not_exceptions(builders, config_dir):
    with pytest.raises(ConfigError) as info:
        load(config_dir / "missing.toml")
    assert info.value.errors == ["missing.toml: file not found"]
    path = builders.write_config(config_dir)
    path.write_bytes(b'[agent]\nname = "caf\xe9"\n')  # Latin-1, not UTF-8
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.errors == ["drcheck.toml: not valid TOML: not UTF-8 (at line 2)"]
    path.write_text("a = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load(path)


def test_runbooks_dir_that_is_not_a_directory(builders, errors_for, config_dir):
    cfg = builders.valid_config()
    cfg["agent"]["runbooks_dir"] = "nope"
    errors = errors_for(cfg)
    assert errors[0] == f"drcheck.toml: agent.runbooks_dir: {config_dir / 'nope'} is not a directory"


# --- schedules and durations in the config -------------------------------------------------


@pytest.mark.parametrize(
    "cron, message",
    [
        ("61 * * * *", "not a valid 5-field crontab expression: Error validating expression '61'"),
        ("0 7 * * 1 2026", "not a valid 5-field crontab expression: expected 5 fields (minute hour day month day-of-week), got 6"),
        ("every monday", "not a valid 5-field crontab expression: expected 5 fields (minute hour day month day-of-week), got 2"),
        ("*/0 * * * *", "not a valid 5-field crontab expression: Increment must be higher than 0"),
    ],
)
def test_bad_cron_expression(builders, errors_for, cron, message):
    cfg = builders.valid_config()
    cfg["restore_tests"]["sis-files"]["schedule"]["cron"] = cron
    errors = errors_for(cfg)
    assert len(errors) == 1
    assert errors[0].startswith(f"drcheck.toml: restore_tests.sis-files.schedule.cron: {message}")


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"cron": "0 3 * * *", "interval": "1h"}, "give exactly one of cron or interval"),
        ({"jitter": "5m"}, "give exactly one of cron or interval"),
        ({"interval": 0.5}, "interval must be at least 1s"),
    ],
)
def test_schedule_rules(builders, errors_for, schedule, message):
    cfg = builders.valid_config()
    cfg["probes"]["local-repo"]["check"]["schedule"] = schedule
    assert errors_for(cfg) == [f"drcheck.toml: probes.local-repo.check.schedule: {message}"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("1 hour", "expected a duration such as '15m', '4h', '1d12h' or a number of seconds, got '1 hour'"),
        ("5x", "expected a duration such as '15m', '4h', '1d12h' or a number of seconds, got '5x'"),
        ("", "expected a duration such as '15m', '4h', '1d12h' or a number of seconds, got ''"),
        (-5, "a duration cannot be negative"),
        (True, "expected a duration such as '15m', '4h', '1d' or seconds"),
        (float("inf"), "a duration must be a finite number of seconds"),
        (float("nan"), "a duration must be a finite number of seconds"),
        (1e20, "duration is too large (at most 999999999 days)"),
        ("99999999999999w", "duration is too large (at most 999999999 days)"),
        ([1], "expected a duration such as '15m', '4h', '1d12h' or a number of seconds, got [1]"),
    ],
)
def test_bad_duration(builders, errors_for, value, message):
    cfg = builders.valid_config()
    cfg["agent"]["job_timeout"] = value
    assert errors_for(cfg) == [f"drcheck.toml: agent.job_timeout: {message}"]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus' (expected e.g. 'America/Los_Angeles')"),
        ("timezone", "America", "unknown time zone 'America' (expected e.g. 'America/Los_Angeles')"),
        ("timezone", "x" * 300, f"unknown time zone '{'x' * 300}' (expected e.g. 'America/Los_Angeles')"),
        ("state_dir", "~no-such-user-drcheck/state", "cannot expand '~': unknown user or no home directory"),
    ],
)
def test_values_that_used_to_raise_are_reported(builders, errors_for, key, value, message):
    cfg = builders.valid_config()
    cfg["agent"][key] = value
    assert errors_for(cfg) == [f"drcheck.toml: agent.{key}: {message}"]


@pytest.mark.parametrize(
    "pattern, message",
    [("((", "missing ), unterminated subpattern at position 1"), ("a{99999999999}", "the repetition number is too large")],
)
def test_bad_expect_output_regex(builders, errors_for, pattern, message):
    cfg = builders.valid_config()
    cfg["restore_tests"]["sis-files"]["commands"][0]["expect_output"] = pattern
    assert errors_for(cfg) == [
        f"drcheck.toml: restore_tests.sis-files.commands[0].expect_output: not a valid regular expression: {message}"
    ]


# --- durations.py ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90s", 90), ("15m", 900), ("4h", 14400), ("1d12h", 129600), ("2w", 1209600),
        ("1.5h", 5400), (" 1h 30m ", 5400), ("0s", 0), (5400, 5400), (0.5, 0.5),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_parse_duration_passes_timedeltas_through():
    assert parse_duration(timedelta(minutes=3)) == timedelta(minutes=3)
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_duration(timedelta(seconds=-1))


@pytest.mark.parametrize("value", ["", "h", "1", "1 h 2", "1H", "1e3s", "-1h", "1h-", None, False, [], {}])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "—"), (0, "0.00s"), (0.84, "0.84s"), (1.84, "1.8s"), (9.94, "9.9s"), (10, "10s"), (59.6, "1m"), (250, "4m 10s"),
        (3600, "1h"), (3661, "1h 1m"), (183600, "2d 3h"), (90061, "1d 1h"), (-250, "-4m 10s"), (-0.5, "-0.50s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text

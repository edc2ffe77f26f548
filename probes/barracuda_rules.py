"""Barracuda Backup parsing rules: how report and alert e-mails are recognised and read
(the `parsing` table of a barracuda probe). Defaults are written from Barracuda's
documented report and alert content in English (see tests/peers/barracuda/README.md);
every one can be changed for another firmware's wording or language."""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from drcheck.config_types import Name, Strict


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _label_regex(value: str) -> str:
    _regex(value)
    if "(?P<" in value:
        raise ValueError("label patterns may not define named groups")
    return value


Regex = Annotated[str, AfterValidator(_regex)]
LabelRegex = Annotated[str, AfterValidator(_label_regex)]


class Labels(Strict):
    """Which line labels name which field (case-insensitive regexes, alternatives with |)."""

    appliance: LabelRegex = Field("Appliance|Barracuda Backup Server|Backup Server|Device",
                                  description="the appliance that sent the message")
    schedule: LabelRegex = Field("Schedule|Backup Schedule|Job", description="the backup schedule (job)")
    computer: LabelRegex = Field("Computer|Server|Host", description="the computer a data source belongs to")
    data_source: LabelRegex = Field("Data Source|Source", description="the data source (a VM, share, database…)")
    status: LabelRegex = Field("Status|Result", description="the data source's backup status")
    start: LabelRegex = Field("Start Time|Started|Start", description="when its backup started")
    end: LabelRegex = Field("End Time|Finished|End", description="when its backup ended")
    size: LabelRegex = Field("Size|Total Size|Backup Size", description="the size of the backup")
    offsite: LabelRegex = Field("Offsite Replication|Offsite|Replication|Cloud Replication",
                                description="replication state (report header: the appliance's; block: the source's)")
    alert: LabelRegex = Field("Alert|Alert Type|Event", description="what an alert is about")
    time: LabelRegex = Field("Time|Alert Time|Date", description="when an alert was raised")
    details: LabelRegex = Field("Details|Message|Description", description="an alert's explanation")
    error: LabelRegex = Field("Error|Errors|Reason", description="why a data source's backup failed")


FIELDS = tuple(Labels.model_fields)


class AlertRule(Strict):
    """One kind of alert e-mail and when it ends. An open alert is a finding (code `code`)
    about its data source (`about = "data_source"`, when the alert names one) or its
    appliance. It ends when a later message matches `resolved_by`, or when `cleared_by`
    happens later: `report` (any completed backup report of that data source / from that
    appliance), `clean_report` (one without warnings), `offsite_ok` (a report saying its
    replication is up to date), `never` (only `resolved_by` ends it)."""

    code: Name = Field(..., description="finding code")
    match: Regex = Field(..., description="regex searched in the subject, alert and details lines (case-insensitive)")
    severity: Literal["warning", "critical"] = Field("critical", description="finding severity")
    about: Literal["appliance", "data_source"] = Field("appliance", description="what the finding is about")
    cleared_by: Literal["report", "clean_report", "offsite_ok", "never"] = Field(
        "report", description="what later event ends it")
    resolved_by: Regex | None = Field(None, description="regex of the message that announces its end")


DEFAULT_ALERTS = (
    AlertRule(code="job_failed", match=r"backup (job )?failed|failed to back up", about="data_source"),
    AlertRule(code="appliance_offline", match=r"\boffline\b|not responding|has not contacted",
              resolved_by=r"back online|has come online|\bis online\b"),
    AlertRule(code="replication_behind", severity="warning", cleared_by="offsite_ok",
              match=r"replication (is )?(behind|delayed|queued)|offsite.*(behind|queue)|"
                    r"(communicate|connect) with barracuda cloud storage"),
    AlertRule(code="disk_error", cleared_by="never", match=r"\bdisk\b|\bdrive\b|\braid\b|hardware",
              resolved_by=r"(raid|volume|disk|drive).*(rebuilt|healthy|optimal|resolved|replaced)"),
)


class ParsingRules(Strict):
    """How report and alert e-mails are recognised and read. Defaults follow Barracuda
    Backup's documented report content in English; change them for another firmware's
    wording or language. Regexes are Python's, matched case-insensitively."""

    report_subject: Regex = Field(r"\bbackup report\b", description="subject of a backup job report")
    alert_subject: Regex = Field(r"\balert\b", description="subject of an alert")
    ignore_subject: Regex | None = Field(r"\bnotice\b", description="subject of mail to ignore (software notices)")
    sender: Regex | None = Field(None, description="only mail whose From matches is read; other mail is ignored")
    subject_appliance: Regex = Field(r"(?:report|alert|notice)\s*:\s*(?P<appliance>[^\s]+)",
                                     description="finds the appliance in a subject (group 'appliance') when "
                                                 "the body does not name it")
    labels: Labels = Field(default_factory=Labels, description="line labels of each field")
    computer_value: Regex = Field(r"^(?P<computer>.*?)\s*(?:\((?P<type>[^()]*)\))?$",
                                  description="splits a computer line into 'computer' and its 'type'")
    status_warning: Regex = Field(r"with (warnings?|errors?)|partial", description="a completed run with warnings")
    status_failed: Regex = Field(r"fail|error|abort|cancel|miss|incomplete", description="a failed run")
    status_ok: Regex = Field(r"^(completed?|success(ful)?|succeeded|ok|done)\b", description="a clean run")
    offsite_ok: Regex = Field(r"up to date|replicated|in sync|synced|\bcomplete",
                              description="an offsite state meaning the backup is replicated")
    vm_types: Regex = Field(r"vmware|vsphere|hyper-v",
                            description="computer types whose data sources are VMs (matched to vCenter VMs by name; "
                                        "others by the computer's host name)")
    time_formats: list[str] = Field(
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S",
         "%d.%m.%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%a, %d %b %Y %H:%M:%S"],
        description="strptime formats of body times after ISO 8601 (a time without a zone is in `timezone`, "
                    "else the zone of the message's Date header)")
    alerts: list[AlertRule] = Field(list(DEFAULT_ALERTS), description="alert kinds, first match wins")


def glob_match(value: str | None, patterns: list[str]) -> bool:
    """True when no patterns are given, or `value` matches one (shell patterns, any case)."""
    if not patterns:
        return True
    value = (value or "").lower()
    return any(fnmatch.fnmatchcase(value, p.lower()) for p in patterns)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")

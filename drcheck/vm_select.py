"""Which VMs a rule means: by name pattern, folder, custom attribute or instance UUID.

One `VmSelector` model serves every place that names VMs: a runbook's `vms` (which VMs
a system runs on), an inventory probe's `exclusions` (VMs deliberately not backed up)
and a `vm` restore test's rotation set. A VM matches a selector when it meets every
criterion the selector gives. Matching reads the facts an inventory probe stored for
the VM (`drcheck.results.InventoryAsset.attributes`): no vCenter access here.
"""

from __future__ import annotations

import fnmatch
from datetime import date
from typing import Any, Iterable, Mapping

from pydantic import Field, model_validator

from drcheck.config_types import Strict
from drcheck.mapping import within


class VmSelector(Strict):
    """VMs meeting every criterion given: `name` (a shell pattern on the VM name, compared
    without regard to case), `folder` (an inventory folder path such as
    "/District/vm/Schools"; VMs in it and below), `attribute` ("Name=Value": a custom
    attribute's value, pattern allowed) and `uuid` (the instance UUID)."""

    name: str | None = Field(None, description="VM name or shell pattern (case-insensitive)")
    folder: str | None = Field(None, description="inventory folder path, e.g. '/District/vm/Schools'")
    attribute: str | None = Field(None, pattern=r"^[^=]+=.*$", description="custom attribute 'Name=Value'")
    uuid: str | None = Field(None, description="instance UUID")

    @model_validator(mode="after")
    def _some_criterion(self) -> "VmSelector":
        if not (self.name or self.folder or self.attribute or self.uuid):
            raise ValueError("give at least one of name, folder, attribute, uuid")
        return self

    @property
    def names_one_vm(self) -> bool:
        """True when the selector names a single VM (an exact name or a UUID): the runbook
        asserts that VM exists, so its absence from the inventory is a finding."""
        return bool(self.uuid) or (bool(self.name) and not any(c in self.name for c in "*?["))

    def describe(self) -> str:
        parts = [f"{key} {value}" for key, value in (("name", self.name), ("folder", self.folder),
                                                     ("attribute", self.attribute), ("uuid", self.uuid)) if value]
        return ", ".join(parts)

    def matches(self, vm: "VmFacts") -> bool:
        if self.uuid and vm.uuid.lower() != self.uuid.lower():
            return False
        if self.name and not fnmatch.fnmatchcase(vm.name.lower(), self.name.lower()):
            return False
        if self.folder and not within(vm.folder, "/" + self.folder.strip("/")):
            return False
        if self.attribute:
            key, _, pattern = self.attribute.partition("=")
            value = vm.custom_attributes.get(key.strip())
            if value is None or not fnmatch.fnmatchcase(str(value), pattern.strip()):
                return False
        return True


class Exclusion(VmSelector):
    """A documented decision not to back a VM up: who decided, why, until when. An
    exclusion past its expiry no longer protects the VM from being reported."""

    reason: str = Field(..., min_length=3, description="why the VM needs no backup")
    owner: str = Field(..., min_length=1, description="who decided (and reviews it)")
    expires: date = Field(..., description="when the decision must be reviewed (YYYY-MM-DD)")

    def expired(self, today: date) -> bool:
        return today > self.expires


class VmFacts:
    """The facts selectors read, from a stored VM asset (name, instance UUID, attributes)."""

    __slots__ = ("uuid", "name", "folder", "custom_attributes")

    def __init__(self, uuid: str, name: str, attributes: Mapping[str, Any]):
        self.uuid = uuid
        self.name = name
        self.folder = attributes.get("folder") or "/"
        self.custom_attributes = attributes.get("custom_attributes") or {}

    @classmethod
    def of(cls, asset: Mapping[str, Any]) -> "VmFacts":
        """From a store row (`asset_id`, `name`, `attributes` as a dict)."""
        return cls(asset["asset_id"], asset["name"], asset.get("attributes") or {})


def asset_selectors(assets: Iterable[str]) -> list[VmSelector]:
    """The VMs a runbook's `assets` list names: each `vm:NAME` entry is an exact name
    (`vm:/DC/vm/folder/NAME` also pins the folder)."""
    selectors = []
    for entry in assets:
        kind, _, value = entry.partition(":")
        if kind != "vm" or not value:
            continue
        if "/" in value:
            folder, _, name = value.rstrip("/").rpartition("/")
            selectors.append(VmSelector(name=name, folder=folder))
        else:
            selectors.append(VmSelector(name=value))
    return selectors

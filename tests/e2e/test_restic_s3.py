"""A restic repository in S3 object storage (a real S3 server, moto, on 127.0.0.1), with
the S3 credentials reaching restic only through secret references."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from drcheck.results import Status

from .conftest import ResticLab, utc, wait_for

pytestmark = pytest.mark.e2e

MOTO = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "drcheck-e2e", "AWS_SECRET_ACCESS_KEY": "e2e-secret-key-value"}


@pytest.fixture(scope="module")
def s3_endpoint():
    if not Path(MOTO).exists():
        pytest.skip("moto_server is not installed (make test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, what="the S3 server")
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def s3_lab(tmp_path, s3_endpoint, monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(f"E2E_{name}", value)
    bucket = tmp_path.name.lower().replace("_", "-")[:50]
    lab = ResticLab(tmp_path, repository=f"s3:{s3_endpoint}/{bucket}", env=CREDENTIALS)
    lab.configure(probes={"repo": {"environment": {name: {"env": f"E2E_{name}"} for name in CREDENTIALS}}})
    return lab


def test_s3_repository_probe_and_restore(s3_lab):
    s3_lab.plant_canary(at=utc(hours=2, minutes=1))
    s3_lab.backup(at=utc(hours=2))

    probe = s3_lab.probe()
    check = s3_lab.probe("check")
    test = s3_lab.restore_test()

    assert probe.status is Status.OK and probe.newest[0].system == "app"
    assert check.status is Status.OK
    assert test.status is Status.PASSED, test.reason
    assert test.rpo_source == "canary"
    assert s3_lab.sandbox_entries() == []
    stored = "\n".join(str(v) for row in s3_lab.rows("SELECT * FROM probe_runs") for v in row.values())
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in stored


def test_missing_s3_credential_is_a_recorded_error_naming_the_variable(s3_lab, monkeypatch):
    s3_lab.backup()
    monkeypatch.delenv("E2E_AWS_SECRET_ACCESS_KEY")

    result = s3_lab.probe()

    assert result.status is Status.ERROR
    assert "E2E_AWS_SECRET_ACCESS_KEY" in result.reason and "not set" in result.reason

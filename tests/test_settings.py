"""An invalid setting stops start-up with one clear line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from tenants.settings import Settings, SettingsError
from tests.conftest import REPO

VALID = {
    "TRAILMARK_DATABASE_URL": "postgresql://app@db/trailmark",
    "TRAILMARK_REDIS_URL": "redis://cache:6379/0",
    "TRAILMARK_SIGNING_KEYS": "k2:" + "A" * 43 + ",k1:" + "B" * 43,
    "TRAILMARK_SECRET_KEYS": "s2:" + "C" * 43 + ",s1:" + "D" * 43,
}


def test_valid_settings_parse() -> None:
    settings = Settings.from_env(VALID)
    assert settings.database_url == "postgresql+psycopg://app@db/trailmark"
    assert [k.key_id for k in settings.signing_keys] == ["k2", "k1"]
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.log_level == logging.INFO
    assert Settings.from_env({**VALID, "TRAILMARK_LOG_LEVEL": " Debug "}).log_level == logging.DEBUG


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"TRAILMARK_PORT": "eighty"}, "TRAILMARK_PORT must be an integer"),
        ({"TRAILMARK_PORT": "70000"}, "TRAILMARK_PORT must be an integer"),
        ({"TRAILMARK_DATABASE_URL": "mysql://x"}, "TRAILMARK_DATABASE_URL must be a postgresql"),
        ({"TRAILMARK_REDIS_URL": ""}, "TRAILMARK_REDIS_URL is not set"),
        ({"TRAILMARK_SIGNING_KEYS": ""}, "TRAILMARK_SIGNING_KEYS is required"),
        ({"TRAILMARK_SIGNING_KEYS": "k1:c2hvcnQ"}, "use at least 32"),
        ({"TRAILMARK_SIGNING_KEYS": "nocolon"}, "must look like"),
        ({"TRAILMARK_SECRET_KEYS": ""}, "TRAILMARK_SECRET_KEYS is required"),
        ({"TRAILMARK_SECRET_KEYS": "s1:" + "A" * 22}, "it must be 32"),
        ({"TRAILMARK_SECRET_KEYS": "s1:" + "A" * 43 + ",s1:" + "B" * 43}, "lists key id 's1' twice"),
        ({"TRAILMARK_LOG_JSON": "maybe"}, "TRAILMARK_LOG_JSON must be true or false"),
        ({"TRAILMARK_LOG_LEVEL": "loud"}, "TRAILMARK_LOG_LEVEL must be one of debug, info, warning, error"),
    ],
)
def test_invalid_settings_name_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**VALID, **change})


def test_cli_stops_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["TRAILMARK_PORT"] = "not-a-port"
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "api"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["trailmark: invalid setting: TRAILMARK_PORT must be an integer from 1 to 65535, got 'not-a-port'"]

"""API keys: where they come from, what is refused, and that no error ever shows one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.exchange.credentials import CredentialsError, load_credentials
from orchestrator.exchange.endpoints import REAL_ENDPOINTS, resolve_endpoints

SECRET = "Sx9-very-secret-value-0001"
KEY = "Kx9-api-key-value-0001"


def _key_file(tmp_path: Path, network: str = "testnet", mode: int = 0o600,
              body: str | None = None) -> Path:
    path = tmp_path / f"{network}.toml"
    path.write_text(body if body is not None else
                    f'network = "{network}"\napi_key = "{KEY}"\napi_secret = "{SECRET}"\n')
    os.chmod(path, mode)
    return path


def test_environment_keys_are_per_network_and_never_printed() -> None:
    env = {"MULTIBOT_BINANCE_TESTNET_API_KEY": KEY, "MULTIBOT_BINANCE_TESTNET_API_SECRET": SECRET}
    creds = load_credentials("testnet", environ=env)
    assert creds.api_key.reveal() == KEY and creds.api_secret.reveal() == SECRET
    assert SECRET not in repr(creds) and KEY not in repr(creds) and SECRET not in str(creds)
    assert creds.redact(f"boom {SECRET} {KEY}") == "boom *** ***"
    with pytest.raises(CredentialsError, match="testnet keys are set, but they are never used"):
        load_credentials("live", environ=env)  # testnet keys never trade live


def test_key_file_must_be_private_and_for_the_right_network(tmp_path: Path) -> None:
    good = _key_file(tmp_path)
    assert load_credentials("testnet", str(good), environ={}).api_secret.reveal() == SECRET
    with pytest.raises(CredentialsError, match="holds testnet keys; --mode live needs live"):
        load_credentials("live", str(good), environ={})
    loose = _key_file(tmp_path, "live", mode=0o644)
    with pytest.raises(CredentialsError, match=r"readable by others .*chmod 600"):
        load_credentials("live", str(loose), environ={})
    unsaid = _key_file(tmp_path, "other", body=f'api_key = "{KEY}"\napi_secret = "{SECRET}"\n')
    with pytest.raises(CredentialsError, match="must say which network"):
        load_credentials("live", str(unsaid), environ={})


@pytest.mark.parametrize("body", [f'network = "testnet"\napi_key = "{KEY}\napi_secret = 1',
                                  f'network = "testnet"\nsecret = "{SECRET}"\n',
                                  f'network = "testnet"\napi_key = "{KEY}"\n'])
def test_broken_key_files_are_refused_without_quoting_them(tmp_path: Path, body: str) -> None:
    path = _key_file(tmp_path, body=body)
    with pytest.raises(CredentialsError) as info:
        load_credentials("testnet", str(path), environ={})
    assert SECRET not in str(info.value) and KEY not in str(info.value)


def test_missing_keys_say_how_to_give_them(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"MULTIBOT_BINANCE_API_KEY and .*--key-file"):
        load_credentials("live", environ={})
    with pytest.raises(CredentialsError, match="cannot read key file"):
        load_credentials("testnet", str(tmp_path / "missing.toml"), environ={})


def test_endpoints_default_to_the_network_and_can_point_anywhere() -> None:
    assert resolve_endpoints("live", environ={}).rest_url == REAL_ENDPOINTS["live"][0]
    assert resolve_endpoints("testnet", environ={}).stream_url == REAL_ENDPOINTS["testnet"][1]
    mine = resolve_endpoints("live", "http://127.0.0.1:9/api/", "ws://127.0.0.1:9", environ={})
    assert (mine.rest_url, mine.stream_url, mine.host) == (
        "http://127.0.0.1:9/api", "ws://127.0.0.1:9/", "http://127.0.0.1:9")
    env = {"MULTIBOT_BINANCE_REST_URL": "http://127.0.0.1:7/api"}
    assert resolve_endpoints("live", "http://127.0.0.1:9/api", environ=env).rest_url == (
        "http://127.0.0.1:7/api")

"""API keys: where they come from, what is refused, and that no error ever shows one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC, RSA

from orchestrator.exchange.credentials import CredentialsError, Secret, load_credentials
from orchestrator.exchange.endpoints import REAL_ENDPOINTS, resolve_endpoints

SECRET = "Sx9-very-secret-value-0001"
KEY = "Kx9-api-key-value-0001"


def _revealed(secret: Secret | None) -> str:
    assert secret is not None
    return secret.reveal()


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
    assert creds.api_key.reveal() == KEY and _revealed(creds.api_secret) == SECRET
    assert SECRET not in repr(creds) and KEY not in repr(creds) and SECRET not in str(creds)
    assert creds.redact(f"boom {SECRET} {KEY}") == "boom *** ***"
    with pytest.raises(CredentialsError, match="testnet keys are set, but they are never used"):
        load_credentials("live", environ=env)  # testnet keys never trade live


def test_key_file_must_be_private_and_for_the_right_network(tmp_path: Path) -> None:
    good = _key_file(tmp_path)
    assert _revealed(load_credentials("testnet", str(good), environ={}).api_secret) == SECRET
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


# --- Ed25519 and RSA keys -------------------------------------------------------------------

PASSPHRASE = "Px9-pass-phrase-0001"


@pytest.fixture(scope="module")
def ed25519() -> ECC.EccKey:
    return ECC.generate(curve="Ed25519")


@pytest.fixture(scope="module")
def rsa() -> RSA.RsaKey:
    return RSA.generate(2048)


def _private(tmp_path: Path, name: str, pem: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(pem)
    os.chmod(path, mode)
    return path


def _body(pem: str) -> str:
    """The longest line of a PEM's body: what must never be shown."""
    return max((part for part in pem.splitlines() if not part.startswith("-----")), key=len)


def test_a_private_key_in_the_environment_as_text_or_path(tmp_path: Path, ed25519: ECC.EccKey,
                                                          rsa: RSA.RsaKey) -> None:
    ed_pem = ed25519.export_key(format="PEM", passphrase=PASSPHRASE,
                                protection="PBKDF2WithHMAC-SHA1AndAES128-CBC")
    rsa_pem = rsa.export_key(passphrase=PASSPHRASE, pkcs=8,
                             protection="scryptAndAES128-CBC").decode()
    rsa_path = str(_private(tmp_path, "rsa.pem", rsa_pem))
    for given, original, kind in ((ed_pem, ed_pem, "ed25519"), (rsa_path, rsa_pem, "rsa")):
        env = {"MULTIBOT_BINANCE_TESTNET_API_KEY": KEY,
               "MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY": given,
               "MULTIBOT_BINANCE_TESTNET_PRIVATE_KEY_PASS": PASSPHRASE}
        creds = load_credentials("testnet", environ=env)
        assert (creds.signing, creds.api_secret) == (kind, None)
        arguments = creds.sdk_arguments()
        assert arguments["private_key_pass"] is None  # decrypted here, checked at once
        unlocked = _revealed(creds.private_key)
        assert arguments["private_key"] == unlocked and "ENCRYPTED" not in unlocked
        assert (ECC if kind == "ed25519" else RSA).import_key(unlocked).has_private()
        shown = repr(creds) + str(creds)
        leaked = f"a {unlocked} b {_body(unlocked)} c {PASSPHRASE} d {_body(original)} e"
        for secret in (_body(unlocked), PASSPHRASE, _body(original)):
            assert secret not in shown and secret not in creds.redact(leaked)


def test_a_private_key_in_a_key_file_relative_to_it(tmp_path: Path, ed25519: ECC.EccKey) -> None:
    _private(tmp_path, "ed.pem", ed25519.export_key(format="PEM"))
    path = _key_file(tmp_path, body=f'network = "testnet"\napi_key = "{KEY}"\n'
                                    'private_key = "ed.pem"\n')
    creds = load_credentials("testnet", str(path), environ={})
    assert creds.signing == "ed25519" and creds.source == str(path)
    inline = _key_file(tmp_path, body=f'network = "testnet"\napi_key = "{KEY}"\n'
                                      f'private_key = """{ed25519.export_key(format="PEM")}"""\n')
    assert load_credentials("testnet", str(inline), environ={}).signing == "ed25519"


def test_bad_private_keys_are_refused_without_quoting_them(tmp_path: Path, ed25519: ECC.EccKey,
                                                            rsa: RSA.RsaKey) -> None:
    locked = rsa.export_key(passphrase=PASSPHRASE, pkcs=8,
                            protection="scryptAndAES128-CBC").decode()
    p256 = ECC.generate(curve="P-256").export_key(format="PEM")
    loose = _private(tmp_path, "loose.pem", ed25519.export_key(format="PEM"), mode=0o644)
    cases = [
        ({"private_key": locked, "pass": "Wr0ng-pass"}, "not an Ed25519 or RSA private key"),
        ({"private_key": locked}, "not an Ed25519 or RSA private key"),
        ({"private_key": p256}, "Binance takes Ed25519 keys, not NIST P-256"),
        ({"private_key": ed25519.public_key().export_key(format="PEM")}, "holds a public key"),
        ({"private_key": rsa.public_key().export_key().decode()}, "holds a public key"),
        ({"private_key": str(loose)}, r"readable by others .*chmod 600"),
        ({"private_key": str(tmp_path / "missing.pem")}, "cannot read key file"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----\nZm9vYmFyYmF6cXV4\n"},
         "not an Ed25519 or RSA private key"),
        ({"private_key": ed25519.export_key(format="PEM"), "secret": SECRET}, "not both"),
    ]
    for given, message in cases:
        env = {"MULTIBOT_BINANCE_API_KEY": KEY,
               "MULTIBOT_BINANCE_PRIVATE_KEY": given["private_key"],
               "MULTIBOT_BINANCE_PRIVATE_KEY_PASS": given.get("pass", ""),
               "MULTIBOT_BINANCE_API_SECRET": given.get("secret", "")}
        with pytest.raises(CredentialsError, match=message) as info:
            load_credentials("live", environ=env)
        text = str(info.value)
        for secret in (_body(locked), _body(p256), "Zm9vYmFyYmF6cXV4", "Wr0ng-pass", SECRET,
                       PASSPHRASE):
            assert secret not in text

"""No secret reaches a log line, an exception message or a traceback.

The session-end check in tests/conftest.py greps every log file the run wrote for every PIN in
tests/pins.py; the first tests here prove that detector catches a planted PIN (and ignores a
PIN inside a longer number). The rest check `Secret` and the redaction step directly."""

from __future__ import annotations

import json
import logging
import pickle
import traceback
from pathlib import Path

import pytest
import structlog

from bridge import logs
from bridge.core.audit import Audit
from bridge.core.patron import Context, Decision, Outcome
from bridge.core.secret import Secret
from tests.conftest import leaked_pins
from tests.harness import LOG_FILES
from tests.pins import ALL, DEMO_PIN, NEW_PIN, WRONG_PIN

# -- the detector -----------------------------------------------------------------------------


def test_detector_catches_a_planted_pin(tmp_path: Path) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text('{"event":"auth","latency_ms":12.5,"barcode":"**********0001"}\n')
    planted = tmp_path / "planted.log"
    planted.write_text(f'{{"event":"auth","note":"pin was {WRONG_PIN}"}}\n')
    inside = tmp_path / "inside.log"
    inside.write_text(f'{{"barcode":"2123{DEMO_PIN}0001","port":{NEW_PIN}7}}\n')  # not whole
    found = leaked_pins([clean, planted, inside, tmp_path / "absent.log"])
    assert found == [f"{planted}: {WRONG_PIN}"]


def test_detector_knows_every_pin_the_suite_uses() -> None:
    import tests.pins as pins

    declared = {v for k, v in vars(pins).items() if k.isupper() and isinstance(v, str)}
    assert declared == set(ALL)


# -- Secret -----------------------------------------------------------------------------------


def test_secret_never_shows_its_value() -> None:
    secret = Secret(DEMO_PIN)
    for shown in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>10}",
        "%s %r" % (secret, secret),  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        repr([secret, {"pin": secret}]),
        json.dumps({"pin": secret}, default=str),
    ):
        assert DEMO_PIN not in shown
    assert secret.reveal() == DEMO_PIN.encode() and secret.text() == DEMO_PIN
    assert secret.matches(DEMO_PIN) and secret.matches(Secret(DEMO_PIN))
    assert not secret.matches(WRONG_PIN)
    assert secret != Secret(DEMO_PIN)  # no `==` by value (it would not be constant-time)
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secret_not_in_exceptions_or_tracebacks() -> None:
    def check_pin(pin: Secret) -> None:
        local_copy = pin  # a Secret as a local while the exception is raised
        raise ValueError(f"cannot verify {local_copy} for card {local_copy!r}")

    try:
        check_pin(Secret(NEW_PIN))
    except ValueError as exc:
        rendered = traceback.format_exc()
        detailed = "".join(traceback.TracebackException.from_exception(exc).format())
        with_locals = "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        )
        assert NEW_PIN not in str(exc) and NEW_PIN not in repr(exc)
        assert NEW_PIN not in rendered and NEW_PIN not in detailed
        assert NEW_PIN not in with_locals  # locals are rendered with repr(): masked
        assert "Secret(***)" in with_locals


def test_structlog_exception_rendering_hides_secret(tmp_path: Path) -> None:
    path = tmp_path / "exc.log"
    LOG_FILES.append(path)
    logs.configure("debug", "json", path)
    try:
        log = structlog.get_logger("test")
        try:
            pin = Secret(WRONG_PIN)
            raise RuntimeError(f"store failed for {pin}")
        except RuntimeError:
            log.exception("store_failed", pin=pin, detail={"nested": str(pin)})
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    text = path.read_text()
    assert "store_failed" in text and "Traceback" in text
    assert WRONG_PIN not in text


# -- redaction --------------------------------------------------------------------------------


def test_redact_masks_secret_keys_and_secret_values() -> None:
    event = {
        "event": "login",
        "pin": DEMO_PIN,
        "PIN": DEMO_PIN,
        "new_pin": NEW_PIN,
        "password": "hunter2-service",
        "secret": "radius-shared",
        "pepper": b"\x00" * 32,
        "token": "reset-token-abc",
        "pin_hash": "$argon2id$v=19$...",
        "AD": DEMO_PIN,
        "user_password": b"\x01\x02",
        "authorization": "Basic abc",
        "anything": Secret(WRONG_PIN),
        "payload": b"raw-bytes-with-" + DEMO_PIN.encode(),
        "barcode": "**********0001",
    }
    out = logs.redact(None, "info", dict(event))
    for key in event:
        if key in ("event", "barcode"):
            assert out[key] == event[key]
        elif key == "payload":
            assert out[key] == f"<{len(event['payload'])} bytes>"
        else:
            assert out[key] == "***", key


def test_redact_reaches_into_nested_values() -> None:
    event = {
        "event": "request",
        "request": {"barcode": "21234000000001", "pin": DEMO_PIN, "inner": {"AD": NEW_PIN}},
        "fields": [("AA", "21234000000001"), {"password": "x"}, Secret(WRONG_PIN)],
    }
    out = logs.redact(None, "info", event)
    text = json.dumps(out)
    assert DEMO_PIN not in text and NEW_PIN not in text and WRONG_PIN not in text
    assert out["request"]["barcode"] == "21234000000001"
    assert out["request"]["pin"] == "***" and out["request"]["inner"]["AD"] == "***"
    assert out["fields"][1] == {"password": "***"} and out["fields"][2] == "***"


def test_logged_lines_are_redacted_end_to_end(tmp_path: Path) -> None:
    path, audit_path = tmp_path / "main.log", tmp_path / "audit.log"
    LOG_FILES.extend([path, audit_path])
    logs.configure("debug", "json", path, audit_path)
    try:
        structlog.get_logger("sip2").info(
            "message", ad=DEMO_PIN, co="sip-pass", pin=Secret(NEW_PIN)
        )
        logging.getLogger("asyncio").warning("stdlib record for %s", "x")
        Audit("masked").decision(
            "21234000000001",
            Context("sip2", "selfcheck", "127.0.0.1"),
            Decision(Outcome.BAD_PIN, reason="wrong PIN"),
            0.0123,
        )
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    main, audit = path.read_text(), audit_path.read_text()
    for pin in (DEMO_PIN, NEW_PIN):
        assert pin not in main + audit
    assert "sip-pass" not in main and "stdlib record for x" in main
    line = json.loads(audit.strip())
    assert line["event"] == "auth" and line["outcome"] == "bad_pin"
    assert line["barcode"] == "**********0001" and line["latency_ms"] == 12.3
    assert list(line)[:3] == ["timestamp", "level", "event"]


def test_audit_barcode_modes() -> None:
    card = "21234000000001"
    assert Audit("full").barcode(card) == card
    assert Audit("masked").barcode(card) == "**********0001"
    assert Audit("masked").barcode("12345") == "*****"
    hashed = Audit("hash", hash_key=b"k" * 32).barcode(card)
    assert len(hashed) == 16 and card not in hashed
    assert hashed != Audit("hash", hash_key=b"j" * 32).barcode(card)

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
from hypothesis import given
from hypothesis import strategies as st

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


def test_detector_passes_process_ids(tmp_path: Path) -> None:
    """A worker's PID may equal a test PIN by chance (CI once had worker 4826): not a leak.
    The same digits anywhere else in the line still are."""
    pids = tmp_path / "pids.log"
    pids.write_text(
        f'{{"event":"ready","pid":{DEMO_PIN},"workers":[{NEW_PIN}, 4843]}}\n'
        f"event=worker_restarted worker=1 pid={WRONG_PIN}\n"
    )
    assert leaked_pins([pids]) == []
    pids.write_text(f'{{"event":"ready","workers":[4843],"note":"{NEW_PIN}"}}\n')
    assert leaked_pins([pids]) == [f"{pids}: {NEW_PIN}"]


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


# -- hostile values: bounded, marked, never remembered (issue 21) -----------------------------


def test_clip_marks_what_it_cut() -> None:
    assert logs.clip("short") == "short"
    cut = logs.clip("x" * 1000, 10)
    assert cut == "xxxxxxxxxx...(truncated, 1000 bytes)"
    assert logs.clip("é" * 300).endswith("(truncated, 600 bytes)")  # bytes, not characters


def test_redact_bounds_every_text_value() -> None:
    event = {"event": "x", "dn": "d" * 200_000, "nested": {"cn": "c" * 5000}, "n": 3}
    out = logs.redact(None, "info", event)
    assert len(out["dn"]) < 300 and out["dn"].endswith("(truncated, 200000 bytes)")
    assert out["nested"]["cn"].endswith("(truncated, 5000 bytes)")
    assert out["n"] == 3


@pytest.mark.parametrize("mode", ["masked", "full", "hash"])
def test_malformed_barcodes_log_only_their_size(mode: str) -> None:
    audit = Audit(mode, hash_key=b"k" * 32)  # type: ignore[arg-type]
    assert audit.barcode("7" * 200_000) == "(malformed, 200000 bytes)"
    assert audit.barcode("") == "(malformed, 0 bytes)"
    assert audit.barcode("2123 4000") == "(malformed, 9 bytes)"
    assert audit.barcode("caf\u00e9") == "(malformed, 5 bytes)"
    # a mangled SIP2 message glued the PIN to the barcode: no part of it may show
    for glued in ("1234AD5961", "21234000000001AD5961", "21234000000001COsip-pass", "99AC77"):
        shown = audit.barcode(glued)
        assert shown == f"(malformed, {len(glued)} bytes)"
        assert "5961" not in shown


def test_bad_input_lines_are_never_remembered() -> None:
    audit = Audit("masked")
    ctx = Context("ldap", "anonymous", "127.0.0.1")
    bad = Decision(Outcome.BAD_INPUT, reason="malformed barcode")
    for i in range(50):
        audit.decision(f"{i:06d}" + "7" * 10_000, ctx, bad, 0.001)
    assert audit._fragments == {}
    audit.decision("21234000000001", ctx, Decision(Outcome.BAD_PIN, reason="wrong PIN"), 0.001)
    assert len(audit._fragments) == 1


def test_audit_reuses_a_fragment_for_the_same_context_and_decision(tmp_path: Path) -> None:
    """A card asked about again with the same context and decision objects gets its fragment
    by identity (no key built); any other context or decision for that card, or a bad input,
    the fragment of its own fields. Every line reads as a fresh `Audit` would write it."""
    path = tmp_path / "audit.log"
    LOG_FILES.append(path)
    card = "21234000000001"
    desk, door = Context("sip2", "desk", "10.0.0.1"), Context("sip2", "door", "10.0.0.2")
    ok = Decision(Outcome.ACCEPTED, reason="verified (cached)")
    bad = Decision(Outcome.BAD_PIN, reason="wrong PIN")
    malformed = Decision(Outcome.BAD_INPUT, reason="missing or malformed PIN")
    asked = [(desk, ok), (desk, ok), (door, ok), (desk, bad), (desk, malformed), (desk, ok)]
    logs.configure("debug", "json", path)
    try:
        audit = Audit("masked")
        for ctx, decision in asked:
            audit.decision(card, ctx, decision, 0.001)
            if decision is not malformed:
                assert audit._last[card][:2] == (ctx, decision)
            assert audit._last[card][2] in audit._fragments.values()
        for ctx, decision in asked:
            Audit("masked").decision(card, ctx, decision, 0.001)
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for line in lines:
        del line["timestamp"]
    assert lines[: len(asked)] == lines[len(asked) :]
    assert [line["client"] for line in lines[:3]] == ["desk", "desk", "door"]
    assert len(audit._last) == 1 and len(audit._fragments) == 3


@pytest.mark.parametrize(
    ("source", "client"),
    [("10.0.0.1", "selfcheck"), ("::1", ""), ('a"b\\c', "caf\u00e9\u2603"), ("s" * 300, "c\n")],
)
def test_client_event_writes_the_event_line(tmp_path: Path, source: str, client: str) -> None:
    """`Audit.client_event` (fields encoded once per event, source and client) writes the
    line `Audit.event` writes, escaping and clipping included, the first time and after."""
    path = tmp_path / "audit.log"
    LOG_FILES.append(path)
    logs.configure("debug", "json", path)
    try:
        audit = Audit("masked")
        for _ in range(2):
            audit.client_event("sip2_login", source=source, client=client)
            audit.event("sip2_login", source=source, client=client)
        assert list(audit._client_events) == [("sip2_login", source, client)]
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    raw = path.read_text().splitlines()
    assert len(raw) == 4
    stamps = [json.loads(line)["timestamp"] for line in raw]
    assert all(len(stamp) == 27 and stamp.endswith("Z") for stamp in stamps)
    cut = [line.replace(stamp, "") for line, stamp in zip(raw, stamps, strict=True)]
    assert cut[0] == cut[1] == cut[2] == cut[3]


def test_client_event_without_logging_goes_the_usual_way() -> None:
    logs.stop()
    try:
        written: list[tuple[str, dict[str, object]]] = []
        audit = Audit("masked")
        audit.event = lambda event, **fields: written.append((event, fields))  # type: ignore[method-assign,assignment]
        audit.client_event("sip2_login", source="10.0.0.1", client="selfcheck")
        assert written == [("sip2_login", {"source": "10.0.0.1", "client": "selfcheck"})]
    finally:
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")


def test_audit_line_fields_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    LOG_FILES.append(path)
    logs.configure("debug", "json", path)
    try:
        audit = Audit("masked")
        ctx = Context("sip2", "c" * 5000, "s" * 5000)
        audit.decision("21234000000001", ctx, Decision(Outcome.BAD_PIN, reason="r" * 5000), 0.0)
        audit.event("reset_requested", barcode="9" * 4096, source="127.0.0.1", note="n" * 9000)
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(len(json.dumps(x)) < 1200 for x in lines)
    assert lines[0]["client"].endswith("(truncated, 5000 bytes)")
    assert lines[0]["reason"].endswith("(truncated, 5000 bytes)")
    assert lines[1]["barcode"] == "(malformed, 4096 bytes)"
    assert lines[1]["note"].endswith("(truncated, 9000 bytes)")


@given(st.text(max_size=400))
def test_any_barcode_is_shown_short_and_never_with_a_glued_secret(barcode: str) -> None:
    shown = Audit("masked").barcode(barcode)
    assert len(shown) <= 64 or shown.startswith("(malformed, ")
    if "AD" in barcode or "CO" in barcode or "AC" in barcode:
        assert shown.startswith("(malformed, ")
    full = Audit("full").barcode(barcode)
    assert full == barcode or full.startswith("(malformed, ")


@given(st.text(max_size=2000), st.integers(1, 300))
def test_property_clip_is_bounded_and_says_the_size(text: str, limit: int) -> None:
    cut = logs.clip(text, limit)
    if len(text) <= limit:
        assert cut == text
    else:
        assert cut.startswith(text[:limit])
        assert cut.endswith(f"(truncated, {len(text.encode('utf-8', 'replace'))} bytes)")
        assert len(cut) <= limit + 40


def test_audit_events_read_as_the_structlog_chain_writes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Audit.event` lines written by `logs.emit_audit` carry the fields, order, level and
    redaction the structlog chain gives the same event (it still writes them where a console
    or the journal reads)."""
    path = tmp_path / "audit.log"
    LOG_FILES.append(path)
    logs.configure("debug", "json", path)
    cases: list[tuple[str, dict[str, object], str]] = [
        ("sip2_login", {"source": "10.0.0.1", "client": "selfcheck"}, "info"),
        ("sip2_login_failed", {"source": "10.0.0.1", "client": "", "reason": "x"}, "warning"),
        ("pin_changed", {"actor": "y" * 300, "pin": Secret(NEW_PIN), "d": {"pin": 1}}, "info"),
    ]
    audit = Audit("masked")
    try:
        for event, fields, severity in cases:
            audit.event(event, barcode="21234000000001", severity=severity, **fields)  # type: ignore[arg-type]
            with monkeypatch.context() as patch:
                patch.setattr(logs, "emit_audit", lambda *_: False)
                audit.event(event, barcode="21234000000001", severity=severity, **fields)  # type: ignore[arg-type]
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2 * len(cases)
    assert NEW_PIN not in path.read_text()
    for fast, chain in zip(lines[::2], lines[1::2], strict=True):
        del fast["timestamp"], chain["timestamp"]
        assert list(fast.items()) == list(chain.items())


def test_audit_decision_lines_are_stamped_like_every_other_line(tmp_path: Path) -> None:
    """`emit_members` formats its own time (from the microseconds' digits): the same UTC text
    as `timestamp()`, and in order with it."""
    path = tmp_path / "audit.log"
    LOG_FILES.append(path)
    logs.configure("debug", "json", path)
    try:
        audit = Audit("masked")
        ctx = Context("radius", "nas", "127.0.0.1")
        before = logs.timestamp()
        for _ in range(3):
            audit.decision("21234000000001", ctx, Decision(Outcome.ACCEPTED, reason="ok"), 2.5e-6)
        after = logs.timestamp()
    finally:
        logs.stop()
        logs.configure("debug", "json", Path(__file__).parent / "artifacts" / "in-process.log")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert list(line)[:3] == ["timestamp", "level", "event"]
        assert len(line["timestamp"]) == len(before)
        assert before <= line["timestamp"] <= after
        assert line["latency_ms"] == 0.003


def test_redact_remembers_secret_names_in_any_case() -> None:
    """Which field names are secret is remembered per name: the same answer every time, for
    every spelling, and a name kept as plain stays plain."""
    for _ in range(2):
        event = {"PIN": "1234", "Password": "pw", "pin": "5678", "source": "10.0.0.1", "n": 3}
        out = logs.redact(None, "info", event)
        assert out == {"PIN": "***", "Password": "***", "pin": "***", "source": "10.0.0.1", "n": 3}
    assert logs._SECRET_NAME["PIN"] is True and logs._SECRET_NAME["source"] is False

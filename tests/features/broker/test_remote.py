"""What RabbitMQ and Kafka share (features/broker/remote.py, issue #11): which messages a handler
gets and what becomes of each one afterwards; no server needed."""

from __future__ import annotations

from datetime import UTC, datetime

from features.broker.contract import Message
from features.broker.remote import (
    ATTEMPTS_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    REASON_HEADER,
    handle,
    settlement,
)


def test_a_message_over_its_attempts_fails_without_reaching_the_handler():
    batch = [Message("ok", b"1", attempts=1), Message("looping", b"2", attempts=6)]
    given: list[str] = []

    def handler(messages: list[Message]) -> dict[str, str]:
        given.extend(m.message_id for m in messages)
        return {}

    failures = handle(handler, batch, max_attempts=5)
    assert given == ["ok"]
    assert failures == {"looping": "delivered 5 times without an acknowledgement"}


def test_an_exception_fails_every_message_the_handler_was_given_with_its_text():
    def handler(messages: list[Message]) -> dict[str, str]:
        raise OSError("disk full")

    failures = handle(handler, [Message("a", b""), Message("b", b"")], max_attempts=5)
    assert failures == {"a": "OSError: disk full", "b": "OSError: disk full"}


def test_failed_messages_go_again_with_one_more_attempt_or_dead_with_the_reason():
    batch = [
        ("raw-ok", Message("ok", b"1", attempts=1)),
        ("raw-again", Message("again", b"2", attempts=2)),
        ("raw-dead", Message("dead", b"3", attempts=3)),
    ]
    before = datetime.now(UTC)
    plan = settlement(batch, {"again": "bad price", "dead": "x" * 5000}, max_attempts=3)
    assert plan.done == ["raw-ok"]
    assert plan.again == [
        ("raw-again", ("again", b"2", {ATTEMPTS_HEADER: 2, ERROR_HEADER: "bad price"}))
    ]
    ((raw, (message_id, body, headers)),) = plan.dead
    assert (raw, message_id, body) == ("raw-dead", "dead", b"3")
    assert headers[REASON_HEADER] == "x" * 4000  # capped
    assert headers[ATTEMPTS_HEADER] == 3
    assert datetime.fromisoformat(headers[DEAD_AT_HEADER]) >= before

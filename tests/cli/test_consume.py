"""``tailor consume --dead-letters`` / ``--requeue`` (issue #11) on the embedded queue."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.app import app
from features.broker.embedded import EmbeddedBroker
from features.workspace import Workspace


def test_dead_letters_are_listed_with_their_reason_and_requeued(tmp_path) -> None:
    ws = Workspace(home=tmp_path).ensure()
    broker = EmbeddedBroker(ws.queue_dir / "events.db")
    broker.publish([("m-poison", b"not json")])
    batch = broker._lease(10)
    broker._settle(batch, {"m-poison": "poison: the message body is not JSON"}, max_attempts=1)
    assert broker.depth() == 0

    runner = CliRunner()
    listed = runner.invoke(app, ["consume", "--home", str(tmp_path), "--dead-letters"])
    assert listed.exit_code == 0, listed.output
    words = listed.output.split()  # the reason wraps inside its column
    assert "m-poison" in words and "poison:" in words and "JSON" in words, listed.output
    assert broker.depth() == 0  # listing changes nothing

    requeued = runner.invoke(app, ["consume", "--home", str(tmp_path), "--requeue"])
    assert requeued.exit_code == 0, requeued.output
    assert "re-queued 1 dead letters" in requeued.output
    assert broker.depth() == 1 and broker.dead_letters() == []
    empty = runner.invoke(app, ["consume", "--home", str(tmp_path), "--dead-letters"])
    assert "no dead letters" in empty.output


def test_a_replay_date_that_is_not_a_date_is_one_error_naming_it(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["consume", "--home", str(tmp_path), "--replay-from", "yesterday"]
    )
    assert result.exit_code != 0
    assert "'yesterday' is not a date" in result.output

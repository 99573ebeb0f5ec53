"""A consumer process for the crash tests: what ``tailor consume --home H`` does for the event log
(the broker from the workspace's settings, batches appended to the log idempotently, the
acknowledgement after the write), until SIGTERM.

Run: ``python -m tests.features.broker.consumer_process --home H [--lease-seconds S]``, with
``TAILOR_BROKER_URL`` / ``TAILOR_BROKER_QUEUE`` in the environment as for ``tailor``.
``--lease-seconds`` shortens the embedded queue's lease so that a killed consumer's batch comes
back within the test's time; ``--delay-before-write`` / ``--delay-after-write`` (a slow disk)
let the test aim its SIGKILL at the two dangerous moments: a batch received but not written, and
a batch written but not acknowledged. Once ``tailor consume`` exists, the tests can point at it
(``consumer_command`` in test_contract.py); it then needs the same knobs.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

from features.broker.connect import open_broker
from features.broker.contract import Message
from features.broker.embedded import EmbeddedBroker
from features.broker.logsink import log_writer
from features.eventlog import EventLog
from features.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", required=True, help="the workspace")
    parser.add_argument("--lease-seconds", type=float, help="embedded queue's lease")
    parser.add_argument("--batch-size", type=int, default=500, help="messages per batch")
    parser.add_argument(
        "--delay-before-write",
        type=float,
        default=0.0,
        help="seconds between receiving a batch and writing it (a kill then loses the batch "
        "unless the acknowledgement waits for the write)",
    )
    parser.add_argument(
        "--delay-after-write",
        type=float,
        default=0.0,
        help="seconds between writing a batch and returning (a kill then leaves a written, "
        "unacknowledged batch: it is delivered again and must not be written twice)",
    )
    args = parser.parse_args()
    ws = Workspace.from_env(home=args.home).ensure()
    broker = open_broker(ws)
    if isinstance(broker, EmbeddedBroker) and args.lease_seconds:
        broker.close()
        broker = EmbeddedBroker(ws.queue_dir / "events.db", lease_seconds=args.lease_seconds)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    write = log_writer(EventLog(ws.event_log_dir), ws.quarantine_dir)

    def handler(batch: list[Message]) -> dict[str, str]:
        time.sleep(args.delay_before_write)
        failures = write(batch)
        time.sleep(args.delay_after_write)
        return failures

    print("consuming", flush=True)
    try:
        broker.consume(handler, stop=stop, batch_size=args.batch_size)
    finally:
        broker.close()


if __name__ == "__main__":
    main()

"""The ``twilio-bridge`` command: run, demo, catalog, schemas, replay."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge import __version__

__all__ = ["main"]

log = logging.getLogger(__name__)
# Seconds to export the spans still buffered at exit (an unreachable collector gets no more).
_TRACES_FLUSH_S = 3.0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (not on Windows), else asyncio's own.

    Every envelope is a dozen socket reads, writes, timers and task steps: uvloop does them in
    C (measured: 0.34 -> 0.27 ms CPU per envelope, tests/perf/README.md).
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(_: argparse.Namespace) -> int:
    from bridge.app.service import run
    from bridge.config import SettingsError, load_settings
    from bridge.observability.logs import configure_logging
    from bridge.observability.tracing import configure_tracing

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"twilio-bridge: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.log_show_pii)
    spans = configure_tracing()
    # Each envelope allocates hundreds of short-lived objects: collecting the youngest
    # generation every 10,000 allocations instead of 700 lets most of them die first.
    gc.set_threshold(10_000, 10, 10)
    factory = _loop_factory()
    log.info("event loop: %s", "asyncio" if factory is None else "uvloop")
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(run(settings))
    except SettingsError as exc:  # found once files are read: TLS material that cannot be used
        print(f"twilio-bridge: {exc}", file=sys.stderr)
        return 2
    finally:
        # The spans still buffered, within a bounded wait: the grace period is already spent.
        spans.shutdown(_TRACES_FLUSH_S)


def _demo(args: argparse.Namespace) -> int:
    from bridge.tooling.demo import demo

    return asyncio.run(demo(verbose=args.verbose))


def _catalog(args: argparse.Namespace) -> int:
    from bridge.tooling.catalog_view import catalog_command

    spec_dir = Path(args.spec_dir) if args.spec_dir else None
    return catalog_command(args.text, args.api, args.json, spec_dir, args.describe)


def _schemas(args: argparse.Namespace) -> int:
    from bridge.tooling.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from bridge.config import SettingsError, load_settings
    from bridge.kafka.errors import BrokerError
    from bridge.tooling.replay.runner import Progress, ReplayError, ReplayOptions, replay
    from bridge.tooling.replay.selection import build_selection

    try:
        selection = build_selection(
            kinds=args.kind,
            since=args.since,
            until=args.until,
            ids=args.id,
            source_topics=args.source_topic,
            now=datetime.now(UTC),
        )
        kafka = load_settings().kafka
    except (ValueError, SettingsError) as exc:
        print(f"twilio-bridge replay: {exc}", file=sys.stderr)
        return 2
    options = ReplayOptions(
        error_topic=args.error_topic or kafka.error_topic,
        group=args.group or f"{kafka.group_id}.replay",
        selection=selection,
        new_ids=args.new_ids,
        to=args.to,
        rate=args.rate,
        dry_run=args.dry_run,
    )
    try:
        tally = asyncio.run(replay(kafka, options, out=sys.stdout, progress=Progress(sys.stderr)))
    except (BrokerError, ReplayError, SettingsError) as exc:
        print(f"twilio-bridge replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the batches acknowledged are committed; run again to go on")
        return 130
    print(tally.summary(dry_run=args.dry_run))
    return 0


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = commands.add_parser(
        "replay",
        help="publish the requests of the error topic again",
        description="Publish the original requests of the error topic again, from where the "
        "last run stopped (a consumer group of its own), then print what was read, replayed "
        "and skipped. Kafka is configured by the BRIDGE_KAFKA__* variables.",
    )
    replay.add_argument(
        "--kind",
        action="append",
        help="error kinds to replay, repeated or comma-separated (validation only when named "
        "here); default: the errors marked retryable (429, Twilio 5xx, timeouts, transport)",
    )
    for name, when in (("--since", "at or after"), ("--until", "before")):
        replay.add_argument(
            name,
            metavar="TIME",
            help=f"only errors recorded {when} TIME: ISO 8601 (UTC unless it names an offset) "
            "or a duration ago (30m, 2h, 1d)",
        )
    replay.add_argument("--id", action="append", help="only these request ids (repeatable)")
    replay.add_argument(
        "--source-topic", action="append", help="only requests read from this topic"
    )
    replay.add_argument(
        "--new-ids",
        action="store_true",
        help="send as <id>~replay-<n>, so outbound dedupe lets them through (default: the "
        "same ids, which dedupe answers with their first reply where there was one)",
    )
    replay.add_argument("--to", metavar="TOPIC", help="publish here, not to the source topic")
    replay.add_argument("--rate", type=float, help="records per second at most")
    replay.add_argument(
        "--dry-run", action="store_true", help="print what would be sent; send and commit nothing"
    )
    replay.add_argument("--error-topic", help="default: BRIDGE_KAFKA__ERROR_TOPIC")
    replay.add_argument(
        "--group", help="the replay's consumer group (default: <BRIDGE_KAFKA__GROUP_ID>.replay)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twilio-bridge`` console script."""
    parser = argparse.ArgumentParser(prog="twilio-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the bridge (configured by BRIDGE_* variables)")
    demo = commands.add_parser("demo", help="everything local: broker, Twilio mock, samples")
    demo.add_argument("-v", "--verbose", action="store_true", help="show the bridge's logs")
    catalog = commands.add_parser("catalog", help="search the Twilio operations")
    catalog.add_argument(
        "text", nargs="*", help="words, each in an operation's name, api, path or summary"
    )
    catalog.add_argument("--api", help="only this api (api.v2010, verify.v2, ...)")
    catalog.add_argument("--json", action="store_true", help="print entries as JSON")
    catalog.add_argument(
        "--describe", action="store_true", help="show one operation in full, with an example"
    )
    catalog.add_argument(
        "--spec-dir", help="add the specs of this directory, as BRIDGE_CATALOG__SPEC_DIR does"
    )
    schemas = commands.add_parser(
        "schemas", help="write the JSON Schemas and the AsyncAPI document"
    )
    schemas.add_argument("--out", default="schemas", help="directory (default: schemas)")
    _add_replay(commands)
    args = parser.parse_args(argv)
    handlers = {
        "run": _run,
        "demo": _demo,
        "catalog": _catalog,
        "schemas": _schemas,
        "replay": _replay,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

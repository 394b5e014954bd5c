"""``python -m airflow_provider_videoquery.emulator``: serve the emulator until Ctrl-C / SIGTERM.

Prints exactly one line to stdout when ready: the base URL (e.g. ``http://127.0.0.1:8600``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

from .limits import Limits
from .scenarios import FAMILIES, Fault, Scenario
from .server import raise_fd_limit, start_site
from .state import EmulatorState


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m airflow_provider_videoquery.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8600, help="0 = pick a free port")
    p.add_argument("--api-key", default="test-key", help="expected Bearer token ('' = no auth check)")
    p.add_argument("--polls", type=int, default=3, help="status queries until a task is terminal")
    p.add_argument("--seconds", type=float, default=None, help="seconds until terminal (wins over --polls)")
    p.add_argument("--video-size", type=int, default=None, help="generated video bytes (default: real MP4)")
    p.add_argument("--fail", action="store_true", help="tasks end failed instead of succeeded")
    p.add_argument("--family", choices=FAMILIES, default=None, help="force one response shape")
    p.add_argument("--scenario", default=None, help="JSON object with more default Scenario fields")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    g = p.add_argument_group("per-key create limits (429 with Retry-After beyond them)")
    g.add_argument("--max-live-tasks", type=int, default=None, help="unfinished tasks one key may have")
    g.add_argument("--create-rate", type=float, default=None, help="creates per second one key may make")
    g.add_argument("--create-burst", type=int, default=None, help="token-bucket size (default: the rate)")
    g.add_argument("--retry-after", type=float, default=None, help="Retry-After to send (default: computed)")
    g.add_argument("--no-retry-after", action="store_true", help="refuse without a Retry-After header")
    g.add_argument(
        "--late-creates",
        type=float,
        default=None,
        metavar="SECONDS",
        help="creates make their task at once but answer only after SECONDS",
    )
    g.add_argument("--late-creates-times", type=int, default=None, help="only the first N creates are late")
    return p


def limits_from_args(args: argparse.Namespace) -> Limits:
    return Limits(
        max_live_tasks=args.max_live_tasks,
        create_rate=args.create_rate,
        create_burst=args.create_burst,
        retry_after=args.retry_after,
        omit_retry_after=args.no_retry_after,
    )


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    scenario = Scenario(
        family=args.family,
        polls_to_complete=args.polls,
        seconds_to_complete=args.seconds,
        outcome="failed" if args.fail else "success",
        video_size=args.video_size,
    )
    if args.scenario:
        scenario = Scenario.from_dict(json.loads(args.scenario), base=scenario)
    return scenario


async def serve(args: argparse.Namespace) -> None:
    state = EmulatorState(api_key=args.api_key or None, default=scenario_from_args(args), seed=args.seed)
    state.limits = limits_from_args(args)
    if args.late_creates is not None:
        state.add_fault(
            Fault("late_answer", route="creates", delay=args.late_creates, times=args.late_creates_times)
        )
    if args.access_log:
        import logging

        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    runner, port = await start_site(state, args.host, args.port, access_log=args.access_log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    if ":" in shown:
        shown = f"[{shown}]"
    print(f"http://{shown}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``wardlink`` command.

Sub-commands import what they need lazily, so ``check-config`` stays fast and a hub
without bumble can still run the agent.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final

EX_CONFIG: Final = 78  # sysexits.h: configuration error; systemd must not restart-loop on it


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardlink", description="Home-hub agent: medical devices -> outbox -> MQTT"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (what systemd starts)")
    run.add_argument("-c", "--config", required=True, help="path of the YAML config file")

    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file", help="path of the YAML config file")

    demo = sub.add_parser("demo", help="run the agent on emulated devices against a local broker")
    demo.add_argument(
        "--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)"
    )
    demo.add_argument(
        "--format", choices=["fhir", "compact"], default="compact", help="payload format"
    )

    sub.add_parser("version", help="print the version")

    simulate = sub.add_parser("simulate", help="run one emulated device")
    sim_sub = simulate.add_subparsers(dest="transport", required=True, metavar="TRANSPORT")
    sim_serial = sim_sub.add_parser("serial", help="a serial device on a pty")
    sim_serial.add_argument("protocol", help="protocol id, e.g. nonin-df8")
    sim_serial.add_argument("--link", help="also create this symlink to the pty (a stable path)")
    sim_ble = sim_sub.add_parser("ble", help="a BLE peripheral (bumble)")
    sim_ble.add_argument("profile", help="profile, e.g. blood-pressure")
    sim_ble.add_argument("--transport", help="bumble HCI transport (default: in-process link)")

    doctor = sub.add_parser("doctor", help="check config, clock, disk, outbox, broker, devices")
    doctor.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    colour = doctor.add_mutually_exclusive_group()
    colour.add_argument("--color", dest="color", action="store_true", default=None)
    colour.add_argument("--no-color", dest="color", action="store_false")

    status = sub.add_parser("status", help="the running agent's local state (no broker needed)")
    status.add_argument("-c", "--config", required=True, help="path of the YAML config file")

    queue = sub.add_parser("queue", help="inspect, export or requeue stored readings")
    queue.add_argument("action", choices=["list", "export", "requeue"])
    queue.add_argument("-c", "--config", required=True, help="path of the YAML config file")
    queue.add_argument(
        "--state",
        choices=["pending", "rejected", "sent", "delivered"],
        default=None,
        help="which readings (default: rejected for list, pending for export)",
    )
    queue.add_argument("--out", default=None, help="export file (default: standard output)")

    decommission = sub.add_parser(
        "decommission", help="wipe this hub for the next patient (refuses unsent readings)"
    )
    decommission.add_argument("-c", "--config", required=True, help="path of the YAML config")
    decommission.add_argument("--export", default=None, help="first export unsent readings here")
    decommission.add_argument(
        "--force", action="store_true", help="wipe even unsent readings (says how many)"
    )
    decommission.add_argument(
        "--delete-credentials",
        action="store_true",
        help="also delete the client key, certificate and password file (after the confirmation)",
    )
    decommission.add_argument(
        "--offline", action="store_true", help="do not publish the confirmation (no network)"
    )

    scan = sub.add_parser("scan", help="list nearby BLE health devices and how to bind them")
    scan.add_argument("--seconds", type=float, default=10.0)
    scan.add_argument("--transport", default="bluez", help="bluez (default) or bumble-local")
    return parser


def _version(_args: argparse.Namespace) -> int:
    from agent import __version__

    print(f"wardlink {__version__}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from agent.cli_config import check_config_main

    return check_config_main(args.file)


def _run(args: argparse.Namespace) -> int:
    from agent.signals import EarlySignals

    early = EarlySignals()  # before the heavy imports below: systemd may stop us mid-start
    from agent.app import run_main

    return run_main(args.config, early)


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import demo_main

    return demo_main(seconds=args.seconds, payload_format=args.format)


def _simulate(args: argparse.Namespace) -> int:
    if args.transport == "serial":
        from drivers.emulators.serial_cli import simulate_serial_main

        return simulate_serial_main(args.protocol, args.link)
    from drivers.emulators.ble_cli import simulate_ble_main

    return simulate_ble_main(args.profile, args.transport)


def _scan(args: argparse.Namespace) -> int:
    from drivers.ble.scan import scan_main

    return scan_main(args.seconds, args.transport)


def _doctor(args: argparse.Namespace) -> int:
    from agent.doctor import doctor_main

    return doctor_main(args.config, color=args.color)


def _status(args: argparse.Namespace) -> int:
    from agent.localstatus import status_main

    return status_main(args.config)


def _queue(args: argparse.Namespace) -> int:
    from agent.queue_cli import queue_main

    state = args.state or ("rejected" if args.action == "list" else "pending")
    return queue_main(args.action, args.config, state=state, out=args.out)


def _decommission(args: argparse.Namespace) -> int:
    from agent.decommission import decommission_main

    return decommission_main(
        args.config,
        export=args.export,
        force=args.force,
        delete_credentials=args.delete_credentials,
        offline=args.offline,
    )


_COMMANDS: Final = {
    "decommission": _decommission,
    "doctor": _doctor,
    "status": _status,
    "queue": _queue,
    "version": _version,
    "check-config": _check_config,
    "run": _run,
    "demo": _demo,
    "simulate": _simulate,
    "scan": _scan,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wardlink`` command."""
    # wardlink uses no pydantic plugins. Looking for them scans the entry points of every
    # installed distribution when the first model is built (50-70 ms of the 0.5 s budget
    # from exec to READY=1, bench/footprint.py), and a plugin found that way would run
    # inside config validation. An operator may still set the variable.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    args = _build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

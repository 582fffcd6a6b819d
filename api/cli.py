"""The `pds` command: start the embedded stack, push files, read status, configure destinations and hosts.

Every error is one line on stderr and a non-zero exit: 1 for a refused request, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from api.client import DEFAULT_URL, ApiError, PdsClient
from catalog.errors import PdsError


def _progress(sent: int, total: int) -> None:
    if total < 8 * 1024 * 1024 or not sys.stderr.isatty():
        return
    width = 30
    done = int(width * sent / total) if total else width
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {sent / 2**20:8.1f} / {total / 2**20:.1f} MiB")
    if sent >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PdsError(f"option must be KEY=VALUE, not {pair!r}")
        options[key] = json.loads(value) if value in {"true", "false"} or value.isdigit() else value
    return options


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=2) if args.json else text)


def cmd_push(client: PdsClient, args: argparse.Namespace) -> None:
    meta = {"stream": args.stream, "data_type": args.type, "time_base": args.time, "time_step": args.step}
    result = client.push(
        args.file,
        args.destination,
        args.target,
        priority=args.priority,
        standby=args.standby,
        progress=_progress,
        **meta,
    )
    _print(args, result, str(result["data_file_id"]))


def cmd_status(client: PdsClient, args: argparse.Namespace) -> None:
    if args.transfer:
        transfers = [client.transfer(args.id)]
        value: Any = transfers[0]
    else:
        data_file = client.data_file(args.id)
        transfers = [client.transfer(t["id"]) for t in client.transfers(data_file_id=args.id)]
        value = {"data_file": data_file, "transfers": transfers}
    lines = []
    for t in transfers:
        lines.append(
            f"transfer {t['id']} {t['destination']}:{t['target']} {t['status']}"
            + (f" ({t['error']})" if t.get("error") else "")
        )
        lines += [
            f"  {h['at']} {h['from_status'] or '-'} -> {h['to_status']} by {h['by']}"
            + (f": {h['reason']}" if h["reason"] else "")
            for h in t["history"]
        ]
    _print(args, value, "\n".join(lines) or f"data file {args.id} has no transfers")


def cmd_destination(client: PdsClient, args: argparse.Namespace) -> None:
    if args.action == "add":
        settings = {
            "comment": args.comment,
            "max_parallel_transfers": args.max_parallel,
            "compression": args.compression,
        }
        result: Any = client.create_destination(args.name, **{k: v for k, v in settings.items() if v is not None})
        _print(args, result, f"destination {args.name} created")
    elif args.action == "show":
        result = client.destination(args.name)
        _print(args, result, json.dumps(result, indent=2))
    else:
        result = client.destinations()
        _print(
            args,
            result,
            "\n".join(
                f"{d['destination']['name']}\t{'active' if d['destination']['active'] else 'on hold'}\t"
                f"hosts: {', '.join(d['hosts']['dissemination']) or '(portal bucket)'}"
                for d in result
            ),
        )


def cmd_host(client: PdsClient, args: argparse.Namespace) -> None:
    if args.action == "list":
        result: Any = client.hosts()
        _print(
            args, result, "\n".join(f"{h['name']}\t{h['protocol']}\t{h['address']}\t{h['directory']}" for h in result)
        )
        return
    password = os.environ.get(args.password_env, "") if args.password_env else ""
    if args.password_env and not password:
        raise PdsError(f"environment variable {args.password_env} is empty or unset")
    result = client.create_host(
        args.name,
        args.protocol,
        address=args.address,
        directory=args.directory,
        login=args.login,
        password=password,
        options=_options(args.option),
        kind=args.kind,
    )
    text = f"host {args.name} created"
    if args.destination:
        client.attach_host(args.destination, args.name, args.kind, args.rank)
        text += f" and attached to {args.destination}"
    _print(args, result, text)


def cmd_token(client: PdsClient, args: argparse.Namespace) -> None:
    token = client.new_token()
    _print(args, {"token": token}, token)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pds", description="pds, a Product Data Store on Prefect")
    p.add_argument("--url", default=os.environ.get("PDS_API_URL", DEFAULT_URL), help="API base URL (PDS_API_URL)")
    p.add_argument("--json", action="store_true", help="print JSON")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the embedded stack: Prefect server, API, mover (Ctrl-C stops it)")
    up.add_argument("--data-dir", help="where everything is kept (PDS_DATA_DIR, default ./pds-data)")
    up.add_argument("--prefect-api-url", help="use this Prefect server instead of starting one")

    push = sub.add_parser("push", help="upload a file; prints its data file id once it is stored")
    push.add_argument("file")
    push.add_argument("--destination", "-d", required=True)
    push.add_argument("--target", "-t", help="path at the destination (default: the file name)")
    push.add_argument("--priority", "-p", type=int, help="0 (first) … 99 (last, the default)")
    push.add_argument("--standby", action="store_true", help="hold the transfer until released")
    push.add_argument("--stream")
    push.add_argument("--type")
    push.add_argument("--time", help="time base of the product")
    push.add_argument("--step", help="time step of the product")

    status = sub.add_parser("status", help="a data file's transfers with their history")
    status.add_argument("id", type=int, help="data file id (as printed by push)")
    status.add_argument("--transfer", action="store_true", help="the id is a transfer id")

    dest = sub.add_parser("destination", help="add, list or show destinations")
    dest.add_argument("action", choices=["add", "list", "show"])
    dest.add_argument("name", nargs="?")
    dest.add_argument("--comment")
    dest.add_argument("--max-parallel", type=int)
    dest.add_argument("--compression", help="gzip, bzip2, lzma, zstd, lz4 or snappy, applied on the fly")

    host = sub.add_parser("host", help="add or list hosts")
    host.add_argument("action", choices=["add", "list"])
    host.add_argument("name", nargs="?")
    host.add_argument("--protocol", choices=["file", "sftp", "s3"])
    host.add_argument("--address", default="", help="directory (file), host[:port] (sftp), endpoint URL (s3)")
    host.add_argument("--directory", default="", help="directory template, e.g. 'incoming/$destination'")
    host.add_argument("--login", default="")
    host.add_argument("--password-env", help="name of an environment variable holding the password")
    host.add_argument("--option", "-o", action="append", default=[], help="KEY=VALUE protocol option")
    host.add_argument("--kind", default="dissemination")
    host.add_argument("--destination", help="attach the new host to this destination")
    host.add_argument("--rank", type=int, help="0 makes it the primary host")

    sub.add_parser("token", help="create an API token for the current user")
    return p


COMMANDS = {
    "push": cmd_push,
    "status": cmd_status,
    "destination": cmd_destination,
    "host": cmd_host,
    "token": cmd_token,
}


def main(argv: Sequence[str] | None = None, *, http: httpx.Client | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        from api.up import run_embedded

        return run_embedded(data_dir=args.data_dir, prefect_api_url=args.prefect_api_url)
    if args.command in {"destination", "host"} and args.action in {"add", "show"} and not args.name:
        print(f"pds: error: {args.command} {args.action} needs a NAME", file=sys.stderr)
        return 2
    if args.command == "host" and args.action == "add" and not args.protocol:
        print("pds: error: host add needs --protocol", file=sys.stderr)
        return 2
    client = PdsClient(
        args.url,
        user=os.environ.get("PDS_USER"),
        password=os.environ.get("PDS_PASSWORD"),
        token=os.environ.get("PDS_TOKEN"),
        http=http,
    )
    try:
        COMMANDS[args.command](client, args)
    except (ApiError, PdsError) as exc:
        print(f"pds: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pds: interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> None:
    sys.exit(main())

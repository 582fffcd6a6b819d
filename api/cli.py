"""The `pds` command: start the embedded stack, push files, read status, configure destinations and hosts.

Every error is one line on stderr and a non-zero exit: 1 for a refused request, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
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


def _delay(args: argparse.Namespace) -> int | None:
    """Seconds to wait before the transfers may start, from --delay or --at (ISO 8601, UTC if no zone)."""
    if args.at and args.delay is not None:
        raise PdsError("give --delay or --at, not both")
    if not args.at:
        return int(args.delay) if args.delay is not None else None
    try:
        at = datetime.fromisoformat(args.at)
    except ValueError:
        raise PdsError(f"--at must be an ISO 8601 time such as 2026-11-24T06:00Z, not {args.at!r}") from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return max(0, math.ceil((at - datetime.now(UTC)).total_seconds()))  # never before --at


def cmd_push(client: PdsClient, args: argparse.Namespace) -> None:
    meta = {
        "stream": args.stream,
        "data_type": args.type,
        "time_base": args.time,
        "time_step": args.step,
        "delay": _delay(args),
        "lifetime": args.lifetime,
    }
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
        lines.append(_transfer_line(t))
        lines += [
            f"  {h['at']} {h['from_status'] or '-'} -> {h['to_status']} by {h['by']}"
            + (f": {h['reason']}" if h["reason"] else "")
            for h in t["history"]
        ]
    _print(args, value, "\n".join(lines) or f"data file {args.id} has no transfers")


def _transfer_line(t: dict[str, Any]) -> str:
    return f"transfer {t['id']} {t['destination']}:{t['target']} {t['status']} priority {t['priority']}" + (
        f" ({t['error']})" if t.get("error") else ""
    )


def cmd_transfer(client: PdsClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.operation == "priority":
        if args.value is None:
            raise PdsError("transfer priority needs the new priority: pds transfer priority ID 0..99")
        body["priority"] = args.value
    elif args.operation == "extend":
        if args.value is None:
            raise PdsError("transfer extend needs the seconds to add: pds transfer extend ID SECONDS")
        body["seconds"] = args.value
    elif args.value is not None:
        raise PdsError(f"transfer {args.operation} takes no value")
    if args.reason:
        body["reason"] = args.reason
    operation = "schedule-now" if args.operation == "now" else args.operation
    result = client.operate(args.id, operation, **body)
    _print(args, result, _transfer_line(result))


def _destination_settings(args: argparse.Namespace) -> dict[str, Any]:
    settings = {
        "comment": args.comment,
        "max_parallel_transfers": args.max_parallel,
        "compression": args.compression,
        "max_starts": args.max_starts,
        "start_frequency_seconds": args.start_frequency,
        "max_requeue": args.max_requeue,
        "on_host_failure": args.on_host_failure,
        "reset_frequency_seconds": args.reset_frequency,
        "max_failed_passes": args.max_failed_passes,
        "lifetime_seconds": args.lifetime,
        "window_start": args.window.split("-")[0] if args.window else None,
        "window_end": args.window.split("-")[-1] if args.window else None,
        "mqtt_topic": args.mqtt_topic,
        "mqtt_qos": args.mqtt_qos,
        "mqtt_retain": {"yes": True, "no": False}.get(args.mqtt_retain or ""),
        "mqtt_expiry_seconds": args.mqtt_expiry,
        "mqtt_payload": args.mqtt_payload,
    }
    if args.window and args.window.count("-") != 1:
        raise PdsError(f"--window must be HH:MM-HH:MM (UTC), not {args.window!r}")
    return {k: v for k, v in settings.items() if v is not None}


def cmd_destination(client: PdsClient, args: argparse.Namespace) -> None:
    result: Any
    if args.action == "add":
        result = client.create_destination(args.name, **_destination_settings(args))
        _print(args, result, f"destination {args.name} created")
    elif args.action == "set":
        settings = _destination_settings(args)
        if not settings:
            raise PdsError("destination set needs at least one setting, e.g. --max-starts 5")
        result = client.update_destination(args.name, **settings)
        _print(args, result, f"destination {args.name} updated: {', '.join(sorted(settings))}")
    elif args.action == "alias":
        if not args.alias:
            raise PdsError("destination alias needs the alias: pds destination alias NAME --to OTHER")
        result = client.add_alias(
            args.name,
            args.alias,
            pattern=args.pattern,
            replacement=args.replace,
            priority=args.alias_priority,
            delay_seconds=args.delay,
        )
        _print(args, result, f"transfers to {args.name} are queued to {args.alias} too")
    elif args.action in ("hold", "restart"):
        result = client.hold_destination(args.name) if args.action == "hold" else client.restart_destination(args.name)
        _print(args, result, f"destination {args.name} {'on hold' if args.action == 'hold' else 'restarted'}")
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


def _data_user_settings(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "description": args.description,
        "country_code": args.country,
        "upload_quota_bytes": args.upload_quota,
        "download_quota_bytes": args.download_quota,
        "quota_period_seconds": args.quota_period,
        "max_connections": args.max_connections,
    }
    return {k: v for k, v in names.items() if v is not None}


def _user_line(u: dict[str, Any]) -> str:
    grants = ", ".join(f"{g['destination'] or 'policy ' + g['policy']}:{g['operations']}" for g in u["grants"])
    return f"{u['login']}\t{'admin' if u['is_admin'] else 'user'}\t{'active' if u['active'] else 'disabled'}\t{grants}"


def cmd_user(client: PdsClient, args: argparse.Namespace) -> None:
    """Data users of the portal: passwords come from an environment variable, never the command line."""
    password = os.environ.get(args.password_env, "") if args.password_env else ""
    if args.password_env and not password:
        raise PdsError(f"environment variable {args.password_env} is empty or unset")
    result: Any
    if args.action == "add":
        if not password:
            raise PdsError("user add needs a password: --password-env VARIABLE")
        keys = [Path(k).read_text(encoding="utf-8").strip() for k in args.ssh_key]
        result = client.create_data_user(
            args.login, password, is_admin=args.admin, ssh_keys=keys, **_data_user_settings(args)
        )
        _print(args, result, f"data user {args.login} created")
    elif args.action == "set":
        changes = _data_user_settings(args) | ({"password": password} if password else {})
        if args.disable or args.enable:
            changes["active"] = bool(args.enable)
        if not changes:
            raise PdsError("user set needs at least one setting, e.g. --upload-quota 1000000000")
        result = client.update_data_user(args.login, **changes)
        _print(args, result, f"data user {args.login} updated: {', '.join(sorted(changes))}")
    elif args.action == "grant":
        if bool(args.destination) == bool(args.policy) or not args.ops:
            raise PdsError("user grant needs --ops and one of --destination or --policy")
        result = client.grant(args.login, args.ops, destination=args.destination, policy=args.policy)
        _print(args, result, f"{args.login} may {args.ops} at {args.destination or 'policy ' + args.policy}")
    elif args.action == "revoke":
        if not args.destination:
            raise PdsError("user revoke needs --destination")
        client.revoke(args.login, args.destination)
        _print(args, {}, f"{args.login} no longer reaches {args.destination}")
    elif args.action == "key":
        if not args.ssh_key:
            raise PdsError("user key needs --ssh-key FILE (an OpenSSH public key)")
        for path in args.ssh_key:
            result = client.add_ssh_key(args.login, Path(path).read_text(encoding="utf-8").strip())
        _print(args, result, f"SSH key(s) added to {args.login}")
    elif args.action == "s3secret":
        result = client.new_s3_secret(args.login)
        _print(
            args, result, f"access key id: {result['access_key_id']}\nsecret access key: {result['secret_access_key']}"
        )
    elif args.action == "delete":
        client.delete_data_user(args.login)
        _print(args, {}, f"data user {args.login} deleted")
    elif args.action == "show":
        result = client.data_user(args.login)
        _print(args, result, json.dumps(result, indent=2))
    else:
        result = client.data_users()
        _print(args, result, "\n".join(_user_line(u) for u in result))


def cmd_policy(client: PdsClient, args: argparse.Namespace) -> None:
    if args.action == "add":
        result: Any = client.create_policy(args.name, args.destination or [], args.comment or "")
        _print(args, result, f"policy {args.name}: {', '.join(result['destinations']) or '(no destination yet)'}")
    else:
        result = client.policies()
        _print(args, result, "\n".join(f"{p['name']}\t{', '.join(p['destinations'])}" for p in result))


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
    push.add_argument("--delay", type=int, help="seconds before the transfers may start")
    push.add_argument("--at", help="start no earlier than this time (ISO 8601; UTC when no zone is given)")
    push.add_argument("--lifetime", type=int, help="seconds after which a transfer still waiting fails")
    push.add_argument("--stream")
    push.add_argument("--type")
    push.add_argument("--time", help="time base of the product")
    push.add_argument("--step", help="time step of the product")

    status = sub.add_parser("status", help="a data file's transfers with their history")
    status.add_argument("id", type=int, help="data file id (as printed by push)")
    status.add_argument("--transfer", action="store_true", help="the id is a transfer id")

    dest = sub.add_parser("destination", help="add, list, show, change, hold or restart destinations")
    dest.add_argument("action", choices=["add", "list", "show", "set", "hold", "restart", "alias"])
    dest.add_argument("name", nargs="?")
    dest.add_argument("--comment")
    dest.add_argument("--max-parallel", type=int, help="transfers running at once (4)")
    dest.add_argument("--compression", help="gzip, bzip2, lzma, zstd, lz4 or snappy, applied on the fly")
    dest.add_argument("--max-starts", type=int, help="failed starts before a transfer is requeued (3)")
    dest.add_argument("--start-frequency", type=int, help="seconds between starts (60)")
    dest.add_argument("--max-requeue", type=int, help="requeues before a transfer fails (3)")
    dest.add_argument("--on-host-failure", choices=["next_and_stay", "next_and_retry"])
    dest.add_argument("--reset-frequency", type=int, help="seconds before next_and_stay returns to the primary (600)")
    dest.add_argument("--max-failed-passes", type=int, help="failed passes over every host before hold (0: never)")
    dest.add_argument("--lifetime", type=int, help="seconds a transfer may wait before it fails as expired")
    dest.add_argument("--window", help="active time window HH:MM-HH:MM, UTC")
    dest.add_argument("--mqtt-topic", help="publish a notification here on Done ($destination, $name expand)")
    dest.add_argument("--mqtt-qos", type=int, choices=[0, 1, 2])
    dest.add_argument("--mqtt-retain", choices=["yes", "no"])
    dest.add_argument("--mqtt-expiry", type=int, help="message expiry, seconds")
    dest.add_argument("--mqtt-payload", choices=["pds", "wis2"])
    dest.add_argument("--to", dest="alias", help="alias: the destination that gets the transfers too")
    dest.add_argument("--pattern", help="alias: only targets matching this regular expression")
    dest.add_argument("--replace", help="alias: rewrite the target, re.sub(pattern, REPLACE, target)")
    dest.add_argument("--alias-priority", type=int, help="alias: priority of its transfers")
    dest.add_argument("--delay", type=int, help="alias: seconds before its transfers may start")

    transfer = sub.add_parser("transfer", help="operate on one transfer")
    transfer.add_argument("operation", choices=["requeue", "stop", "hold", "release", "priority", "now", "extend"])
    transfer.add_argument("id", type=int, help="transfer id")
    transfer.add_argument("value", nargs="?", type=int, help="the new priority, or the seconds to extend by")
    transfer.add_argument("--reason", help="why (kept in the transfer's history)")

    host = sub.add_parser("host", help="add or list hosts")
    host.add_argument("action", choices=["add", "list"])
    host.add_argument("name", nargs="?")
    host.add_argument("--protocol", help="file, sftp, ftp, s3, azure, gcs, http, https, webdav, …")
    host.add_argument("--address", default="", help="directory (file), host[:port] (sftp), endpoint URL (s3)")
    host.add_argument("--directory", default="", help="directory template, e.g. 'incoming/$destination'")
    host.add_argument("--login", default="")
    host.add_argument("--password-env", help="name of an environment variable holding the password")
    host.add_argument("--option", "-o", action="append", default=[], help="KEY=VALUE protocol option")
    host.add_argument("--kind", default="dissemination")
    host.add_argument("--destination", help="attach the new host to this destination")
    host.add_argument("--rank", type=int, help="0 makes it the primary host")

    sub.add_parser("token", help="create an API token for the current user")

    user = sub.add_parser("user", help="data users of the Data Portal (administrators)")
    user.add_argument("action", choices=["add", "list", "show", "set", "grant", "revoke", "key", "s3secret", "delete"])
    user.add_argument("login", nargs="?")
    user.add_argument("--password-env", help="name of an environment variable holding the password")
    user.add_argument("--admin", action="store_true", help="add: an administrator (reaches everything)")
    user.add_argument("--destination", help="grant/revoke: the destination")
    user.add_argument("--policy", help="grant: a policy (group of destinations) instead of a destination")
    user.add_argument("--ops", help="grant: get,put,delete,dir,mkdir,rmdir,rename,size,mtime or all")
    user.add_argument("--ssh-key", action="append", default=[], help="an OpenSSH public key file (SFTP login)")
    user.add_argument("--description")
    user.add_argument("--country", help="country code (event logs)")
    user.add_argument("--upload-quota", type=int, help="bytes per quota period; unset: no limit")
    user.add_argument("--download-quota", type=int, help="bytes per quota period; unset: no limit")
    user.add_argument("--quota-period", type=int, help="seconds of the rolling quota window (86400)")
    user.add_argument("--max-connections", type=int, help="sessions or requests at once")
    user.add_argument("--disable", action="store_true")
    user.add_argument("--enable", action="store_true")

    policy = sub.add_parser("policy", help="portal policies: named groups of destinations")
    policy.add_argument("action", choices=["add", "list"])
    policy.add_argument("name", nargs="?")
    policy.add_argument("--destination", action="append", help="a destination of the policy (repeat)")
    policy.add_argument("--comment")
    return p


COMMANDS = {
    "push": cmd_push,
    "status": cmd_status,
    "destination": cmd_destination,
    "transfer": cmd_transfer,
    "host": cmd_host,
    "token": cmd_token,
    "user": cmd_user,
    "policy": cmd_policy,
}


def main(argv: Sequence[str] | None = None, *, http: httpx.Client | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "up":
        from api.up import run_embedded

        return run_embedded(data_dir=args.data_dir, prefect_api_url=args.prefect_api_url)
    if args.command in {"destination", "host"} and args.action not in {"list"} and not args.name:
        print(f"pds: error: {args.command} {args.action} needs a NAME", file=sys.stderr)
        return 2
    if args.command == "user" and args.action != "list" and not args.login:
        print(f"pds: error: user {args.action} needs a LOGIN", file=sys.stderr)
        return 2
    if args.command == "policy" and args.action == "add" and not args.name:
        print("pds: error: policy add needs a NAME", file=sys.stderr)
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

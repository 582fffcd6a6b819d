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
from typing import TYPE_CHECKING, Any, NoReturn

from api.client import DEFAULT_URL, ApiError, PdsClient
from catalog.errors import PdsError

if TYPE_CHECKING:
    import httpx


class UsageError(PdsError):
    """The command line asks for something impossible (exit code 2, as argparse's own errors)."""


def _progress(sent: int, total: int) -> None:
    if total < 8 * 1024 * 1024 or not sys.stderr.isatty():
        return
    width = 30
    done = int(width * sent / total) if total else width
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {sent / 2**20:8.1f} / {total / 2**20:.1f} MiB")
    if sent >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _options(pairs: Sequence[str], *, parse: bool = True) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"option must be KEY=VALUE, not {pair!r}")
        parsed = parse and (value in {"true", "false"} or value.isdigit())
        options[key] = json.loads(value) if parsed else value
    return options


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=2) if args.json else text)


def _delay(args: argparse.Namespace) -> int | None:
    """Seconds to wait before the transfers may start, from --delay or --at (ISO 8601, UTC if no zone)."""
    if args.at and args.delay is not None:
        raise UsageError("give --delay or --at, not both")
    if not args.at:
        return int(args.delay) if args.delay is not None else None
    try:
        at = datetime.fromisoformat(args.at)
    except ValueError:
        raise UsageError(f"--at must be an ISO 8601 time such as 2026-11-24T06:00Z, not {args.at!r}") from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return max(0, math.ceil((at - datetime.now(UTC)).total_seconds()))  # never before --at


def cmd_push(client: PdsClient, args: argparse.Namespace) -> None:
    if args.asap and (args.priority is not None or args.delay is not None or args.at or args.standby):
        raise UsageError("--asap means priority 0, now: give it without --priority, --delay, --at or --standby")
    free = [f"{key}={value}" for key, value in _options(args.meta, parse=False).items()]
    meta = {
        "stream": args.stream,
        "data_type": args.type,
        "time_base": args.time,
        "time_step": args.step,
        "delay": _delay(args),
        "lifetime": args.lifetime,
        "meta": free or None,
    }
    result = client.push(
        args.file,
        args.destination,
        args.target,
        priority=0 if args.asap else args.priority,
        standby=args.standby,
        if_exists="requeue" if args.requeue else "force" if args.force else "refuse",
        progress=None if args.json else _progress,
        **meta,
    )
    if args.remove_source:
        # Only now: the push returned, so the file is whole in the Data Store.
        os.remove(args.file)
    _print(args, result, str(result["data_file_id"]))


def cmd_product(client: PdsClient, args: argparse.Namespace) -> None:
    if args.status == "list":
        rows = client.products(stream=args.stream, late=args.late)
        lines = [
            "\t".join(
                [
                    p["stream"],
                    p["type"] or "-",
                    p["time_base"] or "-",
                    p["time_step"] or "-",
                    p["status"] + (" LATE" if p["late"] else ""),
                    f"due {p['schedule_time']}" if p["schedule_time"] else "",
                ]
            ).rstrip()
            for p in rows
        ]
        _print(args, rows, "\n".join(lines) or "no product status recorded")
        return
    if not args.stream:
        raise UsageError(f"product {args.status} needs --stream")
    if args.late:
        raise UsageError("--late goes with product list")
    line = client.product_status(
        args.status,
        args.stream,
        type=args.type,
        time_base=args.time,
        time_step=args.step,
        schedule_time=args.schedule_time,
    )
    _print(args, {"line": line}, line)


def cmd_scheduler(client: PdsClient, args: argparse.Namespace) -> None:
    """Stop (hold) or start (restart) the schedulers of one destination or of every destination."""
    names = [args.destination] if args.destination else [d["destination"]["name"] for d in client.destinations()]
    for name in names:
        if args.action == "stop":
            client.hold_destination(name)
        else:
            client.restart_destination(name)
    verb = "stopped" if args.action == "stop" else "started"
    _print(args, {"action": args.action, "destinations": names}, f"scheduler {verb}: {', '.join(names) or '(none)'}")


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
        lines += [_attempt_line(a) for a in t.get("attempts", [])]
    _print(args, value, "\n".join(lines) or f"data file {args.id} has no transfers")


def _attempt_line(a: dict[str, Any]) -> str:
    """`  attempt 2 by mover-1 to host-a: 2026-... → 2026-... Requeued, 1024 bytes (why) run URL task URL`"""
    ended = f"{a['ended_at']} {a['outcome']}" if a.get("ended_at") else "running"
    runs = " ".join(
        f"{kind} {a[key]}" for kind, key in (("run", "flow_run_url"), ("task", "task_run_url")) if a.get(key)
    )
    return (
        f"  attempt {a['number']} by {a['mover']} to {a['host'] or '-'}: {a['started_at']} → {ended}, "
        f"{a['bytes_sent']} bytes" + (f" ({a['error']})" if a.get("error") else "") + (f" {runs}" if runs else "")
    )


def _transfer_line(t: dict[str, Any]) -> str:
    return f"transfer {t['id']} {t['destination']}:{t['target']} {t['status']} priority {t['priority']}" + (
        f" ({t['error']})" if t.get("error") else ""
    )


def cmd_transfer(client: PdsClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.operation == "priority":
        if args.value is None:
            raise UsageError("transfer priority needs the new priority: pds transfer priority ID 0..99")
        body["priority"] = args.value
    elif args.operation == "extend":
        if args.value is None:
            raise UsageError("transfer extend needs the seconds to add: pds transfer extend ID SECONDS")
        body["seconds"] = args.value
    elif args.value is not None:
        raise UsageError(f"transfer {args.operation} takes no value")
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
        "mqtt_on_arrival": {"yes": True, "no": False}.get(args.mqtt_on_arrival or ""),
    }
    if args.window and args.window.count("-") != 1:
        raise UsageError(f"--window must be HH:MM-HH:MM (UTC), not {args.window!r}")
    return {k: v for k, v in settings.items() if v is not None}


def cmd_destination(client: PdsClient, args: argparse.Namespace) -> None:
    result: Any
    if args.action == "add":
        result = client.create_destination(args.name, **_destination_settings(args))
        _print(args, result, f"destination {args.name} created")
    elif args.action == "set":
        settings = _destination_settings(args)
        if not settings and args.proxy_host is None:
            raise UsageError("destination set needs at least one setting, e.g. --max-starts 5")
        result = client.update_destination(args.name, **settings) if settings else client.destination(args.name)
        changed = sorted(settings)
        if args.proxy_host is not None:
            result = _set_proxy_host(client, args.name, args.proxy_host, result["hosts"].get("proxy", []))
            changed.append("proxy_host")
        _print(args, result, f"destination {args.name} updated: {', '.join(changed)}")
    elif args.action == "alias":
        if not args.alias:
            raise UsageError("destination alias needs the alias: pds destination alias NAME --to OTHER")
        result = client.add_alias(
            args.name,
            args.alias,
            pattern=args.pattern,
            replacement=args.replace,
            priority=args.alias_priority,
            delay_seconds=args.delay,
        )
        _print(args, result, f"transfers to {args.name} are queued to {args.alias} too")
    elif args.action in ("hold", "restart", "stop", "start"):
        hold = args.action in ("hold", "stop")  # stop/start: ecpds's words for hold/restart
        result = client.hold_destination(args.name) if hold else client.restart_destination(args.name)
        _print(args, result, f"destination {args.name} {'on hold' if hold else 'restarted'}")
    elif args.action == "show":
        result = client.destination(args.name)
        _print(args, result, json.dumps(result, indent=2))
    elif args.action == "history":
        result = client.destination_history(args.name)
        lines = [f"{h['at']} {h['action']} by {h['by']}" + (f": {h['reason']}" if h["reason"] else "") for h in result]
        _print(args, result, "\n".join(lines) or f"destination {args.name} has no history")
    elif args.action == "delete":
        result = client.delete_destination(args.name, force=args.force)
        stopped = f", {result['transfers_stopped']} stopped first" if result["transfers_stopped"] else ""
        _print(
            args, result, f"destination {args.name} deleted with its {result['transfers_removed']} transfer(s){stopped}"
        )
    else:
        result = client.destinations()
        _print(
            args,
            result,
            "\n".join(
                f"{d['destination']['name']}\t{'active' if d['destination']['active'] else 'on hold'}\t"
                f"hosts: {', '.join(d['hosts']['dissemination']) or '(portal bucket)'}"
                + "".join(f"\tproxy host: {p}" for p in d["hosts"].get("proxy", []))
                for d in result
            ),
        )


def _set_proxy_host(client: PdsClient, destination: str, proxy: str, current: list[str]) -> dict[str, Any]:
    """Make `proxy` the destination's proxy host (its continental mover); `none` removes it."""
    if proxy == "none":
        result = client.destination(destination)
        for host in current:
            result = client.detach_host(destination, host, "proxy")
        return result
    return client.attach_host(destination, proxy, "proxy")


def cmd_host(client: PdsClient, args: argparse.Namespace) -> None:
    if args.action == "list":
        result: Any = client.hosts()
        _print(
            args, result, "\n".join(f"{h['name']}\t{h['protocol']}\t{h['address']}\t{h['directory']}" for h in result)
        )
        return
    if args.action == "delete":
        client.delete_host(args.name)
        _print(args, {"host": args.name, "deleted": True}, f"host {args.name} deleted")
        return
    password = os.environ.get(args.password_env, "") if args.password_env else ""
    if args.password_env and not password:
        raise UsageError(f"environment variable {args.password_env} is empty or unset")
    if args.action == "set":
        _set_host(client, args, password)
        return
    result = client.create_host(
        args.name,
        args.protocol,
        address=args.address or "",
        directory=args.directory or "",
        login=args.login or "",
        password=password,
        options=_options(args.option),
        kind=args.kind,
    )
    text = f"host {args.name} created"
    if args.destination:
        client.attach_host(args.destination, args.name, args.kind, args.rank)
        text += f" and attached to {args.destination}"
    _print(args, result, text)


def _set_host(client: PdsClient, args: argparse.Namespace, password: str) -> None:
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "protocol": args.protocol,
            "address": args.address,
            "directory": args.directory,
            "login": args.login,
            "password": password or None,
            "active": {"enable": True, "disable": False}.get(args.state or ""),
        }.items()
        if value is not None
    }
    options: dict[str, Any] = dict(_options(args.option))
    options.update({key: None for key in args.remove_option})
    if options:
        changes["options"] = options
    if not changes and args.destination is None:
        raise UsageError("host set needs at least one change, e.g. --address or -o KEY=VALUE")
    result: Any = client.update_host(args.name, **changes) if changes else None
    text = f"host {args.name} updated: {', '.join(sorted(changes))}" if changes else f"host {args.name}"
    if args.destination:  # a new place in the destination's order: detach, attach at the rank
        client.detach_host(args.destination, args.name, args.kind)
        client.attach_host(args.destination, args.name, args.kind, args.rank)
        text += f"; rank {args.rank if args.rank is not None else 'last'} at {args.destination}"
    _print(args, result, text)


def cmd_stac(client: PdsClient, args: argparse.Namespace) -> None:
    if args.action == "publish":
        if not args.collection:
            raise UsageError("stac publish needs --collection")
        enabled = None if args.enable is None else args.enable == "yes"
        result = client.publish(
            args.destination, args.collection, item_id=args.item_id, extractor=args.extractor, enabled=enabled
        )
        text = (
            f"{result['destination']} → collection {result['collection']}, item id {result['item_id']!r}, "
            f"extractor {result['extractor']}{'' if result['enabled'] else ' (disabled)'}"
        )
    elif args.action == "harvest":
        result = client.harvest(args.destination)
        text = f"{result['items']} items published from {result['destination']}" + "".join(
            f"\ndata file {f['data_file_id']} not published: {f['reason']}" for f in result["failed"]
        )
    else:
        result = client.publication(args.destination)
        text = f"{result['destination']} → collection {result['collection']}, item id {result['item_id']!r}"
    _print(args, result, text)


def cmd_acquisition(client: PdsClient, args: argparse.Namespace) -> None:
    host = args.host
    if args.action == "rule":
        if not args.destination:
            raise UsageError("acquisition rule needs --destination")
        rule = {
            "directory": args.directory,
            "pattern": args.pattern,
            "wildcard": args.wildcard,
            "min_size": args.min_size,
            "max_size": args.max_size,
            "min_age_seconds": args.min_age,
            "max_age_seconds": args.max_age,
            "max_depth": args.depth,
            "target_prefix": args.target_prefix,
            "priority": args.priority,
            "lifetime_seconds": args.lifetime,
        }
        if args.format:
            rule["listing_format"] = args.format
        for flag in ("dedupe_by_time", "no_retrieval", "requeue_on_failure", "standby"):
            if getattr(args, flag):
                rule[flag] = True
        if args.no_requeue_on_update:
            rule["requeue_on_update"] = False
        result = client.add_listing_rule(host, args.destination, **rule)
        text = f"rule added to {host}: {len(result['rules'])} rule(s)"
    elif args.action == "schedule":
        if args.every is None:
            raise UsageError("acquisition schedule needs --every SECONDS (0: only when run by hand)")
        result = client.set_discovery_interval(host, args.every)
        text = f"{host} discovered every {args.every} s" if args.every else f"{host} discovered only when run"
    elif args.action == "run":
        result = client.discover_now(host)
        text = f"discovery of {host} requested"
    else:
        result = client.acquisition(host)
        state = result["schedule"]
        lines = [
            f"{host}: every {state['interval_seconds']} s, next {state['next_run_at']}, "
            f"last registered {state['last_registered']}"
            + (f", error: {state['last_error']}" if state["last_error"] else "")
            + (f", being discovered by {state['pass_holder']}" if state.get("pass_holder") else "")
        ]
        for r in result["rules"]:
            which = r["pattern"] or r["wildcard"] or "*"
            lines.append(f"  rule {r['id']} -> {r['destination_name']}: {r['directory'] or '.'} {which}")
        text = "\n".join(lines)
    _print(args, result, text)


def _group_progress(state: dict[str, Any]) -> None:
    if not sys.stderr.isatty():
        return
    width, total = 30, state["total"] or 1
    done = int(width * (state["retrieved"] + state["failed"]) / total)
    sys.stderr.write(
        f"\r[{'#' * done}{'.' * (width - done)}] {state['retrieved']}/{state['total']} retrieved"
        + (f", {state['failed']} failed" if state["failed"] else "")
    )
    if state["complete"]:
        sys.stderr.write("\n")
    sys.stderr.flush()


def cmd_register(client: PdsClient, args: argparse.Namespace) -> None:
    files: list[dict[str, Any]] = []
    for item in args.files:
        path, sep, target = item.partition("=")
        files.append({"path": path, "target": target} if sep else {"path": path})
    options: dict[str, Any] = {"standby": args.standby, "requeue_on_failure": args.requeue_on_failure}
    if args.priority is not None:
        options["priority"] = args.priority
    result = client.register(args.destination, args.host, args.group, files, **options)
    _print(args, result, "\n".join(str(i) for i in result["data_file_ids"]))


def cmd_wait(client: PdsClient, args: argparse.Namespace) -> None:
    state = client.wait_for_group(args.group, timeout=args.timeout, progress=None if args.json else _group_progress)
    text = f"group {args.group}: {state['retrieved']} of {state['total']} retrieved, {state['failed']} failed"
    _print(args, state, text)
    if state["failed"]:
        raise PdsError(f"{state['failed']} file(s) of group {args.group} failed to be retrieved")


def cmd_token(client: PdsClient, args: argparse.Namespace) -> None:
    token = client.new_token()
    _print(args, {"token": token}, token)


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line on standard error and exit code 2 (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
    operator = any("operate" in g["operations"].split(",") for g in u["grants"])
    role = "admin" if u["is_admin"] else "operator" if operator else "user"
    return f"{u['login']}\t{role}\t{'active' if u['active'] else 'disabled'}\t{grants}"


def cmd_user(client: PdsClient, args: argparse.Namespace) -> None:
    """Data users of the portal: passwords come from an environment variable, never the command line."""
    password = os.environ.get(args.password_env, "") if args.password_env else ""
    if args.password_env and not password:
        raise UsageError(f"environment variable {args.password_env} is empty or unset")
    result: Any
    if args.action == "add":
        if not password:
            raise UsageError("user add needs a password: --password-env VARIABLE")
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
            raise UsageError("user set needs at least one setting, e.g. --upload-quota 1000000000")
        result = client.update_data_user(args.login, **changes)
        _print(args, result, f"data user {args.login} updated: {', '.join(sorted(changes))}")
    elif args.action == "grant":
        if bool(args.destination) == bool(args.policy) or not args.ops:
            raise UsageError("user grant needs --ops and one of --destination or --policy")
        result = client.grant(args.login, args.ops, destination=args.destination, policy=args.policy)
        _print(args, result, f"{args.login} may {args.ops} at {args.destination or 'policy ' + args.policy}")
    elif args.action == "revoke":
        if not args.destination:
            raise UsageError("user revoke needs --destination")
        client.revoke(args.login, args.destination)
        _print(args, {}, f"{args.login} no longer reaches {args.destination}")
    elif args.action == "key":
        if not args.ssh_key:
            raise UsageError("user key needs --ssh-key FILE (an OpenSSH public key)")
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


def _asset_line(a: dict[str, Any]) -> str:
    cached = f"cached {a['cached_size']} bytes" if a.get("cache_file") else f"not cached ({a['fetch_status']})"
    return f"{a['collection']}/{a['item']}/{a['asset']}\t{cached}\t{a['upstream_href']}\t{a['href']}"


def cmd_proxy(client: PdsClient, args: argparse.Namespace) -> None:
    result: Any
    if args.action == "register":
        fields = {"media_type": args.media_type, "size": args.size, "upstream_host": args.upstream_host}
        result = client.register_proxied_asset(
            args.collection, args.item, args.asset, args.href, **{k: v for k, v in fields.items() if v is not None}
        )
        _print(args, result, result["href"])
    elif args.action == "assets":
        result = client.proxied_assets(args.collection)
        _print(args, result, "\n".join(_asset_line(a) for a in result))
    elif args.action == "cache":
        result = client.cache_proxied_asset(args.collection, args.item, args.asset, str(Path(args.path).resolve()))
        _print(args, result, _asset_line(result))
    elif args.action == "policy":
        changes = {
            "mode": args.mode,
            "sync_wait_seconds": args.sync_wait,
            "retention": args.retention,
            "retention_days": args.retention_days,
            "max_bytes": args.max_bytes,
            "public": args.public,
            "readers": args.reader,
            "presign_seconds": args.presign_seconds,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        result = (
            client.set_proxy_policy(args.collection, **changes) if changes else client.proxy_policy(args.collection)
        )
        readers = ", ".join(result["readers"]) or "every authenticated user"
        access = "public" if result["public"] else f"readers: {readers}"
        _print(args, result, f"{result['collection']}: {result['mode']}, {result['retention']}, {access}")
    elif args.action == "quota":
        limits = {
            "period_seconds": args.period,
            "max_requests": args.max_requests,
            "max_miss_requests": args.max_miss_requests,
            "max_bytes": args.max_bytes,
            "max_upstream_bytes": args.max_upstream_bytes,
        }
        result = client.set_qos_quota(args.subject, **{k: v for k, v in limits.items() if v is not None})
        shown = ", ".join(f"{k} {v}" for k, v in result.items() if k.startswith("max_") and v is not None)
        _print(args, result, f"{result['subject']} per {result['period_seconds']} s: {shown or 'no limit'}")
    else:
        result = client.add_qos_member(args.group, args.login)
        _print(args, result, f"{args.login} is in group {args.group}")


def _proxy_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    proxy = sub.add_parser("proxy", parents=[common], help="the data proxy: assets, policies, quotas (administrators)")
    actions = proxy.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", parents=[common], help="register (or update) a proxied asset")
    for name in ("collection", "item", "asset"):
        register.add_argument(name)
    register.add_argument("--href", required=True, help="upstream URL (http, https, s3) or a path on --upstream-host")
    register.add_argument("--upstream-host", help="a host of the transfer layer")
    register.add_argument("--media-type")
    register.add_argument("--size", type=int)
    assets = actions.add_parser("assets", parents=[common], help="list proxied assets and their cache state")
    assets.add_argument("--collection")
    cache = actions.add_parser("cache", parents=[common], help="put a harvested file into the cache")
    for name in ("collection", "item", "asset"):
        cache.add_argument(name)
    cache.add_argument("path", help="a file on the API's machine")
    policy = actions.add_parser("policy", parents=[common], help="show a dataset policy, or change it")
    policy.add_argument("collection")
    policy.add_argument("--mode", choices=["cache", "redirect", "presign"])
    policy.add_argument("--sync-wait", type=float, help="seconds a cache miss is held before 'pending'")
    policy.add_argument("--retention", choices=["permanent", "rolling", "lru"])
    policy.add_argument("--retention-days", type=float)
    policy.add_argument("--max-bytes", type=int)
    policy.add_argument("--public", action=argparse.BooleanOptionalAction, default=None)
    policy.add_argument("--reader", action="append", help="a login or group:NAME that may read (repeat)")
    policy.add_argument("--presign-seconds", type=int)
    quota = actions.add_parser("quota", parents=[common], help="set the QoS limits of user:LOGIN or group:NAME")
    quota.add_argument("subject")
    quota.add_argument("--period", type=int, help="seconds per window (3600)")
    quota.add_argument("--max-requests", type=int)
    quota.add_argument("--max-miss-requests", type=int)
    quota.add_argument("--max-bytes", type=int)
    quota.add_argument("--max-upstream-bytes", type=int)
    member = actions.add_parser("member", parents=[common], help="add a project user to a QoS group")
    member.add_argument("group")
    member.add_argument("login")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pds", description="pds, a Product Data Store on Prefect")
    p.add_argument("--url", default=os.environ.get("PDS_API_URL", DEFAULT_URL), help="API base URL (PDS_API_URL)")
    p.add_argument("--json", action="store_true", help="print JSON (also accepted after the command)")
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", parents=[common], help="start the embedded stack: Prefect server, API, mover (Ctrl-C stops it)"
    )
    up.add_argument("--data-dir", help="where everything is kept (PDS_DATA_DIR, default ./pds-data)")
    up.add_argument("--prefect-api-url", help="use this Prefect server instead of starting one")

    push = sub.add_parser("push", parents=[common], help="upload a file; prints its data file id once it is stored")
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
    push.add_argument("--meta", "-m", action="append", default=[], help="KEY=VALUE metadata (repeatable)")
    push.add_argument("--asap", action="store_true", help="as soon as possible: priority 0, no delay")
    push.add_argument("--remove-source", action="store_true", help="delete the local file once it is stored")
    # As with ecpds: a target the destination already has is refused unless the push says to replace it.
    replace = push.add_mutually_exclusive_group()
    replace.add_argument(
        "--requeue", action="store_true", help="replace the file the destination already has under this target"
    )
    replace.add_argument(
        "--force", action="store_true", help="replace the file under this target if there is one, else push it"
    )

    product = sub.add_parser(
        "product",
        parents=[common],
        help="record a product as expected, started or completed (a PRS line); list: their latest statuses",
    )
    product.add_argument("status", choices=["expected", "started", "completed", "list"])
    product.add_argument("--stream", help="the data stream (required but for list, where it filters)")
    product.add_argument("--late", action="store_true", help="list: only products due and not completed")
    product.add_argument("--type")
    product.add_argument("--time", help="time base (ISO 8601, or e.g. 00)")
    product.add_argument("--step", help="time step")
    product.add_argument("--schedule-time", help="when its files are due (ISO 8601)")

    scheduler = sub.add_parser(
        "scheduler", parents=[common], help="stop or start the transfer schedulers (all, or one destination)"
    )
    scheduler.add_argument("action", choices=["stop", "start"])
    scheduler.add_argument("--destination", "-d", help="only this destination")

    status = sub.add_parser("status", parents=[common], help="a data file's transfers with their history")
    status.add_argument("id", type=int, help="data file id (as printed by push)")
    status.add_argument("--transfer", action="store_true", help="the id is a transfer id")

    dest = sub.add_parser(
        "destination",
        parents=[common],
        help="add, list, show, change, hold, restart or delete destinations; their history of changes",
    )
    dest.add_argument(
        "action",
        choices=["add", "list", "show", "history", "set", "hold", "restart", "stop", "start", "alias", "delete"],
    )
    dest.add_argument("--force", action="store_true", help="delete: stop its waiting transfers first")
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
    dest.add_argument(
        "--mqtt-on-arrival", choices=["yes", "no"], help="also notify when a file arrives (portal upload, retrieval)"
    )
    dest.add_argument(
        "--proxy-host", help="set: the proxy host (kind proxy) whose continental mover serves it; none: no more"
    )
    dest.add_argument("--to", dest="alias", help="alias: the destination that gets the transfers too")
    dest.add_argument("--pattern", help="alias: only targets matching this regular expression")
    dest.add_argument("--replace", help="alias: rewrite the target, re.sub(pattern, REPLACE, target)")
    dest.add_argument("--alias-priority", type=int, help="alias: priority of its transfers")
    dest.add_argument("--delay", type=int, help="alias: seconds before its transfers may start")

    transfer = sub.add_parser("transfer", parents=[common], help="operate on one transfer")
    transfer.add_argument("operation", choices=["requeue", "stop", "hold", "release", "priority", "now", "extend"])
    transfer.add_argument("id", type=int, help="transfer id")
    transfer.add_argument("value", nargs="?", type=int, help="the new priority, or the seconds to extend by")
    transfer.add_argument("--reason", help="why (kept in the transfer's history)")

    host = sub.add_parser("host", parents=[common], help="add, list, change or delete hosts")
    host.add_argument("action", choices=["add", "list", "set", "delete"])
    host.add_argument("name", nargs="?")
    host.add_argument("--protocol", help="file, sftp, ftp, s3, azure, gcs, http, https, webdav, …")
    host.add_argument("--address", help="directory (file), host[:port] (sftp), endpoint URL (s3)")
    host.add_argument("--directory", help="directory template, e.g. 'incoming/$destination'")
    host.add_argument("--login")
    host.add_argument("--remove-option", action="append", default=[], metavar="KEY", help="set: drop this option")
    in_use = host.add_mutually_exclusive_group()
    in_use.add_argument("--enable", dest="state", action="store_const", const="enable", help="set: use it again")
    in_use.add_argument("--disable", dest="state", action="store_const", const="disable", help="set: stop using it")
    host.add_argument("--password-env", help="name of an environment variable holding the password")
    host.add_argument("--option", "-o", action="append", default=[], help="KEY=VALUE protocol option")
    host.add_argument("--kind", default="dissemination")
    host.add_argument("--destination", help="add: attach the new host here; set: move it to --rank here")
    host.add_argument("--rank", type=int, help="0 makes it the primary host")

    stac = sub.add_parser("stac", parents=[common], help="publish a destination's data files in the STAC inventory")
    stac.add_argument("action", choices=["publish", "harvest", "show"])
    stac.add_argument("destination")
    stac.add_argument("--collection", help="publish: the collection id (created when missing)")
    stac.add_argument("--item-id", help="publish: item id template ($stem, $name, $data_file_id, $meta_KEY, …)")
    stac.add_argument("--extractor", help="publish: metadata (default) or geotiff")
    stac.add_argument("--enable", choices=["yes", "no"], help="publish: turn publishing on or off")
    acq = sub.add_parser(
        "acquisition", parents=[common], help="listing rules, discovery schedule and 'run now' of an acquisition host"
    )
    acq.add_argument("action", choices=["show", "rule", "schedule", "run"])
    acq.add_argument("host")
    acq.add_argument("--destination", "-d", help="rule: the destination the files are registered to")
    acq.add_argument("--directory", default="", help="rule: directory to list; $date{%%Y%%m%%d,-1d} is yesterday")
    acq.add_argument("--pattern", help="rule: regular expression on the file name")
    acq.add_argument("--wildcard", help="rule: shell wildcard on the file name")
    acq.add_argument("--min-size", type=int)
    acq.add_argument("--max-size", type=int)
    acq.add_argument("--min-age", type=int, help="rule: seconds since the last modification, at least")
    acq.add_argument("--max-age", type=int, help="rule: seconds since the last modification, at most")
    acq.add_argument("--depth", type=int, default=0, help="rule: sub-directory levels to descend into")
    acq.add_argument("--target-prefix", default="", help="rule: prepended to the relative path")
    acq.add_argument("--priority", type=int)
    acq.add_argument("--lifetime", type=int)
    acq.add_argument("--dedupe-by-time", action="store_true", help="rule: a new modification time is a new file")
    acq.add_argument("--no-requeue-on-update", action="store_true", help="rule: ignore size/time changes")
    acq.add_argument("--no-retrieval", action="store_true", help="rule: register only; fetched on first use")
    acq.add_argument("--requeue-on-failure", action="store_true", help="rule: a failed retrieval is retried")
    acq.add_argument("--standby", action="store_true", help="rule: fetched files wait in StandBy")
    acq.add_argument(
        "--format",
        help="rule: how the source lists its files: html, json, csv, stac, stac-api or mqtt on an HTTP(S) host "
        "(default: the protocol's own listing)",
    )
    acq.add_argument("--every", type=int, help="schedule: seconds between discovery passes (0: by hand only)")

    reg = sub.add_parser(
        "register", parents=[common], help="register files for the movers to fetch from a source host (async)"
    )
    reg.add_argument(
        "files",
        nargs="+",
        metavar="PATH[=TARGET]",
        help="path inside the source host's directory (relative to it, or absolute)",
    )
    reg.add_argument("--destination", "-d", required=True)
    reg.add_argument("--host", required=True, help="the source host")
    reg.add_argument("--group", "-g", required=True, help="group name, for pds wait")
    reg.add_argument("--priority", "-p", type=int)
    reg.add_argument("--standby", action="store_true")
    reg.add_argument("--requeue-on-failure", action="store_true")

    wait = sub.add_parser("wait", parents=[common], help="return when every file of a group is retrieved")
    wait.add_argument("group")
    wait.add_argument("--timeout", type=float, default=3600)

    sub.add_parser("token", parents=[common], help="create an API token for the current user")

    sub.add_parser(
        "migrate", parents=[common], help="create or upgrade the pds database (PDS_DATABASE_URL) and its administrator"
    )
    deploy = sub.add_parser(
        "deploy", parents=[common], help="register prefect.yaml's work pools and deployments (PREFECT_API_URL)"
    )
    deploy.add_argument(
        "--pause-schedules",
        action="store_true",
        help="pause the long-lived flows' schedules (mover, retrieval, …) for a stack that runs them itself",
    )

    user = sub.add_parser("user", parents=[common], help="data users of the Data Portal (administrators)")
    user.add_argument("action", choices=["add", "list", "show", "set", "grant", "revoke", "key", "s3secret", "delete"])
    user.add_argument("login", nargs="?")
    user.add_argument("--password-env", help="name of an environment variable holding the password")
    user.add_argument("--admin", action="store_true", help="add: an administrator (reaches everything)")
    user.add_argument("--destination", help="grant/revoke: the destination")
    user.add_argument("--policy", help="grant: a policy (group of destinations) instead of a destination")
    user.add_argument(
        "--ops", help="grant: get,put,delete,dir,mkdir,rmdir,rename,size,mtime or all; operate makes an operator"
    )
    user.add_argument("--ssh-key", action="append", default=[], help="an OpenSSH public key file (SFTP login)")
    user.add_argument("--description")
    user.add_argument("--country", help="country code (event logs)")
    user.add_argument("--upload-quota", type=int, help="bytes per quota period; unset: no limit")
    user.add_argument("--download-quota", type=int, help="bytes per quota period; unset: no limit")
    user.add_argument("--quota-period", type=int, help="seconds of the rolling quota window (86400)")
    user.add_argument("--max-connections", type=int, help="sessions or requests at once")
    user.add_argument("--disable", action="store_true")
    user.add_argument("--enable", action="store_true")

    policy = sub.add_parser("policy", parents=[common], help="portal policies: named groups of destinations")
    policy.add_argument("action", choices=["add", "list"])
    policy.add_argument("name", nargs="?")
    policy.add_argument("--destination", action="append", help="a destination of the policy (repeat)")
    policy.add_argument("--comment")
    _proxy_parser(sub, common)
    return p


COMMANDS = {
    "push": cmd_push,
    "status": cmd_status,
    "destination": cmd_destination,
    "transfer": cmd_transfer,
    "host": cmd_host,
    "token": cmd_token,
    "stac": cmd_stac,
    "acquisition": cmd_acquisition,
    "register": cmd_register,
    "wait": cmd_wait,
    "product": cmd_product,
    "scheduler": cmd_scheduler,
    "user": cmd_user,
    "policy": cmd_policy,
    "proxy": cmd_proxy,
}


def main(argv: Sequence[str] | None = None, *, http: httpx.Client | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # bad usage (already said in one line) or --help
        return int(exc.code or 0)
    if args.command == "up":
        from api.up import run_embedded

        return run_embedded(data_dir=args.data_dir, prefect_api_url=args.prefect_api_url)
    if args.command == "deploy":
        return _deploy(args)
    if args.command == "migrate":
        return _migrate(args)
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
    try:
        client = PdsClient(
            args.url,
            user=os.environ.get("PDS_USER"),
            password=os.environ.get("PDS_PASSWORD"),
            token=os.environ.get("PDS_TOKEN"),
            http=http,
        )
        COMMANDS[args.command](client, args)
    except (ApiError, PdsError, OSError) as exc:
        message = str(exc).replace("\n", " ")
        print(json.dumps({"error": message}) if args.json else f"pds: error: {message}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """What an installation runs once before its API replicas start (they would race to migrate)."""
    from catalog.database import make_engine, migrate, session_scope
    from catalog.sealing import PREVIOUS_KEYS_VARIABLE, seal_stored_hosts
    from catalog.settings import Settings
    from catalog.users import ensure_user

    settings = Settings()
    engine = make_engine(settings.resolved_database_url())
    try:
        migrate(engine)
        with session_scope(engine) as session:
            ensure_user(session, settings.admin_user, settings.admin_password.get_secret_value(), is_admin=True)
            # hosts stored before PDS_HOST_SECRET_KEY was set, or sealed by a key being rotated out
            sealing = seal_stored_hosts(session)
    except Exception as exc:  # noqa: BLE001 — any failure is one line and a non-zero exit
        print(f"pds: error: migration failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if sealing.unreadable:  # the database is migrated; those hosts refuse to connect until the key is given
        print(
            f"pds: warning: credentials of host(s) {', '.join(sealing.unreadable)} were sealed by a key this"
            f" process was not given: put the old key in {PREVIOUS_KEYS_VARIABLE} and run pds migrate again",
            file=sys.stderr,
        )
    _print(
        args,
        {"database": "migrated", "hosts_sealed": sealing.changed, "hosts_unreadable": sealing.unreadable},
        "database migrated"
        + (f"; credentials of {sealing.changed} host(s) sealed under the current key" if sealing.changed else ""),
    )
    return 0


def _deploy(args: argparse.Namespace) -> int:
    import httpx

    from api.deployments import DeploymentError, register

    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        print("pds: error: set PREFECT_API_URL to the Prefect server's API (http://host:4200/api)", file=sys.stderr)
        return 2
    try:
        pools = register(url, pause_schedules=args.pause_schedules)
    except (DeploymentError, httpx.HTTPError) as exc:
        print(f"pds: error: {exc}", file=sys.stderr)
        return 1
    _print(args, {"work_pools": pools}, f"deployments registered; work pools: {', '.join(pools)}")
    return 0


def entry() -> None:
    """Kept for installations whose `pds` script still names it; `api.command.entry` is the script now."""
    from api.command import entry as command_entry

    command_entry()

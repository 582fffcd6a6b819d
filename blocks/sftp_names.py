"""SFTP directory listings read straight off the wire, with asyncssh and the standard library only.

Kept apart from `blocks.listing` so that a listing process (`blocks.sftp_lister`) can use it without
importing Prefect or the catalog: starting such a process must cost a fraction of a second.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

SftpName = tuple[str, int | None, int | None, int | None]
"""(name, size, permissions, modification time in epoch seconds) of one entry of an SFTP listing."""


async def sftp_scandir(channel: Any, directory: str) -> AsyncIterator[SftpName]:
    """asyncssh's own `scandir`, for servers speaking an SFTP version other than 3."""
    async for item in channel.scandir(directory):
        attrs = item.attrs
        yield item.filename, attrs.size, attrs.permissions, attrs.mtime


def lean_readdir_works(channel: Any) -> bool:
    """Whether `sftp_v3_names` can run on this asyncssh channel: SFTP version 3 (OpenSSH's, and
    what nearly every server speaks) and the request plumbing it borrows from asyncssh."""
    handler = getattr(channel, "_handler", None)
    return (
        getattr(handler, "version", None) == 3
        and callable(getattr(handler, "_send_request", None))
        and callable(getattr(handler, "_process_status", None))
    )


_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS, _ATTR_ACMODTIME, _ATTR_EXTENDED = 0x1, 0x2, 0x4, 0x8, 0x80000000


async def sftp_v3_names(channel: Any, directory: str) -> AsyncIterator[SftpName]:
    """A directory's entries by `READDIR` requests whose `NAME` answers are decoded here.

    asyncssh builds an `SFTPName` and an `SFTPAttrs` object per entry and logs each one: about 20 µs
    an entry, two seconds of CPU for a directory of 100,000 files, longer than the server takes
    to answer. Here only the name, size, permissions and modification time are read, straight
    from the packet (SFTP version 3, draft-ietf-secsh-filexfer-02 section 7), at about 2 µs an
    entry. Requests go through asyncssh's handler, so its errors and connection handling stay.
    """
    import asyncssh
    from asyncssh.constants import FXP_READDIR, FXP_STATUS
    from asyncssh.packet import String

    handler = channel._handler
    handle = await handler.opendir(channel.compose_path(directory))
    try:
        while True:
            waiter = handler._loop.create_future()
            handler._send_request(FXP_READDIR, [String(handle)], waiter)
            kind, packet = await waiter
            if kind == FXP_STATUS:
                try:
                    handler._process_status(packet)  # raises the server's error, or SFTPEOFError at the end
                except asyncssh.SFTPEOFError:
                    return
                raise asyncssh.SFTPBadMessage("READDIR answered with a status of success")
            try:
                names = v3_names(packet.get_remaining_payload())
            except struct.error as exc:  # a truncated or garbled packet: the server's fault, said as asyncssh would
                raise asyncssh.SFTPBadMessage(f"bad READDIR answer: {exc}") from exc
            for name, size, permissions, mtime in names:
                yield channel.decode(name), size, permissions, mtime
    finally:
        with contextlib.suppress(asyncssh.SFTPError):
            await handler.close(handle)


def v3_names(payload: bytes) -> list[tuple[bytes, int | None, int | None, int | None]]:
    """The entries of an SFTP version 3 `NAME` packet (after its type and request id): count, then per
    entry filename, longname and attributes, each attribute present when its flag is set. Raises
    struct.error when the packet ends before its entries do."""
    u32, u64 = _U32.unpack_from, _U64.unpack_from
    (count,) = u32(payload, 0)
    at = 4
    names = []
    for _ in range(count):
        (length,) = u32(payload, at)
        name = payload[at + 4 : at + 4 + length]
        at += 4 + length
        (length,) = u32(payload, at)
        at += 4 + length  # longname: `ls -l` text, not needed
        (flags,) = u32(payload, at)
        at += 4
        size = permissions = mtime = None
        if flags & _ATTR_SIZE:
            (size,) = u64(payload, at)
            at += 8
        if flags & _ATTR_UIDGID:
            at += 8
        if flags & _ATTR_PERMISSIONS:
            (permissions,) = u32(payload, at)
            at += 4
        if flags & _ATTR_ACMODTIME:
            (mtime,) = u32(payload, at + 4)  # after atime
            at += 8
        if flags & _ATTR_EXTENDED:
            (pairs,) = u32(payload, at)
            at += 4
            for _ in range(2 * pairs):  # type and data strings
                (length,) = u32(payload, at)
                at += 4 + length
        names.append((name, size, permissions, mtime))
    if at > len(payload):
        raise struct.error("NAME packet shorter than its entries")
    return names

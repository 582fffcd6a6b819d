"""Protocol name → host block class, imported lazily so a missing backend fails only where used."""

from __future__ import annotations

import importlib

from blocks.base import HostBlock
from catalog.errors import InvalidInput
from catalog.models import Host

#: Transfer modules: protocol → "module:Class". A new protocol is one line here and one module.
PROTOCOLS: dict[str, str] = {
    "file": "blocks.local:LocalHost",
    "sftp": "blocks.sftp:SftpHost",
    "s3": "blocks.s3:S3Host",
    "ftp": "blocks.ftp:FtpHost",
}


def known_protocols() -> frozenset[str]:
    return frozenset(PROTOCOLS)


def block_class(protocol: str) -> type[HostBlock]:
    try:
        module_name, class_name = PROTOCOLS[protocol].split(":")
    except KeyError:
        raise InvalidInput(f"unknown protocol {protocol!r}; known: {', '.join(sorted(PROTOCOLS))}") from None
    cls: type[HostBlock] = getattr(importlib.import_module(module_name), class_name)
    return cls


def block_for(host: Host) -> HostBlock:
    """The block that connects to `host`."""
    return block_class(host.protocol).from_host(host)

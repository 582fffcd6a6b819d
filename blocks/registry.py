"""Protocol name → host block class, imported lazily so a missing backend fails only where used.

Other packages add transfer modules through the entry-point group `pds.transfer_modules`
(`myproto = "mypackage.blocks:MyHost"`), the way fsspec backends register themselves.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from blocks.base import HostBlock
from catalog.errors import InvalidInput
from catalog.models import Host

ENTRY_POINT_GROUP = "pds.transfer_modules"

#: Built-in transfer modules: protocol → "module:Class". A new protocol is one line here and one module.
BUILTIN: dict[str, str] = {
    "file": "blocks.local:LocalHost",
    "sftp": "blocks.sftp:SftpHost",
    "s3": "blocks.s3:S3Host",
    "ftp": "blocks.ftp:FtpHost",
    "azure": "blocks.azure:AzureBlobHost",
    "gcs": "blocks.gcs:GcsHost",
    "http": "blocks.http:HttpHost",
    "https": "blocks.http:HttpsHost",
    "webdav": "blocks.http:WebdavHost",
}

#: The distribution that provides each backend, named in the error when its import fails.
PROVIDED_BY: dict[str, str] = {
    "sftp": "sshfs",
    "s3": "s3fs",
    "ftp": "fsspec",
    "azure": "adlfs",
    "gcs": "gcsfs",
    "http": "httpx",
    "https": "httpx",
    "webdav": "httpx",
}


@cache
def protocols() -> dict[str, str]:
    """Built-in modules plus those other installed packages register (built-ins win a name clash)."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return found | BUILTIN


def known_protocols() -> frozenset[str]:
    return frozenset(protocols())


def block_class(protocol: str) -> type[HostBlock]:
    try:
        module_name, class_name = protocols()[protocol].split(":")
    except KeyError:
        known = ", ".join(sorted(protocols()))
        raise InvalidInput(f"unknown protocol {protocol!r}; known: {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = PROVIDED_BY.get(protocol, exc.name or module_name)
        raise InvalidInput(
            f"protocol {protocol!r} needs {package}, which cannot be imported ({exc}); "
            f"install it: pip install {package}"
        ) from exc
    cls = getattr(module, class_name)
    if not (isinstance(cls, type) and issubclass(cls, HostBlock)):
        raise InvalidInput(f"transfer module {protocols()[protocol]} is not a HostBlock")
    return cls


def block_for(host: Host) -> HostBlock:
    """The block that connects to `host`."""
    return block_class(host.protocol).from_host(host)

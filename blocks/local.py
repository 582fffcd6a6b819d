"""A directory on a filesystem the mover can see (local disk, NFS, a mounted share)."""

from __future__ import annotations

from typing import ClassVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from blocks.base import HostBlock


class LocalHost(HostBlock):
    """`address` is the absolute directory files land under."""

    _block_type_name = "pds Local Host"
    protocol: ClassVar[str] = "file"
    supports_rename: ClassVar[bool] = True
    supports_resume: ClassVar[bool] = True
    supports_server_side_copy: ClassVar[bool] = True

    def filesystem(self) -> fsspec.AbstractFileSystem:
        return LocalFileSystem(auto_mkdir=True)

    def base_path(self) -> str:
        return self.address or "/"

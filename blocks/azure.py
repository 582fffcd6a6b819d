"""Azure Blob Storage (and Azurite) through adlfs.

`address` is the blob endpoint URL of the account (`https://ACCOUNT.blob.core.windows.net`, or
Azurite's `http://127.0.0.1:10000/devstoreaccount1`); empty means Azure proper, at the endpoint of
`login` or `options.account_name`. `directory` starts with the container
(`container/prefix/$destination`). Credentials: `login`/`password` as account name/account key, or
`options.secret_sas_token`, a shared access signature (a container SAS needs read, write, delete,
list, add and create). Options: `account_name`, `secret_sas_token`, `part_size` (bytes per staged
block; memory per upload is about one block), `retries` (times the Azure SDK repeats a failed
request, 3 by default, with back-offs of seconds; a refused connection is repeated only once, so an
unreachable host fails over quickly), `timeout` (seconds to wait for an answer, 60).
"""

from __future__ import annotations

from typing import Any, ClassVar

import fsspec
from adlfs import AzureBlobFileSystem
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry

from blocks.base import HostBlock
from catalog.errors import FailOverToNextHost, FailTransfer, InvalidInput, TransferError

DEFAULT_PART_SIZE = 16 * 1024 * 1024
_AUTH_CODES = {
    "AuthenticationFailed",
    "AuthorizationFailure",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "InsufficientAccountPermissions",
    "AccountIsDisabled",
    "ContainerBeingDeleted",
    "ContainerDisabled",
}
_CONNECT_ERRORS = ("connection refused", "cannot connect to host", "name or service not known", "nodename nor servname")


class _BlobFileSystem(AzureBlobFileSystem):  # type: ignore[misc]
    """adlfs with a service client built here: any endpoint URL (http or https, with a path, as
    Azurite's), and a retry policy with back-offs of seconds rather than the SDK's 15 s and more."""

    def __init__(self, *, account_url: str, service_credential: Any, service_kwargs: dict[str, Any], **kwargs: Any):
        self._account_url = account_url
        self._service_credential = service_credential
        self._service_kwargs = service_kwargs
        super().__init__(**kwargs)

    def do_connect(self) -> None:
        self.account_url = self._account_url
        self.service_client = BlobServiceClient(
            account_url=self._account_url, credential=self._service_credential, **self._service_kwargs
        )


class AzureBlobHost(HostBlock):
    """Blobs appear only when their block list is committed, so no temporary name is needed."""

    _block_type_name = "pds Azure Blob Host"
    protocol: ClassVar[str] = "azure"
    has_directories: ClassVar[bool] = False
    # adlfs always uploads staged blocks and commits a block list, for which Azure stores no
    # Content-MD5 (it computes one only for a single Put Blob), so there is no MD5 to verify.
    reports_md5: ClassVar[bool] = False

    def account_name(self) -> str:
        return str(self.options.get("account_name") or self.login)

    def account_url(self) -> str:
        if not self.address:
            return f"https://{self.account_name()}.blob.core.windows.net"
        address = self.address.rstrip("/")
        return address if "://" in address else f"https://{address}"

    def _credential(self) -> Any:
        sas = str(self.options.get("secret_sas_token") or "").lstrip("?")
        if sas:
            return sas
        key = self.password.get_secret_value()
        if key:
            return {"account_name": self.account_name(), "account_key": key}
        return None  # anonymous: a public container

    def filesystem(self) -> fsspec.AbstractFileSystem:
        credential = self._credential()
        retries = int(self.options.get("retries", 3))
        service_kwargs: dict[str, Any] = {
            "retry_policy": ExponentialRetry(
                initial_backoff=1,
                increment_base=2,
                retry_total=retries,
                retry_connect=min(retries, 1),
                random_jitter_range=1,
            ),
            "connection_timeout": min(30.0, float(self.options.get("timeout", 60))),
            "read_timeout": float(self.options.get("timeout", 60)),
        }
        return _BlobFileSystem(
            account_url=self.account_url(),
            service_credential=credential,
            service_kwargs=service_kwargs,
            account_name=self.account_name() or None,
            # adlfs only needs to know a credential exists (else it looks for Azure AD ones)
            sas_token=credential if isinstance(credential, str) else None,
            account_key=credential["account_key"] if isinstance(credential, dict) else None,
            anon=credential is None,
            blocksize=int(self.options.get("part_size", DEFAULT_PART_SIZE)),
            skip_instance_cache=True,
        )

    def check(self) -> None:
        super().check()
        if not self.directory.strip("/"):
            raise InvalidInput(f"host {self.name}: the directory must start with the container name")
        if not self.account_name() and (not self.address or self.password.get_secret_value()):
            raise InvalidInput(f"host {self.name}: give the storage account name (login or options.account_name)")
        if self.password.get_secret_value() and self.options.get("secret_sas_token"):
            raise InvalidInput(f"host {self.name}: give either the account key (password) or a SAS token, not both")

    def classify(self, exc: BaseException) -> TransferError:
        if isinstance(exc, TransferError):
            return exc
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
        )

        # adlfs wraps SDK errors (RuntimeError "Failed to upload block", FileNotFoundError, ValueError)
        chain: list[BaseException] = []
        current: BaseException | None = exc
        while current is not None and current not in chain:
            chain.append(current)
            current = current.__cause__ or current.__context__
        for error in chain:
            message = f"{type(error).__name__}: {error}".split("\n", 1)[0]
            code = getattr(error, "error_code", None)
            code = getattr(code, "value", code)  # a StorageErrorCode member, or the plain string
            if isinstance(error, ClientAuthenticationError) or code in _AUTH_CODES:
                return FailTransfer(f"host {self.name} refused the request ({code or 'authentication'}): {message}")
            if isinstance(error, HttpResponseError) and error.status_code in {401, 403}:
                return FailTransfer(f"host {self.name} refused the request ({error.status_code}): {message}")
            if isinstance(error, ResourceNotFoundError) and code == "ContainerNotFound":
                return FailTransfer(f"host {self.name} has no such container: {message}")
            if isinstance(error, ServiceRequestError) and any(s in str(error).lower() for s in _CONNECT_ERRORS):
                return FailOverToNextHost(f"cannot reach host {self.name}: {message}")
        return super().classify(exc)

"""The FTP/FTPS server process the tests run: `python -m tests.servers.ftp_server PORT ROOT USER PASSWORD MODE [CERT]`.

MODE is `plain`, `explicit` (AUTH TLS on the normal port) or `implicit` (TLS from the first byte).
TLS is capped at 1.2: with TLS 1.3 pyftpdlib silently truncated some uploads (its issue #602).
"""

from __future__ import annotations

import sys

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer


class ImplicitTLSHandler(TLS_FTPHandler):
    """TLS before the banner, as implicit FTPS clients (port 990 style) expect."""

    _greeted = False

    def handle(self) -> None:
        self.secure_connection(self.ssl_context)

    def handle_ssl_established(self) -> None:
        if not self._greeted:
            self._greeted = True
            TLS_FTPHandler.handle(self)


def main() -> None:
    port, root, user, password, mode = sys.argv[1:6]
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    authorizer.add_user("reader", password, root, perm="elr")  # may list and read, never write
    handler: type[FTPHandler] = FTPHandler
    if mode in {"explicit", "implicit"}:
        handler = ImplicitTLSHandler if mode == "implicit" else TLS_FTPHandler
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.set_max_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate_chain_file(sys.argv[6])
        context.use_privatekey_file(sys.argv[6])
        handler.ssl_context = context
        handler.tls_control_required = True
        handler.tls_data_required = True
    handler.authorizer = authorizer
    handler.permit_foreign_addresses = True
    server = FTPServer(("127.0.0.1", int(port)), handler)
    server.max_cons = 256
    server.serve_forever()


if __name__ == "__main__":
    main()

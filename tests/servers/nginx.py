"""nginx as a process: a real WebDAV server (PUT, MKCOL, MOVE, COPY, DELETE, PROPFIND) behind Basic auth.

Debian's nginx with its dav module, plus `libnginx-mod-http-dav-ext` for PROPFIND (listings); the
autoindex is on as well, for clients that list from the HTML index instead.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import httpx

from tests.servers._common import (
    IS_ROOT,
    Server,
    free_port,
    require,
    self_signed_certificate,
    spawn,
    terminate,
    wait_until,
)

DAV_EXT_MODULE = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")

CONFIG = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {log} info;
load_module {dav_ext};

events {{
    worker_connections 128;
}}

http {{
    access_log {root}/access.log;
    default_type application/octet-stream;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;

    server {{
        listen {host}:{port}{ssl};
        root {www};{certificate}

        location / {{
            auth_basic "pds";
            auth_basic_user_file {root}/htpasswd;
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
            client_max_body_size 0;
            autoindex on;
        }}

        location ~ /rounded/ {{  # an index with rounded sizes ("23M"), as many sites configure it
            auth_basic "pds";
            auth_basic_user_file {root}/htpasswd;
            autoindex on;
            autoindex_exact_size off;
        }}
    }}
}}
"""


class NginxServer(Server):
    """`nginx -c CFG -p PREFIX -g 'daemon off;'` serving `root_dir/www` over WebDAV with Basic auth.

    Attributes: `base_url` (no trailing slash), `username`, `password`, `www_dir`; with `tls=True` the
    server speaks HTTPS with a self-signed certificate for 127.0.0.1 at `cert_path` (its own CA).
    """

    username = "pds"
    password = "secret"

    def __init__(self, root_dir: Path | None = None, *, tls: bool = False) -> None:
        self._own_root = root_dir is None
        self.root = Path(tempfile.mkdtemp(prefix="pds-nginx-")) if root_dir is None else Path(root_dir)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.base_url = f"{'https' if tls else 'http'}://{self.host}:{self.port}"
        self.cert_path = self.root / "cert.pem"
        self.key_path = self.root / "key.pem"
        self.www_dir = self.root / "www"
        self.config_path = self.root / "nginx.conf"
        self.log = self.root / "nginx.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        for sub in ("www", "temp/body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        digest = base64.b64encode(hashlib.sha1(self.password.encode()).digest()).decode()  # noqa: S324 — nginx's {SHA}
        (self.root / "htpasswd").write_text(f"{self.username}:{{SHA}}{digest}\n")
        if self.tls:
            self_signed_certificate(self.cert_path, self.key_path)
        certificate = ""
        if self.tls:
            certificate = f"\n        ssl_certificate {self.cert_path};\n        ssl_certificate_key {self.key_path};"
        self.config_path.write_text(
            CONFIG.format(
                user="user root;" if IS_ROOT else "",
                root=self.root,
                www=self.www_dir,
                host=self.host,
                port=self.port,
                dav_ext=DAV_EXT_MODULE,
                log=self.log,
                ssl=" ssl" if self.tls else "",
                certificate=certificate,
            )
        )

    def start(self) -> Self:
        if self.process is not None:
            return self
        binary = require("nginx", "nginx")
        if not DAV_EXT_MODULE.exists():
            raise RuntimeError(f"{DAV_EXT_MODULE} not found: install libnginx-mod-http-dav-ext")
        self._write_config()
        command = [binary, "-c", str(self.config_path), "-p", str(self.root), "-e", str(self.log), "-g", "daemon off;"]
        self.process = spawn(command, self.log)
        try:
            verify = ssl.create_default_context(cafile=self.cert_path) if self.tls else True
            with httpx.Client(trust_env=False, timeout=2, verify=verify) as http:  # no proxy for 127.0.0.1
                ready = lambda: http.get(f"{self.base_url}/", auth=(self.username, self.password)).status_code == 200  # noqa: E731
                wait_until(ready, 30, "nginx", log=self.log, process=self.process)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

#!/usr/bin/env bash
# System packages the tests need: OpenSSH (sftp-server), PostgreSQL, openssl (FTPS certificates) and
# Node.js with npm (Azurite), Mosquitto (MQTT), Chromium and its WebDriver (the monitor's browser test).
# The tests install Azurite from npm once into ~/.cache/pds-test-servers.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/nginx ] && ls /usr/lib/nginx/modules/ngx_http_dav_ext_module.so >/dev/null 2>&1 \
  || need+=(nginx libnginx-mod-http-dav-ext)  # WebDAV server for the HTTP hosts
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # Azurite, the Azure Blob emulator
[ -x /usr/sbin/mosquitto ] || need+=(mosquitto)  # MQTT broker for notifications
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # Prefect's messaging in the production topology
command -v ip >/dev/null 2>&1 || need+=(iproute2)  # network namespaces of the production topology
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 \
  || need+=(chromium chromium-driver)  # headless browser for the monitor pages (Selenium)
command -v lftp >/dev/null 2>&1 || need+=(lftp)  # an FTP/FTPS client for the Data Portal tests
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v wget >/dev/null 2>&1 || need+=(wget)
command -v sftp >/dev/null 2>&1 || need+=(openssh-client)
command -v wrk >/dev/null 2>&1 || need+=(wrk)  # HTTP load generator of tests/benchmarks/proxy.py
command -v curl >/dev/null 2>&1 || need+=(curl)  # a real client of the data proxy
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

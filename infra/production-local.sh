#!/usr/bin/env bash
# pds's production topology on this machine, as processes in network namespaces (no containers):
#   sudo infra/production-local.sh up       # PostgreSQL, Redis, 2 Prefect APIs + services, 2 pds APIs
#                                          # behind nginx, portals, Mosquitto, workers of both pools, sites
#   sudo infra/production-local.sh status
#   sudo infra/production-local.sh down     # stops everything and removes the namespaces
# PDS_TOPOLOGY_DIR sets where data, logs and configuration go (default /var/lib/pds-topology).
# See docs/operations/production-topology.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "up" ]; then
  bash infra/test-deps.sh        # PostgreSQL, Redis, nginx, Mosquitto, OpenSSH, iproute2
  bash infra/install.sh test     # pds with prefect-redis and pyftpdlib
fi
exec .venv/bin/python infra/topology.py "$@"

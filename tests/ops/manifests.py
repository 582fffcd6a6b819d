"""The production manifests read as containers: what each one runs, with which environment, ports and
mounts, resolved the way Kubernetes and Docker Compose resolve them (ConfigMaps, Secrets, the image's
ENV, compose's `${VAR:-default}` with the values of `env.example`), and the production topology's
declared processes (`infra/topology.py`) they are checked against."""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
COMPOSE_ENV = ROOT / "infra" / "compose" / "env.example"
KUBERNETES = ROOT / "infra" / "k8s" / "pds.yaml"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
TOPOLOGY = ROOT / "infra" / "topology.py"


@dataclass
class Container:
    """One container of a manifest (a Kubernetes Pod's container or a compose service)."""

    manifest: str  # "kubernetes" or "compose"
    workload: str  # the Deployment, StatefulSet or Job; the compose service
    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    ports: set[int] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    one_shot: bool = False  # a Job, or a compose service others wait to complete

    @property
    def pds_image(self) -> bool:
        return self.image.startswith("pds:")


def compose_services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def kubernetes_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]


def pod_specs() -> dict[str, dict]:
    specs = {}
    for document in kubernetes_documents():
        if document["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[document["metadata"]["name"]] = document["spec"]["template"]
    return specs


def image_env() -> dict[str, str]:
    """The ENV of the pds image (infra/docker/Dockerfile), which every container of it starts with."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env |= dict(word.split("=", 1) for word in line.split()[1:])
    return env


def kubernetes_containers() -> list[Container]:
    documents = kubernetes_documents()
    data = {
        (d["kind"], d["metadata"]["name"]): d.get("data") or d.get("stringData") or {}
        for d in documents
        if d["kind"] in ("ConfigMap", "Secret")
    }
    out = []
    for document in documents:
        if document["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = document["spec"]["template"]["spec"]
        for c in spec["containers"]:
            env = image_env() if c["image"].startswith("pds:") else {}
            for source in c.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", source["configMapRef"])
                    if "configMapRef" in source
                    else ("Secret", source["secretRef"])
                )
                env |= data[(kind, ref["name"])]
            for variable in c.get("env", []):
                if "value" in variable:
                    env[variable["name"]] = str(variable["value"])
                else:
                    ref = variable["valueFrom"]["secretKeyRef"]
                    env[variable["name"]] = data[("Secret", ref["name"])][ref["key"]]
            out.append(
                Container(
                    "kubernetes",
                    document["metadata"]["name"],
                    c["name"],
                    c["image"],
                    c.get("command", []),
                    env,
                    {p["containerPort"] for p in c.get("ports", [])},
                    {m["mountPath"] for m in c.get("volumeMounts", [])},
                    one_shot=document["kind"] == "Job",
                )
            )
    return out


def compose_value(value: Any) -> str:
    """A compose value with `${VAR}` and `${VAR:-default}` replaced as `docker compose --env-file
    env.example` replaces them."""
    defaults = dict(
        line.split("=", 1) for line in COMPOSE_ENV.read_text().splitlines() if line and not line.startswith("#")
    )

    def substitute(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return defaults.get(name) or default

    return re.sub(r"\$\{([^}]+)\}", substitute, str(value))


def compose_containers() -> list[Container]:
    services = compose_services()
    waited_for = {
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, condition in service["depends_on"].items()
        if condition.get("condition") == "service_completed_successfully"
    }
    out = []
    for name, service in services.items():
        env = image_env() if service["image"].startswith("pds:") else {}
        env |= {k: compose_value(v) for k, v in (service.get("environment") or {}).items()}
        ports = set()
        for published in service.get("ports", []):
            inside = str(published).rsplit(":", 1)[-1]
            first, _, last = inside.partition("-")
            ports |= set(range(int(first), int(last or first) + 1))
        mounts = {str(v).split(":")[1] for v in service.get("volumes", [])}
        command = service.get("command", [])
        out.append(
            Container("compose", name, name, service["image"], command, env, ports, mounts, one_shot=name in waited_for)
        )
    return out


@cache
def topology() -> ModuleType:
    """`infra/topology.py`, the declared processes of the production topology (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("pds_topology", TOPOLOGY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def process_env(process: Any) -> dict[str, str]:
    """The environment the topology gives `process`: its groups', then its own."""
    env: dict[str, str] = {}
    for group in process.env_groups:
        env |= topology().ENV_GROUPS[group]
    return env | dict(process.env)


def process_command(process: Any) -> list[str]:
    """The process's command with the topology's interpreter placeholders as an image names them."""
    names = {"{python}": "python", "{prefect}": "prefect"}
    return [names.get(word, word) for word in process.command]


def counterpart(process: Any, containers: list[Container]) -> Container | None:
    """The container of a manifest that runs `process`: the workload its `manifest` names (the
    container of the process's name when the Pod has several), or the compose service of the
    process's own name."""
    for container in containers:
        if container.workload == process.manifest and (
            container.name == process.name or sum(c.workload == process.manifest for c in containers) == 1
        ):
            return container
    return next((c for c in containers if c.workload == process.name), None)

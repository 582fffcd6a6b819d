"""The production manifests (no Docker engine or cluster here): every Kubernetes document is valid
against the Kubernetes OpenAPI schemas of a pinned version and the compose file against the Compose
Specification's JSON schema; every command a pds image runs is a real `pds` sub-command, Python module
or Prefect command, every PDS_ setting they set exists, Services select Pods that exist, and the
Dockerfile copies what the image needs."""

from __future__ import annotations

import importlib.resources
import importlib.util
import inspect
import json
import subprocess
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import prefect_redis.client
import prefect_redis.messaging
import pytest
import yaml
from prefect.settings.base import PrefectBaseSettings
from prefect.settings.legacy import _get_valid_setting_names
from prefect.settings.models.root import Settings as PrefectSettings

from api.cli import parser
from api.deployments import work_pools
from catalog.settings import Settings
from tests.ops.manifests import (
    COMPOSE,
    DOCKERFILE,
    Container,
    compose_containers,
    compose_services,
    counterpart,
    kubernetes_containers,
    kubernetes_documents,
    pod_specs,
    process_command,
    process_env,
    topology,
)
from tests.servers._common import venv_bin

#: The Kubernetes release whose OpenAPI schemas the manifests must satisfy (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.34.0"


def pds_commands() -> list[list[str]]:
    """Commands of every container that runs the pds image."""
    commands = [s["command"] for s in compose_services().values() if s["image"].startswith("pds:")]
    for template in pod_specs().values():
        commands += [c["command"] for c in template["spec"]["containers"] if c["image"].startswith("pds:")]
    return commands


def pds_subcommands() -> set[str]:
    (subparsers,) = [a for a in parser()._actions if a.dest == "command"]
    return set(subparsers.choices)


PREFECT_COMMANDS = {
    ("server", "start"),
    ("server", "services", "start"),
    ("server", "database", "upgrade"),
    ("worker", "start"),
}


def compose_schema() -> dict:
    """The Compose Specification's JSON schema, as check-jsonschema (pinned in pyproject.toml) vendors it."""
    schemas = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(schemas.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def schema_errors(validator: jsonschema.protocols.Validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_file_follows_the_compose_specification():
    schema = compose_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    assert schema_errors(validator, yaml.safe_load(COMPOSE.read_text())) == []
    # The schema is strict enough to catch what a typo makes: an unknown key, a wrong condition.
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["redis"]["healthcheck"]["interva"] = "5s"
    broken["services"]["pds-api"]["depends_on"]["pds-migrate"]["condition"] = "service_finished"
    errors = schema_errors(validator, broken)
    assert any("interva" in e for e in errors) and any("pds-api/depends_on" in e for e in errors), errors


@pytest.mark.parametrize("document", kubernetes_documents(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}")
def test_every_kubernetes_document_follows_the_kubernetes_schemas(document):
    # strict: a field the schema does not know (a misspelt `command`, a misplaced `ports`) is an error,
    # as `kubectl apply --validate=strict` makes it.
    assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION[:4]


def test_the_kubernetes_validation_catches_a_misspelt_field():
    deployment = next(d for d in kubernetes_documents() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["pds"]
    with pytest.raises(kubernetes_validate.ValidationError, match="comand"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_every_pds_container_runs_a_real_command():
    commands = pds_commands()
    assert len(commands) >= 14
    prefect_seen = set()
    for command in commands:
        program, *args = command
        if program == "pds":
            assert args[0] in pds_subcommands(), command
        elif program == "python":
            assert args[0] == "-m", command
            spec = importlib.util.find_spec(args[1])
            assert spec is not None, command
            if spec.submodule_search_locations is not None:  # a package runs its __main__
                assert importlib.util.find_spec(f"{args[1]}.__main__"), command
        elif program == "prefect":
            words = tuple(a for a in args if not a.startswith("-"))
            assert any(words[: len(p)] == p for p in PREFECT_COMMANDS), command
            prefect_seen.add(next(p for p in PREFECT_COMMANDS if words[: len(p)] == p))
        else:
            pytest.fail(f"unknown program in {command}")
    assert prefect_seen == PREFECT_COMMANDS


@pytest.mark.parametrize("words", sorted(PREFECT_COMMANDS))
def test_the_prefect_commands_and_their_options_exist(words):
    options = {
        ("server", "start"): ["--host", "--port", "--no-services"],
        ("worker", "start"): ["--pool", "--type"],
        ("server", "database", "upgrade"): ["-y"],
    }.get(words, [])
    done = subprocess.run(
        [venv_bin("prefect", "prefect"), *words, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    for option in options:
        assert option in done.stdout, f"prefect {' '.join(words)} has no {option}"


def test_workers_serve_the_work_pools_of_prefect_yaml():
    pools = set()
    for command in pds_commands():
        if command[:3] == ["prefect", "worker", "start"]:
            pools.add(command[command.index("--pool") + 1])
    assert pools == set(work_pools())


def test_pds_settings_in_the_manifests_exist():
    known = {f"PDS_{name.upper()}" for name in Settings.model_fields}
    names = set()
    for service in compose_services().values():
        names |= {k for k in service.get("environment", {}) if k.startswith("PDS_")}
    for document in kubernetes_documents():
        if document["kind"] in ("ConfigMap", "Secret"):
            values = document.get("data") or document.get("stringData") or {}
            names |= {k for k in values if k.startswith("PDS_")}
    for template in pod_specs().values():
        for container in template["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", []) if e["name"].startswith("PDS_")}
    assert names and names <= known, names - known


def test_kubernetes_services_select_pods_and_volumes_exist():
    labels = {name: spec.get("metadata", {}).get("labels", {}) for name, spec in pod_specs().items()}
    documents = kubernetes_documents()
    claims = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    maps = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    for document in documents:
        assert document["metadata"].get("namespace", "pds") == "pds"
        if document["kind"] == "Service":
            selector = document["spec"]["selector"]
            assert any(selector.items() <= pod.items() for pod in labels.values()), document["metadata"]["name"]
    for template in pod_specs().values():
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets


def test_compose_dependencies_and_files_exist():
    services = compose_services()
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                path = (COMPOSE.parent / source).resolve()
                assert path.exists() or path.name == "mosquitto-passwd", f"{name}: {source} is missing"


def test_the_dockerfile_copies_every_package_and_the_deployments():
    dockerfile = DOCKERFILE.read_text()
    for needed in ("catalog", "blocks", "tasks", "flows", "api", "prefect.yaml", "pyproject.toml"):
        assert f" {needed}" in dockerfile, needed
    assert '".[server]"' in dockerfile


# --- The manifests against the production topology (infra/topology.py) -----------------------------
# The topology starts every long-lived process of production as a process and proves it serves; these
# checks hold the manifests to what it runs: the same programs with options it uses, listening on the
# ports the Services and published ports name, with the settings it gives them, on the data volume.

BOTH = pytest.mark.parametrize("manifest", ["kubernetes", "compose"])

#: Variables the topology sets that a manifest does not need, and why.
TOPOLOGY_ONLY = {
    "PREFECT_HOME": "the topology's local state directory; a container has its own home",
    "PREFECT_LOGGING_LEVEL": "the topology keeps its logs quiet; production logs at Prefect's default",
    "PREFECT_SERVER_LOGGING_LEVEL": "as PREFECT_LOGGING_LEVEL",
    "PREFECT_UI_ENABLED": "the topology serves no UI; production does",
    "PREFECT_WORKER_QUERY_SECONDS": "the topology polls faster so that its runs start quickly in tests",
    "PREFECT_WORKER_PREFETCH_SECONDS": "as PREFECT_WORKER_QUERY_SECONDS",
    "PDS_API_PORT": "the topology's replicas share a machine; in a manifest each has its own (the port check)",
}


def manifest_containers(manifest: str) -> list[Container]:
    return kubernetes_containers() if manifest == "kubernetes" else compose_containers()


def long_lived(manifest: str) -> list[Container]:
    return [c for c in manifest_containers(manifest) if not c.one_shot and not c.image.startswith("nginx:")]


def listen_port(command: list[str], env: dict[str, str]) -> int | None:
    """The port a pds-image process listens on, worked out as the program works it out: Prefect's
    `--port`, else the pds setting of the module it runs (the environment's value or the default)."""
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    setting = {"api": "api_port", "api.portal_ftp": "portal_ftp_port", "api.portal_sftp": "portal_sftp_port"}
    if command[:2] == ["python", "-m"] and command[2] in setting:
        name = setting[command[2]]
        return int(env.get(f"PDS_{name.upper()}", Settings.model_fields[name].default))
    return None


def passive_ports(env: dict[str, str]) -> set[int]:
    """The FTP portal's passive data ports (`PDS_PORTAL_PASSIVE_PORTS`, `first-last`)."""
    first, _, last = env.get("PDS_PORTAL_PASSIVE_PORTS", "").partition("-")
    return set(range(int(first), int(last) + 1)) if first else set()


def test_every_long_lived_container_is_a_process_of_the_topology():
    processes = topology().PROCESSES
    for manifest in ("kubernetes", "compose"):
        containers = long_lived(manifest)
        runs = {id(counterpart(p, containers)) for p in processes}
        unproven = [f"{c.workload}/{c.name}" for c in containers if id(c) not in runs]
        assert not unproven, f"{manifest}: no process of the topology runs {unproven}"
    named = {p.manifest for p in processes if p.manifest and "(Service)" not in p.manifest}
    assert named <= {c.workload for c in kubernetes_containers()}, "a process names a workload that does not exist"


@BOTH
def test_each_container_runs_the_topologys_command_with_options_it_uses(manifest):
    containers = long_lived(manifest)
    for process in topology().PROCESSES:
        container = counterpart(process, containers)
        if container is None or not container.pds_image:
            continue  # PostgreSQL, Redis and Mosquitto run their images' own commands
        ours, theirs = container.command, process_command(process)
        words = [w for i, w in enumerate(ours) if not w.startswith("-") and (i == 0 or not ours[i - 1].startswith("-"))]
        assert theirs[: len(words)] == words, f"{manifest} {container.workload}: {ours} is not {theirs}"
        for i, word in enumerate(ours):
            if word.startswith("-"):
                assert word in theirs, f"{manifest} {container.workload}: the topology never runs {word}"
                value = ours[i + 1] if i + 1 < len(ours) and not ours[i + 1].startswith("-") else None
                if value is not None and word != "--port":  # the port: test_ports_are_the_ones_processes_listen_on
                    assert theirs[theirs.index(word) + 1] == value, f"{manifest} {container.workload}: {word} {value}"


def test_one_shot_commands_are_the_topologys_and_parse():
    """The jobs that run once before the servers: the database migrations of pds and of Prefect (the
    topology's `up` runs both before it starts a server) and the deployments' registration."""
    for manifest in ("kubernetes", "compose"):
        commands = {tuple(c.command) for c in manifest_containers(manifest) if c.one_shot}
        assert commands == {
            ("pds", "migrate"),
            ("pds", "deploy"),
            ("prefect", "server", "database", "upgrade", "-y"),
        }, manifest
        for program, *args in commands:
            if program == "pds":
                parser().parse_args(args)  # exits (a failure here) on an unknown command or option


@BOTH
def test_ports_are_the_ones_processes_listen_on(manifest):
    containers = long_lived(manifest)
    for process in topology().PROCESSES:
        container = counterpart(process, containers)
        if container is None or process.port is None:
            continue
        if not container.pds_image:  # the image's own default port, the one the topology starts it on
            if manifest == "compose" and not container.ports:
                continue  # not published: reached inside compose's network on the image's port
            assert container.ports == {process.port}, f"{manifest} {container.workload}: {container.ports}"
            continue
        # The same reckoning gives the topology's port for its process, so it reads the right setting.
        assert listen_port(process_command(process), process_env(process)) == process.port, process.name
        port = listen_port(container.command, container.env)
        if passive := passive_ports(container.env):  # published all or none, and nothing else
            assert container.ports - {port} in (set(), passive), container.ports
        if manifest == "kubernetes" or container.ports:
            assert port in container.ports, f"{manifest} {container.workload}: listens on {port}, {container.ports}"


def test_kubernetes_services_route_to_listening_ports():
    containers = kubernetes_containers()
    labels = {name: spec.get("metadata", {}).get("labels", {}) for name, spec in pod_specs().items()}
    for document in kubernetes_documents():
        if document["kind"] != "Service":
            continue
        pods = {name for name, pod in labels.items() if document["spec"]["selector"].items() <= pod.items()}
        listening = set()
        for c in containers:
            if c.workload in pods:
                listening |= c.ports | passive_ports(c.env)
        for port in document["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in listening, f"Service {document['metadata']['name']}: nothing listens on {target}"


def service_ports(manifest: str) -> dict[str, set[int]]:
    """What each name a URL can use reaches: a Service's ports, or a compose service's listening
    ports (nginx's from its configuration)."""
    if manifest == "kubernetes":
        return {
            d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
            for d in kubernetes_documents()
            if d["kind"] == "Service"
        }
    out = {}
    for c in manifest_containers("compose"):
        out[c.workload] = set(c.ports)
        if c.pds_image and (port := listen_port(c.command, c.env)):
            out[c.workload].add(port)
    balancer = yaml.safe_load(COMPOSE.read_text())["configs"]["prefect-balancer"]["content"]
    out["prefect"] = {int(p) for p in __import__("re").findall(r"listen (\d+);", balancer)}
    out["postgres"], out["redis"], out["mosquitto"] = {5432}, {6379}, {1883}  # their images' defaults
    return out


URL_VARIABLES = ("PDS_DATABASE_URL", "PDS_MQTT_URL", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL")


@BOTH
def test_urls_name_services_and_ports_that_exist(manifest):
    reachable = service_ports(manifest)
    topology_ports = {
        name: urlsplit(value).port for group in topology().ENV_GROUPS.values() for name, value in group.items()
    }
    seen = set()
    for container in manifest_containers(manifest):
        for name in URL_VARIABLES:
            if name not in container.env:
                continue
            url = urlsplit(container.env[name])
            assert url.hostname in reachable, f"{manifest} {container.workload}: {name} names {url.hostname}"
            assert url.port in reachable[url.hostname], f"{manifest} {container.workload}: {name} port {url.port}"
            assert url.port == topology_ports[name], f"{manifest}: {name} on {url.port}, the topology's on another"
            seen.add(name)
    assert seen == set(URL_VARIABLES)


def prefect_setting_names() -> set[str]:
    """Every PREFECT_ variable Prefect reads, and those of prefect-redis (the image's server extra)."""
    # Prefect's own list of valid names: `prefect config set` refuses a name that is not in it.
    names = set(_get_valid_setting_names(PrefectSettings))
    for module in (prefect_redis.client, prefect_redis.messaging):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, PrefectBaseSettings) and cls.model_config.get("env_prefix"):
                names |= {f"{cls.model_config['env_prefix']}{f}".upper() for f in cls.model_fields}
    return names


def test_prefect_settings_in_the_manifests_exist():
    known = prefect_setting_names()
    assert "PREFECT_REDIS_MESSAGING_HOST" in known and "PREFECT_API_URL" in known
    names = {n for m in ("kubernetes", "compose") for c in manifest_containers(m) for n in c.env}
    prefect = {n for n in names if n.startswith("PREFECT_")}
    assert prefect and prefect <= known, prefect - known


@BOTH
def test_containers_have_the_settings_the_topology_gives_their_processes(manifest):
    containers = long_lived(manifest)
    for process in topology().PROCESSES:
        container = counterpart(process, containers)
        if container is None:
            continue
        needed = {n for n in process_env(process) if n.startswith(("PDS_", "PREFECT_"))} - set(TOPOLOGY_ONLY)
        missing = needed - set(container.env)
        assert not missing, f"{manifest} {container.workload}/{container.name} lacks {sorted(missing)}"


@BOTH
def test_processes_that_keep_data_mount_the_data_directory(manifest):
    containers = long_lived(manifest)
    for process in topology().PROCESSES:
        container = counterpart(process, containers)
        if container is None or "data" not in process.directories:
            continue
        data_dir = container.env["PDS_DATA_DIR"]
        assert data_dir in container.mounts, f"{manifest} {container.workload}: {data_dir} is no volume"
        for name in ("PDS_STORE_URL", "PDS_EVENT_LOG"):
            value = container.env.get(name, "")
            if value.startswith("/"):
                assert value.startswith(data_dir + "/"), f"{manifest} {container.workload}: {name} off the volume"

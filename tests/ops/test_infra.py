"""The production manifests (no Docker engine or cluster here): every Kubernetes document is valid
against the Kubernetes OpenAPI schemas of a pinned version and the compose file against the Compose
Specification's JSON schema; every command a pds image runs is a real `pds` sub-command, Python module
or Prefect command, every PDS_ setting they set exists, Services select Pods that exist, and the
Dockerfile copies what the image needs."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from api.cli import parser
from api.deployments import work_pools
from catalog.settings import Settings
from tests.servers._common import venv_bin

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose" / "compose.yaml"
KUBERNETES = ROOT / "infra" / "k8s" / "pds.yaml"
#: The Kubernetes release whose OpenAPI schemas the manifests must satisfy (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.34.0"


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


def pds_commands() -> list[list[str]]:
    """Commands of every container that runs the pds image."""
    commands = [s["command"] for s in compose_services().values() if s["image"].startswith("pds:")]
    for template in pod_specs().values():
        commands += [c["command"] for c in template["spec"]["containers"] if c["image"].startswith("pds:")]
    return commands


def pds_subcommands() -> set[str]:
    (subparsers,) = [a for a in parser()._actions if a.dest == "command"]
    return set(subparsers.choices)


PREFECT_COMMANDS = {("server", "start"), ("server", "services", "start"), ("worker", "start")}


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
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    for needed in ("catalog", "blocks", "tasks", "flows", "api", "prefect.yaml", "pyproject.toml"):
        assert f" {needed}" in dockerfile, needed
    assert '".[server]"' in dockerfile

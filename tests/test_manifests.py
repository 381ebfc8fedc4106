"""Deployment files for a fleet, each checked by a tool and for what a reviewer looks for.

- deploy/kubernetes/: strictly valid against the Kubernetes JSON schemas (kubernetes-validate,
  which bundles them: no network), probes on /livez and /readyz, a grace period that covers the
  preStop sleep, the shutdown delay and the drain, selectors that match the pods, the Secret
  mounted as the cache secret file.
- deploy/compose.yaml: valid against the Compose Specification's schema (check-jsonschema,
  which vendors it), and its services, secrets and grace periods consistent.
- deploy/haproxy.cfg: `haproxy -c` accepts the file as shipped, checks /readyz often enough to
  drop a draining replica before it stops accepting, and waits longer than the gateway.
- Every SNAPGRAPH_* name in these files is a real setting, and their values are accepted.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from snapgraph.settings import Settings, env_name

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
HAPROXY_CFG = DEPLOY / "haproxy.cfg"
# Kept out of kustomization.yaml on purpose: applying it would replace the real Secret.
SECRET_EXAMPLE = "secret.example.yaml"
SECRET_FILE_VARIABLE = "SNAPGRAPH_CACHE_SECRET_FILE"


# --- helpers -------------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kubernetes_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_objects() -> list[dict[str, Any]]:
    return [doc for path in kubernetes_files() for doc in load_all(path)]


def only(kind: str) -> dict[str, Any]:
    found = [doc for doc in kubernetes_objects() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = only("Deployment")["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    containers = pod_spec()["containers"]
    assert len(containers) == 1, "one container: the gateway"
    result: dict[str, Any] = containers[0]
    return result


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = only("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects_pods(match_labels: Mapping[str, str]) -> bool:
    return bool(match_labels) and match_labels.items() <= pod_labels().items()


def kubernetes_environment() -> dict[str, str]:
    """The container's SNAPGRAPH_* environment: its ConfigMap's data, then its own `env`."""
    configmap = only("ConfigMap")
    environment: dict[str, str] = {}
    for source in container().get("envFrom", []):
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        environment.update(configmap["data"])
    for variable in container().get("env", []):
        environment[variable["name"]] = variable["value"]
    return environment


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def compose_replicas() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if name.startswith("snapgraph-")
    }


def interpolated(value: str) -> str:
    """A compose value with `${VAR:-default}` / `${VAR-default}` as when VAR is unset."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", value)


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service["environment"]
    assert isinstance(environment, dict), "environment as a mapping"
    return {name: interpolated(str(value)) for name, value in environment.items()}


def settings_from(environment: Mapping[str, str]) -> Settings:
    """The settings these variables give (the secret file stands for a secret: not read here)."""
    variables = {k: v for k, v in environment.items() if k != SECRET_FILE_VARIABLE}
    if SECRET_FILE_VARIABLE in environment:
        variables[env_name("cache_secret")] = "stands-for-the-mounted-secret"
    return Settings.from_environ(variables)


def seconds(duration: str | int | float) -> float:
    """`35s`, `1m30s`, `500ms` (compose, haproxy) or a bare number of seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    parts = re.fullmatch(r"((\d+(\.\d+)?)(ms|us|h|m|s))+", duration.strip())
    assert parts, f"not a duration: {duration!r}"
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    return sum(
        float(number) * unit[suffix]
        for number, _, suffix in re.findall(r"(\d+(\.\d+)?)(ms|us|h|m|s)", duration)
    )


def haproxy_lines() -> list[list[str]]:
    """The config's directives, comments dropped, each split into words."""
    lines = HAPROXY_CFG.read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].split() for line in lines if line.split("#", 1)[0].strip()]


def haproxy_section(kind: str, name: str) -> list[list[str]]:
    section: list[list[str]] | None = None
    sections: dict[tuple[str, str], list[list[str]]] = {}
    for words in haproxy_lines():
        if words[0] in ("global", "defaults", "frontend", "backend", "listen", "resolvers"):
            section = sections.setdefault((words[0], words[1] if len(words) > 1 else ""), [])
        elif section is not None:
            section.append(words)
    assert (kind, name) in sections, f"deploy/haproxy.cfg has no `{kind} {name}`"
    return sections[(kind, name)]


def option(section: list[list[str]], *prefix: str) -> list[str]:
    """The words after `prefix` on the section's one line starting with it."""
    found = [words[len(prefix) :] for words in section if tuple(words[: len(prefix)]) == prefix]
    assert len(found) == 1, f"expected one `{' '.join(prefix)}` line, found {len(found)}"
    return found[0]


def keyword_value(words: list[str], keyword: str) -> str:
    assert keyword in words, f"`{keyword}` missing from `{' '.join(words)}`"
    return words[words.index(keyword) + 1]


def tool_or_skip(name: str, install: str) -> str:
    """A program from the system (Debian's package); a failure under CI, a skip elsewhere."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if found is None:
        message = f"{name} is needed to validate the deployment files: {install} (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def venv_tool(name: str) -> str:
    """A program of the `test` extra, installed next to this Python: missing is a failure."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is missing: pip install -e '.[test]' (make test does)")
    return str(path)


# --- Kubernetes ----------------------------------------------------------------------------


def schema_versions() -> list[str]:
    """The oldest and the newest Kubernetes whose schemas kubernetes-validate bundles."""
    try:
        from kubernetes_validate import utils
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[test]' (make test does)")
    versions = utils.all_versions()
    return sorted({versions[0], versions[-1]})


def test_the_kubernetes_manifests_are_valid_against_the_schemas_in_strict_mode() -> None:
    # Strict: the schemas forbid unknown fields, so a typo (`readinesProbe`) or a field in the
    # wrong place fails here rather than being dropped by the API server without a word.
    versions = schema_versions()  # fails with a clear message when the tool is missing
    import kubernetes_validate

    problems: list[str] = []
    for path in kubernetes_files():
        for doc in load_all(path):
            for version in versions:
                where = f"{path.name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    field = ".".join(str(p) for p in error.path)
                    problems.append(f"{where} (Kubernetes {version}): {field}: {error.message}")
                except kubernetes_validate.SchemaNotFoundError as error:
                    # kubernetes-validate's CLI only warns of an unknown kind; here it fails.
                    problems.append(f"{where}: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    kustomization = load_all(KUBERNETES / "kustomization.yaml")[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), listed
    expected = {p.name for p in kubernetes_files()} - {SECRET_EXAMPLE}
    assert set(listed) == expected, "kustomization.yaml resources != the manifests"
    kinds = sorted(doc["kind"] for name in listed for doc in load_all(KUBERNETES / name))
    assert kinds == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    )
    assert [d["kind"] for d in load_all(KUBERNETES / SECRET_EXAMPLE)] == ["Secret"]
    assert {image["name"] for image in kustomization.get("images", [])} == {container()["image"]}, (
        "kustomization.yaml's images: must name the Deployment's image"
    )


def test_the_kubernetes_manifests_name_no_namespace() -> None:
    kustomization = load_all(KUBERNETES / "kustomization.yaml")[0]
    assert "namespace" not in kustomization
    for doc in kubernetes_objects():
        assert "namespace" not in doc["metadata"], f"{doc['kind']} names a namespace"


def test_probes_check_livez_and_readyz_on_the_served_port() -> None:
    gateway = container()
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    image_port = re.search(r"SNAPGRAPH_PORT=(\d+)", (ROOT / "Dockerfile").read_text())
    assert image_port, "the Dockerfile sets SNAPGRAPH_PORT"
    port = int(kubernetes_environment().get("SNAPGRAPH_PORT", image_port.group(1)))
    expected_paths = {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected_paths.items():
        check = gateway[probe]["httpGet"]
        assert check["path"] == path, f"{probe} must GET {path}, not {check['path']}"
        target = check["port"]
        assert ports.get(target, target) == port, f"{probe} must reach port {port}"


def test_the_grace_period_covers_the_prestop_sleep_the_shutdown_delay_and_the_drain() -> None:
    settings = settings_from(kubernetes_environment())
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command  # python:3.11-slim has sleep
    pre_stop = float(command[1])
    # The preStop sleep keeps the pod serving while endpoints and proxies forget it.
    assert pre_stop >= settings.shutdown_delay
    grace = pod_spec()["terminationGracePeriodSeconds"]
    # The grace period counts from deletion: the sleep, then SIGTERM's shutdown delay (503 on
    # /readyz, still serving), then the drain; SIGKILL before that cuts requests off.
    needed = pre_stop + settings.shutdown_delay + settings.drain_timeout
    assert grace > needed, f"terminationGracePeriodSeconds {grace} <= {needed}"


def test_the_service_pdb_hpa_and_spread_all_select_the_deployments_pods() -> None:
    deployment = only("Deployment")
    assert selects_pods(deployment["spec"]["selector"]["matchLabels"])
    service = only("Service")
    assert selects_pods(service["spec"]["selector"]), "the Service selects no gateway pod"
    port_names = {port["name"] for port in container()["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names | {p["containerPort"] for p in container()["ports"]}
    pdb = only("PodDisruptionBudget")
    assert selects_pods(pdb["spec"]["selector"]["matchLabels"]), "the PDB covers no pod"
    # maxUnavailable 1, not a minAvailable count: it allows a drain at any HPA-chosen size.
    budget = {k: pdb["spec"].get(k) for k in ("maxUnavailable", "minAvailable")}
    assert budget == {"maxUnavailable": 1, "minAvailable": None}, budget
    hpa = only("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"],
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] == 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    spread = pod_spec()["topologySpreadConstraints"]
    assert spread and all(selects_pods(c["labelSelector"]["matchLabels"]) for c in spread)
    # Requests give the HPA's utilization its meaning; limits bound a runaway replica.
    resources = container()["resources"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[kind].keys(), f"resources.{kind}"


def test_the_pod_runs_locked_down() -> None:
    pod, own = pod_spec()["securityContext"], container()["securityContext"]
    assert pod["runAsNonRoot"] is True and own["runAsNonRoot"] is True, "runAsNonRoot"
    user = re.search(r"^USER (\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user and pod["runAsUser"] == int(user.group(1)), "runAsUser is the image's user"
    assert own["readOnlyRootFilesystem"] is True, "readOnlyRootFilesystem"
    assert own["allowPrivilegeEscalation"] is False, "allowPrivilegeEscalation"
    assert own["capabilities"]["drop"] == ["ALL"] and "add" not in own["capabilities"]
    assert (own.get("seccompProfile") or pod["seccompProfile"]) == {"type": "RuntimeDefault"}


def test_the_cache_secret_is_a_file_mounted_from_the_secret() -> None:
    environment = kubernetes_environment()
    assert env_name("cache_secret") not in environment, "the secret belongs in a Secret"
    secret_path = Path(environment[SECRET_FILE_VARIABLE])
    example = load_all(KUBERNETES / SECRET_EXAMPLE)[0]
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    for mount in container()["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source and secret_path.parent == Path(mount["mountPath"]):
            assert mount.get("readOnly") is True
            assert source["secretName"] == example["metadata"]["name"]
            keys = {item["key"] for item in source["items"] if item["path"] == secret_path.name}
            assert keys and keys <= example["stringData"].keys()
            break
    else:
        pytest.fail(f"{SECRET_FILE_VARIABLE}={secret_path} is not in a mounted Secret")
    # The example is a placeholder and says how to make the real one.
    assert all("REPLACE-ME" in value for value in example["stringData"].values())
    assert "kubectl create secret generic" in (KUBERNETES / SECRET_EXAMPLE).read_text()


# --- Compose -------------------------------------------------------------------------------


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    # Why this tool: there is no container engine here, and `docker compose config` needs the
    # Compose plugin, which neither PyPI nor Debian's bookworm packages (Debian's docker-compose
    # is the retired v1, and would be one more apt install). check-jsonschema, from PyPI, vendors
    # the Compose Specification's own JSON schema, validates offline, and the schema forbids
    # unknown keys at every level. What a schema cannot see (references between services,
    # secrets, files, durations) the tests below check.
    completed = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_compose_runs_three_replicas_behind_haproxy_with_redis() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "haproxy", "snapgraph-1", "snapgraph-2", "snapgraph-3"}
    assert services["redis"]["image"].startswith("redis:")
    assert services["haproxy"]["image"].startswith("haproxy:")
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency] or dependency.startswith(
                    "snapgraph-"  # the image's HEALTHCHECK
                ), f"{dependency} has no healthcheck for {name} to wait on"
    for name, service in compose_replicas().items():
        build = service["build"]
        dockerfile = COMPOSE.parent / build["context"] / build["dockerfile"]
        assert dockerfile.resolve() == (ROOT / "Dockerfile").resolve(), name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        environment = compose_environment(service)
        assert environment["SNAPGRAPH_CACHE_URL"].startswith("redis://redis:")
        assert "${SNAPGRAPH_UPSTREAM_URL" in str(service["environment"]["SNAPGRAPH_UPSTREAM_URL"])
    mounts = [volume.split(":") for volume in services["haproxy"]["volumes"]]
    assert ["./haproxy.cfg", "/usr/local/etc/haproxy/haproxy.cfg", "ro"] in mounts


def test_compose_mounts_the_cache_secret_as_a_file() -> None:
    defined = compose()["secrets"]
    for name, service in compose_replicas().items():
        environment = compose_environment(service)
        assert env_name("cache_secret") not in environment, f"{name}: use the secret file"
        path = Path(environment[SECRET_FILE_VARIABLE])
        assert path.parent == Path("/run/secrets"), path
        assert path.name in service["secrets"], f"{name} does not mount secret {path.name}"
        assert "file" in defined[path.name], f"secret {path.name} is not defined from a file"


def test_compose_stops_replicas_after_they_drained() -> None:
    for name, service in compose_replicas().items():
        settings = settings_from(compose_environment(service))
        grace = seconds(service["stop_grace_period"])
        assert grace > settings.shutdown_delay + settings.drain_timeout, name


# --- HAProxy -------------------------------------------------------------------------------


def test_the_haproxy_config_is_valid_as_shipped() -> None:
    haproxy = tool_or_skip("haproxy", "apt-get install haproxy")
    completed = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    # Quiet as well: servers resolve at run time (init-addr none), so a warning is a mistake.
    # One is this machine's, not the file's: a resolver from /etc/resolv.conf with no route
    # (a sandbox without a network) is reported while `resolvers dns` is set up.
    warnings = [
        line
        for line in output.splitlines()
        if ("[WARNING]" in line or "[ALERT]" in line)
        and "can't connect socket for nameserver" not in line
    ]
    assert not warnings, output


def test_haproxy_balances_the_compose_replicas_on_readyz() -> None:
    backend = haproxy_section("backend", "snapgraph")
    assert option(backend, "balance") == ["roundrobin"]
    assert option(backend, "option") == ["httpchk"]
    check = option(backend, "http-check", "send")
    assert keyword_value(check, "meth") == "GET", check
    assert keyword_value(check, "uri") == "/readyz", "haproxy must check /readyz"
    assert option(backend, "http-check", "expect") == ["status", "200"]
    servers = {words[1]: words[2] for words in backend if words[0] == "server"}
    assert servers == {name: f"{name}:8000" for name in compose_replicas()}, servers
    assert all(len(words) == 3 for words in backend if words[0] == "server"), (
        "keep `server NAME HOST:PORT` bare (options on default-server) so it can be templated"
    )
    default_server = option(backend, "default-server")
    assert "check" in default_server
    assert [name for name in haproxy_section("frontend", "graphql") if name[0] == "bind"]


def test_haproxy_drops_a_draining_replica_before_it_stops_accepting() -> None:
    default_server = option(haproxy_section("backend", "snapgraph"), "default-server")
    interval = seconds(keyword_value(default_server, "inter"))
    falls = int(keyword_value(default_server, "fall"))
    for name, service in compose_replicas().items():
        delay = settings_from(compose_environment(service)).shutdown_delay
        assert interval * falls < delay, f"{name}: {falls} x {interval}s checks >= {delay}s"


def test_haproxy_waits_longer_than_the_gateway_and_forwards_a_request_id() -> None:
    defaults = haproxy_section("defaults", "")
    for service in compose_replicas().values():
        deadline = settings_from(compose_environment(service)).upstream_deadline
        # A request may wait out another replica's lease (deadline + 1 s), then fetch itself.
        longest = 2 * deadline + 1
        for timeout in ("server", "client"):
            limit = seconds(option(defaults, "timeout", timeout)[0])
            assert limit > longest, f"timeout {timeout} {limit}s <= the gateway's {longest}s"
    frontend = haproxy_section("frontend", "graphql")
    set_header = option(frontend, "http-request", "set-header", "X-Request-ID")
    assert "unless" in set_header, "a caller's own X-Request-ID must be kept"


# --- every file ----------------------------------------------------------------------------


def deploy_files() -> Iterator[Path]:
    yield COMPOSE
    yield HAPROXY_CFG
    yield from sorted(KUBERNETES.glob("*.yaml"))


def known_variables() -> set[str]:
    return {env_name(field.name) for field in dataclasses.fields(Settings)}


def test_every_snapgraph_variable_in_the_deployment_files_is_a_setting() -> None:
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in deploy_files()
        for name in re.findall(r"\bSNAPGRAPH_[A-Z0-9_]+\b", path.read_text(encoding="utf-8"))
        if name not in known_variables()
    }
    assert not unknown, sorted(unknown)


def test_the_settings_in_the_deployment_files_are_accepted() -> None:
    # Settings.validate() is what `snapgraph serve` runs first: a bad value would exit 2.
    settings_from(kubernetes_environment())
    for service in compose_replicas().values():
        settings_from(compose_environment(service))

"""The Kubernetes manifests in deploy/k8s, validated offline against the Kubernetes API
schemas (kubernetes-validate, from PyPI: no cluster is reachable here), strictly (an unknown
field is an error), and held to what the image does: the port it listens on, its user and
group, the probes it answers, a grace period longer than its orderly stop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from broker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in documents(path) if doc["kind"] == kind]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas_strictly(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_an_unknown_field_is_refused_by_the_same_validation() -> None:
    (deployment,) = by_kind("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_matches_the_image() -> None:
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    exposed = re.search(r"^EXPOSE (\d+)$", DOCKERFILE, flags=re.MULTILINE)
    assert exposed is not None
    assert container["ports"][0]["containerPort"] == int(exposed.group(1)) == 8080
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, flags=re.MULTILINE)
    context = pod["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (10001,) * 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    stop_bound = Settings.__dataclass_fields__["shutdown_timeout_s"].default
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + stop_bound
    assert container["resources"]["requests"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/axb"]["readOnly"] is True
    assert "/var/lib/axb" in mounts  # the image's writable state folder


def test_the_disruption_budget_and_the_service_select_the_brokers() -> None:
    (deployment,) = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (budget,) = by_kind("PodDisruptionBudget")
    (service,) = by_kind("Service")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]

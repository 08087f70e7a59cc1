"""Structural checks for the CRD kinds (ServiceMonitor, InferenceService), written after the
published CRDs (monitoring.coreos.com_servicemonitors.yaml of prometheus-operator, and KServe's
serving.kserve.io_inferenceservices.yaml) but covering only the fields deploy/k8s uses: NOT the
published schemas. Unknown fields fail, so a field used there must be added here after checking
it in the CRD. Embedded Kubernetes types (Container, Volume, Toleration, LabelSelector,
ObjectMeta) are checked against kubernetes-validate's strict definitions."""

from __future__ import annotations

import importlib.resources
import json

import jsonschema
from referencing import Registry, Resource

DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s."
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"


def _resource(api_version: str, kind: str, spec: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                           "metadata": {"$ref": DEFS + "apimachinery.pkg.apis.meta.v1.ObjectMeta"}, "spec": spec}}


SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object", "additionalProperties": False, "required": ["endpoints", "selector"],
    "properties": {
        "selector": {"$ref": DEFS + "apimachinery.pkg.apis.meta.v1.LabelSelector"},
        "namespaceSelector": {"type": "object", "additionalProperties": False,
                              "properties": {"any": {"type": "boolean"},
                                             "matchNames": {"type": "array", "items": {"type": "string"}}}},
        "jobLabel": {"type": "string"},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"port": {"type": "string"}, "targetPort": {"type": ["integer", "string"]},
                           "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                           "interval": {"type": "string", "pattern": DURATION},
                           "scrapeTimeout": {"type": "string", "pattern": DURATION},
                           "honorLabels": {"type": "boolean"}}}}}})

INFERENCE_SERVICE = _resource("serving.kserve.io/v1beta1", "InferenceService", {
    "type": "object", "additionalProperties": False, "required": ["predictor"],
    "properties": {"predictor": {
        # ComponentExtensionSpec and the inlined PodSpec fields used here; a custom predictor
        # has containers and no model/framework field
        "type": "object", "additionalProperties": False, "required": ["containers"],
        "properties": {
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 0},
            "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
            "scaleTarget": {"type": "integer"},
            "timeout": {"type": "integer"},
            "containerConcurrency": {"type": "integer", "minimum": 0},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
            "serviceAccountName": {"type": "string"},
            "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
            "securityContext": {"$ref": DEFS + "api.core.v1.PodSecurityContext"},
            "tolerations": {"type": "array", "items": {"$ref": DEFS + "api.core.v1.Toleration"}},
            "containers": {"type": "array", "minItems": 1, "items": {"$ref": DEFS + "api.core.v1.Container"}},
            "volumes": {"type": "array", "items": {"$ref": DEFS + "api.core.v1.Volume"}}}}}})

CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "InferenceService": INFERENCE_SERVICE}


def k8s_definitions(version: str) -> Registry:
    """kubernetes-validate's strict definitions of a Kubernetes minor, where DEFS points."""
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    defs = json.loads((folder / f"v{version}.0-local-strict" / "_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


def crd_errors(doc: dict, registry: Registry) -> list[str]:
    validator = jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]], registry=registry)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


#!/usr/bin/env python3
"""Writes benches/data/large-deployment.create.json: the AdmissionReview a
kube-apiserver would send for a Deployment of 20 containers and 40 volumes.

Deterministic (no randomness, sorted nothing, fixed uid), so the checked-in
file only changes when this script does. The envelope and the defaulted
fields copy tests/data/admission/nginx-stateless.create.json, so the request
looks like what the API server really sends. Rerun after editing:

    python3 benches/data/gen_large.py
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(ROOT, "tests/data/admission/nginx-stateless.create.json")
OUT = os.path.join(HERE, "large-deployment.create.json")

# (name, image, data mount or None). Databases from src/policy/catalog.yaml
# are mixed with plain images so every detector path runs: a database on an
# emptyDir (fixed by mutation), one with no volume at all (a claim is
# added), one already on a claim (left alone), a cache, and sidecars.
CONTAINERS = [
    ("orders-db", "postgres:16.4", "emptydir"),
    ("web", "nginx:1.27-alpine", None),
    ("inventory-db", "mysql:8.4", None),
    ("session-cache", "redis:7.2", "emptydir"),
    ("api", "ghcr.io/example/api:2.3.1", None),
    ("catalog-db", "mongo:7.0", "claim"),
    ("worker", "ghcr.io/example/worker:2.3.1", None),
    ("search", "elasticsearch:8.15.0", "emptydir"),
    ("envoy", "envoyproxy/envoy:v1.31.2", None),
    ("events-db", "mariadb:11.4", None),
    ("metrics", "prom/statsd-exporter:v0.27.1", None),
    ("queue", "rabbitmq:3.13-management", "emptydir"),
    ("fluent-bit", "fluent/fluent-bit:3.1", None),
    ("ledger-db", "postgis/postgis:16-3.4", None),
    ("otel", "otel/opentelemetry-collector:0.110.0", None),
    ("kv", "valkey/valkey:8.0", "claim"),
    ("auth", "ghcr.io/example/auth:1.9.0", None),
    ("reports-db", "bitnami/postgresql:16.4.0", "emptydir"),
    ("cron", "busybox:1.36", None),
    ("pgbouncer", "bitnami/pgbouncer:1.23.1", None),
]

DATA_PATHS = {
    "postgres": "/var/lib/postgresql/data",
    "redis": "/data",
    "mongo": "/data/db",
    "elasticsearch": "/usr/share/elasticsearch/data",
    "rabbitmq": "/var/lib/rabbitmq",
    "valkey/valkey": "/data",
    "bitnami/postgresql": "/bitnami/postgresql",
}


def repo(image):
    return image.rsplit(":", 1)[0]


def main():
    with open(TEMPLATE) as f:
        review = json.load(f)
    req = review["request"]
    req["uid"] = "00000000-0000-4000-8000-000000000020"
    req["name"] = "monolith"
    req["namespace"] = "shop"
    obj = req["object"]
    obj["metadata"] = {
        "name": "monolith",
        "namespace": "shop",
        "creationTimestamp": None,
        "labels": {"app": "monolith", "tier": "backend"},
    }
    spec = obj["spec"]
    # One replica: the mutation can then give each database its own claim.
    spec["replicas"] = 1
    spec["selector"] = {"matchLabels": {"app": "monolith"}}
    spec["template"]["metadata"] = {
        "creationTimestamp": None,
        "labels": {"app": "monolith", "tier": "backend"},
    }
    pod = spec["template"]["spec"]
    volumes, containers = [], []
    for i, (name, image, data) in enumerate(CONTAINERS):
        mounts = []
        if data is not None:
            vol = f"{name}-data"
            if data == "emptydir":
                volumes.append({"name": vol, "emptyDir": {}})
            else:
                volumes.append(
                    {"name": vol, "persistentVolumeClaim": {"claimName": vol}}
                )
            mounts.append({"name": vol, "mountPath": DATA_PATHS[repo(image)]})
        # Every container has a config volume of its own; the kind rotates so
        # the storage classifier sees all of them.
        cfg = f"{name}-config"
        kind = i % 5
        if kind == 0:
            volumes.append({"name": cfg, "configMap": {"name": cfg, "defaultMode": 420}})
        elif kind == 1:
            volumes.append({"name": cfg, "secret": {"secretName": cfg, "defaultMode": 420}})
        elif kind == 2:
            volumes.append(
                {
                    "name": cfg,
                    "projected": {
                        "sources": [
                            {"configMap": {"name": cfg}},
                            {"secret": {"name": f"{name}-tls"}},
                            {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}}]}},
                        ],
                        "defaultMode": 420,
                    },
                }
            )
        elif kind == 3:
            volumes.append(
                {
                    "name": cfg,
                    "downwardAPI": {
                        "items": [{"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}}],
                        "defaultMode": 420,
                    },
                }
            )
        else:
            volumes.append({"name": cfg, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}})
        mounts.append({"name": cfg, "mountPath": f"/etc/{name}", "readOnly": kind != 4})
        containers.append(
            {
                "name": name,
                "image": image,
                "ports": [{"containerPort": 8000 + i, "protocol": "TCP"}],
                "env": [
                    {"name": "SERVICE_NAME", "value": name},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                ],
                "resources": {
                    "limits": {"memory": "256Mi"},
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                },
                "volumeMounts": mounts,
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }
        )
    # Pad to 40 volumes with the kinds a busy pod carries: host logs, a
    # shared scratch dir, and the rest. Unmounted volumes are legal.
    extra = 0
    while len(volumes) < 40:
        k = extra % 4
        vname = f"extra-{extra:02d}"
        if k == 0:
            volumes.append({"name": vname, "hostPath": {"path": f"/var/log/{vname}", "type": "DirectoryOrCreate"}})
        elif k == 1:
            volumes.append({"name": vname, "emptyDir": {}})
        elif k == 2:
            volumes.append({"name": vname, "configMap": {"name": vname, "defaultMode": 420}})
        else:
            volumes.append({"name": vname, "persistentVolumeClaim": {"claimName": vname, "readOnly": True}})
        extra += 1
    pod["volumes"] = volumes
    pod["containers"] = containers
    assert len(containers) == 20 and len(volumes) == 40
    # kubectl apply stores the applied manifest in an annotation, which
    # roughly doubles the body the webhook parses; real requests carry it.
    applied = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"annotations": {}, "name": "monolith", "namespace": "shop"},
        "spec": {"replicas": 1, "selector": spec["selector"], "template": spec["template"]},
    }
    obj["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(applied, separators=(",", ":")) + "\n"
    }
    with open(OUT, "w") as f:
        json.dump(review, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

"""Split ``helm template`` output for the offline validators in deploy/check.sh.

    python split_manifests.py RENDERED.yaml OUTDIR

Writes into OUTDIR:
  core/NN-<kind>-<name>.yaml   built-in Kubernetes kinds (for kubernetes-validate)
  crd/NN-<kind>-<name>.json    monitoring.coreos.com resources (for crdcheck.mjs)
  rules/prometheusrule.yml     the PrometheusRule's rule groups (for promtool)
  config.yaml                  the gateway config file of the ConfigMap (for check-config)
and prints one line per resource. Exits non-zero on an unnamed resource or duplicate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(rendered: Path, out: Path) -> int:
    for sub in ("core", "crd", "rules"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    docs = [d for d in yaml.safe_load_all(rendered.read_text("utf-8")) if d]
    for n, doc in enumerate(docs):
        kind, name = doc.get("kind", ""), (doc.get("metadata") or {}).get("name", "")
        if not kind or not name or (kind, name) in seen:
            sys.stderr.write(
                f"error: resource {n} has no kind/name or is a duplicate: {kind}/{name}\n"
            )
            return 1
        seen.add((kind, name))
        stem = f"{n:02d}-{kind.lower()}-{name}"
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            (out / "crd" / f"{stem}.json").write_text(json.dumps(doc), "utf-8")
            if kind == "PrometheusRule":
                rules = yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False)
                (out / "rules" / "prometheusrule.yml").write_text(rules, "utf-8")
        else:
            (out / "core" / f"{stem}.yaml").write_text(yaml.safe_dump(doc), "utf-8")
        if kind == "ConfigMap" and "config.yaml" in (doc.get("data") or {}):
            (out / "config.yaml").write_text(doc["data"]["config.yaml"], "utf-8")
        sys.stdout.write(f"{kind}/{name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))

// Validates Prometheus Operator custom resources (ServiceMonitor, PrometheusRule, ...) against
// the operator's CRD schemas, offline, with @kubernetes-models/prometheus-operator.
//
//   node crdcheck.mjs resource.json [...]     (each file: one resource as JSON)
//
// NODE_PATH must reach the node_modules where the package is installed (deploy/check.sh sets it).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import path from "node:path";

const require = createRequire(path.join(process.env.CRDCHECK_MODULES ?? process.cwd(), "x.js"));

async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  if (group !== "monitoring.coreos.com") throw new Error(`not a Prometheus Operator resource: ${apiVersion}`);
  const base = path.dirname(require.resolve("@kubernetes-models/prometheus-operator/package.json"));
  const module = await import(pathToFileURL(path.join(base, group, version, `${kind}.js`)).href);
  return module[kind];
}

let failed = 0;
for (const file of process.argv.slice(2)) {
  const doc = JSON.parse(readFileSync(file, "utf8"));
  const name = `${doc.kind}/${doc.metadata?.name} (${path.basename(file)})`;
  try {
    const Model = await modelFor(doc.apiVersion, doc.kind);
    new Model(doc).validate();
    console.log(`ok   ${name}`);
  } catch (err) {
    failed += 1;
    console.error(`FAIL ${name}: ${err.message}`);
  }
}
process.exit(failed ? 1 : 0);

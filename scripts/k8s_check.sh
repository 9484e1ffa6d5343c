#!/usr/bin/env bash
# Build every kustomization under k8s/ (the base and each overlay) and
# validate the output, strictly, against the Kubernetes API schemas.
#   scripts/k8s_check.sh [KUBERNETES_VALIDATE]   (default: kubernetes-validate on PATH)
# kustomize is built once from the Go module proxy and cached in
# ~/.cache/lookback/bin (tests/integration/test_k8s.py uses the same binary).
set -euo pipefail
KUSTOMIZE_VERSION=v5.8.1   # needs Go >= 1.24
KUBERNETES_VERSION=1.33.0  # the oldest Kubernetes the manifests support
validate="${1:-kubernetes-validate}"
cd "$(dirname "$0")/.."

bin="$HOME/.cache/lookback/bin"
kustomize="$bin/kustomize"
if [ "$("$kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "k8s check: kustomize $KUSTOMIZE_VERSION is not in $bin and there is no Go to build it" >&2
    exit 1
  fi
  echo "k8s check: building kustomize $KUSTOMIZE_VERSION into $bin" >&2
  GOBIN="$bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for dir in k8s/base k8s/overlays/*/; do
  dir="${dir%/}"
  file="$out/$(echo "$dir" | tr / _).yaml"
  "$kustomize" build "$dir" > "$file"
  "$validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" "$file"
  echo "k8s check: $dir builds and is valid for Kubernetes $KUBERNETES_VERSION ($(grep -c '^kind:' "$file") objects)"
done

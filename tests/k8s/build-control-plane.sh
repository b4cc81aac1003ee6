#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from the Go modules of k8s.io/kubernetes.
#
# k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging paths, which do not
# exist outside its repository; this wrapper module replaces each one with the published
# module of the matching version (v1.X.Y -> v0.X.Y). Builds go to Go's own caches; the binaries
# to $EDGECOMPRESS_K8S_BIN (default: ~/.cache/edgecompress/k8s/<version>).
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
here="$(cd "$(dirname "$0")" && pwd)"
out="${EDGECOMPRESS_K8S_BIN:-$HOME/.cache/edgecompress/k8s/$K8S_VERSION}"
if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" ]]; then
  echo "$out"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
upstream_mod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
{
  echo "module edgecompress.io/controlplane"
  echo
  echo "go $(awk '/^go /{print $2; exit}' "$upstream_mod")"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$upstream_mod" \
    | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
} > "$work/go.mod"
cp "$here/tools.go" "$work/"
cd "$work"
GOFLAGS=-mod=mod go mod tidy >/dev/null
mkdir -p "$out"
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$K8S_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$minor"
CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
echo "$out"

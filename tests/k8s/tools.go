//go:build tools

// Package controlplane pins the Kubernetes commands the end-to-end tests build.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)

// Package charts holds podrole's Helm chart (charts/podrole) and, in its
// tests, the proof that the chart renders the same objects as the kustomize
// overlays in manifests/ and the e2e suite's overlay e2e/manifests.
package charts

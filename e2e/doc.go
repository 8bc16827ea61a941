// Package e2e is the end-to-end suite: it drives a real local cluster
// (make cluster-up) with podrole installed like a user would (helm install
// of charts/podrole with e2e/values.yaml; PODROLE_E2E_OVERLAY installs a
// kustomization with kubectl apply -k instead), from the outside — kubectl, the apiserver and the AWS
// stand-ins — and imports no product code. The tests are behind the build
// tag e2e:
//
//	make cluster-up images e2e
//	go test -tags e2e -count=1 -timeout 20m ./e2e/...
//
// e2e/cluster holds the harness scripts, e2e/cmd the test binaries baked
// into images (app, hostile, pause), e2e/tools/mkimage the registry-less
// image builder.
package e2e

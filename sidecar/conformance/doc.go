// Package conformance is the real-client and security suite of the sidecar's
// IMDS emulator. It holds tests only: they build `podrole-sidecar` (or use
// PODROLE_SIDECAR_BIN), run `serve` as a subprocess against stsdouble as STS
// and amazon-ec2-metadata-mock as the node's IMDS, and drive it with
// aws-sdk-go-v2, botocore (/usr/bin/python3), the AWS CLI v2 (/usr/bin/aws),
// the JS SDK v3 (node, js/) and raw HTTP.
//
// Prerequisites: scripts/deps-clients.sh (clients, npm ci in js/) and
// scripts/build-tools.sh (ec2-metadata-mock into $PODROLE_CACHE/bin).
// Every server listens on 127.0.0.1 and every client is pointed there with
// AWS_EC2_METADATA_SERVICE_ENDPOINT: nothing here talks to 169.254.169.254.
//
// Why AWS's mock here and fakeaws.NodeIMDS in the unit tests: the
// repository has exactly two stand-ins for the node's IMDS. The Go one
// (sidecar/internal/fakeaws) injects failures on demand (throttling, hangs,
// refused tokens, IMDSv1 only, missing items) for unit tests and the
// real-namespace test. amazon-ec2-metadata-mock is the node's IMDS here and
// in the e2e cluster (e2e/README.md): a conformance verdict must not rest on
// our own idea of what IMDS answers, so it comes from an implementation that
// is not ours. A new need is a knob on one of the two, not a third.
package conformance

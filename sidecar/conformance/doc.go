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
package conformance

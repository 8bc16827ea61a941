// Prints the credentials the JS SDK v3 instance-metadata provider obtains, as
// credential_process JSON. The endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT
// and v1 fallback from AWS_EC2_METADATA_V1_DISABLED, exactly as in an app.
"use strict";
const { fromInstanceMetadata } = require("@aws-sdk/credential-providers");

(async () => {
  const c = await fromInstanceMetadata()();
  const out = {
    Version: 1,
    AccessKeyId: c.accessKeyId,
    SecretAccessKey: c.secretAccessKey,
    SessionToken: c.sessionToken,
    Expiration: c.expiration ? c.expiration.toISOString() : undefined,
  };
  if (c.accountId) out.AccountId = c.accountId;
  process.stdout.write(JSON.stringify(out) + "\n");
})().catch((e) => {
  // Only the error name and message: never a credential.
  process.stderr.write(`fromInstanceMetadata failed: ${e && e.name}: ${e && e.message}\n`);
  process.exit(1);
});

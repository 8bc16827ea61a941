"""Prints the credentials botocore's default chain obtains, as credential_process JSON.

Run with Debian's /usr/bin/python3 (python3-botocore). The metadata endpoint
comes from AWS_EC2_METADATA_SERVICE_ENDPOINT, exactly as in an app.
"""
import json
import sys

import botocore
import botocore.session


def main():
    session = botocore.session.get_session()
    creds = session.get_credentials()
    if creds is None:
        sys.stderr.write("botocore %s found no credentials\n" % botocore.__version__)
        return 1
    frozen = creds.get_frozen_credentials()
    out = {
        "Version": 1,
        "AccessKeyId": frozen.access_key,
        "SecretAccessKey": frozen.secret_key,
        "SessionToken": frozen.token,
        "Method": creds.method,
    }
    expiry = getattr(creds, "_expiry_time", None)
    if expiry is not None:
        out["Expiration"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PyJWT as an OIDC relying party: verifies a JWT-SVID knowing only the
issuer URL (discovery document, then its jwks_uri, via PyJWKClient).

Usage: oidc_verify.py <issuer url> <token> <audience> <expected sub>
Prints "OK <kid> <sub>"; exits non-zero on any failure. HTTPS trust comes
from the default context (SSL_CERT_FILE).
"""
import json
import sys
import urllib.request

import jwt


def main() -> int:
    issuer, token, audience, want_sub = sys.argv[1:5]
    with urllib.request.urlopen(issuer.rstrip("/") + "/.well-known/openid-configuration") as r:
        conf = json.load(r)
    assert conf["issuer"] == issuer, (conf["issuer"], issuer)
    client = jwt.PyJWKClient(conf["jwks_uri"], cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=conf["id_token_signing_alg_values_supported"],
        audience=audience,
    )
    assert claims["sub"] == want_sub, (claims["sub"], want_sub)
    print("OK", key.key_id, claims["sub"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

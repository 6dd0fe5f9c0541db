"""py-spiffe (grpcio) against a sigil-agent Workload API socket.

Usage: fetch.py <socket path> <expected spiffe id>
Prints OK lines; exits non-zero on any mismatch.
"""
import sys

from spiffe import WorkloadApiClient


def main() -> int:
    socket, want = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient(f"unix:{socket}")
    try:
        svid = client.fetch_x509_svid()
        assert str(svid.spiffe_id) == want, (str(svid.spiffe_id), want)
        assert svid.cert_chain, "cert chain"
        print("OK x509", svid.spiffe_id)

        bundles = client.fetch_x509_bundles()
        td = svid.spiffe_id.trust_domain
        bundle = bundles.get_bundle_for_trust_domain(td)
        assert bundle is not None and bundle.x509_authorities, "x509 bundle"
        print("OK x509 bundles", len(bundle.x509_authorities))

        jwt = client.fetch_jwt_svid(audience={"py-aud"})
        assert str(jwt.spiffe_id) == want, (str(jwt.spiffe_id), want)
        print("OK jwt", jwt.spiffe_id)

        validated = client.validate_jwt_svid(jwt.token, "py-aud")
        assert str(validated.spiffe_id) == want
        print("OK validate")

        jwt_bundles = client.fetch_jwt_bundles()
        assert jwt_bundles.get_bundle_for_trust_domain(td) is not None, "jwt bundle"
        print("OK jwt bundles")
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

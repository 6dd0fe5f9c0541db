package sigil.interop;

import io.spiffe.bundle.x509bundle.X509Bundle;
import io.spiffe.exception.JwtSvidException;
import io.spiffe.spiffeid.SpiffeId;
import io.spiffe.svid.jwtsvid.JwtSvid;
import io.spiffe.svid.x509svid.X509Svid;
import io.spiffe.svid.x509svid.X509SvidValidator;
import io.spiffe.workloadapi.DefaultJwtSource;
import io.spiffe.workloadapi.DefaultWorkloadApiClient;
import io.spiffe.workloadapi.DefaultX509Source;
import io.spiffe.workloadapi.JwtSource;
import io.spiffe.workloadapi.JwtSourceOptions;
import io.spiffe.workloadapi.WorkloadApiClient;
import io.spiffe.workloadapi.X509Context;
import java.time.Duration;
import java.util.Set;

/**
 * java-spiffe (unmodified) against a SPIFFE Workload API socket, for sigil's
 * end-to-end test {@code tests/tests/clients_java.rs}.
 *
 * <p>Usage: {@code java -jar java-spiffe-check.jar <socket path> <expected SPIFFE ID>}.
 * Prints one {@code OK ...} line per check; any failure goes to stderr and
 * exits 1.
 */
public final class Main {
    private static final String AUDIENCE = "java-aud";
    private static final Duration INIT_TIMEOUT = Duration.ofSeconds(30);

    private Main() {}

    public static void main(String[] args) {
        if (args.length != 2) {
            System.err.println("usage: java-spiffe-check <socket path> <expected SPIFFE ID>");
            System.exit(2);
        }
        try {
            run("unix:" + args[0], SpiffeId.parse(args[1]));
        } catch (Exception e) {
            System.err.println("java-spiffe-check: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        // The sources' gRPC executors are not all daemon threads.
        System.exit(0);
    }

    private static void run(String address, SpiffeId want) throws Exception {
        try (DefaultX509Source x509Source = DefaultX509Source.newSource(
                DefaultX509Source.X509SourceOptions.builder()
                        .spiffeSocketPath(address)
                        .initTimeout(INIT_TIMEOUT)
                        .build())) {
            X509Svid svid = x509Source.getX509Svid();
            expect(want, svid.getSpiffeId(), "X509Source SVID");
            X509SvidValidator.verifyChain(svid.getChain(), x509Source);
            X509Bundle bundle = x509Source.getBundleForTrustDomain(want.getTrustDomain());
            if (bundle.getX509Authorities().isEmpty()) {
                throw new IllegalStateException("X.509 bundle has no authorities");
            }
            System.out.println("OK x509 " + svid.getSpiffeId());
        }

        try (WorkloadApiClient client = DefaultWorkloadApiClient.newClient(
                DefaultWorkloadApiClient.ClientOptions.builder().spiffeSocketPath(address).build())) {
            X509Context context = client.fetchX509Context();
            expect(want, context.getDefaultSvid().getSpiffeId(), "FetchX509SVID");
            System.out.println("OK x509 context " + context.getDefaultSvid().getSpiffeId());

            JwtSvid fetched = client.fetchJwtSvid(AUDIENCE);
            expect(want, fetched.getSpiffeId(), "FetchJWTSVID");
            JwtSvid validated = client.validateJwtSvid(fetched.getToken(), AUDIENCE);
            expect(want, validated.getSpiffeId(), "ValidateJWTSVID");
            System.out.println("OK jwt " + validated.getSpiffeId());
            boolean rejected;
            try {
                client.validateJwtSvid(fetched.getToken(), "someone-else");
                rejected = false;
            } catch (JwtSvidException expected) {
                System.err.println("wrong audience: " + expected.getMessage());
                rejected = true;
            }
            if (!rejected) {
                throw new IllegalStateException("agent validated a token for the wrong audience");
            }
            System.out.println("OK jwt wrong-audience rejected");
        }

        try (JwtSource jwtSource = DefaultJwtSource.newSource(
                JwtSourceOptions.builder().spiffeSocketPath(address).initTimeout(INIT_TIMEOUT).build())) {
            JwtSvid fromSource = jwtSource.fetchJwtSvid(AUDIENCE);
            JwtSvid local = JwtSvid.parseAndValidate(fromSource.getToken(), jwtSource, Set.of(AUDIENCE));
            expect(want, local.getSpiffeId(), "JwtSource + local validation");
            System.out.println("OK jwt local " + local.getSpiffeId());
        }
    }

    private static void expect(SpiffeId want, SpiffeId got, String what) {
        if (!want.equals(got)) {
            throw new IllegalStateException(what + ": got " + got + ", want " + want);
        }
    }
}

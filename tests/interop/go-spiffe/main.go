// Command go-spiffe-check runs go-spiffe (unmodified) against a SPIFFE
// Workload API socket, for sigil's end-to-end tests (tests/tests/clients_go.rs).
//
// Two modes, meant to run as two processes:
//
//	server -addr 127.0.0.1:PORT -socket S -expect spiffe://client-id
//	    X509Source + MTLSServerConfig(AuthorizeID(expect)); serves GET /
//	    answering the caller's SPIFFE ID. Prints "LISTENING <addr> <own id>"
//	    once ready (PORT may be 0), then serves until killed or -timeout.
//	client -addr 127.0.0.1:PORT -socket S -expect spiffe://server-id
//	    X509Source + MTLSClientConfig(AuthorizeID(expect)); one GET /, then
//	    "OK mtls <server id>" and "OK seen-by-server <own id>". Then a
//	    JWTSource: a JWT-SVID for audience go-aud, validated locally with
//	    jwtsvid.ParseAndValidate against the source's JWT bundles:
//	    "OK jwt <id>"; the same token must fail for another audience:
//	    "OK jwt wrong-audience rejected".
//
// Any failure is printed to stderr and exits 1.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const audience = "go-aud"

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: go-spiffe-check server|client -addr A -socket S -expect ID [-timeout D]"))
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "TCP address to listen on (server) or dial (client)")
	socket := fs.String("socket", "", "Workload API Unix socket path")
	expect := fs.String("expect", "", "SPIFFE ID the peer must present")
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	if err := fs.Parse(os.Args[2:]); err != nil {
		fail(err)
	}
	if *socket == "" || *expect == "" {
		fail(errors.New("-socket and -expect are required"))
	}
	peer, err := spiffeid.FromString(*expect)
	if err != nil {
		fail(fmt.Errorf("-expect: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	clientOpts := workloadapi.WithClientOptions(workloadapi.WithAddr("unix://" + *socket))

	switch mode {
	case "server":
		err = runServer(ctx, *addr, clientOpts, peer)
	case "client":
		err = runClient(ctx, *addr, clientOpts, peer)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fail(err)
	}
}

func runServer(ctx context.Context, addr string, opts workloadapi.SourceOption, peer spiffeid.ID) error {
	source, err := workloadapi.NewX509Source(ctx, opts)
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer source.Close()
	own, err := source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("own X509-SVID: %w", err)
	}

	tlsConf := tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeID(peer))
	ln, err := tls.Listen("tcp", addr, tlsConf)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		id, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, id.String())
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	fmt.Printf("LISTENING %s %s\n", ln.Addr(), own.ID)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

func runClient(ctx context.Context, addr string, opts workloadapi.SourceOption, peer spiffeid.ID) error {
	source, err := workloadapi.NewX509Source(ctx, opts)
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer source.Close()
	own, err := source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("own X509-SVID: %w", err)
	}

	tlsConf := tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(peer))
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConf},
		Timeout:   20 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("mTLS request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server answered %s: %s", resp.Status, body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		return errors.New("no server certificate on the connection")
	}
	serverID, err := x509svid.IDFromCert(resp.TLS.PeerCertificates[0])
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	fmt.Printf("OK mtls %s\n", serverID)
	if string(body) != own.ID.String() {
		return fmt.Errorf("server saw %q, own SVID is %s", body, own.ID)
	}
	fmt.Printf("OK seen-by-server %s\n", body)

	jwtSource, err := workloadapi.NewJWTSource(ctx, opts)
	if err != nil {
		return fmt.Errorf("JWTSource: %w", err)
	}
	defer jwtSource.Close()
	jwt, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		return fmt.Errorf("fetch JWT-SVID: %w", err)
	}
	if jwt.ID != own.ID {
		return fmt.Errorf("JWT-SVID is for %s, X509-SVID for %s", jwt.ID, own.ID)
	}
	validated, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtSource, []string{audience})
	if err != nil {
		return fmt.Errorf("validate JWT-SVID: %w", err)
	}
	if validated.ID != own.ID {
		return fmt.Errorf("validated JWT-SVID is for %s, want %s", validated.ID, own.ID)
	}
	fmt.Printf("OK jwt %s\n", validated.ID)
	if _, err := jwtsvid.ParseAndValidate(jwt.Marshal(), jwtSource, []string{"someone-else"}); err == nil {
		return errors.New("JWT-SVID validated for an audience it was not issued for")
	}
	fmt.Println("OK jwt wrong-audience rejected")
	return nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "go-spiffe-check: %v\n", err)
	os.Exit(1)
}

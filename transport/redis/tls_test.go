package redis

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spectacles-go/spectacles/core"
	"github.com/spectacles-go/spectacles/internal/brokertest"
)

// hostPort returns the host:port of a server URL such as serverURL's.
func hostPort(url string) string {
	if _, rest, ok := strings.Cut(url, "://"); ok {
		url = rest
	}
	if i := strings.LastIndex(url, "@"); i >= 0 {
		url = url[i+1:]
	}
	addr, _, _ := strings.Cut(url, "/")
	return addr
}

// TestRedissToPlaintextServer: rediss:// to a server that speaks plain
// RESP fails at once and says what to change, rather than waiting out the
// dial timeouts and their retries (25 s) to say "context deadline exceeded".
func TestRedissToPlaintextServer(t *testing.T) {
	url, _ := serverURL(t)
	addr := hostPort(url)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	b, err := Open(ctx, Config{URL: "rediss://" + addr})
	took := time.Since(start)
	if err == nil {
		b.Close()
		t.Fatal("Open over TLS to a plaintext server succeeded")
	}
	want := "TLS handshake with " + addr + " failed: the server does not speak TLS (use redis:// instead of rediss://)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if strings.Count(err.Error(), addr) != 1 {
		t.Errorf("error %q names the server more than once", err)
	}
	// A bound on a hang (the handshake used to wait for the dial timeout,
	// four times), not a speed measure.
	if took > 15*time.Second {
		t.Errorf("Open took %s to fail", took)
	}
}

// TestRedisToTLSServer: redis:// to a server that speaks TLS says so.
func TestRedisToTLSServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	start := time.Now()
	b, err := Open(ctx, Config{URL: "redis://" + addr})
	took := time.Since(start)
	if err == nil {
		b.Close()
		t.Fatal("Open in plaintext to a TLS server succeeded")
	}
	want := "the server speaks TLS (use rediss:// instead of redis://)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if took > 15*time.Second {
		t.Errorf("Open took %s to fail", took)
	}
}

// TestConsumeOverTLS: a consumer's own reader connection (readconn.go)
// dials with the client's TLS settings: messages published and consumed
// over rediss:// against a real redis-server listening with TLS only.
func TestConsumeOverTLS(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if brokertest.InCI() {
			t.Fatal("redis-server is required (CI=true) but not on PATH")
		}
		t.Skip("redis-server is not on PATH: no TLS server can be started")
	}
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-auth-clients", "no", "--save", "", "--appendonly", "no")
	brokertest.DieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	url := fmt.Sprintf("rediss://127.0.0.1:%d/2?skip_verify=true", port)
	ctx := ctxT(t)
	var b *Broker
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err = Open(ctx, Config{URL: url, Options: core.Options{Identity: core.Identity{Group: "g", Client: "c"}, Logger: testLogger(t)}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the TLS redis-server did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer b.Close()
	h, got := brokertest.Collect(t, true)
	if err := b.Consume(ctx, []string{"tls-ev"}, h); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := b.Publish(ctx, "tls-ev", i); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		brokertest.Next(t, got)
	}
	waitNoPending(t, b.Client(), "tls-ev", "g")
}

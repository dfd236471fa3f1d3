package testproto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/splice/demo"
)

// ServerName is the name in the self-signed certificate.
const ServerName = "xlb.test"

// SelfSignedCert writes a fresh self-signed ECDSA certificate for ServerName
// and 127.0.0.1 (and ips) into dir, as cert.pem and key.pem, and returns their
// paths. No openssl needed.
func SelfSignedCert(dir string, ips ...string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: ServerName},
		DNSNames:              []string{ServerName},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, s := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// Nginx is one nginx worker's configuration.
type Nginx struct {
	Dir    string // its pid file, temporary files and nginx.conf go here
	Listen string // ADDR:PORT
	Root   string // the web root
	// Cert and Key, when set, make it listen with TLS (`listen ... ssl`).
	Cert, Key string
	// AccessLog, when set, logs every request there ("$status $request_uri
	// $body_bytes_sent $connection $connection_requests").
	AccessLog string
	// HTTP and Server are more lines for the http and server blocks.
	HTTP, Server string
}

// Config is the nginx.conf text: one worker process, in the foreground,
// errors on stderr, keep-alive connections never closed by a request count.
func (n Nginx) Config() string {
	listen := n.Listen
	var tls string
	if n.Cert != "" {
		listen += " ssl"
		// nginx 1.22 (Debian 12) offers TLS 1.3 only when told to.
		tls = fmt.Sprintf("ssl_certificate %s;\n\t\tssl_certificate_key %s;\n\t\tssl_protocols TLSv1.2 TLSv1.3;", n.Cert, n.Key)
	}
	access := "access_log off;"
	if n.AccessLog != "" {
		access = fmt.Sprintf("log_format xlbt '$status $request_uri $body_bytes_sent $connection $connection_requests';\n\taccess_log %s xlbt;", n.AccessLog)
	}
	return fmt.Sprintf(`
user root;
daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
	%[6]s
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	keepalive_requests 1000000;
	%[7]s
	server {
		listen %[2]s;
		root %[3]s;
		%[4]s
		location = /name { return 200 "nginx %[5]s\n"; }
		%[8]s
	}
}
`, n.Dir, listen, n.Root, tls, n.Listen, access, n.HTTP, n.Server)
}

// WriteConfig writes Config to Dir/nginx.conf and returns the nginx command
// line.
func (n Nginx) WriteConfig() ([]string, error) {
	path := filepath.Join(n.Dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(n.Config()), 0o644); err != nil {
		return nil, err
	}
	return []string{"nginx", "-c", path}, nil
}

// WebRoot makes a web root for nginx workers: a new temporary directory with
// a file b<N> of demo.Body(N) for each size, served as /b<N>.
func WebRoot(t testing.TB, sizes ...int) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	for _, n := range sizes {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("b%d", n)), demo.Body(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// RedisArgs is the redis-server command line for a throw-away server on
// addr: no persistence, in the foreground. It prints "Ready to accept
// connections" when it listens.
func RedisArgs(addr string) []string {
	host, port, _ := strings.Cut(addr, ":")
	return []string{"redis-server", "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no", "--loglevel", "notice", "--dir", os.TempDir()}
}

// RedisReady is what redis-server prints once it accepts connections.
const RedisReady = "Ready to accept connections"

// MemcachedArgs is the memcached command line for a server on addr (TCP only,
// run as root, 64 MB of memory, items up to 4 MB). It prints nothing on
// start: wait until the port accepts.
func MemcachedArgs(addr string) []string {
	host, port, _ := strings.Cut(addr, ":")
	return []string{"memcached", "-l", host, "-p", port, "-U", "0", "-u", "root", "-m", "64", "-I", "4m", "-c", "4096"}
}

package testproto

import (
	"bufio"
	"crypto/tls"
	"os"
	"strings"
	"testing"
)

func TestRESPRoundTrip(t *testing.T) {
	if got := string(RESP("SET", "k", "a\r\nb")); got != "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n" {
		t.Fatalf("RESP: %q", got)
	}
	in := "+OK\r\n-ERR bad\r\n:42\r\n$4\r\na\r\nb\r\n$-1\r\n*2\r\n$1\r\nx\r\n:7\r\n"
	r := bufio.NewReader(strings.NewReader(in))
	want := []string{`+"OK"`, `-"ERR bad"`, ":42", `$"a\r\nb"`, "$(nil)", `*2[$"x" :7]`}
	for i, w := range want {
		rep, err := ReadReply(r)
		if err != nil || rep.String() != w {
			t.Fatalf("reply %d: %v %v, want %s", i, rep, err, w)
		}
	}
	for _, bad := range []string{"HTTP/1.1 200 OK\r\n", "$5\r\nab\r\n", "$2\r\nabcd\r\n", "+OK\n"} {
		if rep, err := ReadReply(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("%q read as %v, want an error", bad, rep)
		}
	}
}

func TestMemcacheGet(t *testing.T) {
	if got := string(MemcacheGet("a", "b")); got != "get a b\r\n" {
		t.Fatalf("MemcacheGet: %q", got)
	}
	r := bufio.NewReader(strings.NewReader("VALUE a 0 3\r\nx\r\n\r\nVALUE b 0 0\r\n\r\nEND\r\nEND\r\nERROR\r\n"))
	items, err := ReadGet(r)
	if err != nil || len(items) != 2 || string(items[0].Value) != "x\r\n" || items[1].Key != "b" {
		t.Fatalf("ReadGet: %+v %v", items, err)
	}
	if items, err := ReadGet(r); err != nil || len(items) != 0 {
		t.Fatalf("empty get: %+v %v", items, err)
	}
	if _, err := ReadGet(r); err == nil || !strings.Contains(err.Error(), "ERROR") {
		t.Fatalf("ERROR read as a get answer: %v", err)
	}
}

func TestSelfSignedCert(t *testing.T) {
	cert, key, err := SelfSignedCert(t.TempDir(), "10.2.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Fatal(err)
	}
	conf := Nginx{Dir: "/d", Listen: "127.0.0.1:4171", Root: "/r", Cert: cert, Key: key}.Config()
	for _, want := range []string{"listen 127.0.0.1:4171 ssl;", "ssl_certificate " + cert, "ssl_protocols TLSv1.2 TLSv1.3;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx config lacks %q:\n%s", want, conf)
		}
	}
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v %v", st.Mode(), err)
	}
}

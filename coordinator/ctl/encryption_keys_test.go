package ctl_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/client"
)

func TestEncryptionKeyList(t *testing.T) {
	const cur = "-----BEGIN CERTIFICATE-----\nMIIBcurrent\n-----END CERTIFICATE-----\n"
	keys := client.EncryptionKeyList{Items: []client.EncryptionKey{
		{ID: "k1", Holder: "alice", Source: "registered", KeyID: "aa11", Certificate: "old", CertificateSerial: "01", Subject: "CN=Alice",
			NotAfter: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC), TokenSerial: "0042", NotCurrent: "its certificate is revoked"},
		{ID: "k2", Holder: "alice", Source: "escrowed", KeyID: "bb22", Certificate: cur, CertificateSerial: "02", Subject: "CN=Alice",
			NotAfter: time.Date(2028, 1, 2, 3, 4, 5, 0, time.UTC), TokenSerial: "0099", Current: true},
	}}
	api := newFakeAPI(t)
	api.on("GET /api/v1/encryption-keys", 200, keys)

	r := runCtl(t, api.env(), "", "encryption-key", "list", "--holder", "alice", "--pem")
	if r.code != 0 || r.stdout != cur {
		t.Fatalf("--pem: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if q := api.requests()[0].Query; q != "holder=alice" {
		t.Fatalf("query %q", q)
	}
	r = runCtl(t, api.env(), "", "encryption-key", "list", "--holder", "alice", "--token", "0099")
	if r.code != 0 || !strings.Contains(r.stdout, "2028-01-02T03:04:05Z") || !strings.Contains(r.stdout, "no: its certificate is revoked") ||
		!strings.Contains(r.stdout, "CURRENT") {
		t.Fatalf("table: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if q := api.requests()[1].Query; q != "holder=alice&token_serial=0099" {
		t.Fatalf("query %q", q)
	}

	// No current key: --pem fails saying so, and prints nothing.
	none := newFakeAPI(t)
	none.on("GET /api/v1/encryption-keys", 200, client.EncryptionKeyList{Items: keys.Items[:1]})
	r = runCtl(t, none.env(), "", "encryption-key", "list", "--holder", "alice", "--pem")
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "alice has no current encryption key") {
		t.Fatalf("no current key: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

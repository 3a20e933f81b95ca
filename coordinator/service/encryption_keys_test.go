package service_test

import (
	"testing"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
)

// TestListEncryptionKeys: a holder's keys with the current one, which a later key replaces
// and a revocation of that later key's certificate gives back; who may read them.
func TestListEncryptionKeys(t *testing.T) {
	t.Parallel()
	bothStores(t, func(t *testing.T, cfg store.Config) {
		e := newEscrowEnv(t, cfg, true)
		alice := actorNamed(t, e.st, "alice")
		if _, err := e.s.CreateUser(e.ctx, e.admin, service.UserRequest{Username: "bob", Organization: "acme", Email: "bob@acme.test"}); err != nil {
			t.Fatal(err)
		}
		list := func(by service.Actor, token string) []service.EncryptionKey {
			t.Helper()
			ks, err := e.s.ListEncryptionKeys(e.ctx, by, "alice", token)
			if err != nil {
				t.Fatalf("%s lists alice's keys: %v", by.Username(), err)
			}
			return ks
		}
		if ks := list(alice, ""); len(ks) != 0 {
			t.Fatalf("before any job: %+v", ks)
		}

		j1, k1 := e.issueEscrowed()
		ks := list(alice, "")
		if len(ks) != 1 || !ks[0].Current || ks[0].KeyID != k1.KeyID || ks[0].Source != store.SourceEscrowed || ks[0].JobID != j1.ID ||
			ks[0].Subject != "CN=Alice Holder" || ks[0].NotAfter.IsZero() || ks[0].CertificateSerial != k1.CertificateSerial {
			t.Fatalf("one escrowed key: %+v", ks)
		}

		// A second key, on T2: it is current, the first is replaced.
		j2, err := e.s.CreateJob(e.ctx, e.desk, service.JobRequest{Kind: jobs.KindIssue, Holder: "alice", Agent: "ws-01", Profile: "enc", TokenSerial: "T2"})
		if err != nil {
			t.Fatal(err)
		}
		e.succeed(j2.ID)
		ks = list(e.officers[0], "")
		if len(ks) != 2 || ks[0].Current || ks[0].NotCurrent != "a later key of the holder is current" || !ks[1].Current || ks[1].JobID != j2.ID {
			t.Fatalf("two keys: %+v", ks)
		}
		if ks := list(e.desk, "T1"); len(ks) != 1 || ks[0].JobID != j1.ID || ks[0].Current {
			t.Fatalf("the keys on T1: %+v", ks)
		}

		// Its certificate revoked, the second is not current and the first is again.
		if _, err := e.s.RevokeCertificate(e.ctx, actorNamed(t, e.st, "cao"), ks[1].CertificateSerial, 1, "key compromised"); err != nil {
			t.Fatal(err)
		}
		ks = list(alice, "")
		if len(ks) != 2 || !ks[0].Current || ks[1].Current || ks[1].Revoked.IsZero() || ks[1].NotCurrent != "its certificate is revoked" {
			t.Fatalf("after the revocation: %+v", ks)
		}

		// Refusals: no holder, an unknown one, a user without a role, an approver (who
		// reads no certificates).
		_, err = e.s.ListEncryptionKeys(e.ctx, e.desk, " ", "")
		wantRefusal(t, "no holder", err, service.CodeBadRequest, "holder=USERNAME")
		_, err = e.s.ListEncryptionKeys(e.ctx, e.desk, "nobody", "")
		wantRefusal(t, "unknown holder", err, service.CodeBadRequest, `no user named "nobody"`)
		_, err = e.s.ListEncryptionKeys(e.ctx, actorNamed(t, e.st, "bob"), "alice", "")
		wantRefusal(t, "no role", err, service.CodeForbidden, "holds no role")
		_, err = e.s.ListEncryptionKeys(e.ctx, e.boss, "alice", "")
		wantRefusal(t, "approver", err, service.CodeForbidden, "certificates")
	})
}

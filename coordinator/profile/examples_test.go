package profile

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
)

const examplesDir = "../../examples/profiles"

func loadExamples(t *testing.T) map[string]Profile {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no profile in %s", examplesDir)
	}
	out := map[string]Profile{}
	for _, f := range files {
		ps, err := LoadFile(f)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for _, p := range ps {
			if err := p.Validate(); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			if err := p.Approval.Policy().Validate(); err != nil {
				t.Errorf("%s: approval policy refused by the job rules: %v", f, err)
			}
			if _, err := p.Usages(); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			if _, dup := out[p.Name]; dup {
				t.Errorf("profile %q defined in two example files", p.Name)
			}
			out[p.Name] = p
		}
	}
	return out
}

func TestExamplesLoad(t *testing.T) {
	ps := loadExamples(t)
	for _, name := range []string{"smartcard-logon", "email-signing", "server-high-assurance"} {
		if _, ok := ps[name]; !ok {
			t.Errorf("example %s missing", name)
		}
		if _, err := os.Stat(filepath.Join(examplesDir, name+".yaml")); err != nil {
			t.Errorf("example %s is not in %s.yaml", name, name)
		}
	}
}

func TestExampleSmartcardLogon(t *testing.T) {
	p := loadExamples(t)["smartcard-logon"]
	u, _ := p.Usages()
	pol := p.Approval.Policy()
	if p.Key != (KeySpec{Type: KeyRSA, Size: 2048}) || !p.Token.Initialize ||
		u.KeyUsage&x509.KeyUsageDigitalSignature == 0 ||
		!slices.Contains(u.ExtKeyUsage, x509.ExtKeyUsageClientAuth) ||
		len(u.UnknownExtKeyUsage) != 1 || !u.UnknownExtKeyUsage[0].Equal(OIDSmartcardLogon) ||
		pol.Required != 1 || !slices.Equal(pol.Roles, []jobs.Role{jobs.RoleApprover}) || pol.Scope != jobs.ScopeOrganization || pol.CAOperatorRequired {
		t.Fatalf("smartcard-logon: %+v / %+v / %+v", p, u, pol)
	}
	id, err := p.Render(ann)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.UPNs) != 1 || id.UPNs[0] != ann.UPN || id.Subject.CommonName != ann.Name || id.TokenLabel != ann.Name {
		t.Errorf("identity %+v", id)
	}
}

func TestExampleEmailSigning(t *testing.T) {
	p := loadExamples(t)["email-signing"]
	u, _ := p.Usages()
	if p.Key != (KeySpec{Type: KeyEC, Curve: "P-256"}) || p.Token.Initialize ||
		u.KeyUsage&x509.KeyUsageContentCommitment == 0 || !slices.Equal(u.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}) {
		t.Fatalf("email-signing: %+v / %+v", p, u)
	}
	id, err := p.Render(ann)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Emails) != 1 || id.Emails[0] != ann.Email || id.TokenLabel != "" {
		t.Errorf("identity %+v", id)
	}
}

func TestExampleServerHighAssurance(t *testing.T) {
	p := loadExamples(t)["server-high-assurance"]
	pol := p.Approval.Policy()
	if pol.Required != 2 || !pol.CAOperatorRequired || pol.ExpiresAfter != 48*time.Hour {
		t.Fatalf("server-high-assurance policy %+v", pol)
	}
	id, err := p.Render(ann)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.DNSNames) != 1 || id.DNSNames[0] != "web01.acme.example" || id.TokenLabel != "srv Web01.acme.example" {
		t.Errorf("identity %+v", id)
	}
	if _, err := p.Render(Holder{ID: "svc-1", Organization: "Acme"}); err == nil {
		t.Error("a holder without hostname renders")
	}
}

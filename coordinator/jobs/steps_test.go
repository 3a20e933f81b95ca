package jobs

import (
	"errors"
	"strings"
	"testing"
)

type report struct {
	state State
	step  Step
}

func run(kind Kind, reports []report) (Progress, int, error) {
	var p Progress
	for i, r := range reports {
		next, err := AdvanceStep(kind, r.state, p, r.step)
		if err != nil {
			return p, i, err
		}
		p = next
	}
	return p, len(reports), nil
}

func TestAdvanceStepAccepted(t *testing.T) {
	R, I, A := StateRunning, StateInstalling, StateAwaitingCertificate
	tests := []struct {
		name        string
		kind        Kind
		reports     []report
		wantHighest Step
	}{
		{"issue, full run", KindIssue, []report{
			{R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepInitialising}, {R, StepKeyGenerated},
			{R, StepCSRSent}, {I, StepCertificateWritten}, {I, StepVerified},
		}, StepVerified},
		{"issue, token already present, no initialisation", KindIssue, []report{
			{R, StepTokenFound}, {R, StepKeyGenerated}, {R, StepCSRSent},
		}, StepCSRSent},
		{"repeated reports", KindIssue, []report{
			{R, StepWaitingForToken}, {R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepTokenFound},
			{R, StepKeyGenerated}, {R, StepKeyGenerated},
		}, StepKeyGenerated},
		{"token removed after key generation, same key re-checked", KindIssue, []report{
			{R, StepTokenFound}, {R, StepInitialising}, {R, StepKeyGenerated},
			{R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepKeyGenerated}, {R, StepCSRSent},
		}, StepCSRSent},
		{"token removed while awaiting the certificate", KindIssue, []report{
			{R, StepTokenFound}, {R, StepKeyGenerated}, {R, StepCSRSent},
			{A, StepWaitingForToken}, {A, StepTokenFound}, {I, StepCertificateWritten}, {I, StepVerified},
		}, StepVerified},
		{"token removed while installing", KindRenew, []report{
			{R, StepTokenFound}, {R, StepKeyGenerated}, {R, StepCSRSent},
			{I, StepWaitingForToken}, {I, StepTokenFound}, {I, StepCertificateWritten}, {I, StepVerified},
		}, StepVerified},
		{"install_certificate in running", KindInstallCertificate, []report{
			{R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepCertificateWritten}, {R, StepVerified},
		}, StepVerified},
		{"wipe", KindWipe, []report{{R, StepTokenFound}, {R, StepInitialising}, {R, StepVerified}}, StepVerified},
		{"unblock_pin", KindUnblockPIN, []report{{R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepVerified}}, StepVerified},
		{"inventory", KindInventory, []report{{R, StepWaitingForToken}, {R, StepTokenFound}}, StepTokenFound},
		{"csr", KindCSR, []report{{R, StepTokenFound}, {R, StepInitialising}, {R, StepKeyGenerated}, {R, StepCSRSent}}, StepCSRSent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, i, err := run(tt.kind, tt.reports)
			if err != nil {
				t.Fatalf("report %d (%v) refused: %v", i, tt.reports[i], err)
			}
			if p.Highest != tt.wantHighest || p.Current != tt.reports[len(tt.reports)-1].step {
				t.Errorf("progress %+v, want highest %s", p, tt.wantHighest)
			}
		})
	}
}

func TestAdvanceStepRefused(t *testing.T) {
	R, I, A := StateRunning, StateInstalling, StateAwaitingCertificate
	tests := []struct {
		name    string
		kind    Kind
		reports []report // the last one must be refused
		code    Code
		wantIn  string
	}{
		{"backwards", KindIssue, []report{{R, StepKeyGenerated}, {R, StepInitialising}}, CodeIllegalStep, "go back from key_generated"},
		{"re-initialise after removal would wipe the key", KindIssue, []report{
			{R, StepKeyGenerated}, {R, StepWaitingForToken}, {R, StepTokenFound}, {R, StepInitialising},
		}, CodeIllegalStep, "initialising would go back"},
		{"work while waiting for the token", KindIssue, []report{{R, StepWaitingForToken}, {R, StepKeyGenerated}}, CodeIllegalStep, "token_found must come first"},
		{"token_found out of nowhere", KindIssue, []report{{R, StepKeyGenerated}, {R, StepTokenFound}}, CodeIllegalStep, "without waiting_for_token"},
		{"renew never initialises", KindRenew, []report{{R, StepTokenFound}, {R, StepInitialising}}, CodeIllegalStep, "renew job does not report step initialising"},
		{"wipe makes no key", KindWipe, []report{{R, StepKeyGenerated}}, CodeIllegalStep, "wipe job does not report"},
		{"revoke reports nothing", KindRevoke, []report{{R, StepTokenFound}}, CodeIllegalStep, "revoke job"},
		{"certificate before installing", KindIssue, []report{{R, StepCSRSent}, {R, StepCertificateWritten}}, CodeIllegalStep, "only while installing"},
		{"verified while awaiting", KindIssue, []report{{R, StepCSRSent}, {A, StepVerified}}, CodeIllegalStep, "only while installing"},
		{"step before running", KindIssue, []report{{StateDispatched, StepWaitingForToken}}, CodeIllegalStep, "while the job is dispatched"},
		{"step after the end", KindIssue, []report{{StateSucceeded, StepVerified}}, CodeIllegalStep, "while the job is succeeded"},
		{"anything after verified", KindWipe, []report{{R, StepVerified}, {R, StepWaitingForToken}}, CodeIllegalStep, "after verified"},
		{"unknown step", KindIssue, []report{{R, "pin_set"}}, CodeIllegalStep, `"pin_set"`},
		{"unknown kind", "enroll", []report{{R, StepTokenFound}}, CodeInvalidInput, `"enroll"`},
		{"unknown state", KindIssue, []report{{"busy", StepTokenFound}}, CodeInvalidInput, `"busy"`},
		{"installing, csr again", KindIssue, []report{{R, StepCSRSent}, {I, StepCertificateWritten}, {I, StepCSRSent}}, CodeIllegalStep, "go back"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, i, err := run(tt.kind, tt.reports)
			if err == nil {
				t.Fatal("all reports accepted")
			}
			if i != len(tt.reports)-1 {
				t.Fatalf("report %d refused too early: %v", i, err)
			}
			var je *Error
			if !errors.As(err, &je) || je.Code != tt.code {
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("message %q lacks %q", err, tt.wantIn)
			}
		})
	}
}

func TestAdvanceStepInconsistentProgress(t *testing.T) {
	_, err := AdvanceStep(KindIssue, StateRunning, Progress{Current: StepCSRSent, Highest: StepTokenFound}, StepCSRSent)
	if !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("got %v, want invalid_input", err)
	}
}

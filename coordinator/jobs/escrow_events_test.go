package jobs

import (
	"errors"
	"testing"
)

// The escrowed kinds import a key the coordinator made: they report the import, never a
// key generated on the token, a CSR or an initialise; register_certificate only finds the
// token and reports its result.
func TestEscrowedKindsEventTable(t *testing.T) {
	running := Progress{Current: StepTokenFound, Highest: StepTokenFound}
	imported := Progress{Current: StepKeyImported, Highest: StepKeyImported}
	for _, tc := range []struct {
		kind Kind
		p    Progress
		ev   EventKind
		step Step
		want Code // "" for accepted
	}{
		{KindServerKeygen, running, EventProgress, StepKeyImported, ""},
		{KindServerKeygen, imported, EventProgress, StepCertificateWritten, ""},
		{KindServerKeygen, running, EventProgress, StepKeyGenerated, CodeIllegalStep},
		{KindServerKeygen, running, EventProgress, StepInitialising, CodeIllegalStep},
		{KindServerKeygen, running, EventProgress, StepCSRSent, CodeIllegalStep},
		{KindServerKeygen, running, EventCSR, "", CodeEventNotAllowed},
		{KindServerKeygen, imported, EventSucceeded, "", ""},
		{KindRecoverKey, running, EventProgress, StepKeyImported, ""},
		{KindRecoverKey, running, EventProgress, StepKeyGenerated, CodeIllegalStep},
		{KindRecoverKey, running, EventCSR, "", CodeEventNotAllowed},
		{KindRegisterCertificate, running, EventProgress, StepKeyImported, CodeIllegalStep},
		{KindRegisterCertificate, running, EventProgress, StepCertificateWritten, CodeIllegalStep},
		{KindRegisterCertificate, running, EventCSR, "", CodeEventNotAllowed},
		{KindRegisterCertificate, running, EventSucceeded, "", ""},
	} {
		_, err := AcceptEvent(tc.kind, StateRunning, true, tc.p, tc.ev, tc.step)
		var je *Error
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %s %s: refused: %v", tc.kind, tc.ev, tc.step, err)
		case tc.want != "" && (!errors.As(err, &je) || je.Code != tc.want):
			t.Errorf("%s %s %s: %v, want %s", tc.kind, tc.ev, tc.step, err, tc.want)
		}
	}
	// Nothing of a pending recovery is taken: it was never dispatched.
	if _, err := AcceptEvent(KindRecoverKey, StateApproved, false, Progress{}, EventProgress, StepWaitingForToken); err == nil {
		t.Error("a recovery waiting for its officer took a progress report")
	}
}

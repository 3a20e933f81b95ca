package jobs

import "slices"

// Progress is what the coordinator remembers of a run's steps: the last step reported and
// the furthest one reached. The zero value is a run with no step yet; a new attempt starts
// from the zero value again.
type Progress struct {
	Current Step `json:"current,omitempty"`
	Highest Step `json:"highest,omitempty"`
}

// kindSteps lists the steps each kind may report. renew never initialises: that would wipe
// the token it renews. revoke runs on the coordinator and reports none. Steps lists them
// all in run order; no kind passes every one.
var kindSteps = map[Kind][]Step{
	KindIssue:              {StepWaitingForToken, StepTokenFound, StepInitialising, StepKeyGenerated, StepCSRSent, StepCertificateWritten, StepVerified},
	KindRenew:              {StepWaitingForToken, StepTokenFound, StepKeyGenerated, StepCSRSent, StepCertificateWritten, StepVerified},
	KindCSR:                {StepWaitingForToken, StepTokenFound, StepInitialising, StepKeyGenerated, StepCSRSent},
	KindInstallCertificate: {StepWaitingForToken, StepTokenFound, StepCertificateWritten, StepVerified},
	KindUnblockPIN:         {StepWaitingForToken, StepTokenFound, StepVerified},
	KindWipe:               {StepWaitingForToken, StepTokenFound, StepInitialising, StepVerified},
	KindInventory:          {StepWaitingForToken, StepTokenFound},
	KindRevoke:             nil,
	// The escrowed kinds import a key the coordinator made, then write its certificate:
	// no initialising (that would need PINs the coordinator hands out), no CSR.
	KindServerKeygen:        {StepWaitingForToken, StepTokenFound, StepKeyImported, StepCertificateWritten, StepVerified},
	KindRecoverKey:          {StepWaitingForToken, StepTokenFound, StepKeyImported, StepCertificateWritten, StepVerified},
	KindRegisterCertificate: {StepWaitingForToken, StepTokenFound},
}

// MayReinitialise reports whether a job of the kind may re-initialise its token, which it
// reports with the initialising step (issue, csr and wipe).
func MayReinitialise(k Kind) bool { return slices.Contains(kindSteps[k], StepInitialising) }

// AdvanceStep validates a step reported for a job of the given kind in the given state and
// returns the progress after it. Steps never go back within an attempt; a step may repeat
// (a re-sent report, or the agent re-checking a key it already made). The exception is
// waiting_for_token: the token may be removed at any point, so the agent may wait again,
// must then report token_found, and continues from where it was — never earlier: going
// back to initialising after key_generated would wipe the key the job already made.
func AdvanceStep(kind Kind, state State, p Progress, s Step) (Progress, error) {
	if !KnownKind(kind) {
		return p, errorf(CodeInvalidInput, "unknown job kind %q (known: %s)", kind, joinKinds())
	}
	if err := knownStates(state); err != nil {
		return p, err
	}
	if !KnownStep(s) {
		return p, errorf(CodeIllegalStep, "unknown step %q", s)
	}
	if (p.Current != "" && !KnownStep(p.Current)) || (p.Highest != "" && !KnownStep(p.Highest)) || stepRank(p.Current) > stepRank(p.Highest) {
		return p, errorf(CodeInvalidInput, "inconsistent progress (current %q, highest %q)", p.Current, p.Highest)
	}
	if !slices.Contains(kindSteps[kind], s) {
		return p, errorf(CodeIllegalStep, "a %s job does not report step %s", kind, s)
	}
	if !Started(state) {
		return p, errorf(CodeIllegalStep, "step %s reported while the job is %s; steps are reported only while it runs", s, state)
	}
	// The certificate exists only once the coordinator signed it and sent it out.
	if NeedsCertificate(kind) && (s == StepCertificateWritten || s == StepVerified) && state != StateInstalling {
		return p, errorf(CodeIllegalStep, "step %s reported while the job is %s; the certificate is written only while installing", s, state)
	}
	if p.Current == StepVerified {
		return p, errorf(CodeIllegalStep, "step %s reported after verified; the run is complete", s)
	}
	switch s {
	case StepWaitingForToken:
		// Always allowed: the token may have been removed.
	case StepTokenFound:
		if p.Current != "" && p.Current != StepWaitingForToken && p.Current != StepTokenFound {
			return p, errorf(CodeIllegalStep, "token_found reported after %s without waiting_for_token", p.Current)
		}
	default:
		if p.Current == StepWaitingForToken {
			return p, errorf(CodeIllegalStep, "%s reported while waiting for the token; token_found must come first", s)
		}
		if stepRank(s) < stepRank(p.Highest) {
			return p, errorf(CodeIllegalStep, "step %s would go back from %s", s, p.Highest)
		}
	}
	next := Progress{Current: s, Highest: p.Highest}
	if stepRank(s) > stepRank(p.Highest) {
		next.Highest = s
	}
	return next, nil
}

// KindSteps lists the steps a job of kind k may report, in run order.
func KindSteps(k Kind) []Step { return slices.Clone(kindSteps[k]) }

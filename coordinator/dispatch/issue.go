package dispatch

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/ca"
	"github.com/tokenfleet/tokenfleet/coordinator/jobs"
	"github.com/tokenfleet/tokenfleet/coordinator/profile"
	"github.com/tokenfleet/tokenfleet/coordinator/ra"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// ActorRA is the registration authority in timelines and the audit log.
const ActorRA = "system:ra"

// onCSR checks the CSR of an issue, renew or csr job that the event table let through
// (the job runs, no CSR taken yet) and, when the profile needs no CA-operator gate, has
// it signed at once.
func (d *Dispatcher) onCSR(ctx context.Context, jt *service.JobTx, e *jobEvent) (string, verdict, error) {
	j, c, del := e.job, e.csr, e.del
	p, err := d.jobProfile(ctx, jt, j)
	if err != nil {
		return "", verdict{}, err
	}
	att := e.att
	if len(att.PublicKey) == 0 && att.CSR == nil && d.early.again(del.Envelope.ID, del.DeliveryCount) {
		// key_generated comes before the CSR, but another coordinator may still be on it.
		return "", verdict{later: fmt.Errorf("CSR of job %s attempt %d came before its key_generated report", j.ID, j.Attempt)}, nil
	}
	var checked *ra.CheckedCSR
	if want := protocol.DeriveKeyID(j.ID); c.KeyID != want {
		err = protocol.NewError(protocol.CodeKeyMismatch, "the CSR is for the key with CKA_ID %s; the job's key is %s", c.KeyID, want)
	} else {
		checked, err = ra.Check(c.CSR, ra.Expectation{JobID: j.ID, Attempt: j.Attempt, Profile: p, ReportedKey: att.PublicKey,
			CSRAccepted: len(att.CSR) > 0})
	}
	if err != nil {
		res, err := d.csrRefused(ctx, jt, j, err)
		return res, verdict{}, err
	}
	if err := jt.RecordAttemptCSR(ctx, j.ID, j.Attempt, c.CSR, d.clock()); err != nil {
		return "", verdict{}, err
	}
	log := d.log.With().Str("job", j.ID).Int("attempt", j.Attempt).Logger()
	if ign := checked.Ignored(); ign != "" {
		log.Info().Str("ignored", ign).Msg("CSR accepted; the names it asks for are not used: the certificate's come from the approved request")
	}
	if j.Kind == jobs.KindCSR {
		res := "csr accepted, not signed"
		if p.Approval.CAOperatorRequired {
			log.Warn().Msg("CSR of a csr job accepted but not signed: its profile requires the CA-operator gate, which a csr job does not pass")
		} else {
			signed := j
			if signed.TokenSerial == "" {
				signed.TokenSerial = c.TokenSerial // for the certificate's record only
			}
			cert, err := d.sign(ctx, jt, signed, p, checked)
			var r *refusedError
			if errors.As(err, &r) {
				res, err := d.csrRefused(ctx, jt, j, r.err)
				return res, verdict{}, err
			}
			if err != nil {
				return "", verdict{}, err
			}
			res = "csr accepted, certificate " + ca.FormatSerial(cert.SerialNumber) + " issued"
		}
		if att.ResultMessageID == "" || att.ResultSummary != string(protocol.OutcomeSucceeded) {
			return res, verdict{}, nil
		}
		// The agent's success came first (onResult took it, waiting for this CSR): the job
		// succeeds now.
		change := store.JobChange{Actor: agentActor(j.AgentID), Reason: "the agent reported success; its CSR came after", Error: &store.JobError{}}
		if j.TokenSerial == "" {
			change.TokenSerial = att.TokenSerial
		}
		if _, err := jt.Transition(ctx, j, jobs.StateSucceeded, change); err != nil {
			return "", verdict{}, err
		}
		return res + "; succeeded", verdict{wake: true}, nil
	}
	change := store.JobChange{Actor: ActorRA, Reason: "CSR accepted: signed by the key reported for the attempt, allowed by the profile"}
	if j.TokenSerial == "" {
		// The token a blank-token selector picked becomes the job's: the certificate is
		// recorded on it, and a retry goes back to it.
		change.TokenSerial = c.TokenSerial
	}
	j, err = jt.Transition(ctx, j, jobs.StateAwaitingCertificate, change)
	if err != nil {
		return "", verdict{}, err
	}
	if p.Approval.CAOperatorRequired {
		return "csr accepted, awaiting the CA operator", verdict{}, nil
	}
	res, err := d.issueCertificate(ctx, jt, j, p, checked)
	return res, verdict{}, err
}

// csrRefused fails the job with the RA's reason and audits the refusal.
func (d *Dispatcher) csrRefused(ctx context.Context, tx *service.JobTx, j store.Job, why error) (string, error) {
	code, msg := refusalOf(why)
	d.log.Warn().Str("job", j.ID).Int("attempt", j.Attempt).Str("code", string(code)).Str("reason", msg).Msg("CSR refused")
	if err := tx.Audit(ctx, audit.Entry{Actor: ActorRA, Action: audit.ActionCSRRejected, JobID: j.ID, Target: "agent:" + j.AgentID,
		Reason: msg, Details: audit.Details("code", string(code), "attempt", j.Attempt)}); err != nil {
		return "", err
	}
	if _, err := d.fail(ctx, tx, j, ActorRA, code, "CSR refused: "+msg); err != nil {
		return "", err
	}
	return "csr refused: " + string(code), nil
}

// refusalOf gives the code and message of a refusal from the RA, the CA or the protocol.
func refusalOf(err error) (protocol.ErrorCode, string) {
	var re *ra.Error
	if errors.As(err, &re) {
		return re.Code, re.Msg
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	return protocol.CodeInternal, err.Error()
}

// CAGatePassed implements service.Issuer: the CA operator approved a job waiting in
// awaiting_certificate; its accepted CSR is checked again and signed, in the service's
// transaction.
func (d *Dispatcher) CAGatePassed(ctx context.Context, tx *service.JobTx, j store.Job) error {
	if j.Kind == jobs.KindServerKeygen && j.State == jobs.StateApproved {
		// Its certificate is signed as its dispatch is built, which waited for this.
		_, err := d.tryDispatch(ctx, tx, j)
		return err
	}
	if j.State != jobs.StateAwaitingCertificate {
		return fmt.Errorf("dispatch: job %s is %s, not awaiting its certificate", j.ID, j.State)
	}
	p, err := d.jobProfile(ctx, tx, j)
	if err != nil {
		return err
	}
	att, err := tx.GetJobAttempt(ctx, j.ID, j.Attempt)
	if err != nil {
		return err
	}
	if len(att.CSR) == 0 {
		return fmt.Errorf("dispatch: job %s attempt %d has no accepted CSR", j.ID, j.Attempt)
	}
	checked, err := ra.Check(att.CSR, ra.Expectation{JobID: j.ID, Attempt: j.Attempt, Profile: p, ReportedKey: att.PublicKey})
	if err != nil {
		_, err = d.csrRefused(ctx, tx, j, err)
		return err
	}
	_, err = d.issueCertificate(ctx, tx, j, p, checked)
	return err
}

// issueCertificate signs the checked CSR of a job in awaiting_certificate, records the
// certificate, queues its delivery and moves the job to installing.
func (d *Dispatcher) issueCertificate(ctx context.Context, tx *service.JobTx, j store.Job, p profile.Profile, checked *ra.CheckedCSR) (string, error) {
	cert, err := d.sign(ctx, tx, j, p, checked)
	var r *refusedError
	if errors.As(err, &r) {
		return d.csrRefused(ctx, tx, j, r.err)
	}
	if err != nil {
		return "", err
	}
	chain := make([][]byte, 0, 2)
	for _, c := range d.ca.CACertificates() {
		chain = append(chain, c.Raw)
	}
	serial := ca.FormatSerial(cert.SerialNumber)
	if _, err := d.enqueue(ctx, tx, j.AgentID, protocol.JobRef{JobID: j.ID, Attempt: uint32(j.Attempt)}, protocol.CertificateDelivery{
		KeyID:        protocol.DeriveKeyID(j.ID),
		Certificates: protocol.CertificateChain{Certificate: cert.Raw, Chain: chain},
	}); err != nil {
		return "", err
	}
	if _, err := tx.Transition(ctx, j, jobs.StateInstalling, store.JobChange{Actor: ActorCA,
		Reason: "certificate " + serial + " issued and sent to the agent"}); err != nil {
		return "", err
	}
	return "certificate " + serial + " issued", nil
}

// refusedError is a CSR that cannot be signed as approved: the job fails. Other errors
// of sign are failures of the store or the CA, worth retrying.
type refusedError struct{ err error }

func (r *refusedError) Error() string { return r.err.Error() }
func (r *refusedError) Unwrap() error { return r.err }

func refused(err error) error { return &refusedError{err: err} }

// sign has the CA sign a checked CSR with the names of the approved request, records the
// certificate and audits it. A refusal is a *refusedError.
func (d *Dispatcher) sign(ctx context.Context, tx *service.JobTx, j store.Job, p profile.Profile, checked *ra.CheckedCSR) (*x509.Certificate, error) {
	id, err := identity(ctx, tx, p, j)
	if err != nil {
		var pe *profile.Error
		if errors.As(err, &pe) {
			return nil, refused(protocol.NewError(protocol.CodePolicyViolation, "the holder's record no longer renders the profile: %v", err))
		}
		return nil, err
	}
	if !bindingHolds(j, id) {
		return nil, refused(protocol.NewError(protocol.CodePolicyViolation,
			"the holder's record no longer gives the names that were approved (%s); file a new request", id.Canonical()))
	}
	// Only an active token takes a certificate (the help desk may have suspended it since
	// the request, or the agent picked a token the request did not name), and a temporary
	// token only while its original is still suspended.
	err = service.TokenIssuable(ctx, tx, j.TokenSerial)
	if err == nil {
		err = service.CheckTokenRequest(ctx, tx, j.ID)
	}
	if err != nil {
		var se *service.Error
		if errors.As(err, &se) {
			return nil, refused(protocol.NewError(protocol.CodePolicyViolation, "%s", se.Msg))
		}
		return nil, err
	}
	temporary, err := service.CertificateValidityTemporary(ctx, tx, j.ID)
	if err != nil {
		return nil, err
	}
	req, err := ra.BuildSignRequest(checked, p, id)
	if err != nil {
		return nil, refused(err)
	}
	req.Validity = p.CertificateValidity(temporary)
	start := time.Now()
	cert, err := d.ca.Sign(ctx, req)
	d.opts.Observer.Signed(time.Since(start), err)
	if err != nil {
		switch ca.CodeOf(err) {
		case ca.CodeUnavailable:
			return nil, err
		case ca.CodeWeakKey:
			return nil, refused(protocol.NewError(protocol.CodeWeakKey, "%v", err))
		case ca.CodeBadRequest:
			return nil, refused(protocol.NewError(protocol.CodePolicyViolation, "%v", err))
		}
		return nil, refused(protocol.NewError(protocol.CodeInternal, "the CA cannot sign: %v", err))
	}
	serial := ca.FormatSerial(cert.SerialNumber)
	if _, err := tx.AddCertificate(ctx, store.Certificate{Serial: serial, JobID: j.ID, HolderID: j.HolderID, Profile: p.Name,
		TokenSerial: j.TokenSerial, AgentID: j.AgentID, Subject: subjectText(cert), Issuer: cert.Issuer.String(),
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, DER: cert.Raw, Created: d.clock()}); err != nil {
		return nil, err
	}
	if err := tx.Audit(ctx, audit.Entry{Actor: ActorCA, Action: audit.ActionCertificateIssued, JobID: j.ID,
		Target: "certificate:" + serial, Details: audit.Details("subject", subjectText(cert), "profile", p.Name, "attempt", j.Attempt,
			"not_after", cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"), "key_type", string(checked.KeyType))}); err != nil {
		return nil, err
	}
	d.log.Info().Str("job", j.ID).Int("attempt", j.Attempt).Str("serial", serial).Str("subject", subjectText(cert)).Msg("certificate issued")
	return cert, nil
}

// subjectText names a certificate's subject, or its first alternative name when the
// subject is empty.
func subjectText(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	names := append(append([]string(nil), c.EmailAddresses...), c.DNSNames...)
	if len(names) > 0 {
		return "SAN " + strings.Join(names, ", ")
	}
	return "(no subject)"
}

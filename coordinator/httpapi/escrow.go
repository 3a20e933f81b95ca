package httpapi

import (
	"encoding/pem"
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

func escrowedKeyOut(k service.EscrowedKey) api.EscrowedKey {
	return api.EscrowedKey{ID: k.ID, JobID: k.JobID, Attempt: k.Attempt, Holder: k.Holder, TokenSerial: k.TokenSerial, KeyID: k.KeyID,
		CertificateSerial: k.CertificateSerial, State: string(k.State), StateReason: k.StateReason, Created: k.Created,
		RecoveredTo: k.RecoveredTo, RecoveredJob: k.RecoveredJobID, Recovered: k.Recovered}
}

func (a *server) listEscrowedKeys(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "holder", "token_serial")
	if err != nil {
		a.fail(w, err)
		return
	}
	ks, err := a.svc.ListEscrowedKeys(r.Context(), u, q.get("holder"), q.get("token_serial"))
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.EscrowedKeyList{Items: make([]api.EscrowedKey, len(ks))}
	for i, k := range ks {
		out.Items[i] = escrowedKeyOut(k)
	}
	writeJSON(w, http.StatusOK, out)
}

func encryptionKeyOut(k service.EncryptionKey) api.EncryptionKey {
	return api.EncryptionKey{ID: k.ID, Holder: k.Holder, Source: string(k.Source), KeyID: k.KeyID,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Certificate})), CertificateSerial: k.CertificateSerial,
		Subject: k.Subject, NotBefore: k.NotBefore, NotAfter: k.NotAfter, Revoked: k.Revoked, TokenSerial: k.TokenSerial, JobID: k.JobID,
		EscrowedKey: k.EscrowedKeyID, Created: k.Created, Current: k.Current, NotCurrent: k.NotCurrent}
}

func (a *server) listEncryptionKeys(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "holder", "token_serial")
	if err != nil {
		a.fail(w, err)
		return
	}
	ks, err := a.svc.ListEncryptionKeys(r.Context(), u, q.get("holder"), q.get("token_serial"))
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.EncryptionKeyList{Items: make([]api.EncryptionKey, len(ks))}
	for i, k := range ks {
		out.Items[i] = encryptionKeyOut(k)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *server) recoverEscrowedKey(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.RecoveryCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	j, err := a.svc.RequestRecovery(r.Context(), u, r.PathValue("id"), service.RecoveryRequest{Target: in.Target, Agent: in.Agent,
		TokenSerial: in.TokenSerial, Reason: in.Reason})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, jobOut(j))
}

func (a *server) recoveryArchive(w http.ResponseWriter, r *http.Request, u service.Actor) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	ra, err := a.svc.RecoveryArchive(r.Context(), u, r.PathValue("job"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.RecoveryArchive{JobID: ra.JobID, Attempt: ra.Attempt, Target: ra.Target, Holder: ra.Holder,
		EscrowedKey: ra.EscrowedKey.ID, KeyID: ra.EscrowedKey.KeyID, Archive: ra.EscrowedKey.Archive, Agent: ra.AgentID,
		TokenSerial: ra.TokenSerial, AgentSealKey: ra.AgentSealKey, Purpose: ra.Purpose, Approvals: ra.Approvals, Required: ra.Required})
}

func (a *server) deliverRecovery(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.RecoveryDelivery
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	d, err := a.svc.DeliverRecovery(r.Context(), u, r.PathValue("job"), service.RecoveryDelivery{PrivateKey: in.PrivateKey, PKCS12: in.PKCS12})
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, jobDetailOut(d))
}

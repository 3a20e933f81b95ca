package httpapi

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// Enrolment is what self-enrolling agents are told besides their own identity.
type Enrolment struct {
	BrokerURL string // where agents connect, without credentials (amqps://mq.example.org:5671/tokenfleet)
	ResultKey []byte // the coordinator's X25519 key agents seal PINs to (PKIX DER)
	// TrustForwardedProto takes X-Forwarded-Proto: https from a TLS-terminating proxy as
	// proof that a plain-HTTP request came over TLS (the coordinator's insecure_http).
	TrustForwardedProto bool
}

// secure reports whether the request's secrets crossed no network in clear: it came over
// TLS, from this host, or through a trusted TLS-terminating proxy.
func (a *server) secure(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if a.enrolment.TrustForwardedProto && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		return true
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *server) createEnrolmentKeys(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.EnrolmentKeyCreate
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	var expires time.Duration
	if in.ExpiresIn != "" {
		d, err := time.ParseDuration(in.ExpiresIn)
		if err != nil {
			a.fail(w, &service.Error{Code: service.CodeBadRequest, Field: "expires_in", Msg: "is not a duration: write it as 15m, 72h or 504h"})
			return
		}
		expires = d
	}
	keys, err := a.svc.CreateEnrolmentKeys(r.Context(), u, service.EnrolmentKeyRequest{Kind: service.EnrolmentKind(in.Kind),
		Count: in.Count, Name: in.Name, Organization: in.Organization, Tags: in.Tags, AgentID: in.AgentID,
		PreApproved: in.PreApproved, MaxUses: in.MaxUses, ExpiresIn: expires})
	if err != nil {
		a.fail(w, err)
		return
	}
	out := api.EnrolmentKeys{Items: make([]api.EnrolmentKey, len(keys))}
	for i, k := range keys {
		out.Items[i] = enrolmentKeyOut(k.EnrolmentKey)
		out.Items[i].Secret = k.Secret
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *server) listEnrolmentKeys(w http.ResponseWriter, r *http.Request, u service.Actor) {
	q, err := parseQuery(r, "limit", "cursor", "kind", "usable")
	if err != nil {
		a.fail(w, err)
		return
	}
	p, err := q.page()
	if err != nil {
		a.fail(w, err)
		return
	}
	usable, err := q.boolean("usable")
	if err != nil {
		a.fail(w, err)
		return
	}
	keys, next, err := a.svc.ListEnrolmentKeys(r.Context(), u, service.EnrolmentKeyQuery{Kind: service.EnrolmentKind(q.get("kind")), Usable: usable}, p)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, listOf(keys, next, enrolmentKeyOut))
}

func (a *server) revokeEnrolmentKey(w http.ResponseWriter, r *http.Request, u service.Actor) {
	var in api.Reason
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
		a.fail(w, err)
		return
	}
	k, err := a.svc.RevokeEnrolmentKey(r.Context(), u, r.PathValue("id"), in.Reason)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, enrolmentKeyOut(k))
}

func enrolmentKeyOut(k service.EnrolmentKey) api.EnrolmentKey {
	return api.EnrolmentKey{ID: k.ID, Kind: string(k.Kind), Name: k.Name, Organization: k.Organization, Tags: k.Tags,
		AgentID: k.AgentID, PreApproved: k.PreApproved, MaxUses: k.MaxUses, Uses: k.Uses, Created: k.Created,
		CreatedBy: k.CreatedBy, Expires: k.Expires, LastUsed: k.LastUsed, Revoked: k.Revoked}
}

// enrol is an agent enrolling itself: authenticated by its code, not by an API token.
func (a *server) enrolSelf(w http.ResponseWriter, r *http.Request) {
	var in api.Enrol
	if err := firstErr(noQuery(r), decodeJSON(w, r, &in, true)); err != nil {
		a.fail(w, err)
		return
	}
	e, err := a.svc.Enrol(r.Context(), service.EnrolRequest{Code: in.Code, AgentID: in.AgentID, Hostname: in.Hostname,
		Session: in.Session, OS: in.OS, Version: in.Version, SealKey: in.SealKey, Source: source(r), Secure: a.secure(r)})
	if err != nil {
		a.fail(w, err)
		return
	}
	out := a.enrolAnswer(e.Agent, e.Credentials)
	out.Secret = e.Secret
	if certs, err := a.svc.CACertificates(); err == nil {
		var b strings.Builder
		for _, c := range certs {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) // a strings.Builder does not fail
		}
		out.CAPEM = b.String()
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *server) enrolAnswer(ag service.Agent, creds *protocol.Sealed) api.Enrolled {
	return api.Enrolled{AgentID: ag.ID, State: string(ag.State), StateReason: ag.StateReason, Credentials: creds,
		BrokerURL: a.enrolment.BrokerURL, ResultKey: a.enrolment.ResultKey}
}

// agentCredentials gives an agent, authenticated by its own secret, its broker
// credentials sealed to its key.
func (a *server) agentCredentials(w http.ResponseWriter, r *http.Request) {
	if err := noQuery(r); err != nil {
		a.fail(w, err)
		return
	}
	secret, why := bearer(r)
	if why != "" || secret == "" {
		if why == "" {
			why = "no agent secret; send Authorization: Bearer <the secret enrolment gave the agent>"
		}
		writeError(w, a.log, a.svc.RefuseUnauthenticated(r.Context(), source(r), why))
		return
	}
	ans, err := a.svc.AgentCredentials(r.Context(), r.PathValue("id"), secret, source(r))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a.enrolAnswer(ans.Agent, ans.Credentials))
}

// agentState moves an agent in its life cycle (admin): approve, reject, disable, enable,
// remove, rotate its credentials.
func (a *server) agentState(op func(context.Context, service.Actor, string, service.AgentStateRequest) (service.Agent, error)) func(w http.ResponseWriter, r *http.Request, u service.Actor) {
	return func(w http.ResponseWriter, r *http.Request, u service.Actor) {
		var in api.Reason
		if err := firstErr(noQuery(r), decodeJSON(w, r, &in, false)); err != nil {
			a.fail(w, err)
			return
		}
		ag, err := op(r.Context(), u, r.PathValue("id"), service.AgentStateRequest{Reason: in.Reason})
		if err != nil {
			a.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, agentOut(ag))
	}
}

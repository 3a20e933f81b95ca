package console

import (
	"net/http"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

type auditData struct {
	List[service.AuditEntry]
	Actions []string
	Back    string
	// Verify is the verification just run; nil before the button is pressed.
	Verify *service.AuditVerification
}

var auditFilters = []string{"action", "actor", "job"}

// auditLog is the audit log, newest first, filtered by action, actor and job (admin and
// auditor), with a button that verifies the whole chain and its signed checkpoints on
// the coordinator.
func (c *Console) auditLog(w http.ResponseWriter, r *http.Request, v *service.AuditVerification, e *service.Error) {
	s := session(r)
	q := listQuery(r, Prefix+"audit", auditFilters...)
	d := auditData{Actions: audit.Actions(), Back: q.here(), Verify: v}
	es, next, err := c.svc.SearchAudit(r.Context(), s.Actor, service.AuditQuery{Action: q.Get("action"), Actor: q.Get("actor"), Job: q.Get("job")}, q.Page())
	if err != nil && e == nil {
		e = service.AsError(err)
	}
	d.List = listOf(q, es, next)
	c.page(w, r, "audit", Page{Title: "Audit log", Section: "audit", Data: d, Error: e})
}

// verifyAudit verifies the log through service.VerifyAudit and shows the outcome in
// #audit-verify-result above the list.
func (c *Console) verifyAudit(w http.ResponseWriter, r *http.Request) {
	s := session(r)
	v, err := c.svc.VerifyAudit(r.Context(), s.Actor)
	if err != nil {
		c.auditLog(w, r, nil, service.AsError(err))
		return
	}
	c.auditLog(w, r, &v, nil)
}

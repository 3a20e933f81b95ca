// Package httpapi is the coordinator's JSON API under /api/v1, as coordinator/api/openapi.yaml
// specifies it, plus /healthz and /metrics. It authenticates bearer API tokens, decodes
// requests strictly (unknown fields, wrong types, oversized bodies and unknown query
// parameters are refused, naming what is wrong) and maps every error to the API's stable
// codes. The rules themselves live in package service.
package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Options configure the API handler.
type Options struct {
	Service *service.Service // required
	Logger  zerolog.Logger
	// Registry collects the HTTP metrics and is served at /metrics; nil serves an empty
	// registry's metrics.
	Registry *prometheus.Registry
	// Checkpoints signs and lists audit checkpoints; nil: the checkpoint endpoints answer
	// not_found.
	Checkpoints Checkpoints
	// Enrolment is what self-enrolling agents are told: the broker's URL, the result key.
	Enrolment Enrolment
	// Console, when set, is served under /ui/ (the web console, package console), counted
	// and logged with the API's requests under its own route patterns; nil: /ui is not
	// served.
	Console http.Handler
}

// server holds what the handlers share.
type server struct {
	svc       *service.Service
	cps       Checkpoints
	enrolment Enrolment
	log       zerolog.Logger
	metrics   *httpMetrics
}

// New returns the API's handler.
func New(o Options) (http.Handler, error) {
	if o.Service == nil {
		return nil, errors.New("httpapi: no service")
	}
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newHTTPMetrics(reg)
	if err != nil {
		return nil, err
	}
	a := &server{svc: o.Service, cps: o.Checkpoints, enrolment: o.Enrolment, log: o.Logger, metrics: m}

	mux := http.NewServeMux()
	// The same paths without methods tell 405 from 404, and say which methods a path has.
	paths := http.NewServeMux()
	allow := map[string][]string{}
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		method, path, _ := strings.Cut(pattern, " ")
		if _, seen := allow[path]; !seen {
			paths.Handle(path, a.methodNotAllowed(allow, path))
		}
		allow[path] = append(allow[path], method)
		if method == http.MethodGet {
			allow[path] = append(allow[path], http.MethodHead) // the mux answers HEAD with GET's handler
		}
	}
	authed := func(pattern string, h func(w http.ResponseWriter, r *http.Request, u service.Actor)) {
		handle(pattern, a.authenticate(h))
	}

	handle("GET /healthz", http.HandlerFunc(a.health))
	handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	authed("GET /api/v1/whoami", a.whoami)
	authed("GET /api/v1/orgs", a.listOrgs)
	authed("POST /api/v1/orgs", a.createOrg)
	authed("GET /api/v1/users", a.listUsers)
	authed("POST /api/v1/users", a.createUser)
	authed("GET /api/v1/users/{username}", a.getUser)
	authed("PATCH /api/v1/users/{username}", a.updateUser)
	authed("POST /api/v1/users/{username}/disable", a.disableUser)
	authed("POST /api/v1/users/{username}/enable", a.enableUser)
	authed("PUT /api/v1/users/{username}/password", a.setPassword)
	authed("POST /api/v1/users/{username}/unlink-oidc", a.unlinkOIDC)
	authed("POST /api/v1/users/{username}/tokens", a.issueToken)
	authed("GET /api/v1/users/{username}/tokens", a.listAPITokens)
	authed("POST /api/v1/api-tokens/{id}/revoke", a.revokeAPIToken)
	authed("GET /api/v1/roles", a.listRoles)
	authed("POST /api/v1/roles", a.createRole)
	authed("GET /api/v1/roles/{name}", a.getRole)
	authed("PUT /api/v1/roles/{name}", a.updateRole)
	authed("DELETE /api/v1/roles/{name}", a.deleteRole)
	authed("GET /api/v1/recovery-certificates", a.listRecoveryCerts)
	authed("POST /api/v1/recovery-certificates", a.addRecoveryCert)
	authed("POST /api/v1/recovery-certificates/{id}/retire", a.retireRecoveryCert)
	authed("GET /api/v1/escrowed-keys", a.listEscrowedKeys)
	authed("GET /api/v1/encryption-keys", a.listEncryptionKeys)
	authed("POST /api/v1/escrowed-keys/{id}/recover", a.recoverEscrowedKey)
	authed("GET /api/v1/recoveries/{job}", a.recoveryArchive)
	authed("POST /api/v1/recoveries/{job}/delivery", a.deliverRecovery)
	authed("GET /api/v1/profiles", a.listProfiles)
	authed("PUT /api/v1/profiles", a.applyProfiles)
	authed("GET /api/v1/profiles/{name}", a.getProfile)
	authed("GET /api/v1/jobs", a.listJobs)
	authed("POST /api/v1/jobs", a.createJob)
	authed("GET /api/v1/jobs/{id}", a.getJob)
	authed("POST /api/v1/jobs/{id}/approve", a.approve)
	authed("POST /api/v1/jobs/{id}/reject", a.reject)
	authed("POST /api/v1/jobs/{id}/cancel", a.cancel)
	authed("POST /api/v1/jobs/{id}/pin", a.revealPIN)
	authed("POST /api/v1/jobs/{id}/retry", a.retry)
	authed("GET /api/v1/rollouts", a.listRollouts)
	authed("POST /api/v1/rollouts", a.createRollout)
	authed("GET /api/v1/rollouts/{id}", a.getRollout)
	authed("GET /api/v1/rollouts/{id}/targets", a.listRolloutTargets)
	authed("POST /api/v1/rollouts/{id}/approve", a.approveRollout)
	authed("POST /api/v1/rollouts/{id}/reject", a.rejectRollout)
	authed("POST /api/v1/rollouts/{id}/pause", a.rolloutAction(a.svc.PauseRollout))
	authed("POST /api/v1/rollouts/{id}/resume", a.rolloutAction(a.svc.ResumeRollout))
	authed("POST /api/v1/rollouts/{id}/promote", a.rolloutAction(a.svc.PromoteRollout))
	authed("POST /api/v1/rollouts/{id}/abort", a.rolloutAction(a.svc.AbortRollout))
	authed("GET /api/v1/agents", a.listAgents)
	authed("POST /api/v1/agents", a.enrolAgent)
	authed("POST /api/v1/agents/batch", a.enrolAgents)
	authed("POST /api/v1/agents/{id}/reset-key", a.resetAgentKey)
	authed("POST /api/v1/agents/{id}/approve", a.agentState(a.svc.ApproveAgent))
	authed("POST /api/v1/agents/{id}/reject", a.agentState(a.svc.RejectAgent))
	authed("POST /api/v1/agents/{id}/disable", a.agentState(a.svc.DisableAgent))
	authed("POST /api/v1/agents/{id}/enable", a.agentState(a.svc.EnableAgent))
	authed("POST /api/v1/agents/{id}/remove", a.agentState(a.svc.RemoveAgent))
	authed("POST /api/v1/agents/{id}/rotate-credentials", a.agentState(a.svc.RotateAgentCredentials))
	handle("GET /api/v1/agents/{id}/credentials", http.HandlerFunc(a.agentCredentials))
	handle("POST /api/v1/enrol", http.HandlerFunc(a.enrolSelf))
	authed("GET /api/v1/enrolment-keys", a.listEnrolmentKeys)
	authed("POST /api/v1/enrolment-keys", a.createEnrolmentKeys)
	authed("POST /api/v1/enrolment-keys/{id}/revoke", a.revokeEnrolmentKey)
	authed("GET /api/v1/tokens", a.listTokens)
	authed("GET /api/v1/tokens/{serial}/life", a.getTokenLife)
	authed("POST /api/v1/tokens/{serial}/state", a.setTokenState)
	authed("POST /api/v1/tokens/{serial}/temporary", a.tokenIssue((*service.Service).RequestTemporaryToken))
	authed("POST /api/v1/tokens/{serial}/replace", a.tokenIssue((*service.Service).RequestReplacement))
	authed("GET /api/v1/certificates", a.listCertificates)
	authed("POST /api/v1/certificates/{serial}/revoke", a.revokeCertificate)
	handle("GET /api/v1/ca/certificate", http.HandlerFunc(a.caCertificate))
	authed("GET /api/v1/audit", a.listAudit)
	authed("GET /api/v1/audit/checkpoints", a.listCheckpoints)
	authed("POST /api/v1/audit/checkpoints", a.makeCheckpoint)
	handle("GET /api/v1/audit/checkpoint-key", http.HandlerFunc(a.checkpointKey))
	authed("GET /api/v1/notifications", a.listNotifications)
	authed("GET /api/v1/register", a.getRegister)

	if o.Console != nil {
		// The console's own mux sets the request's Pattern ("GET /ui/jobs/{id}"), which
		// instrument reads after it served.
		mux.Handle("/ui/", o.Console)
		mux.Handle("/ui", o.Console)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if h, p := paths.Handler(r); p != "" {
			h.ServeHTTP(w, r)
			return
		}
		writeError(w, a.log, &service.Error{Code: service.CodeNotFound, Msg: "no such endpoint: " + r.URL.Path})
	})
	return a.instrument(a.recoverPanics(mux)), nil
}

// methodNotAllowed answers a method the path does not take, with the Allow header RFC 9110
// asks of a 405. allow is read when a request comes, once every route is registered.
func (a *server) methodNotAllowed(allow map[string][]string, path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		methods := strings.Join(allow[path], ", ")
		w.Header().Set("Allow", methods)
		writeError(w, a.log, &service.Error{Code: codeMethodNotAllowed,
			Msg: "method " + r.Method + " is not allowed on " + r.URL.Path + "; it takes " + methods})
	})
}

// recoverPanics turns a handler panic into a 500 and a log line instead of a dropped
// connection.
func (a *server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				a.log.Error().Interface("panic", v).Str("path", r.URL.Path).Msg("handler panicked")
				writeError(w, a.log, &service.Error{Code: service.CodeInternal, Msg: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// authenticate resolves the bearer token to an actor before calling h.
func (a *server) authenticate(h func(w http.ResponseWriter, r *http.Request, u service.Actor)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, why := bearer(r)
		if why != "" {
			writeError(w, a.log, a.svc.RefuseUnauthenticated(r.Context(), source(r), why))
			return
		}
		u, err := a.svc.Authenticate(r.Context(), token, source(r))
		if err != nil {
			writeError(w, a.log, err)
			return
		}
		h(w, r, u)
	})
}

// bearer extracts the token of an "Authorization: Bearer <token>" header, or says what is
// wrong with the header; no header at all gives "", "".
func bearer(r *http.Request) (token, why string) {
	hs := r.Header.Values("Authorization")
	switch len(hs) {
	case 0:
		return "", ""
	case 1:
	default:
		return "", "more than one Authorization header"
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(hs[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", "malformed Authorization header"
	}
	return strings.TrimSpace(token), ""
}

// source names the client for audit entries: its address without the port.
func source(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// healthTimeout bounds the store check of /healthz.
const healthTimeout = 3 * time.Second

func (a *server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	if err := a.svc.Ping(ctx); err != nil {
		a.log.Warn().Err(err).Msg("health check: store unreachable")
		writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: "unhealthy", Store: "unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Store: "ok"})
}

// httpMetrics counts requests by route pattern and status.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tokenfleet", Subsystem: "coordinator", Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument counts every request under its route pattern (never the raw path, which
// would make a label per job ID).
func (a *server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if _, path, ok := strings.Cut(route, " "); ok {
			route = path
		}
		if route == "/" || route == "" {
			route = "unmatched"
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		a.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(sw.status)).Inc()
		a.metrics.latency.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		a.log.Debug().Str("method", r.Method).Str("route", route).Int("status", sw.status).
			Dur("took_ms", time.Since(start)).Msg("request")
	})
}

package protocol

// Enrolment happens over the coordinator's HTTPS API, not the broker: an agent has no
// broker identity until it has enrolled. These are the two sides' shared types.

// EnrolRequest is an agent enrolling itself (POST /api/v1/enrol) with an activation code
// or enrolment key.
type EnrolRequest struct {
	Code     string `json:"code"`
	AgentID  string `json:"agent_id,omitempty"` // default: the host name's first label, or session@host
	Hostname string `json:"hostname"`
	Session  string `json:"session,omitempty"` // a user session on a shared terminal server
	OS       string `json:"os,omitempty"`
	Version  string `json:"version,omitempty"`
	SealKey  []byte `json:"seal_key"` // the agent's X25519 public key, PKIX DER
}

// EnrolAnswer is what an enrolling agent is given, and what it hears when it fetches its
// credentials (GET /api/v1/agents/{id}/credentials, authenticated by Secret).
type EnrolAnswer struct {
	AgentID     string `json:"agent_id"`
	State       string `json:"state"` // pending, active, disabled, removed
	StateReason string `json:"state_reason,omitempty"`
	// Secret is the agent's own secret (tfa_...), in the enrolment's answer only.
	Secret string `json:"secret,omitempty"`
	// Credentials are the agent's broker user and password (BrokerCredentials as JSON),
	// sealed to its seal key with PurposeBrokerCredentials; absent while it is pending.
	Credentials *Sealed `json:"credentials,omitempty"`
	BrokerURL   string  `json:"broker_url"`           // where to connect, without credentials
	ResultKey   []byte  `json:"result_key,omitempty"` // the coordinator's key PINs are sealed to
	CAPEM       string  `json:"ca_pem,omitempty"`     // the tokenfleet CA's certificates
}

// BrokerCredentials are what an agent's sealed credentials hold.
type BrokerCredentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/seal"
)

// Secret is a secret of a job (a PIN the agent generated). Applied says the token has
// it: the step that sets it is done. Sent says a call that sets it on the token was made,
// or was about to be: a secret sent and not applied may or may not be on the token; one
// not sent is not on it, and trying it there would only spend one of the token's tries.
type Secret struct {
	Name    string
	Value   string
	Applied bool
	Sent    bool
}

// secretPlaintext seals the name with the value, so a row copied under another name
// does not open as that secret.
func secretPlaintext(name, value string) []byte {
	return []byte(name + "\x00" + value)
}

func resumeBinding(jobID string, attempt uint32) seal.Binding {
	return seal.Binding{JobID: jobID, Attempt: attempt, Purpose: protocol.PurposeAgentResume}
}

func (j *Journal) sealSecret(ref protocol.JobRef, s Secret) ([]byte, error) {
	if s.Name == "" || strings.ContainsRune(s.Name, 0) || s.Value == "" {
		return nil, fmt.Errorf("journal: secret %q: name and value are required", s.Name)
	}
	sealed, err := j.sealer.Seal(secretPlaintext(s.Name, s.Value), resumeBinding(ref.JobID, ref.Attempt))
	if err != nil {
		return nil, fmt.Errorf("journal: seal secret %q: %w", s.Name, err)
	}
	return json.Marshal(sealed)
}

// Secrets returns the job's secrets, opened with the agent's key.
func (j *Journal) Secrets(ctx context.Context, jobID string) ([]Secret, error) {
	rows, err := j.db.QueryContext(ctx, `SELECT name, attempt, applied, sent, sealed FROM secrets WHERE job_id = ? ORDER BY name`, jobID)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []Secret
	for rows.Next() {
		var name string
		var attempt uint32
		var applied, sent bool
		var raw []byte
		if err := rows.Scan(&name, &attempt, &applied, &sent, &raw); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		var sealed protocol.Sealed
		if err := json.Unmarshal(raw, &sealed); err != nil {
			return nil, fmt.Errorf("journal: secret %q of job %s: %w", name, jobID, err)
		}
		plain, err := j.sealer.Open(&sealed, resumeBinding(jobID, attempt))
		if err != nil {
			return nil, fmt.Errorf("journal: secret %q of job %s: %w", name, jobID, err)
		}
		prefix := []byte(name + "\x00")
		if !bytes.HasPrefix(plain, prefix) {
			return nil, fmt.Errorf("journal: secret %q of job %s was sealed under another name", name, jobID)
		}
		out = append(out, Secret{Name: name, Value: string(plain[len(prefix):]), Applied: applied, Sent: sent || applied})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	return out, nil
}

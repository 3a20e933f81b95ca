package client

import (
	"context"
	"net/http"
	"net/url"
)

// ListEscrowedKeys lists the escrowed keys of a holder, or of a token (give one or both).
func (c *Client) ListEscrowedKeys(ctx context.Context, holder, tokenSerial string) (EscrowedKeyList, error) {
	q := url.Values{}
	if holder != "" {
		q.Set("holder", holder)
	}
	if tokenSerial != "" {
		q.Set("token_serial", tokenSerial)
	}
	var out EscrowedKeyList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/escrowed-keys", query: q, out: &out})
	return out, err
}

// ListEncryptionKeys lists a holder's encryption keys, oldest first, optionally those on
// one token; the current one has Current set.
func (c *Client) ListEncryptionKeys(ctx context.Context, holder, tokenSerial string) (EncryptionKeyList, error) {
	q := url.Values{}
	q.Set("holder", holder)
	if tokenSerial != "" {
		q.Set("token_serial", tokenSerial)
	}
	var out EncryptionKeyList
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/encryption-keys", query: q, out: &out})
	return out, err
}

// RecoverEscrowedKey queues a recover_key job for an escrowed key; it waits for the
// key-recovery officers' approvals.
func (c *Client) RecoverEscrowedKey(ctx context.Context, id string, r RecoveryCreate) (Job, error) {
	if err := needID("escrowed key ID", id); err != nil {
		return Job{}, err
	}
	var out Job
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/escrowed-keys/" + url.PathEscape(id) + "/recover",
		body: r, want: []int{http.StatusCreated}, out: &out})
	return out, err
}

// RecoveryArchive fetches the archive of an approved recovery job, for an officer to open.
func (c *Client) RecoveryArchive(ctx context.Context, jobID string) (RecoveryArchive, error) {
	if err := needID("job ID", jobID); err != nil {
		return RecoveryArchive{}, err
	}
	var out RecoveryArchive
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/recoveries/" + url.PathEscape(jobID), out: &out})
	return out, err
}

// DeliverRecovery posts an officer's delivery: the key sealed to the target agent, or word
// that the PKCS#12 was written.
func (c *Client) DeliverRecovery(ctx context.Context, jobID string, d RecoveryDelivery) (JobDetail, error) {
	if err := needID("job ID", jobID); err != nil {
		return JobDetail{}, err
	}
	var out JobDetail
	_, err := c.do(ctx, request{method: http.MethodPost, path: "/api/v1/recoveries/" + url.PathEscape(jobID) + "/delivery", body: d, out: &out})
	return out, err
}

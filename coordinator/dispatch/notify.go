package dispatch

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/tokenfleet/tokenfleet/coordinator/notify"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
)

// tokenWait says that a job waits for a token the agent does not report: its holder is
// asked to insert it.
type tokenWait struct{ tok notify.Token }

// tokenPresent reports whether the agent reports a token the selector takes.
func tokenPresent(ctx context.Context, r store.Reader, agentID string, sel protocol.TokenSelector) (bool, error) {
	if sel.Serial != "" {
		t, err := r.GetToken(ctx, sel.Serial)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return err == nil && t.AgentID == agentID, err
	}
	p := store.Page{Limit: store.MaxPageLimit}
	for {
		ts, next, err := r.ListTokens(ctx, store.TokenFilter{AgentID: agentID}, p)
		if err != nil {
			return false, err
		}
		for _, t := range ts {
			var f protocol.TokenFlags
			blank := json.Unmarshal(t.Flags, &f) == nil && !f.Initialized
			if (sel.Model == "" || t.Model == sel.Model) && (!sel.Blank || blank) {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		p.Cursor = next
	}
}

// askForToken tells the job's holder to insert the token the dispatch selects when the
// agent reports none that matches (once per attempt: the notice's key is the attempt).
func askForToken(ctx context.Context, jt *service.JobTx, j store.Job, sel protocol.TokenSelector) error {
	if !jt.Notifying() || (sel.Serial == "" && sel.Model == "" && !sel.Blank) {
		return nil // nobody to tell, or the job needs no particular token
	}
	ok, err := tokenPresent(ctx, jt, j.AgentID, sel)
	if err != nil || ok {
		return err
	}
	return jt.NotifyTokenNeeded(ctx, j, notify.Token{Serial: sel.Serial, Model: sel.Model, Blank: sel.Blank})
}

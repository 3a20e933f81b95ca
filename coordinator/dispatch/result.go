package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tokenfleet/tokenfleet/coordinator/audit"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
	"github.com/tokenfleet/tokenfleet/coordinator/store"
	"github.com/tokenfleet/tokenfleet/protocol"
	"github.com/tokenfleet/tokenfleet/protocol/amqp"
)

// recordTokens records the tokens an agent reports as its own. A token another agent
// holds is not taken over: it stays with that agent until that agent stops reporting it
// (the token was moved), and the claim is audited. When the report is the agent's whole
// list (hello, inventory), the tokens it no longer reports are released, so that the
// workstation it was moved to may claim them.
func (d *Dispatcher) recordTokens(ctx context.Context, jt *service.JobTx, del *amqp.Delivery, agentID string, tokens []protocol.Token, whole bool) error {
	now := d.clock()
	var refused, reported []string
	for _, t := range tokens {
		reported = append(reported, t.Serial)
		cur, err := jt.GetToken(ctx, t.Serial)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case cur.AgentID != "" && cur.AgentID != agentID:
			refused = append(refused, t.Serial+" (held by "+cur.AgentID+")")
			continue
		}
		flags, err := json.Marshal(t.Flags)
		if err != nil {
			return err
		}
		if _, err := jt.UpsertToken(ctx, store.Token{Serial: t.Serial, AgentID: agentID, Label: t.Label,
			Manufacturer: t.Manufacturer, Model: t.Model, Firmware: t.Firmware, Flags: flags, LastSeen: now}); err != nil {
			return err
		}
	}
	if whole {
		if _, err := jt.ReleaseAgentTokens(ctx, agentID, reported); err != nil {
			return err
		}
	}
	if len(refused) == 0 {
		return nil
	}
	why := protocol.TruncateText(fmt.Sprintf("agent %s reports tokens another agent holds, not recorded as its own: %s", agentID,
		strings.Join(refused, ", ")), protocol.MaxTextLen)
	d.log.Warn().Str("agent", agentID).Str("message_id", del.Envelope.ID).Msg(why)
	return jt.Audit(ctx, audit.Entry{Actor: agentActor(agentID), Action: audit.ActionTokenClaimRefused, Target: "agent:" + agentID,
		Reason: why, Details: audit.Details("message_id", del.Envelope.ID, "type", string(del.Envelope.Type))})
}

// jsonOf is a sealed PIN as the store keeps it.
func jsonOf(s *protocol.Sealed) ([]byte, error) { return json.Marshal(s) }

package service

import "context"

// Presence counts the enrolled agents that are online and offline now.
type Presence struct {
	Online, Offline int64
}

// FleetPresence counts agents by presence, for a reader of the fleet, in one aggregate
// query (the one the metrics use) rather than by listing every agent.
func (s *Service) FleetPresence(ctx context.Context, by Actor) (Presence, error) {
	if _, err := s.canRead(ctx, by.user, resFleet); err != nil {
		return Presence{}, err
	}
	st, err := s.st.FleetStats(ctx, s.clock())
	if err != nil {
		return Presence{}, AsError(err)
	}
	return Presence{Online: st.AgentsOnline, Offline: st.AgentsOffline}, nil
}

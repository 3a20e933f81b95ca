package register

import (
	"github.com/tokenfleet/tokenfleet/coordinator/api"
	"github.com/tokenfleet/tokenfleet/coordinator/service"
)

// Of is the register as the API sends it and the exports write it.
func Of(r service.Register) api.Register {
	out := api.Register{Organization: r.Organization, Generated: r.Generated, Items: make([]api.RegisterEntry, 0, len(r.Entries))}
	for _, e := range r.Entries {
		v := api.RegisterEntry{TokenSerial: e.TokenSerial, Manufacturer: e.Manufacturer, Model: e.Model, Holder: e.Holder,
			HolderName: e.HolderName, Organization: e.Organization, Profile: e.ProfileName, Job: e.JobID,
			Document: DocumentOut(e.Document), Issued: e.Issued, Returned: e.Returned, State: e.State,
			ReturnReason: e.ReturnReason, History: make([]api.RegisterEvent, 0, len(e.History))}
		for _, h := range e.History {
			v.History = append(v.History, api.RegisterEvent{At: h.At, State: h.State, Actor: h.Actor, Reason: h.Reason})
		}
		out.Items = append(out.Items, v)
	}
	return out
}

// DocumentOut is a cited document as the API sends it; nil for none.
func DocumentOut(d service.Document) *api.Document {
	if d.IsZero() {
		return nil
	}
	return &api.Document{Number: d.Number, Date: d.Date}
}

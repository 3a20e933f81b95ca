package watch

import (
	"context"
	"fmt"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

func deviceKey(d usb.Device) string {
	return fmt.Sprintf("%03d:%03d:%s", d.Bus, d.Address, d.ID())
}

func (w *Watcher) pollUSB(ctx context.Context) {
	if w.usb == nil || w.reg == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, w.cfg.PollTimeout)
	devs, err := w.usb.Devices(pctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.sourceFailed(SourceUSB, "", err)
		}
		return // hold attached devices as they were
	}
	w.sourceOK(SourceUSB, "")

	var ids []usb.Identified
	seen := map[string]bool{}
	for _, d := range devs {
		m, ok := w.reg.Match(d)
		k := deviceKey(d)
		if !ok || seen[k] {
			continue
		}
		seen[k] = true
		ids = append(ids, usb.Identified{Device: d, Model: m})
	}
	w.lastUSB = ids

	// Detachments first, so a swap reads "detached, then attached".
	for _, k := range sortedKeys(w.devTracks) {
		tr := w.devTracks[k]
		if seen[k] {
			continue
		}
		if !tr.present {
			delete(w.devTracks, k) // not consecutive: start over next time
			continue
		}
		tr.missing++
		if tr.missing >= w.cfg.RemoveAfter {
			delete(w.devTracks, k)
			w.mu.Lock()
			delete(w.attached, k)
			w.mu.Unlock()
			d := tr.dev
			w.log.Info().Str("device", d.Device.String()).Str("model", d.Model.Name).Msg("watch: token device detached")
			w.emit(Event{Kind: DeviceDetached, Device: &d})
		}
	}
	for _, id := range ids {
		k := deviceKey(id.Device)
		tr := w.devTracks[k]
		if tr == nil {
			tr = &deviceTrack{}
			w.devTracks[k] = tr
		}
		tr.dev, tr.missing = id, 0
		if tr.present {
			continue
		}
		tr.seen++
		if tr.seen >= w.cfg.InsertAfter {
			tr.present = true
			w.mu.Lock()
			w.attached[k] = id
			w.mu.Unlock()
			w.deviceAttached(id)
		}
	}
}

func (w *Watcher) deviceAttached(id usb.Identified) {
	ev := Event{Kind: DeviceAttached, Device: &id, Pending: true}
	w.mu.Lock()
	for _, t := range w.present {
		if tied := w.tieLocked(t, w.present); tied != nil && deviceKey(tied.Device) == deviceKey(id.Device) {
			ev.Token, ev.Pending = t, false
			ev.Token.USB = tied
		}
	}
	w.mu.Unlock()
	w.log.Info().Str("device", id.Device.String()).Str("model", id.Model.Name).Bool("token_visible", !ev.Pending).
		Msg("watch: token device attached")
	w.emit(ev)
}

package watch

import (
	"slices"

	"github.com/tokenfleet/tokenfleet/drivers/usb"
)

// retie refreshes the USB tie of present tokens after a poll: a USB device may show up
// after its token, or leave while the token is held through a failing module.
func (w *Watcher) retie() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, t := range w.present {
		t.USB = w.tieLocked(t, w.present)
		w.present[k] = t
		if tr := w.tracks[k]; tr != nil {
			tr.reported.USB = t.USB
		}
	}
}

func (w *Watcher) tie(t TokenState) *usb.Identified {
	w.mu.Lock()
	defer w.mu.Unlock()
	others := make(map[string]TokenState, len(w.present)+1)
	for k, o := range w.present {
		others[k] = o
	}
	others[t.Key()] = t
	return w.tieLocked(t, others)
}

// tieLocked finds the USB device a token sits on (see usb.Tie).
func (w *Watcher) tieLocked(t TokenState, tokens map[string]TokenState) *usb.Identified {
	refs := make([]usb.TokenRef, 0, len(tokens))
	for _, o := range tokens {
		refs = append(refs, usb.TokenRef{Serial: o.Serial, Manufacturer: o.Manufacturer})
	}
	return usb.Tie(usb.TokenRef{Serial: t.Serial, Manufacturer: t.Manufacturer}, w.candidatesLocked(), refs)
}

// candidatesLocked are the devices a token may sit on: those of the latest USB poll, plus
// those still held as attached (a device being debounced out, or USB failing), so a
// token keeps its tie until its device is reported detached.
func (w *Watcher) candidatesLocked() []usb.Identified {
	out := slices.Clone(w.lastUSB)
	have := map[string]bool{}
	for _, d := range out {
		have[deviceKey(d.Device)] = true
	}
	for _, k := range sortedKeys(w.attached) {
		if !have[k] {
			out = append(out, w.attached[k])
		}
	}
	return out
}

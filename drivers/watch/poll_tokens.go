package watch

import (
	"context"
	"strings"
)

func (w *Watcher) pollTokens(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, w.cfg.PollTimeout)
	toks, err := w.tokens.Tokens(pctx)
	cancel()
	if ctx.Err() != nil {
		return // shutting down: neither an error nor evidence of removal
	}
	failedModules := map[string]bool{}
	if err != nil {
		mods, partial := moduleErrors(err)
		if !partial {
			w.sourceFailed(SourceTokens, "", err)
			return
		}
		for path, merr := range mods {
			failedModules[path] = true
			w.sourceFailed(SourceTokens, path, merr)
		}
	}
	w.sourceOK(SourceTokens, "")
	for k := range w.failing {
		if path, ok := strings.CutPrefix(k, SourceTokens+"\x00"); ok && path != "" && !failedModules[path] {
			w.sourceOK(SourceTokens, path)
		}
	}

	// Removals first, so a swap of tokens reads "removed, then inserted".
	seen := map[string]bool{}
	var fresh []TokenState
	for _, t := range toks {
		t.USB = nil // the watcher owns the tie
		k := t.Key()
		if seen[k] {
			w.log.Warn().Stringer("token", t).Msg("watch: token listed twice in one poll, keeping the first")
			continue
		}
		seen[k] = true
		fresh = append(fresh, t)
	}
	for _, k := range sortedKeys(w.tracks) {
		tr := w.tracks[k]
		if seen[k] {
			continue
		}
		if failedModules[tr.reported.ModulePath] {
			continue // its module did not answer: no evidence either way
		}
		if !tr.present {
			delete(w.tracks, k)
			continue
		}
		tr.missing++
		tr.pendingFP, tr.pendingSeen = "", 0
		if tr.missing >= w.cfg.RemoveAfter {
			delete(w.tracks, k)
			w.mu.Lock()
			last := w.present[k]
			delete(w.present, k)
			w.mu.Unlock()
			w.log.Info().Stringer("token", last).Msg("watch: token removed")
			w.emit(Event{Kind: Removed, Token: last})
		}
	}
	for _, t := range fresh {
		w.sawToken(t.Key(), t)
	}
	w.retie()
}

func (w *Watcher) sawToken(k string, t TokenState) {
	tr := w.tracks[k]
	if tr == nil {
		tr = &tokenTrack{}
		w.tracks[k] = tr
	}
	tr.missing = 0
	if !tr.present {
		tr.reported = t
		tr.seen++
		if tr.seen < w.cfg.InsertAfter {
			return
		}
		tr.present = true
		t.USB = w.tie(t)
		tr.reported = t
		w.mu.Lock()
		w.present[k] = t
		w.mu.Unlock()
		w.log.Info().Stringer("token", t).Bool("initialized", t.Initialized).Msg("watch: token inserted")
		w.emit(Event{Kind: Inserted, Token: t})
		return
	}
	fp := t.Fingerprint()
	if fp == tr.reported.Fingerprint() {
		tr.pendingFP, tr.pendingSeen = "", 0
		return
	}
	if fp != tr.pendingFP {
		tr.pendingFP, tr.pendingSeen = fp, 0
	}
	tr.pendingSeen++
	if tr.pendingSeen < w.cfg.InsertAfter {
		return
	}
	prev := tr.reported
	t.USB = prev.USB
	tr.reported, tr.pendingFP, tr.pendingSeen = t, "", 0
	w.mu.Lock()
	w.present[k] = t
	w.mu.Unlock()
	w.log.Info().Stringer("token", t).Str("was", prev.Fingerprint()).Str("now", t.Fingerprint()).Msg("watch: token changed")
	w.emit(Event{Kind: Changed, Token: t, Previous: &prev})
}

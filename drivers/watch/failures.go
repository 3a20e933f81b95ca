package watch

import (
	"errors"
)

// moduleErrors splits err into per-module failures. partial is false when err holds
// anything other than *ModuleError (possibly wrapped, possibly joined): the whole poll is
// then void.
func moduleErrors(err error) (mods map[string]error, partial bool) {
	mods = map[string]error{}
	var walk func(error) bool
	walk = func(e error) bool {
		// A type assertion, not errors.As: the walk itself descends through wrappers and
		// joins, and must know whether every branch ends in a module error.
		if me, ok := e.(*ModuleError); ok { //nolint:errorlint // see above
			mods[me.ModulePath] = me
			return true
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			all := true
			for _, c := range j.Unwrap() {
				all = walk(c) && all
			}
			return all
		}
		if u := errors.Unwrap(e); u != nil {
			return walk(u)
		}
		return false
	}
	partial = walk(err) && len(mods) > 0
	return mods, partial
}

func failKey(source, module string) string { return source + "\x00" + module }

func (w *Watcher) sourceFailed(source, module string, err error) {
	k := failKey(source, module)
	if w.failing[k] {
		// Already reported for this streak: keep the log quiet at the poll rate.
		w.log.Debug().Err(err).Str("source", source).Str("module", module).Msg("watch: poll still failing")
		return
	}
	w.log.Warn().Err(err).Str("source", source).Str("module", module).Msg("watch: poll failed, holding the last known state")
	w.failing[k] = true
	w.emit(Event{Kind: SourceError, Source: source, ModulePath: module, Err: err})
}

func (w *Watcher) sourceOK(source, module string) {
	k := failKey(source, module)
	if !w.failing[k] {
		return
	}
	delete(w.failing, k)
	w.log.Info().Str("source", source).Str("module", module).Msg("watch: source recovered")
	w.emit(Event{Kind: SourceRecovered, Source: source, ModulePath: module})
}

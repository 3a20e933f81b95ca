//go:build cgo

package pkcs11

// ReloadHolding reports whether a reload of the module holds calls back: it waits for the
// calls in flight to end, or runs. A call that enters the module now waits for it.
func ReloadHolding(m *Module) bool {
	if m.lib.use.TryAcquire(1) {
		m.lib.use.Release(1)
		return false
	}
	return true
}

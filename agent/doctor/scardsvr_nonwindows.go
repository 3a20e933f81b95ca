//go:build !windows

package doctor

// SmartCardService is nil off Windows: there is no SCardSvr to ask.
var SmartCardService func() (running bool, state string, err error)

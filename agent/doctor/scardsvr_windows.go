//go:build windows

package doctor

import (
	"fmt"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

// SmartCardService asks the service manager about SCardSvr.
func SmartCardService() (running bool, state string, err error) {
	m, err := mgr.Connect()
	if err != nil {
		return false, "", fmt.Errorf("connecting to the service manager: %w", err)
	}
	defer func() { _ = m.Disconnect() }()
	s, err := m.OpenService("SCardSvr")
	if err != nil {
		return false, "", fmt.Errorf("opening service SCardSvr: %w", err)
	}
	defer func() { _ = s.Close() }()
	st, err := s.Query()
	if err != nil {
		return false, "", fmt.Errorf("querying service SCardSvr: %w", err)
	}
	return st.State == svc.Running, stateName(st.State), nil
}

func stateName(s svc.State) string {
	switch s {
	case svc.Stopped:
		return "stopped"
	case svc.StartPending:
		return "starting"
	case svc.StopPending:
		return "stopping"
	case svc.Running:
		return "running"
	case svc.ContinuePending:
		return "resuming"
	case svc.PausePending:
		return "pausing"
	case svc.Paused:
		return "paused"
	}
	return fmt.Sprintf("in state %d", s)
}

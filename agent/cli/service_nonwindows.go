//go:build !windows

package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"github.com/kardianos/service"
	"github.com/rs/zerolog"
)

// platformOptions: on Linux, the service is systemd's, with the project's hardened unit.
// Other init systems get no unit from the library's generic templates: they would run the
// agent without its hardening and without READY=1.
func platformOptions() (service.KeyValue, error) {
	if runtime.GOOS != "linux" || service.Platform() != "linux-systemd" {
		return nil, fmt.Errorf("service commands need systemd on Linux or the Windows service manager, and this system uses %s: "+
			"run \"tokenfleet-agent run\" from its init system instead", service.Platform())
	}
	unit, err := systemdUnitTemplate()
	if err != nil {
		return nil, err
	}
	return service.KeyValue{"SystemdScript": unit}, nil
}

// runService runs the agent in this process: systemd starts `run` itself and stops it with
// SIGTERM, which ends ctx (see main).
func runService(ctx context.Context, _ zerolog.Logger, run func(context.Context) error) error {
	return run(ctx)
}

// logOutput is stderr: systemd's journal collects it.
func logOutput(_ string, stderr io.Writer) (io.Writer, func(), error) {
	return stderr, func() {}, nil
}

// reloadSignals make `run` read its configuration again.
var reloadSignals = []os.Signal{syscall.SIGHUP}

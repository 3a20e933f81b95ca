package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/kardianos/service"
	"github.com/spf13/cobra"
)

// ServiceName names the service: the systemd unit tokenfleet-agent.service, the Windows
// service tokenfleet-agent.
const ServiceName = "tokenfleet-agent"

// Exit statuses of `status`, as LSB init scripts have them.
const (
	StatusRunning      = 0
	StatusStopped      = 3
	StatusNotInstalled = 4
	// StatusUnknown is LSB's "status unknown", the same 4: the service manager could not
	// say, or there is none.
	StatusUnknown = 4
)

// serviceConfig describes the service to the service manager; args are what it runs with.
func serviceConfig(args []string) (*service.Config, error) {
	opts, err := platformOptions()
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("locating this program: %w", err)
	}
	return &service.Config{
		Name:        ServiceName,
		DisplayName: "tokenfleet agent",
		Description: "tokenfleet workstation agent: initialises crypto tokens, generates keys on them and installs their certificates",
		Executable:  exe,
		Arguments:   args,
		Option:      opts,
	}, nil
}

// program runs the agent under the service manager (the Windows one; systemd runs `run`
// directly). Its Stop takes the same path as a signal: it ends the agent's context.
type program struct {
	parent context.Context
	run    func(context.Context) error

	mu      sync.Mutex // guards the fields below
	cancel  context.CancelFunc
	stopped bool // Stop was called

	ended chan struct{} // closed when run returned
	err   error         // run's error, set before ended is closed
}

func newProgram(ctx context.Context, run func(context.Context) error) *program {
	return &program{parent: ctx, run: run, ended: make(chan struct{})}
}

// Start implements service.Interface: it starts the agent and returns at once.
func (p *program) Start(service.Service) error {
	ctx, cancel := context.WithCancel(p.parent)
	p.mu.Lock()
	p.cancel = cancel
	p.mu.Unlock()
	go func() {
		defer close(p.ended)
		p.err = p.run(ctx)
	}()
	return nil
}

// Stop implements service.Interface: it asks the agent to shut down and waits until it has.
func (p *program) Stop(service.Service) error {
	p.mu.Lock()
	cancel := p.cancel
	p.stopped = true
	p.mu.Unlock()
	if cancel == nil {
		return nil // never started
	}
	cancel()
	<-p.ended
	return p.err
}

func serviceFor(args []string) (service.Service, error) {
	cfg, err := serviceConfig(args)
	if err != nil {
		return nil, err
	}
	// The program is only run by runService; the control commands only describe it.
	s, err := service.New(newProgram(context.Background(), nil), cfg)
	if err != nil {
		return nil, fmt.Errorf("service manager: %w", err)
	}
	return s, nil
}

func installCommand(e *env) *cobra.Command {
	var o agentFlags
	cmd := &cobra.Command{
		Use:   "install [--config FILE] [flags]",
		Short: "Install the agent as a service (systemd unit, Windows service) running with these settings",
		Long: `Install the agent as a service that runs "tokenfleet-agent run" with the given --config and
flags, starting at boot: on Linux the systemd unit tokenfleet-agent.service (the hardened
unit of systemd/ with this program and these arguments; it runs as the user
tokenfleet-agent, which must exist), on Windows the service tokenfleet-agent
(LocalSystem, restarted 30 s after a failure). The settings are checked first. Start it
with "tokenfleet-agent start".

A broker password is refused on the command line: the service definition is readable by
every local user. Put it in the configuration file or in --broker-password-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := o.resolve(cmd, e.logLevel); err != nil {
				return err
			}
			args, err := o.serviceArguments(cmd)
			if err != nil {
				return configError{err}
			}
			s, err := serviceFor(args)
			if err != nil {
				return err
			}
			if err := s.Install(); err != nil {
				return fmt.Errorf("install: %s", oneLine(err))
			}
			fmt.Fprintf(e.stdout, "Installed the %s service (%s): %s %s\nStart it with: tokenfleet-agent start\n",
				ServiceName, service.Platform(), mustExecutable(), strings.Join(args, " "))
			return nil
		},
	}
	o.register(cmd.Flags())
	return cmd
}

// controlCommand is uninstall, start or stop: one call to the service manager.
func controlCommand(name, short, done string, action func(service.Service) error) func(*env) *cobra.Command {
	return func(e *env) *cobra.Command {
		return &cobra.Command{
			Use:   name,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				s, err := serviceFor(nil)
				if err != nil {
					return err
				}
				if err := action(s); err != nil {
					if errors.Is(err, service.ErrNotInstalled) {
						return fmt.Errorf("%s: the %s service is not installed", name, ServiceName)
					}
					return fmt.Errorf("%s: %s", name, oneLine(err))
				}
				fmt.Fprintf(e.stdout, "%s %s\n", done, ServiceName)
				return nil
			},
		}
	}
}

var (
	uninstallCommand = controlCommand("uninstall", "Remove the agent's service (its data directory stays)", "Uninstalled", service.Service.Uninstall)
	startCommand     = controlCommand("start", "Start the agent's service", "Started", service.Service.Start)
	stopCommand      = controlCommand("stop", "Stop the agent's service (jobs stop at a safe point)", "Stopped", service.Service.Stop)
)

func statusCommand(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Say whether the agent's service is running",
		Long: `Say whether the agent's service is running.

Exit status (as LSB init scripts): 0 running, 3 stopped, 4 not installed or unknown
(also where there is no service manager the agent can be installed with: no systemd).`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := serviceFor(nil)
			if err != nil {
				// Nothing could have installed the service here.
				fmt.Fprintf(e.stdout, "%s: not installed\n", ServiceName)
				fmt.Fprintf(e.stderr, "tokenfleet-agent: status: %v\n", err)
				return exitError{StatusNotInstalled}
			}
			st, err := s.Status()
			switch {
			case errors.Is(err, service.ErrNotInstalled):
				fmt.Fprintf(e.stdout, "%s: not installed\n", ServiceName)
				return exitError{StatusNotInstalled}
			case err != nil:
				fmt.Fprintf(e.stdout, "%s: state unknown\n", ServiceName)
				fmt.Fprintf(e.stderr, "tokenfleet-agent: status: %s\n", oneLine(err))
				return exitError{StatusUnknown}
			case st == service.StatusRunning:
				fmt.Fprintf(e.stdout, "%s: running\n", ServiceName)
				return nil
			case st == service.StatusStopped:
				fmt.Fprintf(e.stdout, "%s: stopped\n", ServiceName)
				return exitError{StatusStopped}
			}
			fmt.Fprintf(e.stdout, "%s: state unknown\n", ServiceName)
			return exitError{StatusUnknown}
		},
	}
}

func mustExecutable() string {
	exe, err := os.Executable()
	if err != nil {
		return "tokenfleet-agent"
	}
	return exe
}

// oneLine folds a service manager's multi-line message into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

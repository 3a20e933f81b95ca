package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokenfleet/tokenfleet/agent"
	"github.com/tokenfleet/tokenfleet/agent/doctor"
)

func doctorCommand(e *env) *cobra.Command {
	var (
		o             agentFlags
		asJSON        bool
		coordinator   string
		coordinatorCA string
		skip          []string
	)
	cmd := &cobra.Command{
		Use:   "doctor [--config FILE] [flags]",
		Short: "Check what the agent needs on this machine; each failure comes with its fix",
		Long: `Check, with the agent's configuration (--config and the run flags), what an unattended
agent most often fails on:

  modules   the PKCS#11 modules load and list their slots
  pcscd     pcscd answers this user (Linux: polkit refuses access_pcsc to users without
            a login session, as a service's user is, unless systemd/50-tokenfleet-pcscd.rules
            is installed)
  scardsvr  the smart-card service runs (Windows)
  broker    the broker takes the agent's credentials and has its queue (it is enrolled)
  clock     this clock is within a minute of the coordinator's (--coordinator URL, else
            TOKENFLEET_URL; skipped without one)
  data_dir  the data directory is writable, 0700, its keys and journal 0600

Run it as the service's user (sudo -u tokenfleet-agent tokenfleet-agent doctor --config
/etc/tokenfleet/agent.yaml): what root may do proves nothing. --skip NAME leaves a check out.

Exit status: 0 when no check failed, 1 when one did, 2 for a usage or configuration error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := o.resolve(cmd, e.logLevel)
			if err != nil {
				return err
			}
			log := e.logger()
			if coordinator == "" {
				coordinator = os.Getenv("TOKENFLEET_URL")
			}
			client, err := coordinatorClient(coordinatorCA)
			if err != nil {
				return usageError{err}
			}
			cfg := r.Agent
			modules, configured := cfg.Modules, len(cfg.Modules) > 0
			if !configured {
				modules = agent.DefaultModules(cmd.Context(), cfg.Registry, nil)
			}
			checks := doctor.Checks(doctor.Env{
				OS: runtime.GOOS, Modules: modules, Configured: configured, LoadModule: doctor.LoadModule(log),
				SmartCardService: doctor.SmartCardService,
				Broker:           func(ctx context.Context) error { return agent.CheckBroker(ctx, cfg) },
				CoordinatorURL:   coordinator, HTTPClient: client, Now: time.Now,
				DataDir: cfg.DataDir,
			})
			names := doctor.Names(checks)
			for _, s := range skip {
				if !slices.Contains(names, s) {
					return usageError{fmt.Errorf("--skip %q: no such check here (checks: %s)", s, strings.Join(names, ", "))}
				}
			}
			results := doctor.Run(cmd.Context(), checks, skip)
			passed := doctor.Passed(results)
			if asJSON {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(struct {
					Passed bool            `json:"passed"`
					Checks []doctor.Result `json:"checks"`
				}{passed, results}); err != nil {
					return err
				}
			} else if err := printDoctor(e, results, passed); err != nil {
				return err
			}
			if !passed {
				return exitError{code: ExitError}
			}
			return nil
		},
	}
	o.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as JSON")
	cmd.Flags().StringVar(&coordinator, "coordinator", "", "the coordinator's API `URL`, to compare clocks with (default $TOKENFLEET_URL)")
	cmd.Flags().StringVar(&coordinatorCA, "coordinator-ca", "", "CA certificates (PEM `FILE`) the coordinator's certificate chains to (default: system roots)")
	cmd.Flags().StringArrayVar(&skip, "skip", nil, "leave out the check `NAME` (repeatable)")
	return cmd
}

// printDoctor prints one line a check, and the fix under each failure.
func printDoctor(e *env, results []doctor.Result, passed bool) error {
	width := 0
	for _, r := range results {
		width = max(width, len(r.Name))
	}
	var b strings.Builder
	for _, r := range results {
		status := string(r.Status)
		if r.Status == doctor.Fail {
			status = "FAIL"
		}
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", status, width, r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(&b, "      %-*s  fix: %s\n", width, "", r.Fix)
		}
	}
	if passed {
		b.WriteString("every check passed\n")
	} else {
		b.WriteString("some checks failed\n")
	}
	_, err := fmt.Fprint(e.stdout, b.String())
	return err
}

// coordinatorClient is the HTTP client the clock check asks the coordinator with.
func coordinatorClient(caFile string) (*http.Client, error) {
	if caFile == "" {
		return &http.Client{}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--coordinator-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--coordinator-ca: %s holds no PEM certificate", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

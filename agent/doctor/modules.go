package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/rs/zerolog"

	"github.com/tokenfleet/tokenfleet/drivers/pkcs11"
)

// LoadModule is Env.LoadModule for the real machine: it loads the module as the agent
// does and counts its slots and tokens.
func LoadModule(log zerolog.Logger) func(ctx context.Context, path string) (string, error) {
	return func(ctx context.Context, path string) (string, error) {
		m, err := pkcs11.Open(path, pkcs11.Options{Logger: log})
		if err != nil {
			return "", err
		}
		defer func() { _ = m.Close() }()
		slots, err := m.Slots(ctx)
		if err != nil {
			return "", fmt.Errorf("listing slots: %w", err)
		}
		tokens := 0
		for _, s := range slots {
			if s.TokenPresent {
				tokens++
			}
		}
		plural := "s"
		if len(slots) == 1 {
			plural = ""
		}
		return fmt.Sprintf("loads; %d slot%s, %d with a token", len(slots), plural, tokens), nil
	}
}

// modules loads every module the agent would load and lists its slots.
func (e Env) modules(ctx context.Context) Result {
	if len(e.Modules) == 0 {
		return fail("no PKCS#11 module is configured and none was found (OpenSC's opensc-pkcs11.so is the default)",
			"install OpenSC (apt-get install opensc) or the token vendor's module, or name the modules in the configuration (modules, --module)")
	}
	var ok, bad []string
	for _, p := range e.Modules {
		desc, err := e.LoadModule(ctx, p)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		ok = append(ok, fmt.Sprintf("%s: %s", p, desc))
	}
	if len(bad) > 0 {
		fix := "install the module, or correct its path in modules (--module); a module that is installed but fails to load often misses a library (ldd MODULE) or its own configuration file"
		if !e.Configured {
			fix = "install the module, or name working modules in the configuration (modules, --module)"
		}
		return fail(strings.Join(append(bad, ok...), "; "), fix)
	}
	return pass(strings.Join(ok, "; "))
}

package cli

import (
	"errors"
	"strings"

	"github.com/tokenfleet/tokenfleet/systemd"
)

// execStartTemplate is the ExecStart line in the service manager library's template
// language: this program and the arguments given to install, quoted for systemd.
const execStartTemplate = "ExecStart={{Path | cmdEscape}}{{range Arguments}} {{. | cmd}}{{end}}"

// systemdUnitTemplate is the hardened unit of systemd/ as the template `install` writes
// the unit from: only its ExecStart differs from the file a package ships.
func systemdUnitTemplate() (string, error) {
	lines := strings.Split(systemd.AgentUnit, "\n")
	found := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "ExecStart=") {
			lines[i] = execStartTemplate
			found++
		}
		if strings.Contains(l, "{{") {
			return "", errors.New("systemd/tokenfleet-agent.service contains \"{{\", which the unit template cannot hold")
		}
	}
	if found != 1 {
		return "", errors.New("systemd/tokenfleet-agent.service must have exactly one ExecStart line")
	}
	return strings.Join(lines, "\n"), nil
}

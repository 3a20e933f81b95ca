package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Files in the data directory that hold secrets or sealed PINs: readable by the agent's
// user only. Their names are the agent's (keys.FileName, journal.FileName), repeated here
// so that the doctor does not open what it checks.
var privateFiles = []string{"seal-key.pem", "journal.db"}

// dataDir checks that the data directory is the agent's alone and writable.
func (e Env) dataDir(context.Context) Result {
	dir := e.DataDir
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		parent := filepath.Dir(dir)
		if err := writable(parent); err != nil {
			return fail(fmt.Sprintf("the data directory %s does not exist, and this user cannot create it in %s: %v", dir, parent, err),
				"create it for the service's user: install -d -m 0700 -o tokenfleet-agent "+dir+" (the systemd unit's StateDirectory does it)")
		}
		return pass(fmt.Sprintf("%s does not exist yet; the agent creates it (mode 0700) at its first start", dir))
	}
	if err != nil {
		return fail(fmt.Sprintf("data directory %s: %v", dir, err), "run the check as the service's user, and check the path (data_dir, --data)")
	}
	if !st.IsDir() {
		return fail(fmt.Sprintf("the data directory %s is not a directory", dir), "point data_dir (--data) at a directory")
	}
	var problems, fixes []string
	exposedKey := false
	if e.OS != "windows" {
		if perm := st.Mode().Perm(); perm&0o077 != 0 {
			problems = append(problems, fmt.Sprintf("%s has mode %04o: other users may look into it", dir, perm))
			fixes = append(fixes, "chmod 700 "+dir)
		}
		for _, name := range privateFiles {
			p := filepath.Join(dir, name)
			fst, err := os.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", p, err))
				continue
			}
			if perm := fst.Mode().Perm(); perm&0o077 != 0 {
				problems = append(problems, fmt.Sprintf("%s has mode %04o: other users may read it", p, perm))
				fixes = append(fixes, "chmod 600 "+p)
				exposedKey = exposedKey || name == privateFiles[0]
			}
		}
		if exposedKey {
			fixes = append(fixes, "if others may have read the sealing key, delete it instead: the agent makes a new one, and an administrator resets the recorded key (tokenfleetctl agent reset-key ID)")
		}
	}
	if err := writable(dir); err != nil {
		problems = append(problems, fmt.Sprintf("this user cannot write in %s: %v", dir, err))
		fixes = append(fixes, "run the check as the service's user; give the directory to it: chown -R tokenfleet-agent "+dir)
	}
	if len(problems) > 0 {
		return fail(strings.Join(problems, "; "), strings.Join(fixes, "; "))
	}
	return pass(fmt.Sprintf("%s is writable and private", dir))
}

// writable creates and removes a file in dir.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".doctor-*")
	if err != nil {
		return err
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

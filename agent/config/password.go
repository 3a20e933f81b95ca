package config

import (
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
)

func password(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	return p
}

func readPassword(path string) (string, error) {
	if err := checkPrivate(path); err != nil {
		return "", err
	}
	data, err := readSmall(path)
	if err != nil {
		return "", err
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" || strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("%s must hold the password on one line", path)
	}
	return pw, nil
}

// checkPrivate refuses a file other users may read, or anyone but its owner may write.
// Windows has ACLs instead of modes: the installer sets them.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	if m := st.Mode().Perm(); m&0o027 != 0 {
		return fmt.Errorf("%s is open to other users (mode %04o): chmod 600 it, or 640 with the agent's group", path, m)
	}
	return nil
}

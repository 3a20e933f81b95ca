//go:build windows

package keys

import "io/fs"

// checkPrivate: Windows has no mode bits to check; the data directory's ACL, set by the
// installer to SYSTEM and Administrators, is what keeps the key private there.
func checkPrivate(string, fs.FileInfo) error { return nil }

// syncDir: Windows cannot open a directory for syncing; NTFS journals the rename.
func syncDir(string) error { return nil }

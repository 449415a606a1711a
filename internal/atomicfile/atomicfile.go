// Package atomicfile replaces files so that readers see the old content or
// the new, never a part, and a crash leaves one of the two: the config that
// penctl's write and the appliance save, lbd's last good config, web stats,
// the resolver file.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm. A temporary file in the same
// directory is created exclusively (O_EXCL: never through a symlink someone
// planted), given its mode, written and synced, then renamed over path; the
// directory is synced so the rename itself is durable. A symlink at path is
// replaced, not followed. On error path is left as it was and the temporary
// file is removed.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

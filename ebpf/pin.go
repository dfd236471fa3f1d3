package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultBPFFS is where bpffs is normally mounted.
const DefaultBPFFS = "/sys/fs/bpf"

// bpfFSMagic is BPF_FS_MAGIC, the f_type of a bpf filesystem.
const bpfFSMagic = 0xcafe4a11

// IsBPFFS reports whether dir is on a bpf filesystem. A missing dir is not
// bpffs and not an error.
func IsBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint32(st.Type) == bpfFSMagic, nil
}

// EnsureBPFFS makes dir a bpf filesystem: if it is not one already, it creates
// dir and mounts bpffs on it.
func EnsureBPFFS(dir string) error {
	ok, err := IsBPFFS(dir)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mount bpffs: %w", err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w (needs root; or run: mount -t bpf bpf %s)", dir, err, dir)
	}
	return nil
}

// checkBPFFS fails with ErrNotBPFFS unless dir is on a bpf filesystem.
func checkBPFFS(dir string) error {
	ok, err := IsBPFFS(dir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", dir, ErrNotBPFFS)
	}
	return nil
}

// pinFD is BPF_OBJ_PIN of fd at path.
func pinFD(fd int, path string) error {
	if err := checkBPFFS(filepath.Dir(path)); err != nil {
		return fmt.Errorf("pin %s: %w", path, err)
	}
	p, err := cString(path)
	if err != nil {
		return fmt.Errorf("pin %s: %w", path, err)
	}
	attr := objAttr{Pathname: bytePtr(p), BPFFD: uint32(fd)}
	if err := sysObjPin(&attr); err != nil {
		return fmt.Errorf("pin %s: %w", path, sysErrno(err))
	}
	return nil
}

// getPinned is BPF_OBJ_GET of path. A missing path matches os.ErrNotExist.
func getPinned(path string) (int, error) {
	if err := checkBPFFS(filepath.Dir(path)); err != nil {
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	p, err := cString(path)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", path, err)
	}
	attr := objAttr{Pathname: bytePtr(p)}
	fd, err := sysObjGet(&attr)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", path, sysErrno(err))
	}
	return fd, nil
}

// Unpin removes the pin at path; a missing pin is not an error.
func Unpin(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unpin: %w", err)
	}
	return nil
}

// Pinner is anything that pins itself at a path (*Map, *Program). It is an
// alias, so map[string]interface{ Pin(string) error } is the same type.
type Pinner = interface {
	Pin(path string) error
}

// PinDir pins every object of objs as dir/<name>, replacing dir as a whole in
// one step: the objects are pinned into a temporary directory next to dir
// (same bpffs), which is then renamed onto dir (exchanged with it if dir
// exists, and the old pins removed). Readers see the old set or the new one,
// never a mix.
func PinDir(dir string, objs map[string]Pinner) error {
	dir = filepath.Clean(dir)
	parent := filepath.Dir(dir)
	if err := checkBPFFS(parent); err != nil {
		return fmt.Errorf("pin dir %s: %w", dir, err)
	}
	names := make([]string, 0, len(objs))
	for name := range objs {
		if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
			return fmt.Errorf("pin dir %s: bad name %q", dir, name)
		}
		names = append(names, name)
	}
	sort.Strings(names)

	// No '.' in the name: bpffs refuses names with dots.
	tmp, err := os.MkdirTemp(parent, filepath.Base(dir)+"-pintmp-")
	if err != nil {
		return fmt.Errorf("pin dir %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp) // after the rename: the old pins, or nothing
	for _, name := range names {
		if err := objs[name].Pin(filepath.Join(tmp, name)); err != nil {
			return fmt.Errorf("pin dir %s: %w", dir, err)
		}
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dir, unix.RENAME_EXCHANGE)
	}
	if err != nil {
		return fmt.Errorf("pin dir %s: rename %s: %w", dir, tmp, err)
	}
	return nil
}

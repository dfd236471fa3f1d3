// Package runstate names where a running xlb keeps state outside its
// process, pins under bpffs and control sockets, and removes what a killed
// one leaves there. Both are named after the network namespace xlb runs in
// ("net<inode>-"), since every namespace has its own lo.
package runstate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// PinRoot holds one pin directory per instance.
	PinRoot = "/sys/fs/bpf/xlb"
	// SocketDir holds the default control sockets.
	SocketDir = "/run/xlb"
)

// tag is "net<inode>-" of a namespace.
func tag(ino uint64) string { return fmt.Sprintf("net%d-", ino) }

// selfTag is the tag of the namespace this process runs in. (Whether that
// is the initial namespace cannot be told without reading /proc/1, which
// may be denied.)
func selfTag() string {
	var self unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &self) != nil {
		return ""
	}
	return tag(self.Ino)
}

// PinDir is where the instance on iface pins its state.
func PinDir(iface string) string {
	// bpffs names cannot hold '.', which interface names (VLANs) can.
	return PinRoot + "/" + strings.ReplaceAll(selfTag()+iface, ".", "_")
}

// Socket is the default control socket of the instance on iface.
func Socket(iface string) string { return filepath.Join(SocketDir, selfTag()+iface+".sock") }

// RemovePins removes the pins of the instance on iface, and the pin root
// once no instance pins there.
func RemovePins(iface string) error {
	err := os.RemoveAll(PinDir(iface))
	os.Remove(PinRoot) // only if empty
	return err
}

// RemoveLeftovers removes what an xlb killed in the network namespace with
// inode ino leaves behind (a stopped one removes them itself): its pins and
// control sockets, and the pin root if that leaves it empty.
func RemoveLeftovers(ino uint64) {
	pins, _ := filepath.Glob(PinRoot + "/" + tag(ino) + "*")
	socks, _ := filepath.Glob(filepath.Join(SocketDir, tag(ino)+"*"))
	for _, p := range append(pins, socks...) {
		os.RemoveAll(p)
	}
	os.Remove(PinRoot)
}

// PinsTransient reports whether pins made by this process would vanish
// when it exits: no bpf filesystem is mounted on the pin root's parent
// (/sys/fs/bpf) and this process has a mount namespace of its own, not its
// parent's, as a command under `ip netns exec` has (it remounts /sys). The
// bpf filesystem xlb would mount there lives only as long as that
// namespace, and with it the pins. Unknown (unreadable namespaces): false.
func PinsTransient() bool {
	var st unix.Statfs_t
	if unix.Statfs(filepath.Dir(PinRoot), &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		return false
	}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	parent, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	return err1 == nil && err2 == nil && self != parent
}

// TransientHint says what to do instead when PinsTransient.
const TransientHint = "this process has a mount namespace of its own without a bpf filesystem on /sys/fs/bpf (as under `ip netns exec`, which remounts /sys): pins made here vanish when it exits; run it with `nsenter --net=/run/netns/NAME` instead"

// Package lab is the laboratory of the long-running harnesses (scale/,
// soak/): a private network namespace, processes started inside it and
// stopped or killed, and the proc files that tell what they cost (RSS,
// descriptors, BPF map memory, the namespace's TCP sockets).
//
// Everything a Netns starts is killed by its Close, which also removes the
// pins and control sockets an xlb killed inside it left; namespaces of
// runs killed outright are recognised by the dead pid in their name and
// removed by the next run (RemoveStaleNamespaces).
package lab

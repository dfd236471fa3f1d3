package splice

// Sequence-space arithmetic modulo 2^32, the Go twin of kern/bpf/seq.h. Wire
// numbers (seq, ack, TSval) are compared only with these.

// SeqLT reports a < b in sequence space.
func SeqLT(a, b uint32) bool { return int32(a-b) < 0 }

// SeqLE reports a <= b in sequence space.
func SeqLE(a, b uint32) bool { return int32(a-b) <= 0 }

// SeqGT reports a > b in sequence space.
func SeqGT(a, b uint32) bool { return int32(a-b) > 0 }

// SeqGE reports a >= b in sequence space.
func SeqGE(a, b uint32) bool { return int32(a-b) >= 0 }

// SeqNear reports |a - b| <= bound in sequence space.
func SeqNear(a, b, bound uint32) bool {
	d := int64(int32(a - b))
	return d <= int64(int32(bound)) && d >= -int64(int32(bound))
}

package splice

import "time"

// reapQueue holds finished legs in the order their lingers end: Linger is
// one duration, so the order they finished in. A ring: under
// connection-per-request churn (two legs end a request) a slice taken from
// the front and appended to at the back reallocated and copied itself
// every few thousand events, and the garbage collector's clearing of those
// arrays, with its page returns, cost more than the events did.
type reapQueue struct {
	buf  []reapItem
	head int // index of the oldest
	n    int
}

// minReapRing is the smallest ring kept (it shrinks back to it when
// mostly empty).
const minReapRing = 256

func (q *reapQueue) len() int { return q.n }

// push adds it at the back. (One due before the back's waits for those
// ahead of it: only a --reuse takeover with another Linger makes one.)
func (q *reapQueue) push(it reapItem) {
	if q.n == len(q.buf) {
		q.resize(max(minReapRing, 2*len(q.buf)))
	}
	q.buf[(q.head+q.n)%len(q.buf)] = it
	q.n++
}

// pop takes the oldest; q must not be empty.
func (q *reapQueue) pop() reapItem {
	it := q.buf[q.head]
	q.buf[q.head] = reapItem{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return it
}

// popDue appends to dst the items due at now (their linger over), oldest
// first, and takes them off.
func (q *reapQueue) popDue(now time.Time, dst []reapItem) []reapItem {
	for q.n > 0 && now.After(q.buf[q.head].at) {
		dst = append(dst, q.pop())
	}
	if len(q.buf) > minReapRing && q.n < len(q.buf)/4 {
		q.resize(max(minReapRing, len(q.buf)/2))
	}
	return dst
}

// each calls fn on every item, oldest first.
func (q *reapQueue) each(fn func(reapItem)) {
	for i := range q.n {
		fn(q.buf[(q.head+i)%len(q.buf)])
	}
}

func (q *reapQueue) resize(size int) {
	buf := make([]reapItem, size)
	for i := range q.n {
		buf[i] = q.buf[(q.head+i)%len(q.buf)]
	}
	q.buf, q.head = buf, 0
}

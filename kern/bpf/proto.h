/* SPDX-License-Identifier: GPL-2.0 */
/* Remix safety (DESIGN.md "Remix safety"): the few payload bytes the data
 * plane reads, only where it takes a decision. The TCP conditions of a
 * request boundary are necessary, not sufficient: a client moves only on
 * positive evidence that the conversation is between two messages, and a
 * connection that shows it does not follow the rules is pinned for life.
 *
 * Reads happen at four places, never on a continuation segment:
 * - the first data of a connection: which protocol (classify);
 * - new data at a candidate boundary: does it start a message (msg_start);
 * - the first segment of each HTTP answer: interim (1xx), 101, or final;
 * - the last two bytes of a client segment that ends a write (PSH), for
 *   RESP and memcache only: did the write end a line.
 *
 * What a wrong boundary would still need to look like, all at once (the
 * residual risk; see README "Protocols"):
 * - a client that sends its next message while the previous answer is not
 *   complete, yet after every answer byte sent so far reached it, the worker
 *   having acknowledged every request byte and sent nothing with an ACK
 *   below them (else: pinned, "pipelined");
 * - the next message starts a segment, at the start of a write, and looks
 *   like a message of the protocol (a method token and a target; "*N\r\n$L\r\n"
 *   and a command; a memcached command word);
 * - for RESP and memcache, the previous write ended with CRLF;
 * - the previous segment ended short of the window the client was offered
 *   by more than a segment (track_client: a client held by the window
 *   stops at its edge, wherever its write is, and Linux may have set PSH
 *   on a segment mid-write, every half window).
 * A protocol-compliant client never does the first. What remains is a
 * client that pipelines across writes and pauses exactly when the worker
 * has flushed part of an answer: it can lose that answer's rest; and a
 * pipeline held by its congestion window (not its receive window) whose
 * last segment before the stall carried PSH and ended exactly at a
 * message's end, the worker having answered all it had. Connection
 * state that the protocol keeps outside messages (an HTTP connection-bound
 * authentication such as NTLM) is not seen. */
#ifndef XLB_PROTO_H
#define XLB_PROTO_H

#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "leg.h"

/* peek_load copies the first payload bytes of p into the per-CPU xlb_peek
 * buffer (zeros after them) and returns it, or NULL. */
static __always_inline struct peek_buf *peek_load(const struct pkt *p)
{
	__u32 zero = 0, n, off = p->payload_off;
	struct peek_buf *k = bpf_map_lookup_elem(&xlb_peek, &zero);

	if (!k)
		return NULL;
	__builtin_memset(k->b, 0, sizeof(k->b));
	n = p->payload < XLB_PEEK_MAX ? p->payload : XLB_PEEK_MAX;
	k->len = 0;
	if (n > 0 && n <= XLB_PEEK_MAX && !bpf_xdp_load_bytes(p->ctx, off, k->b, n))
		k->len = n;
	return k;
}

/* b reads byte i (a constant, or a value below XLB_PEEK_MAX) of the buffer. */
static __always_inline int pb(const struct peek_buf *k, __u32 i)
{
	return k->b[i & 63];
}

static __always_inline int is_digit(int c) { return c >= '0' && c <= '9'; }
static __always_inline int is_upper(int c) { return c >= 'A' && c <= 'Z'; }
static __always_inline int is_lower(int c) { return c >= 'a' && c <= 'z'; }

/* A word of up to 8 bytes packed as word8() reads it: W8("AUTH"). Folded
 * by the compiler (a string literal's bytes are constants): nothing of it
 * reaches the object as data. */
#define W8B(s, i) (sizeof(s) > (i) + 1 ? (__u64)(__u8)(s)[i] << (8 * (i)) : 0)
#define W8(s) (W8B(s, 0) | W8B(s, 1) | W8B(s, 2) | W8B(s, 3) | W8B(s, 4) | W8B(s, 5) | \
	       W8B(s, 6) | W8B(s, 7))

/* word8 packs bytes [off, off+n) of the buffer (n from 1 to 8, off below
 * 32): byte off is the lowest. Bytes past the payload read as zero. */
static __always_inline __u64 word8(const struct peek_buf *k, __u32 off, __u32 n)
{
	__u64 w;

	off &= 31;
	__builtin_memcpy(&w, &k->b[off], 8);
	if (n < 8)
		w &= (1ull << (8 * (n & 7))) - 1;
	return w;
}

/* fold is word8 with ASCII letters in lower case; every other byte also has
 * bit 5 set, which maps no other byte onto a letter, so comparing folded
 * words compares letters without case and the rest exactly. */
#define FOLD 0x2020202020202020ull

/* TLS: a handshake record (content type 22) of SSL 3.0 to TLS 1.3. */
static __always_inline int is_tls(const struct peek_buf *k)
{
	return k->len >= 3 && pb(k, 0) == 0x16 && pb(k, 1) == 0x03 && pb(k, 2) <= 0x04;
}

/* http_start: does the data start an HTTP/1.x request? A method token
 * (upper case, 3 to XLB_METHOD_MAX bytes), a space, and the start of a
 * target: '/', '*' or an absolute URI. Returns 0: no; 1: a request;
 * PIN_UPGRADE: a tunnel (CONNECT) or the HTTP/2 preface ("PRI * HTTP/2.0"),
 * which never come back to request and response. */
static __always_inline int http_start(const struct peek_buf *k)
{
	__u32 n = 0;
	int t;

	for (int i = 0; i < XLB_METHOD_MAX + 1; i++) {
		int c = pb(k, i);

		if (c == ' ') {
			n = i;
			break;
		}
		if (!is_upper(c) && c != '-' && c != '_')
			return 0;
	}
	if (n < 3 || n + 2 > k->len)
		return 0;
	if (n == 7 && word8(k, 0, 7) == W8("CONNECT"))
		return PIN_UPGRADE;
	if (n == 3 && word8(k, 0, 3) == W8("PRI"))
		return PIN_UPGRADE;
	t = pb(k, n + 1);
	return t == '/' || t == '*' || t == 'h' || t == 'H';
}

/* resp_len reads a RESP length after its type byte at `off` (1 to 3
 * digits and CRLF: "*3\r\n", "$4\r\n"). Returns the offset after the CRLF
 * and the value in *v, or 0. */
static __always_inline __u32 resp_len(const struct peek_buf *k, __u32 off, int type, __u32 *v)
{
	__u32 x = 0, i = 1;

	if (pb(k, off) != type)
		return 0;
	for (int j = 0; j < 3; j++) {
		int c = pb(k, off + i);

		if (!is_digit(c))
			break;
		x = x * 10 + (c - '0');
		i++;
	}
	if (i == 1 || pb(k, off + i) != '\r' || pb(k, off + i + 1) != '\n')
		return 0;
	*v = x;
	return off + i + 2;
}

/* resp_stateful: command names (folded, in two words) that leave state on
 * the connection: an authenticated user, a database, a transaction, a
 * subscription, a protocol version, a reply mode, a replica stream. */
static __always_inline int resp_stateful(__u64 w, __u64 w2, __u32 n)
{
	switch (n) {
	case 4:
		return w == (W8("AUTH") | FOLD >> 32) || w == (W8("SYNC") | FOLD >> 32);
	case 5:
		return w == (W8("HELLO") | FOLD >> 24) || w == (W8("MULTI") | FOLD >> 24) ||
		       w == (W8("WATCH") | FOLD >> 24) || w == (W8("RESET") | FOLD >> 24) ||
		       w == (W8("PSYNC") | FOLD >> 24);
	case 6:
		return w == (W8("SELECT") | FOLD >> 16) || w == (W8("CLIENT") | FOLD >> 16);
	case 7:
		return w == (W8("MONITOR") | FOLD >> 8);
	case 8:
		return w == (W8("READONLY") | FOLD);
	case 9:
		return (w == (W8("SUBSCRIB") | FOLD) || w == (W8("READWRIT") | FOLD)) && w2 == ('E' | 0x20);
	case 10:
		return (w == (W8("PSUBSCRI") | FOLD) || w == (W8("SSUBSCRI") | FOLD)) &&
		       w2 == (W8("BE") | FOLD >> 48);
	}
	return 0;
}

/* resp_start: does the data start a RESP command, "*N\r\n$L\r\nNAME\r\n"?
 * Returns 0: no; 1: a command; PIN_STATEFUL: a command that gives the
 * connection state (CLIENT SETNAME and SETINFO, which only label it, pass). */
static __always_inline int resp_start(const struct peek_buf *k)
{
	__u32 n = 0, l = 0, off, l2 = 0, o2;
	__u64 w, w2 = 0;

	off = resp_len(k, 0, '*', &n);
	if (!off || n == 0)
		return 0;
	off = resp_len(k, off, '$', &l);
	if (!off || l == 0 || l > 16)
		return 0;
	/* The whole name and its CRLF must be here to be judged. */
	if (off + l + 2 > k->len || pb(k, off + l) != '\r' || pb(k, off + l + 1) != '\n')
		return 0;
	w = word8(k, off, l < 8 ? l : 8) | (FOLD >> (8 * (8 - (l < 8 ? l : 8))));
	if (l > 8)
		w2 = word8(k, off + 8, l - 8) | (FOLD >> (8 * (16 - l)));
	if (!resp_stateful(w, w2, l))
		return 1;
	if (l != 6 || n < 2 || w != (W8("CLIENT") | FOLD >> 16))
		return PIN_STATEFUL;
	o2 = resp_len(k, off + 8, '$', &l2);
	if (o2 && l2 == 7 && o2 + 7 <= k->len) {
		__u64 s = word8(k, o2, 7) | FOLD >> 8;

		if (s == (W8("SETNAME") | FOLD >> 8) || s == (W8("SETINFO") | FOLD >> 8))
			return 1;
	}
	return PIN_STATEFUL;
}

/* memcache_start: does the data start a memcached text command, a known
 * command word followed by a space or CRLF? */
static __always_inline int memcache_start(const struct peek_buf *k)
{
	__u32 n = 0;
	__u64 w, w2 = 0;
	int sep;

	for (int i = 0; i < 10; i++) {
		int c = pb(k, i);

		if (!is_lower(c) && c != '_') {
			n = i;
			break;
		}
	}
	sep = pb(k, n);
	if (n < 2 || n + 1 > k->len || (sep != ' ' && sep != '\r'))
		return 0;
	w = word8(k, 0, n < 8 ? n : 8);
	if (n > 8)
		w2 = word8(k, 8, n - 8);
	switch (n) {
	case 2: /* meta commands */
		return w == W8("mg") || w == W8("ms") || w == W8("md") || w == W8("ma") ||
		       w == W8("mn") || w == W8("me");
	case 3:
		return w == W8("get") || w == W8("set") || w == W8("add") || w == W8("cas") ||
		       w == W8("gat");
	case 4:
		return w == W8("gets") || w == W8("incr") || w == W8("decr") || w == W8("gats") ||
		       w == W8("quit");
	case 5:
		return w == W8("touch") || w == W8("stats");
	case 6:
		return w == W8("delete") || w == W8("append");
	case 7:
		return w == W8("replace") || w == W8("prepend") || w == W8("version");
	case 9:
		return (w == W8("flush_al") && w2 == 'l') || (w == W8("verbosit") && w2 == 'y');
	}
	return 0;
}

/* msg_start: does the new data start a message of protocol `proto`?
 * Returns 0 if it does, else the reason to pin the pair. */
static __always_inline __u32 msg_start(const struct peek_buf *k, __u32 proto)
{
	int r;

	switch (proto) {
	case PROTO_HTTP:
		r = http_start(k);
		break;
	case PROTO_RESP:
		r = resp_start(k);
		break;
	case PROTO_MEMCACHE:
		r = memcache_start(k);
		break;
	default:
		return PIN_UNKNOWN;
	}
	if (r == 1)
		return 0;
	return r ? (__u32)r : PIN_NOT_MSG;
}

/* first_proto: the protocol of a connection from its first byte, under
 * --protocol auto (msg_start then checks the whole start): a method token
 * is upper case, a RESP command an array, a memcached command lower case. */
static __always_inline __u32 first_proto(const struct peek_buf *k, const struct xlb_config *cfg)
{
	int c = pb(k, 0);

	switch (cfg->protocol) {
	case CFG_PROTO_HTTP:
		return PROTO_HTTP;
	case CFG_PROTO_RESP:
		return PROTO_RESP;
	case CFG_PROTO_MEMCACHE:
		return PROTO_MEMCACHE;
	case CFG_PROTO_AUTO:
		if (is_upper(c))
			return PROTO_HTTP;
		if (c == '*')
			return PROTO_RESP;
		if (is_lower(c))
			return PROTO_MEMCACHE;
	}
	return PROTO_OPAQUE;
}

/* classify judges the first data of a connection: sets c->proto, and
 * returns 0 or the reason to pin the pair for life. `start` is
 * msg_start() of the data for first_proto()'s protocol. */
static __always_inline __u32 classify(const struct peek_buf *k, struct leg *c, const struct xlb_config *cfg,
				      __u32 proto, __u32 start)
{
	c->proto = proto;
	if (cfg->protocol == CFG_PROTO_RAW)
		return PIN_RAW;
	if (proto == PROTO_OPAQUE)
		return is_tls(k) ? PIN_TLS : PIN_UNKNOWN;
	/* Under auto, a first byte that looked like a protocol but no message
	 * of it: unknown. A forced protocol: not a message start. */
	if (start == PIN_NOT_MSG && cfg->protocol == CFG_PROTO_AUTO)
		return PIN_UNKNOWN;
	return start;
}

/* http_status: the status code of an HTTP/1.x status line at the start of
 * the data ("HTTP/1.1 200 "), or -1. */
static __always_inline int http_status(const struct peek_buf *k)
{
	int a = pb(k, 9), b = pb(k, 10), c = pb(k, 11), v = pb(k, 7);

	if (k->len < 12 || word8(k, 0, 7) != W8("HTTP/1.") || (v != '0' && v != '1') || pb(k, 8) != ' ')
		return -1;
	if (!is_digit(a) || !is_digit(b) || !is_digit(c))
		return -1;
	return (a - '0') * 100 + (b - '0') * 10 + (c - '0');
}

/* What an answer's Connection header says (http_answer). */
enum conn_header {
	CONN_NONE = 0,       /* none seen */
	CONN_CLOSE = 1,      /* "close": the worker ends the connection after this answer */
	CONN_KEEP_ALIVE = 2, /* "keep-alive" */
};

/* fold8 reads 8 bytes of s at i (at most XLB_HDR_SCAN) folded as FOLD
 * says: letters in lower case. */
static __always_inline __u64 fold8(const struct scan_buf *s, __u32 i)
{
	__u64 w;

	__builtin_memcpy(&w, &s->b[i], 8);
	return w | FOLD;
}

/* What http_answer()'s scan found (struct ans_scan's flags). */
#define ANS_HDR_END   4          /* the empty line after the headers is in the scan: hdr_len */
#define ANS_HAS_LEN   8          /* one Content-Length, below 2^31: clen */
#define ANS_NO_LEN    16         /* Transfer-Encoding, or Content-Length unreadable or twice */

#define SCAN_MASK (2 * XLB_HDR_SCAN - 1) /* struct scan_buf's indexes */

/* bpf_loop's context of a scan: the buffer, whose fields hold what it
 * found. */
struct scan_ctx {
	struct scan_buf *s;
};

/* scan_nl: byte index + 1 of a scan, where a line starts after a '\n'.
 * Returns its index if it is a '\n', SCAN_STOP past the bytes (three must
 * follow) or the scan, SCAN_NEXT otherwise. */
#define SCAN_STOP (-1)
#define SCAN_NEXT (-2)
static __always_inline long scan_nl(const struct scan_buf *s, __u64 index)
{
	__u32 i = (__u32)index + 1;

	if (i + 3 > s->len || i >= XLB_HDR_SCAN)
		return SCAN_STOP;
	/* The verifier must see i bounded where it indexes: the mask, which
	 * clang would drop after the test above unless it cannot see through
	 * i (the empty asm). */
	asm volatile("" : "+r"(i));
	i &= XLB_HDR_SCAN - 1;
	return s->b[i] == '\n' ? (long)i : SCAN_NEXT;
}

/* ans_length reads the value of a Content-Length header at index k
 * (after "content-length:"): optional blanks, 1 to 10 digits, then the end
 * of the line or a blank. A second one that differs, or a value of 2^31 or
 * more, leaves the answer without a length the program takes. */
static __always_inline void ans_length(struct scan_buf *s, __u32 k)
{
	__u64 v = 0;
	__u32 digits = 0, j = 0, c;

	for (; j < 4; j++) {
		c = s->b[(k + j) & SCAN_MASK];
		if (c != ' ' && c != '\t')
			break;
	}
	k += j;
	for (j = 0; j < 11; j++) {
		c = s->b[(k + j) & SCAN_MASK];
		if (!is_digit(c))
			break;
		v = v * 10 + (c - '0');
		digits++;
	}
	if (k + j >= s->len || digits == 0 || digits > 10 || v >= 0x80000000ull ||
	    (c != '\r' && c != ' ' && c != '\t') ||
	    ((s->flags & ANS_HAS_LEN) && s->clen != (__u32)v)) {
		s->flags |= ANS_NO_LEN;
		return;
	}
	s->flags |= ANS_HAS_LEN;
	s->clen = (__u32)v;
}

/* ans_step: bpf_loop's step of http_answer at byte i + 1: a header line
 * starts after a '\n'. Returns 1 to stop: the header block or the bytes end. */
static long ans_step(__u64 index, struct scan_ctx *x)
{
	struct scan_buf *s = x->s;
	long r = scan_nl(s, index);
	__u32 i;

	if (r < 0)
		return r == SCAN_STOP;
	i = (__u32)r;
	if (s->b[i + 1] == '\r' && s->b[i + 2] == '\n') {
		s->hdr_len = i + 3; /* the empty line: the headers end */
		s->flags |= ANS_HDR_END;
		return 1;
	}
	/* Every byte of these words has bit 5 set already: folding them is
	 * a no-op. "\nconnection: " is 13 bytes, then at least 5 of the token. */
	if (i + 18 <= s->len && fold8(s, i + 1) == W8("connecti") && (fold8(s, i + 9) & 0xffffffffull) == W8("on: ")) {
		if ((fold8(s, i + 13) & 0xffffffffffull) == W8("close")) {
			s->conn = CONN_CLOSE;
		} else if (i + 21 <= s->len && fold8(s, i + 13) == W8("keep-ali")) {
			s->conn = CONN_KEEP_ALIVE;
			s->conn_at = i + 13;
		}
		return 0;
	}
	if (i + 18 <= s->len && fold8(s, i + 1) == W8("content-") &&
	    (fold8(s, i + 9) & 0xffffffffffffffull) == W8("length:"))
		ans_length(s, i + 16);
	else if (i + 19 <= s->len && fold8(s, i + 1) == W8("transfer") && fold8(s, i + 9) == W8("-encodin"))
		s->flags |= ANS_NO_LEN;
	return 0;
}

/* put_close writes "close" and five blanks at d (ten bytes), from
 * immediates: a string literal could reach the object as data, which the
 * loader does not take. */
static __always_inline void put_close(__u8 *d)
{
	__u64 a = W8("close   ");
	__u16 b = W8("  ");

	__builtin_memcpy(d, &a, 8);
	__builtin_memcpy(d + 8, &b, 2);
}

/* http_answer reads the header block of the answer whose first segment
 * has len payload bytes at off of the packet, in its first XLB_HDR_SCAN
 * bytes: its Connection header ("close" or "keep-alive", names and tokens
 * without case, one space), its Content-Length and where the headers end
 * (the answer's end: BIND_END in both bindings, see answer_whole).
 * Returns 1 if the worker ends the connection after this answer:
 * "Connection: close", or an HTTP/1.0 status line (info & ANS_V10) without
 * "Connection: keep-alive" (see worker_closes).
 *
 * Under BIND_KEEP, the answer is framed when the headers end in the scan,
 * the worker does not close, and one readable Content-Length (or no body:
 * HEAD, info & ANS_NO_BODY) gives its length: where it ends goes into b
 * and the partner's binding (fin_at, BIND_FIN_AT), and its "Connection:
 * keep-alive" line becomes "Connection: close" and five blanks (optional
 * white space a field may end with: the answer keeps its length), the TCP
 * checksum mended. mark_info: the answer's start (worker's space), and info
 * in the upper half (five arguments at most). An answer that cannot be framed is counted
 * (unframed) and said to close: pinned, its worker ends it.
 *
 * nginx writes Connection after Server, Date and the Content-* and
 * Last-Modified headers: about 200 bytes in. A header past the scan, or
 * written otherwise, is not seen. Global, its loop a bpf_loop: the verifier
 * checks it once, not once per byte on each of worker_data()'s paths in two
 * programs (a plain loop cost each program 170k instructions). */
#define ANS_V10     1 /* info: the status line is HTTP/1.0 */
#define ANS_NO_BODY 2 /* info: a status without a body (204, 304) */
#define ANS_IP_LEN_SHIFT 8 /* info: the IP header's length (extension headers included) from this bit */
__attribute__((noinline)) int http_answer(struct xdp_md *ctx, __u32 off, __u32 len, struct binding *b,
					  __u64 mark_info)
{
	__u32 zero = 0, at, ws, keep, set, mark = (__u32)mark_info, info = mark_info >> 32;
	__u32 csum_off;
	struct scan_ctx x;
	struct scan_buf *a;
	struct binding *bc;
	__u8 *old, *new;
	__u16 check;
	__s64 sum;

	if (!b)
		return 0; /* a global function's pointer may be NULL for the verifier */
	keep = b->flags & BIND_KEEP;
	bc = bpf_map_lookup_elem(&xlb_binds, &b->to);
	a = bpf_map_lookup_elem(&xlb_scan, &zero);
	if (!a)
		return 0;
	if (len > XLB_HDR_SCAN)
		len = XLB_HDR_SCAN;
	if (len < 24 || bpf_xdp_load_bytes(ctx, off, a->b, len))
		goto unframed;
	a->len = len;
	a->conn = CONN_NONE;
	a->conn_at = 0;
	a->flags = 0;
	a->hdr_len = 0;
	a->clen = 0;
	x.s = a;
	bpf_loop(XLB_HDR_SCAN, ans_step, &x, 0);
	if (a->conn == CONN_CLOSE || (a->conn != CONN_KEEP_ALIVE && (info & ANS_V10)))
		return 1;
	if (!(a->flags & ANS_HDR_END))
		goto unframed;
	if ((b->flags & BIND_HEAD) || (info & ANS_NO_BODY))
		a->clen = 0;
	else if ((a->flags & (ANS_HAS_LEN | ANS_NO_LEN)) != ANS_HAS_LEN)
		goto unframed;
	/* The answer's end: in both bindings (BIND_END), for a client that
	 * leaves or goes quiet (client_leaves, quiescent), and under BIND_KEEP
	 * where its FIN goes (BIND_FIN_AT). */
	at = mark + a->hdr_len + a->clen;
	set = keep ? BIND_END | BIND_FIN_AT : BIND_END;
	WRITE_ONCE(b->fin_at, at);
	WRITE_ONCE(b->flags, b->flags | set);
	if (bc) {
		WRITE_ONCE(bc->fin_at, at);
		WRITE_ONCE(bc->flags, bc->flags | set);
	}
	if (!keep)
		return 0;
	at = a->conn_at;
	if (a->conn == CONN_KEEP_ALIVE && at + 12 <= len && at < XLB_HDR_SCAN && (a->b[at + 8] | 0x20) == 'v' &&
	    (a->b[at + 9] | 0x20) == 'e' && a->b[at + 10] == '\r') {
		/* Twelve bytes from an even offset of the segment (the payload
		 * starts at one: TCP headers are whole words), so that the
		 * checksum's 16-bit lanes line up; old and new in the scan
		 * buffer past the bytes read. */
		ws = at & ~1u;
		old = &a->b[XLB_HDR_SCAN];
		new = &a->b[XLB_HDR_SCAN + 16];
		__builtin_memcpy(old, &a->b[ws & SCAN_MASK], 12);
		__builtin_memcpy(new, old, 12);
		put_close(new + (at & 1));
		/* The TCP checksum: 16 bytes into the TCP header. */
		csum_off = sizeof(struct ethhdr) + ((info >> ANS_IP_LEN_SHIFT) & 0xffff) + 16;
		if (bpf_xdp_load_bytes(ctx, csum_off, &check, 2))
			return 0;
		sum = bpf_csum_diff((__be32 *)old, 12, (__be32 *)new, 12, (__u16)~check);
		if (sum < 0 || bpf_xdp_store_bytes(ctx, off + ws, new, 12))
			return 0;
		check = ~csum_fold((__u32)sum);
		bpf_xdp_store_bytes(ctx, csum_off, &check, 2);
	}
	return 0;
unframed:
	/* An answer before this one may have been framed: not this one. */
	WRITE_ONCE(b->flags, b->flags & ~BIND_END);
	if (bc)
		WRITE_ONCE(bc->flags, bc->flags & ~BIND_END);
	if (!keep)
		return info & ANS_V10;
	count(XLB_CNT_UNFRAMED);
	return 1;
}

/* req_step: bpf_loop's step of http10_request at byte i + 1. Returns 1 to
 * stop: the headers end, or something rules the request out. */
static long req_step(__u64 index, struct scan_ctx *x)
{
	struct scan_buf *s = x->s;
	long n = scan_nl(s, index);
	__u32 i;

	if (n < 0)
		return n == SCAN_STOP;
	i = (__u32)n;
	if (i < 10 || s->b[i - 1] != '\r')
		return 1; /* a bare LF: not a request we rewrite */
	if (!s->line) {
		__u64 v;

		s->line = 1;
		__builtin_memcpy(&v, &s->b[(i - 9) & SCAN_MASK], 8);
		s->ok = s->b[(i - 10) & SCAN_MASK] == ' ' && v == W8("HTTP/1.0");
		if (!s->ok)
			return 1;
	}
	if (s->b[i + 1] == '\r' && s->b[i + 2] == '\n') {
		s->end = i + 3;
		return 1;
	}
	/* Headers that say the client handles the connection itself, or that
	 * a body follows: not rewritten. */
	if (i + 12 <= s->len && fold8(s, i + 1) == W8("connecti") && (fold8(s, i + 9) & 0xffffff) == W8("on:"))
		s->ok = 0;
	else if (i + 16 <= s->len && fold8(s, i + 1) == W8("content-") && (fold8(s, i + 9) & 0xffffffffffffffull) == W8("length:"))
		s->ok = 0;
	else if (i + 19 <= s->len && fold8(s, i + 1) == W8("transfer") && fold8(s, i + 9) == W8("-encodin"))
		s->ok = 0;
	else if (i + 8 <= s->len && (fold8(s, i + 1) & 0xffffffffffffffull) == W8("expect:"))
		s->ok = 0;
	else if (i + 9 <= s->len && fold8(s, i + 1) == W8("upgrade:"))
		s->ok = 0;
	return !s->ok;
}

/* http10_request: is the segment (len payload bytes at off) a whole
 * HTTP/1.0 request that asks nothing of the connection: the request line
 * ends in "HTTP/1.0", no Connection, Content-Length, Transfer-Encoding,
 * Expect or Upgrade header, CRLF line ends, and the empty line that ends the
 * headers ends the segment (no body, nothing after it). Then its worker may
 * keep the connection (CFG_KEEP_HTTP10). Returns 0: no; 1: yes; 2: yes, a
 * HEAD request (its answer has no body). */
__attribute__((noinline)) int http10_request(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u32 zero = 0;
	struct scan_ctx x;
	struct scan_buf *r;

	r = bpf_map_lookup_elem(&xlb_scan, &zero);
	if (!r || len < 18 || len > XLB_HDR_SCAN || bpf_xdp_load_bytes(ctx, off, r->b, len))
		return 0;
	r->len = len;
	r->line = 0;
	r->ok = 0;
	r->end = 0;
	x.s = r;
	bpf_loop(XLB_HDR_SCAN, req_step, &x, 0);
	if (!r->ok || r->end != len)
		return 0;
	return *(__u32 *)r->b == W8("HEAD") && r->b[4] == ' ' ? 2 : 1;
}

/* payload_tail reads the last n (2 or 4) payload bytes of p as a
 * big-endian number, or returns -1 when they cannot be read. Used on
 * segments that end a write, and on interim answers: never on a
 * continuation segment. */
static __always_inline __s64 payload_tail(const struct pkt *p, __u32 n)
{
	__u32 off = p->payload_off;
	__u8 t[4] = {};

	if ((n != 2 && n != 4) || p->payload < n)
		return -1;
	if (bpf_xdp_load_bytes(p->ctx, off + p->payload - n, t, n))
		return -1;
	if (n == 2)
		return ((__u32)t[0] << 8) | t[1];
	return ((__u32)t[0] << 24) | ((__u32)t[1] << 16) | ((__u32)t[2] << 8) | t[3];
}

#define CRLF 0x0d0a
#define CRLFCRLF 0x0d0a0d0a

#endif

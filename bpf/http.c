// HTTP/1.x request and status lines, parsed at the start of TCP payloads, matched per
// connection in order (pipelining included), with request-to-response latency bucketed in
// the kernel and each final status line published as an event. Reads only __sk_buff fields
// and packet bytes.
//
// Not a program of its own: a part of bpf/flows.c's, spliced into its text where it says
// `//@part http.c` (exporter/host/kernel.py; bcc rewrites map calls in the program's own
// text only), so that HTTP matching runs inside the traffic classifier's run on the flow
// entry it already holds. A confirmed connection's state has a place in an array, and
// both of its flow entries (one per direction) hold that place's index: a packet costs the
// flow lookup and an array index, not a second hash lookup (see http_states).
//
// Compile-time parameters (#defined by exporter/http/loader.py):
//   NBUCKETS, BUCKET_INDEX(ns)   latency histogram bounds
//   HTTP_EXP                     1 to count it in exponential buckets too
//                                (bpf/include/exponential.h, included by bpf/flows.c)
//   PORT_MATCH(port)             1 for ports to inspect (1 for all: by content)
//   MAX_CONNS, MAX_SERIES        map bounds
//   ROUTE_LABEL                  1 to key the histogram by path too (opt-in)
//   EMIT_EVENTS                  1 to publish each matched status line
//   EMIT_PACKETS                 1 to publish each HTTP packet (the `http` tool)
//   HTTP_WORKLOAD                1 to key series by the local workload too (the flow's owner,
//                                which bpf/flows.c learns with LABEL_WORKLOAD)
// bpf/flows.c provides before the splice: struct flow_val (http_slot, http_gen), the flow
// key types, KEY_ENDS, reverse_flow(key, ipv6, mirror), the connection's flow entry the other
// way, and request_role(...), whose side of a request this host is.

#include "http.h"      // roles, QLEN and lengths, counter indexes, method codes: shared
struct conn_key {
    u32 ifindex;
    u8 family;
    u8 pad[3];
    u8 client[16];
    u8 server[16];
    u16 client_port;
    u16 server_port;
};

// A connection's state: its first 64 bytes are what every request and response touch (a
// place is one cache line of an mmapable array, whose elements start on page boundaries
// and so on line boundaries): the requests' times move from the CPU that saw the request
// to the one that sees the response in that one line.
struct conn_state {
    u64 claim;  // in http_states: the place's generation << 1, | 1 while a connection holds it
    u32 head;   // next to answer
    u32 tail;   // next free
    u32 last_req_seq;
    u32 last_resp_seq;
    u16 server_port;
    u8 role;
    u8 seen;    // SEEN_REQUEST, SEEN_RESPONSE: the last sequence numbers are set
    u8 methods[QLEN];  // of the requests waiting, by queue slot
    u64 asked[QLEN];   // when they were asked (ktime), by queue slot
#if EMIT_EVENTS || ROUTE_LABEL
    char paths[QLEN * PATH_LEN];  // by queue slot (flat: bcc's Python types miss 2-D arrays)
#endif
};
#define SEEN_REQUEST 1
#define SEEN_RESPONSE 2

struct stat_key {
    u8 method;
    u8 role;
    u8 overflow;
    u8 pad;
    u16 status;
    u16 server_port;
    u64 cgroup;  // the local socket's owner, with HTTP_WORKLOAD; else 0
#if ROUTE_LABEL
    char route[ROUTE_LEN];
#endif
};

struct stat_val {
    u64 count;
    u64 sum_ns;
    u64 buckets[NBUCKETS + 1];
#if HTTP_EXP
    u64 exp[EXP_SLOTS];
#endif
};

struct http_event {
    u64 ts_ns;
    u64 latency_ns;
    u32 ifindex;
    u8 family;
    u8 method;
    u8 role;
    u8 pad;
    u16 status;
    u16 client_port;
    u16 server_port;
    u16 pad2;
    u8 client[16];
    u8 server[16];
    char path[PATH_LEN];
    char reason[REASON_LEN];
};

struct http_packet {
    u32 len;
    u32 header_len;
    u32 captured;
    u32 pad;
    u8 data[PACKET_LEN];
};

// The classifiers run before TCP's own checks, so a segment that starts with "GET " may
// belong to no connection at all (spoofed). Connection state is therefore confirmed: a
// connection gets a place in `http_states` only when its first request acknowledges the
// server's SYN-ACK (its ack is the server's initial sequence number + 1, which a blind
// spoofer cannot know), or when the server answered on it. Requests on connections whose
// handshake was not seen (older than the exporter, or spoofed) wait in `http_probation`, an
// LRU where they can only push each other out, until a response confirms them.
//
// Places, not a hash: a flow entry holds its connection's place (index + 1, and the
// place's generation), so the steady path needs no second lookup. A place is claimed by
// compare-and-swap at a cursor; when none of PROBES places is free, a new connection is
// counted as untracked (H_CONNS_FULL) rather than evicting one whose requests still wait.
// A place goes at FIN or RST (on_close), or from user space once idle.
BPF_F_TABLE("array", u32, struct conn_state, http_states, MAX_CONNS, BPF_F_MMAPABLE);
BPF_ARRAY(http_cursor, u64, 1);
BPF_TABLE("lru_hash", struct conn_key, struct conn_state, http_probation, PROBATION_CONNS);
// SYN-ACKs seen, by connection: the server's initial sequence number. Twice the
// connection map's size, as connections that never carry HTTP pass here too.
BPF_TABLE("lru_hash", struct conn_key, u32, http_handshakes, 2 * MAX_CONNS);
BPF_HASH(http_stats, struct stat_key, struct stat_val, MAX_SERIES);
BPF_ARRAY(http_counters, u64, NH_COUNTERS);
// Scratch space: conn_state is too large for the 512-byte stack.
BPF_PERCPU_ARRAY(http_scratch, struct conn_state, 1);
// The series key of a response, per CPU: off the 512-byte stack (with ROUTE_LABEL it holds
// the route; DNS's part shares the stack).
BPF_PERCPU_ARRAY(http_key_scratch, struct stat_key, 1);
// Never written: the zeroed value a new series starts from (stat_val passes the 512-byte
// stack at 64 bounds).
BPF_PERCPU_ARRAY(zero_series, struct stat_val, 1);
#if EMIT_EVENTS
BPF_RINGBUF_OUTPUT(http_events, 256);
#endif
#if EMIT_PACKETS
BPF_RINGBUF_OUTPUT(http_packets, 1024);
#endif

struct segment {
    u8 family;
    u8 tcp_flags;
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    u32 seq;
    u32 ack;
    u32 payload_off;
    u32 payload_len;
};

// The TCP segment's addresses and ports (from its flow key: a flow_key4 or flow_key6 at
// `key`), sequence numbers, flags and where its payload starts (`tcp` is its header, whole).
static __always_inline void segment_of(struct segment *seg, struct __sk_buff *skb, void *key,
                                       int ipv6, struct tcp_hdr_ *tcp, void *data)
{
    seg->family = ipv6 ? 6 : 4;
    if (ipv6)
        KEY_ENDS(seg, (struct flow_key6 *)key);
    else
        KEY_ENDS(seg, (struct flow_key4 *)key);
    seg->seq = ntohl(tcp->seq);
    seg->ack = ntohl(tcp->ack);
    seg->tcp_flags = tcp->flags;
    u32 off = (u32)((void *)tcp - data) + (tcp->doff >> 4) * 4;
    seg->payload_off = off;
    seg->payload_len = off < skb->len ? skb->len - off : 0;
}

// Compares the first bytes with a literal; unrolled, so it compiles to
// immediate compares (__builtin_memcmp would become a call the kernel lacks).
static __always_inline int is(const char *b, const char *s, int n)
{
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i >= n)
            break;
        if (b[i] != s[i])
            return 0;
    }
    return 1;
}
#define IS(b, i, s) is(&(b)[i], s, sizeof(s) - 1)

// The method of a request line, and the length of "METHOD ", or 0.
static __always_inline int method_of(const char *b, u32 *skip)
{
    if (IS(b, 0, "GET ")) { *skip = 4; return M_GET; }
    if (IS(b, 0, "POST ")) { *skip = 5; return M_POST; }
    if (IS(b, 0, "PUT ")) { *skip = 4; return M_PUT; }
    if (IS(b, 0, "DELETE ")) { *skip = 7; return M_DELETE; }
    if (IS(b, 0, "HEAD ")) { *skip = 5; return M_HEAD; }
    if (IS(b, 0, "OPTIONS ")) { *skip = 8; return M_OPTIONS; }
    if (IS(b, 0, "PATCH ")) { *skip = 6; return M_PATCH; }
    if (IS(b, 0, "CONNECT ")) { *skip = 8; return M_CONNECT; }
    if (IS(b, 0, "TRACE ")) { *skip = 6; return M_TRACE; }
    return 0;
}

static __always_inline int digit(char c)
{
    return c >= '0' && c <= '9';
}

// The status code of a status line ("HTTP/1.x NNN "), or 0.
static __always_inline int status_of(const char *b)
{
    if (!IS(b, 0, "HTTP/1.") || (b[7] != '0' && b[7] != '1') || b[8] != ' ')
        return 0;
    if (!digit(b[9]) || !digit(b[10]) || !digit(b[11]) || b[9] == '0')
        return 0;
    if (b[12] != ' ' && b[12] != '\r')
        return 0;
    return (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
}

static __always_inline struct stat_val *series(struct stat_key *key)
{
    struct stat_val *val = http_stats.lookup(key);
    if (val)
        return val;
    int first = 0;
    struct stat_val *zero = zero_series.lookup(&first);
    if (!zero)
        return 0;
    // Another CPU may insert the same new series between the lookup and this insert: the
    // insert fails, and the series is there.
    if (http_stats.insert(key, zero) != 0 && !http_stats.lookup(key)) {
        // The series cap: keep role and method (few values), drop the rest.
        count(http_counters.lookup(&(int){H_SERIES_OVERFLOW}), 1);
        u8 role = key->role, method = key->method;
        __builtin_memset(key, 0, sizeof(*key));
        key->role = role;
        key->method = method;
        key->overflow = 1;
        if (http_stats.insert(key, zero) != 0 && !http_stats.lookup(key))
            return 0;
    }
    return http_stats.lookup(key);
}

#if EMIT_PACKETS
static __always_inline void publish_packet(struct __sk_buff *skb, struct segment *seg)
{
    struct http_packet *p = http_packets.ringbuf_reserve(sizeof(struct http_packet));
    if (!p) {
        count(http_counters.lookup(&(int){H_EVENTS_LOST}), 1);
        return;
    }
    u32 n = skb->len;
    if (n > PACKET_LEN)
        n = PACKET_LEN;
    p->len = skb->len;
    p->header_len = seg->payload_off;
    p->captured = 0;
    if (n > 0 && bpf_skb_load_bytes(skb, 0, p->data, ((n - 1) & (PACKET_LEN - 1)) + 1) == 0)
        p->captured = n;
    http_packets.ringbuf_submit(p, 0);
}
#endif

// The connection's key; the client is the segment's source for a request and
// its destination for a response.
static __always_inline void conn_key_of(struct conn_key *key, struct __sk_buff *skb,
                                        struct segment *seg, int client_is_source)
{
    __builtin_memset(key, 0, sizeof(*key));
    key->ifindex = skb->ifindex;
    key->family = seg->family;
    if (client_is_source) {
        __builtin_memcpy(key->client, seg->saddr, 16);
        __builtin_memcpy(key->server, seg->daddr, 16);
        key->client_port = seg->sport;
        key->server_port = seg->dport;
    } else {
        __builtin_memcpy(key->client, seg->daddr, 16);
        __builtin_memcpy(key->server, seg->saddr, 16);
        key->client_port = seg->dport;
        key->server_port = seg->sport;
    }
}

// Whose view a request's role is told from, or 0 to leave it to another interface: see
// request_role in bpf/flows.c.
static __always_inline u8 role_of(struct __sk_buff *skb, struct segment *seg, u8 direction)
{
    return request_role(skb, seg->family, IPPROTO_TCP, seg->saddr, seg->daddr, seg->sport,
                        seg->dport, direction);
}

// The connection's place, if the flow entry `val` holds one still its.
static __always_inline struct conn_state *place_of(struct flow_val *val)
{
    if (!val->http_slot)
        return 0;
    u32 index = val->http_slot - 1;
    struct conn_state *st = http_states.lookup(&index);
    if (!st || !(st->claim & 1) || (u32)(st->claim >> 1) != val->http_gen)
        return 0;
    return st;
}

// The connection's place, through the flow entry of its packets the other way when this one
// holds none (made after the place was claimed; or both ends are behind this link, as on
// loopback, where one place serves the connection as it does on any link); this one then
// holds it too.
static __always_inline struct conn_state *find_place(struct flow_val *val, void *key, int ipv6)
{
    struct conn_state *st = place_of(val);
    if (st)
        return st;
#pragma unroll
    for (int mirror = 0; mirror < 2; mirror++) {
        struct flow_val *other = reverse_flow(key, ipv6, mirror);
        if (other && (st = place_of(other))) {
            val->http_slot = other->http_slot;
            val->http_gen = other->http_gen;
            return st;
        }
    }
    return 0;
}

// A free place, claimed (its claim made odd) and its index in *index; 0 if the PROBES places
// from the cursor on are all taken.
static __always_inline struct conn_state *claim_place(u32 *index)
{
    int zero = 0;
    u64 *cursor = http_cursor.lookup(&zero);
    if (!cursor)
        return 0;
    u64 start = __sync_fetch_and_add(cursor, PROBES);
#pragma unroll
    for (int i = 0; i < PROBES; i++) {
        u32 at = (u32)((start + i) % MAX_CONNS);
        struct conn_state *st = http_states.lookup(&at);
        if (!st)
            continue;
        u64 claim = st->claim;
        if (!(claim & 1) && __sync_val_compare_and_swap(&st->claim, claim, claim | 1) == claim) {
            *index = at;
            return st;
        }
    }
    return 0;
}

// Both flow entries of the connection (this packet's, `val`, and the other direction's)
// hold place `index` of generation `gen`.
static __always_inline void hold_place(struct flow_val *val, void *key, int ipv6, u32 index,
                                       u32 gen)
{
    val->http_slot = index + 1;
    val->http_gen = gen;
    struct flow_val *other = reverse_flow(key, ipv6, 0);
    if (other) {
        other->http_slot = index + 1;
        other->http_gen = gen;
    }
}

// The place goes back under the next generation, so that no flow entry holds it once free.
static __always_inline void release_place(struct conn_state *st)
{
    u64 claim = st->claim;
    if (claim & 1)
        __sync_val_compare_and_swap(&st->claim, claim, (claim & ~1ULL) + 2);
}

static __always_inline void on_request(struct __sk_buff *skb, struct segment *seg,
                                       struct flow_val *val, void *key, int ipv6, u8 direction,
                                       int method, u32 skip)
{
    struct conn_state *st = find_place(val, key, ipv6);
    if (!st) {
        struct conn_key ck;
        conn_key_of(&ck, skb, seg, 1);
        st = http_probation.lookup(&ck);
        if (!st) {
            u8 role = role_of(skb, seg, direction);
            if (!role)
                return;  // passing through: counted where its workload is
            // HTTP/1.x servers speak only when asked, so a connection's first request still
            // acknowledges the SYN-ACK: its ack is the server's initial sequence + 1.
            u32 *isn = http_handshakes.lookup(&ck);
            if (isn && seg->ack == *isn + 1) {
                u32 index;
                st = claim_place(&index);
                if (!st) {
                    count(http_counters.lookup(&(int){H_CONNS_FULL}), 1);
                    return;
                }
                st->head = st->tail = 0;
                st->seen = 0;
                st->role = role;
                st->server_port = seg->dport;
                hold_place(val, key, ipv6, index, (u32)(st->claim >> 1));
                http_handshakes.delete(&ck);
            } else {
                int zero = 0;
                struct conn_state *fresh = http_scratch.lookup(&zero);
                if (!fresh)
                    return;
                __builtin_memset(fresh, 0, sizeof(*fresh));
                fresh->role = role;
                fresh->server_port = seg->dport;
                count(http_counters.lookup(&(int){H_UNCONFIRMED}), 1);
                http_probation.update(&ck, fresh);
                st = http_probation.lookup(&ck);
                if (!st)
                    return;
            }
        }
    }
    if ((st->seen & SEEN_REQUEST) && st->last_req_seq == seg->seq)
        return;  // a retransmission of the request we already have
    st->seen |= SEEN_REQUEST;
    st->last_req_seq = seg->seq;
    u32 tail = st->tail;
    if (tail - st->head >= QLEN) {
        count(http_counters.lookup(&(int){H_QUEUE_FULL}), 1);
        return;
    }
    u32 slot = tail & (QLEN - 1);
    st->asked[slot] = bpf_ktime_get_ns();
    st->methods[slot] = method;
#if EMIT_EVENTS || ROUTE_LABEL
    char *path = &st->paths[slot * PATH_LEN];
    __builtin_memset(path, 0, PATH_LEN);
    u32 n = seg->payload_len - skip;
    if (n > PATH_LEN)
        n = PATH_LEN;
    // ((n - 1) & (size - 1)) + 1 is n, in a form the verifier can bound to [1, size].
    if (n > 0)
        bpf_skb_load_bytes(skb, seg->payload_off + skip, path, ((n - 1) & (PATH_LEN - 1)) + 1);
#endif
    st->tail = tail + 1;
}

static __always_inline void on_status(struct __sk_buff *skb, struct segment *seg,
                                      struct flow_val *val, void *key, int ipv6, u8 direction,
                                      int status)
{
    struct conn_key ck;
    struct conn_state *st = find_place(val, key, ipv6);
    int confirmed = st != 0;
    if (!st) {
        conn_key_of(&ck, skb, seg, 0);
        st = http_probation.lookup(&ck);
    }
    if (!st || st->head == st->tail) {
        // Text like a status line with nothing asked: a body, or a request we missed,
        // unless the connection only passes through here (see role_of).
        if (st || role_of(skb, seg, direction))
            count(http_counters.lookup(&(int){H_UNMATCHED}), 1);
        return;
    }
    if ((st->seen & SEEN_RESPONSE) && st->last_resp_seq == seg->seq)
        return;  // a retransmission
    st->seen |= SEEN_RESPONSE;
    st->last_resp_seq = seg->seq;
    if (status >= 100 && status < 200 && status != 101)
        return;  // interim (100 Continue): the final response is still to come

    u32 head = st->head, slot = head & (QLEN - 1);
    u8 method = st->methods[slot];
    u64 now = bpf_ktime_get_ns();
    u64 latency = now - st->asked[slot];
    st->head = head + 1;

    int zero = 0;
    struct stat_key *sk = http_key_scratch.lookup(&zero);
    if (!sk)
        return;
    __builtin_memset(sk, 0, sizeof(*sk));
    sk->method = method;
    sk->role = st->role;
    sk->status = status;
    sk->server_port = seg->sport;
#if HTTP_WORKLOAD
    sk->cgroup = val->cgroup;  // the owner of the response's local socket (see bpf/flows.c)
#endif
#if ROUTE_LABEL
    // The path up to '?', ' ' or the end, as the route.
    int stop = 0;
#pragma unroll
    for (int i = 0; i < ROUTE_LEN; i++) {
        char c = st->paths[slot * PATH_LEN + i];
        if (c == '?' || c == ' ' || c == '\r' || c == 0)
            stop = 1;
        if (!stop)
            sk->route[i] = c;
    }
#endif
    struct stat_val *stats = series(sk);
    if (stats) {
        __sync_fetch_and_add(&stats->count, 1);
        __sync_fetch_and_add(&stats->sum_ns, latency);
        u32 b = BUCKET_INDEX(latency);
        if (b <= NBUCKETS)
            __sync_fetch_and_add(&stats->buckets[b], 1);
#if HTTP_EXP
        EXP_COUNT(stats->exp, latency);
#endif
    }
#if EMIT_EVENTS
    struct http_event *ev = http_events.ringbuf_reserve(sizeof(struct http_event));
    if (!ev) {
        count(http_counters.lookup(&(int){H_EVENTS_LOST}), 1);
        goto answered;
    }
    ev->ts_ns = now;
    ev->latency_ns = latency;
    ev->ifindex = skb->ifindex;
    ev->family = seg->family;
    ev->method = method;
    ev->role = st->role;
    ev->status = status;
    ev->client_port = seg->dport;
    ev->server_port = seg->sport;
    __builtin_memcpy(ev->client, seg->daddr, 16);
    __builtin_memcpy(ev->server, seg->saddr, 16);
    __builtin_memcpy(ev->path, &st->paths[slot * PATH_LEN], PATH_LEN);
    __builtin_memset(ev->reason, 0, REASON_LEN);
    u32 n = seg->payload_len - 13;  // after "HTTP/1.1 200 "
    if (n > REASON_LEN)
        n = REASON_LEN;
    if (seg->payload_len > 13 && n > 0)
        bpf_skb_load_bytes(skb, seg->payload_off + 13, ev->reason,
                           ((n - 1) & (REASON_LEN - 1)) + 1);
    http_events.ringbuf_submit(ev, 0);
answered:
#endif
    if (confirmed)
        return;
    // The server answered: a real connection, whose state may take a place of its own.
    u32 index;
    struct conn_state *place = claim_place(&index);
    if (!place)
        return;  // it stays apart, and may take a place at its next response
    st->claim = place->claim;  // its generation, held
    http_states.update(&index, st);
    hold_place(val, key, ipv6, index, (u32)(st->claim >> 1));
    http_probation.delete(&ck);
}

// The connection ends: its place goes unless a request still waits, which user space then
// counts as unanswered once it times out; unconfirmed state goes at a reset whatever waits
// (a spoofed request draws the server's RST). Either side may be the client, so both
// orientations are tried.
static __always_inline void on_close(struct __sk_buff *skb, struct segment *seg,
                                     struct flow_val *val)
{
    struct conn_state *place = place_of(val);
    if (place && place->head == place->tail) {
        release_place(place);
        val->http_slot = 0;
    }
    struct conn_key key;
#pragma unroll
    for (int client_is_source = 0; client_is_source < 2; client_is_source++) {
        conn_key_of(&key, skb, seg, client_is_source);
        struct conn_state *st = http_probation.lookup(&key);
        if (st && (st->head == st->tail || (seg->tcp_flags & TCP_RST)))
            http_probation.delete(&key);
    }
}

// The payload's first 16 bytes, where the request or status line starts.
static __always_inline int first_bytes(struct __sk_buff *skb, struct segment *seg, void *data,
                                       void *end, char *b)
{
    // Headers end within 256 bytes (Ethernet, two VLAN tags, IPv4 or IPv6, TCP: 142 at
    // most); the mask tells the verifier so.
    char *at = data + (seg->payload_off & 0xff);
    if (seg->payload_off < 256 && (void *)(at + 16) <= end) {
        __builtin_memcpy(b, at, 16);  // direct access: no helper call
        return 0;
    }
    return bpf_skb_load_bytes(skb, seg->payload_off, b, 16);
}

static __always_inline void inspect_payload(struct __sk_buff *skb, struct segment *seg,
                                            struct flow_val *val, void *key, int ipv6,
                                            u8 direction, void *data, void *end)
{
    char b[16] = {};
    if (seg->payload_len < 16) {
        // Too short for a whole first line; count it if it starts like one.
        if (seg->payload_len >= 4 && bpf_skb_load_bytes(skb, seg->payload_off, b, 4) == 0) {
            u32 skip;
            if (IS(b, 0, "HTTP") || method_of(b, &skip) ||
                IS(b, 0, "POST") || IS(b, 0, "HEAD") || IS(b, 0, "DELE") ||
                IS(b, 0, "OPTI") || IS(b, 0, "PATC") || IS(b, 0, "CONN") || IS(b, 0, "TRAC"))
                count(http_counters.lookup(&(int){H_SHORT}), 1);
        }
        return;
    }
    if (first_bytes(skb, seg, data, end, b) < 0)
        return;
    u32 skip = 0;
    int method = method_of(b, &skip);
    if (method) {
        on_request(skb, seg, val, key, ipv6, direction, method, skip);
#if EMIT_PACKETS
        publish_packet(skb, seg);
#endif
        return;
    }
    int status = status_of(b);
    if (status) {
        on_status(skb, seg, val, key, ipv6, direction, status);
#if EMIT_PACKETS
        publish_packet(skb, seg);
#endif
    }
}

// A TCP segment on an HTTP port, counted in its flow entry `val` (its key, a flow_key4 or
// flow_key6 by `ipv6`, at `key`); `l4` is its TCP header, within [data, end) up to the ports.
static __always_inline void inspect_http(struct __sk_buff *skb, struct flow_val *val,
                                         void *key, int ipv6, u8 direction, void *l4,
                                         void *data, void *end)
{
    struct tcp_hdr_ *tcp = l4;
    if ((void *)(tcp + 1) > end)
        return;
    struct segment seg = {};
    segment_of(&seg, skb, key, ipv6, tcp, data);
    if ((seg.tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
        // The server's SYN-ACK: the client is its destination.
        struct conn_key ck;
        conn_key_of(&ck, skb, &seg, 0);
        http_handshakes.update(&ck, &seg.seq);
        return;
    }
    if (seg.payload_len)
        inspect_payload(skb, &seg, val, key, ipv6, direction, data, end);
    // After the payload: a last response may travel with the FIN.
    if (seg.tcp_flags & (TCP_FIN | TCP_RST))
        on_close(skb, &seg, val);
}

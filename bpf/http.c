// HTTP/1.x request and status lines, parsed by TC classifiers at the start of
// TCP payloads, matched per connection in order (pipelining included), with
// request-to-response latency bucketed in the kernel and each final status
// line published as an event. Reads only __sk_buff fields and packet bytes.
//
// Compile-time parameters (#defined by exporter/http/loader.py):
//   NBUCKETS, BUCKET_INDEX(ns)   latency histogram bounds
//   PORT_MATCH(port)             1 for ports to inspect (1 for all: by content)
//   MAX_CONNS, MAX_SERIES        map bounds
//   ROUTE_LABEL                  1 to key the histogram by path too (opt-in)
//   EMIT_EVENTS                  1 to publish each matched status line
//   EMIT_PACKETS                 1 to publish each HTTP packet (the `http` tool)
//   LABEL_WORKLOAD               1 to key series by the local workload too: chained behind
//                                bpf/flows.c, which passes each packet's owner in skb->cb

#include "packet.h"    // also the directions, shared with the loader and bpf/flows.c
#include "http.h"      // roles, QLEN and lengths, counter indexes, method codes: shared
#include "counters.h"

struct conn_key {
    u32 ifindex;
    u8 family;
    u8 pad[3];
    u8 client[16];
    u8 server[16];
    u16 client_port;
    u16 server_port;
};

struct pending {
    u64 ts;
    u8 method;
    u8 pad[7];
#if EMIT_EVENTS || ROUTE_LABEL
    char path[PATH_LEN];
#endif
};

struct conn_state {
    u32 head;  // next to answer
    u32 tail;  // next free
    u32 last_req_seq;
    u32 last_resp_seq;
    u8 role;
    u8 seen_req;
    u8 seen_resp;
    u8 pad[5];
    struct pending q[QLEN];
};

struct stat_key {
    u8 method;
    u8 role;
    u8 overflow;
    u8 pad;
    u16 status;
    u16 server_port;
    u64 cgroup;  // the local socket's owner, with LABEL_WORKLOAD; else 0
#if ROUTE_LABEL
    char route[ROUTE_LEN];
#endif
};

struct stat_val {
    u64 count;
    u64 sum_ns;
    u64 buckets[NBUCKETS + 1];
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
// connection gets a place in `http_conns` only when its first request acknowledges the
// server's SYN-ACK (its ack is the server's initial sequence number + 1, which a blind
// spoofer cannot know), or when the server answered on it. Requests on connections whose
// handshake was not seen (older than the exporter, or spoofed) wait in `http_probation`, an
// LRU where they can only push each other out, until a response confirms them.
//
// A plain hash, not an LRU: when it is full, a new connection is counted as untracked
// (H_CONNS_FULL) rather than evicting one whose requests still wait, which would lose them
// without a trace. State goes at FIN or RST (on_close), or from user space once idle.
BPF_HASH(http_conns, struct conn_key, struct conn_state, MAX_CONNS);
BPF_TABLE("lru_hash", struct conn_key, struct conn_state, http_probation, PROBATION_CONNS);
// Interfaces whose far side is a workload in another network namespace (a pod's host-side
// veth), by ifindex: set by user space as it attaches (see role_of).
BPF_HASH(http_workload_links, u32, u8, 65536);
// SYN-ACKs seen, by connection: the server's initial sequence number. Twice the
// connection map's size, as connections that never carry HTTP pass here too.
BPF_TABLE("lru_hash", struct conn_key, u32, http_handshakes, 2 * MAX_CONNS);
BPF_HASH(http_stats, struct stat_key, struct stat_val, MAX_SERIES);
BPF_ARRAY(http_counters, u64, NH_COUNTERS);
// Scratch space: conn_state is too large for the 512-byte stack.
BPF_PERCPU_ARRAY(http_scratch, struct conn_state, 1);
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

// The TCP segment's addresses, ports and where its payload starts.
static __always_inline int parse(struct __sk_buff *skb, struct segment *seg, int l3_device)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    u16 proto;
    void *l3 = network_header(skb, data, end, &proto, l3_device);
    if (!l3)
        return -1;
    void *l4;
    if (proto == htons(ETH_P_IP)) {
        struct ipv4_hdr_ *ip = l3;
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || (ip->frag & htons(0x1fff)))
            return -1;
        seg->family = 4;
        __builtin_memcpy(seg->saddr, ip->saddr, 4);
        __builtin_memcpy(seg->daddr, ip->daddr, 4);
        l4 = l3 + (ip->vihl & 0x0f) * 4;
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6_hdr_ *ip6 = l3;
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
            return -1;
        seg->family = 6;
        __builtin_memcpy(seg->saddr, ip6->saddr, 16);
        __builtin_memcpy(seg->daddr, ip6->daddr, 16);
        l4 = ip6 + 1;
    } else {
        return -1;
    }
    struct tcp_hdr_ *tcp = l4;
    if ((void *)(tcp + 1) > end)
        return -1;
    seg->sport = ntohs(tcp->sport);
    seg->dport = ntohs(tcp->dport);
    seg->seq = ntohl(tcp->seq);
    seg->ack = ntohl(tcp->ack);
    seg->tcp_flags = tcp->flags;
    u32 off = (u32)(l4 - data) + (tcp->doff >> 4) * 4;
    seg->payload_off = off;
    seg->payload_len = off < skb->len ? skb->len - off : 0;
    return 0;
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

// Whether the segment's near end (its destination as it arrives, its source as it
// leaves) is a socket of the network namespace the exporter watches from.
static __always_inline int near_end_is_local(struct __sk_buff *skb, struct segment *seg,
                                             u8 direction)
{
    struct bpf_sock_tuple tuple = {};
    int in = direction == DIR_RECEIVE;
    struct bpf_sock *sk;
    // The tuple as an arriving packet has it: remote source, local destination.
    if (seg->family == 4) {
        __builtin_memcpy(&tuple.ipv4.saddr, in ? seg->saddr : seg->daddr, 4);
        __builtin_memcpy(&tuple.ipv4.daddr, in ? seg->daddr : seg->saddr, 4);
        tuple.ipv4.sport = htons(in ? seg->sport : seg->dport);
        tuple.ipv4.dport = htons(in ? seg->dport : seg->sport);
        sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
    } else {
        __builtin_memcpy(tuple.ipv6.saddr, in ? seg->saddr : seg->daddr, 16);
        __builtin_memcpy(tuple.ipv6.daddr, in ? seg->daddr : seg->saddr, 16);
        tuple.ipv6.sport = htons(in ? seg->sport : seg->dport);
        tuple.ipv6.dport = htons(in ? seg->dport : seg->sport);
        sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
    }
    if (!sk)
        return 0;
    bpf_sk_release(sk);
    return 1;
}

// Whose view a request's role is told from, or 0 to leave it to another interface:
// - the near end is a socket here: this host's (it answered what arrived, asked what left);
// - else, on an interface whose far side is a workload (a pod's host-side veth, marked by
//   user space), that workload's: it asked what arrives from it, answered what goes to it;
// - else the request only passes through (a node's uplink carrying a pod's traffic): the
//   pod's interface counts it, so that it counts once.
static __always_inline u8 role_of(struct __sk_buff *skb, struct segment *seg, u8 direction)
{
    if (near_end_is_local(skb, seg, direction))
        return direction == DIR_RECEIVE ? ROLE_SERVER : ROLE_CLIENT;
    u32 ifindex = skb->ifindex;
    if (!http_workload_links.lookup(&ifindex))
        return 0;
    return direction == DIR_RECEIVE ? ROLE_CLIENT : ROLE_SERVER;
}

static __always_inline void on_request(struct __sk_buff *skb, struct segment *seg, u8 direction,
                                       int method, u32 skip)
{
    struct conn_key key;
    conn_key_of(&key, skb, seg, 1);
    struct conn_state *st = http_conns.lookup(&key);
    if (!st) {
        int zero = 0;
        struct conn_state *fresh = http_scratch.lookup(&zero);
        if (!fresh)
            return;
        __builtin_memset(fresh, 0, sizeof(*fresh));
        fresh->role = role_of(skb, seg, direction);
        if (!fresh->role)
            return;  // passing through: counted where its workload is
        // HTTP/1.x servers speak only when asked, so a connection's first request still
        // acknowledges the SYN-ACK: its ack is the server's initial sequence + 1.
        u32 *isn = http_handshakes.lookup(&key);
        if (isn && seg->ack == *isn + 1) {
            if (http_conns.insert(&key, fresh) != 0 && !http_conns.lookup(&key)) {
                count(http_counters.lookup(&(int){H_CONNS_FULL}), 1);
                return;
            }
            http_handshakes.delete(&key);
            st = http_conns.lookup(&key);
        } else {
            st = http_probation.lookup(&key);
            if (!st) {
                count(http_counters.lookup(&(int){H_UNCONFIRMED}), 1);
                http_probation.update(&key, fresh);
                st = http_probation.lookup(&key);
            }
        }
        if (!st)
            return;
    }
    if (st->seen_req && st->last_req_seq == seg->seq)
        return;  // a retransmission of the request we already have
    st->seen_req = 1;
    st->last_req_seq = seg->seq;
    u32 tail = st->tail;
    if (tail - st->head >= QLEN) {
        count(http_counters.lookup(&(int){H_QUEUE_FULL}), 1);
        return;
    }
    struct pending *p = &st->q[tail & (QLEN - 1)];
    p->ts = bpf_ktime_get_ns();
    p->method = method;
#if EMIT_EVENTS || ROUTE_LABEL
    __builtin_memset(p->path, 0, PATH_LEN);
    u32 n = seg->payload_len - skip;
    if (n > PATH_LEN)
        n = PATH_LEN;
    // ((n - 1) & (size - 1)) + 1 is n, in a form the verifier can bound to [1, size].
    if (n > 0)
        bpf_skb_load_bytes(skb, seg->payload_off + skip, p->path, ((n - 1) & (PATH_LEN - 1)) + 1);
#endif
    st->tail = tail + 1;
}

static __always_inline void on_status(void *ctx, struct __sk_buff *skb, struct segment *seg,
                                      u8 direction, int status)
{
    struct conn_key key;
    conn_key_of(&key, skb, seg, 0);
    struct conn_state *st = http_conns.lookup(&key);
    int confirmed = st != 0;
    if (!st)
        st = http_probation.lookup(&key);
    if (!st || st->head == st->tail) {
        // Text like a status line with nothing asked: a body, or a request we missed,
        // unless the connection only passes through here (see role_of).
        if (st || role_of(skb, seg, direction))
            count(http_counters.lookup(&(int){H_UNMATCHED}), 1);
        return;
    }
    if (st->seen_resp && st->last_resp_seq == seg->seq)
        return;  // a retransmission
    st->seen_resp = 1;
    st->last_resp_seq = seg->seq;
    if (status >= 100 && status < 200 && status != 101)
        return;  // interim (100 Continue): the final response is still to come

    u32 head = st->head;
    struct pending *p = &st->q[head & (QLEN - 1)];
    u64 now = bpf_ktime_get_ns();
    u64 latency = now - p->ts;
    st->head = head + 1;

    struct stat_key sk = {};
    sk.method = p->method;
    sk.role = st->role;
    sk.status = status;
    sk.server_port = seg->sport;
#if LABEL_WORKLOAD
    // The owner of the response's local socket, as the traffic classifier (which runs this
    // one by tail call) found it for this very packet.
    sk.cgroup = skb->cb[0] | ((u64)skb->cb[1] << 32);
#endif
#if ROUTE_LABEL
    // The path up to '?', ' ' or the end, as the route.
    int stop = 0;
#pragma unroll
    for (int i = 0; i < ROUTE_LEN; i++) {
        char c = p->path[i];
        if (c == '?' || c == ' ' || c == '\r' || c == 0)
            stop = 1;
        if (!stop)
            sk.route[i] = c;
    }
#endif
    struct stat_val *val = series(&sk);
    if (val) {
        __sync_fetch_and_add(&val->count, 1);
        __sync_fetch_and_add(&val->sum_ns, latency);
        u32 b = BUCKET_INDEX(latency);
        if (b <= NBUCKETS)
            __sync_fetch_and_add(&val->buckets[b], 1);
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
    ev->method = p->method;
    ev->role = st->role;
    ev->status = status;
    ev->client_port = seg->dport;
    ev->server_port = seg->sport;
    __builtin_memcpy(ev->client, seg->daddr, 16);
    __builtin_memcpy(ev->server, seg->saddr, 16);
    __builtin_memcpy(ev->path, p->path, PATH_LEN);
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
    // The server answered: a real connection, whose state may take a confirmed place.
    if (!confirmed && http_conns.insert(&key, st) == 0)
        http_probation.delete(&key);
}


// The connection ends: forget its state unless a request still waits, which
// user space then counts as unanswered once it times out; unconfirmed state goes at a
// reset whatever waits (a spoofed request draws the server's RST). Either side may be
// the client, so both orientations are tried.
static __always_inline void on_close(struct __sk_buff *skb, struct segment *seg)
{
    struct conn_key key;
#pragma unroll
    for (int client_is_source = 0; client_is_source < 2; client_is_source++) {
        conn_key_of(&key, skb, seg, client_is_source);
        struct conn_state *st = http_conns.lookup(&key);
        if (st && st->head == st->tail)
            http_conns.delete(&key);
        st = http_probation.lookup(&key);
        if (st && (st->head == st->tail || (seg->tcp_flags & TCP_RST)))
            http_probation.delete(&key);
    }
}

static __always_inline void inspect_payload(struct __sk_buff *skb, struct segment *segp,
                                            u8 direction)
{
    struct segment seg = *segp;
    char b[16] = {};
    if (seg.payload_len < 16) {
        // Too short for a whole first line; count it if it starts like one.
        if (seg.payload_len >= 4 && bpf_skb_load_bytes(skb, seg.payload_off, b, 4) == 0) {
            u32 skip;
            if (IS(b, 0, "HTTP") || method_of(b, &skip) ||
                IS(b, 0, "POST") || IS(b, 0, "HEAD") || IS(b, 0, "DELE") ||
                IS(b, 0, "OPTI") || IS(b, 0, "PATC") || IS(b, 0, "CONN") || IS(b, 0, "TRAC"))
                count(http_counters.lookup(&(int){H_SHORT}), 1);
        }
        return;
    }
    if (bpf_skb_load_bytes(skb, seg.payload_off, b, 16) < 0)
        return;
    u32 skip = 0;
    int method = method_of(b, &skip);
    if (method) {
        on_request(skb, &seg, direction, method, skip);
#if EMIT_PACKETS
        publish_packet(skb, &seg);
#endif
        return;
    }
    int status = status_of(b);
    if (status) {
        on_status(skb, skb, &seg, direction, status);
#if EMIT_PACKETS
        publish_packet(skb, &seg);
#endif
    }
}

static __always_inline int inspect(struct __sk_buff *skb, u8 direction, int l3_device)
{
    struct segment seg = {};
    if (parse(skb, &seg, l3_device) < 0)
        return TC_ACT_UNSPEC;
    if (!PORT_MATCH(seg.sport) && !PORT_MATCH(seg.dport))
        return TC_ACT_UNSPEC;
    if ((seg.tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
        // The server's SYN-ACK: the client is its destination.
        struct conn_key key;
        conn_key_of(&key, skb, &seg, 0);
        http_handshakes.update(&key, &seg.seq);
        return TC_ACT_UNSPEC;
    }
    if (seg.payload_len)
        inspect_payload(skb, &seg, direction);
    // After the payload: a last response may travel with the FIN.
    if (seg.tcp_flags & (TCP_FIN | TCP_RST))
        on_close(skb, &seg);
    return TC_ACT_UNSPEC;
}

int http_ingress(struct __sk_buff *skb)
{
    return inspect(skb, DIR_RECEIVE, 0);
}

int http_egress(struct __sk_buff *skb)
{
    return inspect(skb, DIR_TRANSMIT, 0);
}

int http_ingress_l3(struct __sk_buff *skb)
{
    return inspect(skb, DIR_RECEIVE, 1);
}

int http_egress_l3(struct __sk_buff *skb)
{
    return inspect(skb, DIR_TRANSMIT, 1);
}

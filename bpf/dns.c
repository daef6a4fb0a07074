// DNS queries and answers on the DNS ports, over UDP and TCP (length-prefixed), each answer
// matched to its query in the kernel by flow and DNS id, with the latency bucketed here and
// each answer published as an event. Reads only __sk_buff fields and packet bytes.
//
// A part of bpf/flows.c's text, spliced in where it says `//@part dns.c` (see bpf/http.c for
// why): the classifier, on the flow entry it holds, lays out where a packet's messages are
// (TCP's bookkeeping is in the flow entry), then tail-calls dns_messages, which parses them.
//
// Compile-time parameters (#defined by exporter/dns/loader.py):
//   DNS_PORT_MATCH(port)                 1 for the DNS ports
//   DNS_NBUCKETS, DNS_BUCKET_INDEX(ns)   latency histogram bounds
//   DNS_EXP                              1 to count it in exponential buckets too
//                                        (bpf/include/exponential.h, from bpf/flows.c)
//   MAX_QUERIES, DNS_MAX_SERIES          map bounds
//   NAME_LABEL, MAX_NAMES                1 to key series by the query name too, for at most
//                                        MAX_NAMES names (the rest as "other")
//   DNS_EVENTS                           1 to publish each answer
//   DNS_PACKETS                          1 to publish each message (the `dns` tool)
//   DNS_WORKLOAD                         1 to key series by the local workload too
// bpf/flows.c provides before the splice: struct flow_val (dns_tcp, dns_next), the flow key
// types, KEY_ENDS and request_role(...).

#include "dns.h"

// A query outstanding: by the flow it went on (client = its source), its role and its id.
struct dns_query_key {
    u32 ifindex;
    u8 family;
    u8 protocol;
    u8 role;
    u8 pad;
    u8 client[16];
    u8 server[16];
    u16 client_port;
    u16 server_port;
    u16 id;
    u16 pad2;
};

struct dns_query {
    u64 asked_ns;
    u16 qtype;
    u8 pad[6];
};

struct dns_series_key {
    u8 role;
    u8 overflow;
    u8 flags;     // DNS_NAME_*, with NAME_LABEL
    u8 pad;
    u16 qtype;
    u16 rcode;
    u16 server_port;
    u16 pad2;
    u32 pad3;
    u64 cgroup;   // the local socket's owner, with DNS_WORKLOAD; else 0
#if NAME_LABEL
    u8 name[DNS_NAME_LEN];  // wire format, zero-padded
#endif
};

struct dns_series {
    u64 count;
    u64 sum_ns;
    u64 buckets[DNS_NBUCKETS + 1];
#if DNS_EXP
    u64 exp[EXP_SLOTS];
#endif
};

struct dns_event {
    u64 ts_ns;
    u64 latency_ns;
    u32 ifindex;
    u8 family;
    u8 protocol;
    u8 role;
    u8 name_cut;
    u16 id;
    u16 qtype;
    u16 rcode;
    u16 answers;
    u16 client_port;
    u16 server_port;
    u16 name_len;  // bytes of the name in wire format, whole (name holds DNS_NAME_LEN)
    u16 pad;
    u8 client[16];
    u8 server[16];
    u8 name[DNS_NAME_LEN];
};

struct dns_packet {
    u64 ts_ns;
    u64 latency_ns;  // an answer matched to its query; else 0
    u32 ifindex;
    u32 len;         // the message's length (the bytes in data: up to DNS_PACKET_LEN)
    u8 family;
    u8 protocol;
    u8 direction;
    u8 role;
    u16 sport;
    u16 dport;
    u8 saddr[16];
    u8 daddr[16];
    u8 data[DNS_PACKET_LEN];
};

// What one message's parse found (the header's fields, the question's type and the name).
struct dns_message {
    u16 id;
    u16 flags;
    u16 qdcount;
    u16 ancount;
    u16 qtype;
    u16 name_len;  // with the final 0
};

// The packet's ends, whichever its family (IPv4 addresses in the first 4 bytes, zeroed after).
struct dns_ends {
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    u32 ifindex;
    u8 family;
    u8 protocol;
    u8 count;         // messages found in the packet (TCP: up to DNS_TCP_MESSAGES)
    u8 direction;     // DIR_*: the classifier's hook
    u8 pad[4];
    u64 cgroup;       // the flow's local owner (see bpf/flows.c), or 0
    u32 off[DNS_TCP_MESSAGES];  // where each message starts in the packet
    u32 len[DNS_TCP_MESSAGES];  // and its bytes in the packet
};

// Per CPU, off the 512-byte stack (which HTTP's part shares). Everything the parse and
// what follows it need is here: the classifier lays the packet out, and dns_messages, a
// program of its own that the classifier tail-calls on the same CPU, parses it.
struct dns_scratch {
    u8 buf[DNS_BUF];  // the message's first bytes
    struct dns_ends ends;
    struct dns_query_key query;
    struct dns_query asked;
    struct dns_series_key series;
    struct dns_message msg;
};

// A plain hash, not an LRU: a flood of queries that are never answered must not push out
// those that will be; they are counted (D_QUERIES_FULL) and user space expires the old ones
// (no answer within dns.query_timeout: unanswered).
BPF_HASH(dns_queries, struct dns_query_key, struct dns_query, MAX_QUERIES);
BPF_HASH(dns_stats, struct dns_series_key, struct dns_series, DNS_MAX_SERIES);
BPF_ARRAY(dns_counters, u64, ND_COUNTERS);
BPF_PERCPU_ARRAY(dns_scratch, struct dns_scratch, 1);
// Never written: the zeroed value a new series starts from.
BPF_PERCPU_ARRAY(dns_zero_series, struct dns_series, 1);
#if NAME_LABEL
// The names series may carry (wire format, zero-padded); a new name beyond MAX_NAMES is
// "other": a storm of random names (NXDOMAIN floods) cannot take every series.
BPF_HASH(dns_names, struct { u8 name[DNS_NAME_LEN]; }, u8, MAX_NAMES);
#endif
#if DNS_EVENTS
BPF_RINGBUF_OUTPUT(dns_events, 256);
#endif
#if DNS_PACKETS
BPF_RINGBUF_OUTPUT(dns_packets, 1024);
#endif
// dns_messages, set by user space: the parse is a program of its own, compiled and verified
// once, not inlined into each of the four classifiers (the first scrape comes sooner); the
// tail call costs only DNS packets, a few ns.
BPF_PROG_ARRAY(dns_parse, 1);

// The question's end: walks the name's labels in buf (len bytes were read) from the header's
// end; the name's length with its final 0 byte, or 0 if the name is malformed or cut short.
static __always_inline u32 question_name(u8 *buf, u32 len)
{
    u32 pos = 12;
    // A loop, not unrolled: the verifier walks it (to the name's length), the compiler
    // does not copy it 128 times.
#pragma nounroll
    for (int i = 0; i < DNS_MAX_LABELS; i++) {
        if (pos >= len)
            return 0;
        u8 label = buf[pos & (DNS_BUF - 1)];
        if (label == 0)
            return pos - 12 + 1;
        if (label > 63)
            return 0;  // a compression pointer (no client puts one in a question) or not DNS
        pos += label + 1;
    }
    return 0;
}

// Parses the header and question of the message at `off` (len bytes long); 0 if it is one,
// else -1 (malformed or cut short).
static __always_inline int parse_message(struct __sk_buff *skb, u32 off, u32 len, u8 *buf,
                                         struct dns_message *msg)
{
    if (len < 12)
        return -1;
    // The header and the question (a name is 255 bytes at most) are all that is read.
    u32 n = len < DNS_QUESTION_END ? len : DNS_QUESTION_END;
    // ((n - 1) & (size - 1)) + 1 is n, in a form the verifier can bound to [1, size].
    if (bpf_skb_load_bytes(skb, off, buf, ((n - 1) & (DNS_BUF - 1)) + 1) < 0)
        return -1;
    msg->id = (buf[0] << 8) | buf[1];
    msg->flags = (buf[2] << 8) | buf[3];
    msg->qdcount = (buf[4] << 8) | buf[5];
    msg->ancount = (buf[6] << 8) | buf[7];
    msg->qtype = 0;
    msg->name_len = 0;
    if (msg->qdcount == 0 && (msg->flags & DNS_QR))
        return 0;  // an answer without its question (FORMERR, say): matched by id alone
    if (msg->qdcount != 1)
        return -1;
    u32 name_len = question_name(buf, n);
    if (!name_len || name_len > 255)
        return -1;
    u32 at = 12 + name_len;  // the question's type, then its class
    if (at + 4 > n)
        return -1;
    // The compiler knows `at` is below DNS_BUF - 4 and would drop the masks the verifier
    // needs to know it too: the empty asm hides what it knows.
    asm volatile("" : "+r"(at));
    msg->qtype = (buf[at & (DNS_BUF - 1)] << 8) | buf[(at + 1) & (DNS_BUF - 1)];
    msg->name_len = name_len;
    return 0;
}

// The query's key: its client is the query's source, the answer's destination.
static __always_inline void query_key(struct dns_query_key *qk, struct dns_ends *e, u8 role,
                                      u16 id, int is_query)
{
    __builtin_memset(qk, 0, sizeof(*qk));
    qk->ifindex = e->ifindex;
    qk->family = e->family;
    qk->protocol = e->protocol;
    qk->role = role;
    qk->id = id;
    __builtin_memcpy(qk->client, is_query ? e->saddr : e->daddr, 16);
    __builtin_memcpy(qk->server, is_query ? e->daddr : e->saddr, 16);
    qk->client_port = is_query ? e->sport : e->dport;
    qk->server_port = is_query ? e->dport : e->sport;
}

static __always_inline struct dns_series *dns_series_of(struct dns_series_key *key)
{
    struct dns_series *val = dns_stats.lookup(key);
    if (val)
        return val;
    int first = 0;
    struct dns_series *zero = dns_zero_series.lookup(&first);
    if (!zero)
        return 0;
    // Another CPU may insert the same new series between the lookup and this insert.
    if (dns_stats.insert(key, zero) != 0 && !dns_stats.lookup(key)) {
        // The series cap: keep the role, drop the rest.
        count(dns_counters.lookup(&(int){D_SERIES_OVERFLOW}), 1);
        u8 role = key->role;
        __builtin_memset(key, 0, sizeof(*key));
        key->role = role;
        key->overflow = 1;
        if (dns_stats.insert(key, zero) != 0 && !dns_stats.lookup(key))
            return 0;
    }
    return dns_stats.lookup(key);
}

// The query name's wire bytes (from buf's question) into `name`, zero-padded; 1 if cut.
static __always_inline int copy_name(u8 *name, u8 *buf, u32 name_len)
{
    __builtin_memset(name, 0, DNS_NAME_LEN);
    u32 n = name_len < DNS_NAME_LEN ? name_len : DNS_NAME_LEN;
    if (n)
        bpf_probe_read_kernel(name, ((n - 1) & (DNS_NAME_LEN - 1)) + 1, buf + 12);
    return name_len > DNS_NAME_LEN;
}

static __always_inline void on_answer(struct dns_scratch *scratch, struct dns_message *msg,
                                      u8 role, u64 now, u64 latency, u16 qtype)
{
    struct dns_series_key *sk = &scratch->series;
    __builtin_memset(sk, 0, sizeof(*sk));
    sk->role = role;
    sk->qtype = qtype;
    sk->rcode = msg->flags & 0xf;
    sk->server_port = scratch->query.server_port;
#if DNS_WORKLOAD
    sk->cgroup = scratch->ends.cgroup;  // the owner of the answer's local socket
#endif
#if NAME_LABEL
    if (msg->name_len) {
        sk->flags = copy_name(sk->name, scratch->buf, msg->name_len) ? DNS_NAME_CUT : 0;
        if (!dns_names.lookup((void *)sk->name)) {
            u8 one = 1;
            if (dns_names.insert((void *)sk->name, &one) != 0 &&
                !dns_names.lookup((void *)sk->name)) {
                __builtin_memset(sk->name, 0, DNS_NAME_LEN);
                sk->flags = DNS_NAME_OTHER;
            }
        }
    }
#endif
    struct dns_series *stats = dns_series_of(sk);
    if (stats) {
        __sync_fetch_and_add(&stats->count, 1);
        __sync_fetch_and_add(&stats->sum_ns, latency);
        u32 b = DNS_BUCKET_INDEX(latency);
        if (b <= DNS_NBUCKETS)
            __sync_fetch_and_add(&stats->buckets[b], 1);
#if DNS_EXP
        EXP_COUNT(stats->exp, latency);
#endif
    }
#if DNS_EVENTS
    struct dns_event *ev = dns_events.ringbuf_reserve(sizeof(struct dns_event));
    if (!ev) {
        count(dns_counters.lookup(&(int){D_EVENTS_LOST}), 1);
        return;
    }
    struct dns_query_key *qk = &scratch->query;  // the answer's query
    ev->ts_ns = now;
    ev->latency_ns = latency;
    ev->ifindex = qk->ifindex;
    ev->family = qk->family;
    ev->protocol = qk->protocol;
    ev->role = role;
    ev->id = msg->id;
    ev->qtype = qtype;
    ev->rcode = msg->flags & 0xf;
    ev->answers = msg->ancount;
    ev->client_port = qk->client_port;
    ev->server_port = qk->server_port;
    ev->name_len = msg->name_len;
    ev->pad = 0;
    __builtin_memcpy(ev->client, qk->client, 16);
    __builtin_memcpy(ev->server, qk->server, 16);
    // The name's bytes and those after it (user space keeps name_len of them): one copy of
    // a constant length, which the verifier checks once.
    bpf_probe_read_kernel(ev->name, DNS_NAME_LEN, scratch->buf + 12);
    ev->name_cut = msg->name_len > DNS_NAME_LEN;
    dns_events.ringbuf_submit(ev, 0);
#endif
}

#if DNS_PACKETS
static __always_inline void publish_message(struct __sk_buff *skb, struct dns_ends *e,
                                            u8 direction, u8 role, u32 off, u32 len,
                                            u64 latency)
{
    struct dns_packet *p = dns_packets.ringbuf_reserve(sizeof(struct dns_packet));
    if (!p) {
        count(dns_counters.lookup(&(int){D_EVENTS_LOST}), 1);
        return;
    }
    __builtin_memcpy(p->saddr, e->saddr, 16);
    __builtin_memcpy(p->daddr, e->daddr, 16);
    p->ts_ns = bpf_ktime_get_ns();
    p->latency_ns = latency;
    p->ifindex = e->ifindex;
    p->family = e->family;
    p->protocol = e->protocol;
    p->direction = direction;
    p->role = role;
    p->sport = e->sport;
    p->dport = e->dport;
    u32 n = len < DNS_PACKET_LEN ? len : DNS_PACKET_LEN;
    p->len = 0;
    if (n && bpf_skb_load_bytes(skb, off, p->data, ((n - 1) & (DNS_PACKET_LEN - 1)) + 1) == 0)
        p->len = n;
    dns_packets.ringbuf_submit(p, 0);
}
#endif

// One message at `off`, of which `len` bytes are in the packet (its length prefix, on TCP,
// before it); the packet's ends are in scratch->ends.
static __always_inline void inspect_message(struct __sk_buff *skb, u8 direction, u32 off,
                                            u32 len, struct dns_scratch *scratch)
{
    struct dns_message *msg = &scratch->msg;
    struct dns_ends *e = &scratch->ends;
    int parsed = parse_message(skb, off, len, scratch->buf, msg);
    // What follows reads the parse's results from `msg`, not from registers the parse left:
    // the verifier then walks it once, not once for each length a name can have.
    asm volatile("" ::: "memory");
    // The role of the query this message is or answers (see request_role in bpf/flows.c).
    u8 role = request_role(skb, e->family, e->protocol, e->saddr, e->daddr, e->sport, e->dport,
                           direction);
    if (!role) {
        // Passing through: counted where its workload is (the `dns` tool still shows it).
#if DNS_PACKETS
        publish_message(skb, e, direction, 0, off, len, 0);
#endif
        return;
    }
    if (parsed < 0) {
        count(dns_counters.lookup(&(int){D_MALFORMED}), 1);
        return;
    }
    if ((msg->flags >> 11) & 0xf)
        return;  // not a query (NOTIFY, UPDATE): not a lookup
    int is_query = !(msg->flags & DNS_QR);
    if (!is_query)
        role = role == ROLE_SERVER ? ROLE_CLIENT : ROLE_SERVER;  // an answer goes the other way
    struct dns_query_key *qk = &scratch->query;
    query_key(qk, e, role, msg->id, is_query);
    u64 now = bpf_ktime_get_ns(), latency = 0;
    if (is_query) {
        struct dns_query *q = &scratch->asked;
        __builtin_memset(q, 0, sizeof(*q));
        q->asked_ns = now;
        q->qtype = msg->qtype;
        // A retry keeps the first query's time: the lookup's latency is what its asker saw.
        if (dns_queries.insert(qk, q) != 0) {
            if (dns_queries.lookup(qk))
                count(dns_counters.lookup(&(int){D_RETRIES}), 1);
            else
                count(dns_counters.lookup(&(int){D_QUERIES_FULL}), 1);
        }
    } else {
        struct dns_query *q = dns_queries.lookup(qk);
        if (!q || (msg->name_len && q->qtype != msg->qtype)) {
            count(dns_counters.lookup(&(int){D_UNMATCHED}), 1);
            goto published;
        }
        latency = now - q->asked_ns;
        u16 qtype = q->qtype;
        // Only one CPU takes the query (a duplicate answer on another finds nothing left).
        if (dns_queries.delete(qk) != 0) {
            count(dns_counters.lookup(&(int){D_UNMATCHED}), 1);
            goto published;
        }
        if ((msg->flags & DNS_TC) && e->protocol == IPPROTO_UDP)
            count(dns_counters.lookup(&(int){D_TRUNCATED}), 1);  // the TCP retry is counted
        else
            on_answer(scratch, msg, role, now, latency, qtype);
    }
published:
#if DNS_PACKETS
    publish_message(skb, e, direction, role, off, len, latency);
#endif
    return;
}

// Sequence numbers in order, modulo 2^32.
#define SEQ_BEFORE(a, b) ((s32)((a) - (b)) < 0)

// Where the TCP segment's DNS messages are: each segment's payload continues a message, or
// starts one or more, each after its length. The flow entry remembers where the next
// message starts, so that a message's later segments (and retransmissions) are not taken
// for malformed ones. Returns where the first message starts in the payload (*bare: its
// length came in an earlier segment), or -1 if none does.
static __always_inline int first_message(struct flow_val *val, u32 seq, u32 payload, int *bare)
{
    u32 at = 0;
    if (val->dns_tcp && val->dns_next != seq && SEQ_BEFORE(seq, val->dns_next)) {
        u32 skip = val->dns_next - seq;
        if (skip >= payload)
            return -1;  // inside a message, or a retransmission of one seen
        at = skip;  // the segment ends a message and starts another
    }
    // Else the message starts here, or after a gap (a segment this link did not see).
    *bare = val->dns_tcp == DNS_TCP_BARE && seq + at == val->dns_next;
    val->dns_tcp = 0;
    return at;
}

// Where the TCP segment's messages are (into e->off, e->len, e->count): after the length of
// each, DNS_TCP_MESSAGES at most; the flow entry learns where the next one starts.
static __always_inline void tcp_messages(struct __sk_buff *skb, struct flow_val *val,
                                         struct dns_ends *e, u8 *prefix, u32 off, u32 payload,
                                         u32 seq)
{
    int bare = 0;
    int first = first_message(val, seq, payload, &bare);
    if (first < 0)
        return;
    off += first;
    payload -= first;
    seq += first;
#pragma unroll
    for (int m = 0; m < DNS_TCP_MESSAGES; m++) {
        u32 len = payload;  // bare: the rest (its length came in an earlier segment)
        if (!bare) {
            if (payload < 2 || bpf_skb_load_bytes(skb, off, prefix, 2) < 0)
                return;
            len = (prefix[0] << 8) | prefix[1];
            if (payload == 2) {
                // The length alone (a client writing it apart): the message follows.
                val->dns_tcp = DNS_TCP_BARE;
                val->dns_next = seq + 2;
                return;
            }
            off += 2;
            payload -= 2;
            seq += 2;
        }
        bare = 0;
        val->dns_tcp = DNS_TCP_PREFIX;
        val->dns_next = seq + len;
        // A message cut by the segment's end is parsed as far as it came (its header and
        // question come first); the rest, in later segments, is skipped.
        e->off[m] = off;
        e->len[m] = payload < len ? payload : len;
        e->count = m + 1;
        if (len >= payload)
            return;
        off += len;
        payload -= len;
        seq += len;
    }
}

// A UDP datagram or TCP segment from or to a DNS port, counted in its flow entry `val` (its
// key, a flow_key4 or flow_key6 by `ipv6`, at `key`); `l4` is its transport header, within
// [data, end) up to the ports.
static __always_inline void inspect_dns(struct __sk_buff *skb, struct flow_val *val, void *key,
                                        int ipv6, u8 direction, void *l4, void *data, void *end)
{
    int zero = 0;
    struct dns_scratch *scratch = dns_scratch.lookup(&zero);
    if (!scratch)
        return;
    struct dns_ends *e = &scratch->ends;
    __builtin_memset(e, 0, sizeof(*e));
    e->ifindex = skb->ifindex;
    e->family = ipv6 ? 6 : 4;
    if (ipv6)
        KEY_ENDS(e, (struct flow_key6 *)key);
    else
        KEY_ENDS(e, (struct flow_key4 *)key);
    e->protocol = ((struct flow_key4 *)key)->protocol;  // alike in both keys
    e->cgroup = val->cgroup;
    u32 l4_off = (u32)(l4 - data);
    if (e->protocol == IPPROTO_UDP) {
        if (l4 + 8 > end)
            return;
        u32 udp_len = ntohs(*(u16 *)(l4 + 4));
        u32 off = l4_off + 8;
        if (udp_len < 8 || off + udp_len - 8 > skb->len) {
            count(dns_counters.lookup(&(int){D_MALFORMED}), 1);
            return;
        }
        e->off[0] = off;
        e->len[0] = udp_len - 8;
        e->count = 1;
    } else {
        struct tcp_hdr_ *th = l4;
        if ((void *)(th + 1) > end)
            return;
        if (th->flags & TCP_SYN) {
            val->dns_tcp = 0;  // a new connection under the flow's key: its own numbering
            return;
        }
        u32 off = l4_off + (th->doff >> 4) * 4;
        if (off >= skb->len)
            return;  // no payload: an ACK, a FIN
        tcp_messages(skb, val, e, scratch->buf, off, skb->len - off, ntohl(th->seq));
    }
    if (!e->count)
        return;
    e->direction = direction;
    dns_parse.call(skb, 0);  // does not return, unless user space has not set it yet
}

// The messages the classifier laid out in scratch (see inspect_dns), tail-called by it.
int dns_messages(struct __sk_buff *skb)
{
    int zero = 0;
    struct dns_scratch *scratch = dns_scratch.lookup(&zero);
    if (!scratch)
        return TC_ACT_UNSPEC;
    struct dns_ends *e = &scratch->ends;
#pragma nounroll
    for (int m = 0; m < DNS_TCP_MESSAGES; m++) {
        if (m >= e->count)
            break;
        inspect_message(skb, e->direction, e->off[m & (DNS_TCP_MESSAGES - 1)],
                        e->len[m & (DNS_TCP_MESSAGES - 1)], scratch);
    }
    return TC_ACT_UNSPEC;  // the classifier's verdict: never changes the packet's fate
}

// Per-flow packets and bytes, counted by TC classifiers on clsact ingress and
// egress. Reads only __sk_buff fields and packet bytes (see connections.c
// for why that rule matters), and never changes the packet's fate: it
// returns TC_ACT_UNSPEC so the next filter (Cilium, a user's rules) still runs.
//
// IPv4 and IPv6 flows live in separate maps: hashing the 20-byte IPv4 key
// instead of a 44-byte common one saves about a fifth of the per-packet cost.
//
// Compile-time parameters (#defined by exporter/flows/loader.py): MAX_FLOWS; HTTP, 1 to
// match HTTP in the same run (bpf/http.c, spliced in below, with its own parameters); DNS,
// 1 to match DNS queries and answers likewise (bpf/dns.c);
// LABEL_WORKLOAD, 1 to learn each new flow's local workload (bpf/include/workload.h).

#include "packet.h"    // also the directions, shared with the loader and bpf/http.c
#include "flows.h"     // counter indexes: shared with the loader
#include "counters.h"
#include "exponential.h"  // HTTP's and DNS's histograms, when counted exponentially

// IPv6 extension headers that may stand between the fixed header and TCP or UDP:
// hop-by-hop, routing, fragment, authentication, destination options.
#define IS_IPV6_EXTENSION(h) ((h) == 0 || (h) == 43 || (h) == 44 || (h) == 51 || (h) == 60)

struct flow_key4 {
    u32 ifindex;
    u8 direction;
    u8 protocol;
    u16 pad;
    u8 saddr[4];
    u8 daddr[4];
    u16 sport;
    u16 dport;
};

struct flow_key6 {
    u32 ifindex;
    u8 direction;
    u8 protocol;
    u16 pad;
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
};

struct flow_val {
    u64 packets;
    u64 bytes;
    u64 first_seen_ns;  // set once: tells a new flow from an old one under the same key
    u16 server_port;    // the accepting side's port, once a handshake was seen
    u8 server_known;
    u8 dns_tcp;         // with DNS, on TCP: what dns_next is (DNS_TCP_*), or 0
    u32 dns_next;       // the sequence number where the flow's next DNS message starts
    u64 cgroup;         // the local socket's owner, set once, with LABEL_WORKLOAD; else 0
    u32 http_slot;      // with HTTP: 1 + the connection's place in http_states, or 0
    u32 http_gen;       // that place's generation when this entry took it (see bpf/http.c)
};

// LRU: a flood of new flows evicts the idle ones instead of failing; user
// space folds flows into its totals and expires idle ones well before that.
BPF_TABLE("lru_hash", struct flow_key4, struct flow_val, flows4, MAX_FLOWS);
BPF_TABLE("lru_hash", struct flow_key6, struct flow_val, flows6, MAX_FLOWS);
BPF_ARRAY(flow_counters, u64, NF_COUNTERS);
#if LABEL_WORKLOAD
// Each socket's owner (see workload.h), cloned to accepted sockets.
BPF_F_TABLE("sk_storage", int, u64, socket_owners, 0, BPF_F_NO_PREALLOC | BPF_F_CLONE);

int workload_skb(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (sk)
        sk = bpf_sk_fullsock(sk);
    if (!sk)
        return 1;
    u64 *owner = socket_owners.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (owner && !*owner)
        *owner = bpf_sk_cgroup_id(sk);
    return 1;
}

static __always_inline u64 *socket_owner(struct bpf_sock *sk)
{
    return socket_owners.sk_storage_get(sk, 0, 0);
}
#include "workload.h"
#define OWNER_TRIES 8
// Links whose far side is another network namespace (a pod's host-side veth), by ifindex:
// that namespace's id as this one knows it, set by user space as it attaches.
BPF_HASH(flows_peer_netns, u32, s32, 65536);
#endif
// A flow_key4 or flow_key6 `key` filled from the packet's IP header `ip` (ipv4_hdr_ or
// ipv6_hdr_: their addresses are as long as the key's), up to the ports.
#define START_KEY(key, skb, dir, proto, ip)                        \
    do {                                                           \
        (key).ifindex = (skb)->ifindex;                            \
        (key).direction = (dir);                                   \
        (key).protocol = (proto);                                  \
        __builtin_memcpy((key).saddr, (ip)->saddr, sizeof((key).saddr)); \
        __builtin_memcpy((key).daddr, (ip)->daddr, sizeof((key).daddr)); \
    } while (0)

// A packet's addresses and ports from its flow key `k` (a flow_key4 or flow_key6) into `dst`
// (HTTP's segment, DNS's ends: 16-byte addresses, of which an IPv4 key fills the first 4).
#define KEY_ENDS(dst, k)                                                   \
    do {                                                                   \
        __builtin_memcpy((dst)->saddr, (k)->saddr, sizeof((k)->saddr));    \
        __builtin_memcpy((dst)->daddr, (k)->daddr, sizeof((k)->daddr));    \
        (dst)->sport = (k)->sport;                                         \
        (dst)->dport = (k)->dport;                                         \
    } while (0)

// Reads the ports into the key; returns the TCP flags byte (0 for UDP), or -1
// when the ports are beyond the linear data.
static __always_inline int ports(void *l4h, void *end, u8 protocol, u16 *sport, u16 *dport)
{
    struct tcp_hdr_ *l4 = l4h;  // UDP shares the ports
    if ((void *)&l4->seq > end)
        return -1;
    *sport = ntohs(l4->sport);
    *dport = ntohs(l4->dport);
    if (protocol != IPPROTO_TCP || (void *)(l4 + 1) > end)
        return 0;
    return l4->flags;
}

// A SYN names the server by its destination port, a SYN-ACK by its source.
static __always_inline u16 server_from_handshake(int flags, u16 sport, u16 dport)
{
    if (!(flags & TCP_SYN))
        return 0;
    return (flags & TCP_ACK) ? sport : dport;
}

// Whose the new flow (a flow_key4 or flow_key6 at `key`) is: see workload.h.
static __always_inline u64 flow_owner(struct __sk_buff *skb, void *key, int ipv6)
{
#if LABEL_WORKLOAD
    u32 ifindex = skb->ifindex;
    s32 *peer = flows_peer_netns.lookup(&ifindex);
    s64 netns = peer ? *peer : -1;
    if (ipv6) {
        struct flow_key6 *k = key;
        return packet_cgroup(skb, 1, k->protocol, k->saddr, k->daddr, k->sport, k->dport,
                             k->direction, netns);
    }
    struct flow_key4 *k = key;
    return packet_cgroup(skb, 0, k->protocol, k->saddr, k->daddr, k->sport, k->dport,
                         k->direction, netns);
#else
    return 0;
#endif
}

static __always_inline void start_flow(struct flow_val *fresh, u16 server, u64 cgroup)
{
    __builtin_memset(fresh, 0, sizeof(*fresh));
    fresh->first_seen_ns = bpf_ktime_get_ns();
    fresh->server_port = server;
    fresh->server_known = server != 0;
    fresh->cgroup = cgroup;
}

// A VLAN tag the kernel moved into skb metadata is still on the wire, and a
// capture shows it: count its 4 bytes too.
static __always_inline void add_packet(struct flow_val *val, u16 server, struct __sk_buff *skb)
{
    if (server) {
        val->server_port = server;
        val->server_known = 1;
    }
    __sync_fetch_and_add(&val->packets, 1);
    __sync_fetch_and_add(&val->bytes, skb->len + (skb->vlan_present ? 4 : 0));
}

// flows4 (a flow_key4 at `key`) or flows6 (a flow_key6), by family: `ipv6` is a constant
// once inlined, and only that map's call remains. (bcc rewrites a map's calls where they are
// written, so a map cannot be a parameter, nor a macro's argument.)
static __always_inline struct flow_val *flow_lookup(void *key, int ipv6)
{
    return ipv6 ? flows6.lookup(key) : flows4.lookup(key);
}

static __always_inline int flow_insert(void *key, struct flow_val *val, int ipv6)
{
    return ipv6 ? flows6.insert(key, val) : flows4.insert(key, val);
}

#if HTTP || DNS
// Interfaces whose far side is a workload in another network namespace (a pod's host-side
// veth), by ifindex: set by user space as it attaches (see request_role).
BPF_HASH(workload_links, u32, u8, 65536);
// The socket lookup's tuple, per CPU: off the 512-byte stack, which HTTP and DNS share.
BPF_PERCPU_ARRAY(lookup_tuple, struct bpf_sock_tuple, 1);

// Whether the packet's near end (its destination as it arrives, its source as it leaves) is
// a socket of the network namespace the exporter watches from. The addresses are as long as
// the family's (4 or 6).
static __always_inline int near_end_is_local(struct __sk_buff *skb, u8 family, u8 protocol,
                                             u8 *saddr, u8 *daddr, u16 sport, u16 dport,
                                             u8 direction)
{
    // A packet leaving with its socket was sent by one of this namespace's: no lookup (one
    // from another namespace loses its socket as it crosses over).
    if (direction == DIR_TRANSMIT && skb->sk)
        return 1;
    int zero = 0;
    struct bpf_sock_tuple *tuple = lookup_tuple.lookup(&zero);
    if (!tuple)
        return 0;
    __builtin_memset(tuple, 0, sizeof(*tuple));
    int in = direction == DIR_RECEIVE;
    struct bpf_sock *sk;
    // The tuple as an arriving packet has it: remote source, local destination.
    if (family == 4) {
        __builtin_memcpy(&tuple->ipv4.saddr, in ? saddr : daddr, 4);
        __builtin_memcpy(&tuple->ipv4.daddr, in ? daddr : saddr, 4);
        tuple->ipv4.sport = htons(in ? sport : dport);
        tuple->ipv4.dport = htons(in ? dport : sport);
        if (protocol == IPPROTO_UDP)
            sk = bpf_sk_lookup_udp(skb, tuple, sizeof(tuple->ipv4), BPF_F_CURRENT_NETNS, 0);
        else
            sk = bpf_skc_lookup_tcp(skb, tuple, sizeof(tuple->ipv4), BPF_F_CURRENT_NETNS, 0);
    } else {
        __builtin_memcpy(tuple->ipv6.saddr, in ? saddr : daddr, 16);
        __builtin_memcpy(tuple->ipv6.daddr, in ? daddr : saddr, 16);
        tuple->ipv6.sport = htons(in ? sport : dport);
        tuple->ipv6.dport = htons(in ? dport : sport);
        if (protocol == IPPROTO_UDP)
            sk = bpf_sk_lookup_udp(skb, tuple, sizeof(tuple->ipv6), BPF_F_CURRENT_NETNS, 0);
        else
            sk = bpf_skc_lookup_tcp(skb, tuple, sizeof(tuple->ipv6), BPF_F_CURRENT_NETNS, 0);
    }
    if (!sk)
        return 0;
    bpf_sk_release(sk);
    return 1;
}

// Whose view a request (or query) going in `direction` is counted from, or 0 to leave it to
// another interface:
// - the near end is a socket here: this host's (it answers what arrives, asked what leaves);
// - else, on an interface whose far side is a workload (a pod's host-side veth, marked by
//   user space), that workload's: it asked what arrives from it, answers what goes to it;
// - else the request only passes through (a node's uplink carrying a pod's traffic): the
//   pod's interface counts it, so that it counts once.
static __always_inline u8 request_role(struct __sk_buff *skb, u8 family, u8 protocol,
                                       u8 *saddr, u8 *daddr, u16 sport, u16 dport,
                                       u8 direction)
{
    if (near_end_is_local(skb, family, protocol, saddr, daddr, sport, dport, direction))
        return direction == DIR_RECEIVE ? ROLE_SERVER : ROLE_CLIENT;
    u32 ifindex = skb->ifindex;
    if (!workload_links.lookup(&ifindex))
        return 0;
    return direction == DIR_RECEIVE ? ROLE_CLIENT : ROLE_SERVER;
}
#endif

#if HTTP
// The entry of the same connection's packets the other way on the same link, the addresses
// and ports swapped: in the other direction (`mirror` 0: a link between the two ends), or in
// the same one (`mirror` 1: both ends behind the link, as on loopback).
#define REVERSED_KEY(r, k, mirror)                                          \
    do {                                                                    \
        (r).ifindex = (k)->ifindex;                                         \
        (r).direction = (mirror) ? (k)->direction : !(k)->direction;        \
        (r).protocol = (k)->protocol;                                       \
        __builtin_memcpy((r).saddr, (k)->daddr, sizeof((r).saddr));         \
        __builtin_memcpy((r).daddr, (k)->saddr, sizeof((r).daddr));         \
        (r).sport = (k)->dport;                                             \
        (r).dport = (k)->sport;                                             \
    } while (0)

static __always_inline struct flow_val *reverse_flow(void *key, int ipv6, int mirror)
{
    if (ipv6) {
        struct flow_key6 *k = key, r = {};
        REVERSED_KEY(r, k, mirror);
        return flows6.lookup(&r);
    }
    struct flow_key4 *k = key, r = {};
    REVERSED_KEY(r, k, mirror);
    return flows4.lookup(&r);
}

//@part http.c
#endif
#if DNS
//@part dns.c
#endif

// The packet counted in its flow's entry: looked up, else inserted with the server port the
// handshake named (a new flow, counted) and looked up again, as another CPU may have
// inserted it first or the full map found no room; a packet no entry took is counted as
// uncounted. Returns the entry, if one took the packet.
static __always_inline struct flow_val *count_packet(struct __sk_buff *skb, void *key, int ipv6,
                                                     u16 server)
{
    struct flow_val *val = flow_lookup(key, ipv6);
    if (!val) {
        struct flow_val fresh;
        start_flow(&fresh, server, flow_owner(skb, key, ipv6));
        if (flow_insert(key, &fresh, ipv6) == 0)
            count(flow_counters.lookup(&(int){F_NEW_FLOWS}), 1);
        val = flow_lookup(key, ipv6);
    }
    if (val) {
#if LABEL_WORKLOAD
        // The socket may have learnt its owner since (see workload.h): asked again, a few
        // times at most, as a flow of no local socket would ask at every packet.
        if (!val->cgroup && val->packets < OWNER_TRIES)
            val->cgroup = flow_owner(skb, key, ipv6);
#endif
        add_packet(val, server, skb);
    } else
        count(flow_counters.lookup(&(int){F_UNCOUNTED}), 1);
    return val;
}

// Whether HTTP is matched on a packet of the flow `key`: a TCP segment from or to an HTTP port.
#if HTTP
#define HTTP_SEGMENT(key) \
    ((key).protocol == IPPROTO_TCP && (PORT_MATCH((key).sport) || PORT_MATCH((key).dport)))
#else
#define HTTP_SEGMENT(key) 0
#endif
// Whether DNS is parsed on a packet of the flow `key`: from or to a DNS port.
#if DNS
#define DNS_MESSAGE(key) (DNS_PORT_MATCH((key).sport) || DNS_PORT_MATCH((key).dport))
#else
#define DNS_MESSAGE(key) 0
#endif

// No clock read per packet (it costs as much as the map update): user space
// notices idle flows by their counters not moving. Direct packet access:
// bpf_skb_load_bytes() costs about 40 ns a call here, several per packet.
static __always_inline int account(struct __sk_buff *skb, u8 direction, int l3_device)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    u16 proto;
    void *l3 = network_header(skb, data, end, &proto, l3_device);
    if (!l3)
        return TC_ACT_UNSPEC;
    // What HTTP and DNS matching, after the family's branch, need: the flow's entry and key
    // (one call for both families, so that the compiler inlines each once, not once a family).
    struct flow_key4 key4;
    struct flow_key6 key6;
    struct flow_val *val;
    void *key, *l4;
    int ipv6, http, dns;

    if (proto == htons(ETH_P_IP)) {
        struct ipv4_hdr_ *ip = l3;
        if ((void *)(ip + 1) > end)
            goto unparsed;  // the header is beyond the linear data: what it carries is unknown
        if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
            return TC_ACT_UNSPEC;
        __builtin_memset(&key4, 0, sizeof(key4));
        START_KEY(key4, skb, direction, ip->protocol, ip);
        // A later fragment carries no ports: counted with ports 0, so that the interface's
        // totals still match a capture.
        int flags = 0;
        l4 = l3 + (ip->vihl & 0x0f) * 4;
        int fragment = ip->frag & htons(0x1fff);
        if (!fragment) {
            flags = ports(l4, end, key4.protocol, &key4.sport, &key4.dport);
            if (flags < 0)
                goto unparsed;
        }
        val = count_packet(skb, &key4, 0, server_from_handshake(flags, key4.sport, key4.dport));
        key = &key4;
        ipv6 = 0;
        http = !fragment && HTTP_SEGMENT(key4);
        dns = !fragment && DNS_MESSAGE(key4);
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6_hdr_ *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            goto unparsed;
        if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP) {
            // Not walked (rare on real networks): counted, so that what they carried is not
            // silently missing from the flow counts.
            if (IS_IPV6_EXTENSION(ip6->nexthdr)) {
                // Every extension header starts with the next header's type: count only
                // what may lead to TCP or UDP, not (say) the ICMPv6 behind an MLD report's.
                u8 *next = (u8 *)(ip6 + 1);
                if ((void *)(next + 1) > end || *next == IPPROTO_TCP || *next == IPPROTO_UDP ||
                    IS_IPV6_EXTENSION(*next))
                    goto unparsed;
            }
            return TC_ACT_UNSPEC;
        }
        __builtin_memset(&key6, 0, sizeof(key6));
        START_KEY(key6, skb, direction, ip6->nexthdr, ip6);
        l4 = ip6 + 1;
        int flags = ports(l4, end, key6.protocol, &key6.sport, &key6.dport);
        if (flags < 0)
            goto unparsed;
        val = count_packet(skb, &key6, 1, server_from_handshake(flags, key6.sport, key6.dport));
        key = &key6;
        ipv6 = 1;
        http = HTTP_SEGMENT(key6);
        dns = DNS_MESSAGE(key6);
    } else {
        return TC_ACT_UNSPEC;
    }
    if (!val)
        return TC_ACT_UNSPEC;
#if DNS
    // DNS ports carry DNS: HTTP is not looked for there (nor would the verifier accept a walk
    // of every HTTP path followed by every DNS one).
    if (dns) {
        inspect_dns(skb, val, key, ipv6, direction, l4, data, end);
        return TC_ACT_UNSPEC;
    }
#endif
#if HTTP
    if (http)
        inspect_http(skb, val, key, ipv6, direction, l4, data, end);
#endif
    return TC_ACT_UNSPEC;

    // Out of the common path's straight line (a forward jump only on this rare path).
unparsed:
    count(flow_counters.lookup(&(int){F_UNPARSED}), 1);
    return TC_ACT_UNSPEC;
}

int flows_ingress(struct __sk_buff *skb)
{
    return account(skb, DIR_RECEIVE, 0);
}

int flows_egress(struct __sk_buff *skb)
{
    return account(skb, DIR_TRANSMIT, 0);
}

int flows_ingress_l3(struct __sk_buff *skb)
{
    return account(skb, DIR_RECEIVE, 1);
}

int flows_egress_l3(struct __sk_buff *skb)
{
    return account(skb, DIR_TRANSMIT, 1);
}

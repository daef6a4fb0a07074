// Per-flow packets and bytes, counted by TC classifiers on clsact ingress and
// egress. Reads only __sk_buff fields and packet bytes (see tcp_lifecycle.c
// for why that rule matters), and never changes the packet's fate: it
// returns TC_ACT_UNSPEC so the next filter (Cilium, a user's rules) still runs.
//
// Compile-time parameters (#defined by exporter/flows.py): MAX_FLOWS.

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

#define DIR_RECEIVE 0
#define DIR_TRANSMIT 1

// Indexes into `flow_counters`.
#define F_NEW_FLOWS 0   // entries inserted; with the live count, gives evictions
#define F_UNPARSED 1    // IP packets whose transport header could not be read
#define NF_COUNTERS 2

struct flow_key {
    u32 ifindex;
    u8 direction;
    u8 protocol;
    u8 family;  // 4 or 6
    u8 pad;
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
};

struct flow_val {
    u64 packets;
    u64 bytes;
    u64 first_seen_ns;
    u64 last_seen_ns;
    u16 server_port;  // the accepting side's port, once a handshake was seen
    u8 server_known;
    u8 pad[5];
};

// LRU: a flood of new flows evicts the idle ones instead of failing; user
// space folds flows into its totals and expires idle ones well before that.
BPF_TABLE("lru_hash", struct flow_key, struct flow_val, flows, MAX_FLOWS);
BPF_ARRAY(flow_counters, u64, NF_COUNTERS);

static __always_inline void count(int idx)
{
    u64 *c = flow_counters.lookup(&idx);
    if (c)
        __sync_fetch_and_add(c, 1);
}

// Fills the key from the packet; returns the TCP flags byte (0 for UDP), or
// -1 when the packet is not TCP or UDP over IPv4/IPv6.
static __always_inline int parse(struct __sk_buff *skb, struct flow_key *key)
{
    u32 off = ETH_HLEN;
    u16 proto;
    if (bpf_skb_load_bytes(skb, 12, &proto, 2) < 0)
        return -1;
#pragma unroll
    for (int i = 0; i < 2; i++) {  // 802.1Q and 802.1ad tags left in the frame
        if (proto != htons(ETH_P_8021Q) && proto != htons(ETH_P_8021AD))
            break;
        if (bpf_skb_load_bytes(skb, off + 2, &proto, 2) < 0)
            return -1;
        off += 4;
    }

    u8 l4;
    if (proto == htons(ETH_P_IP)) {
        u8 vihl;
        u16 frag;
        if (bpf_skb_load_bytes(skb, off, &vihl, 1) < 0 ||
            bpf_skb_load_bytes(skb, off + 6, &frag, 2) < 0 ||
            bpf_skb_load_bytes(skb, off + 9, &l4, 1) < 0 ||
            bpf_skb_load_bytes(skb, off + 12, key->saddr, 4) < 0 ||
            bpf_skb_load_bytes(skb, off + 16, key->daddr, 4) < 0)
            return -1;
        key->family = 4;
        if (frag & htons(0x1fff)) {  // a later fragment carries no ports
            key->protocol = l4;
            return (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP) ? 0 : -1;
        }
        off += (vihl & 0x0f) * 4;
    } else if (proto == htons(ETH_P_IPV6)) {
        if (bpf_skb_load_bytes(skb, off + 6, &l4, 1) < 0 ||
            bpf_skb_load_bytes(skb, off + 8, key->saddr, 16) < 0 ||
            bpf_skb_load_bytes(skb, off + 24, key->daddr, 16) < 0)
            return -1;
        key->family = 6;
        off += 40;
    } else {
        return -1;
    }
    if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP)
        return -1;
    key->protocol = l4;

    u16 ports[2];
    if (bpf_skb_load_bytes(skb, off, ports, 4) < 0) {
        count(F_UNPARSED);
        return 0;
    }
    key->sport = ntohs(ports[0]);
    key->dport = ntohs(ports[1]);
    if (l4 != IPPROTO_TCP)
        return 0;
    u8 flags = 0;
    bpf_skb_load_bytes(skb, off + 13, &flags, 1);
    return flags;
}

#define TCP_SYN 0x02
#define TCP_ACK 0x10

static __always_inline int account(struct __sk_buff *skb, u8 direction)
{
    struct flow_key key = {};
    int flags = parse(skb, &key);
    if (flags < 0)
        return TC_ACT_UNSPEC;
    key.ifindex = skb->ifindex;
    key.direction = direction;

    // A SYN names the server by its destination port, a SYN-ACK by its source.
    u16 server = 0;
    if (flags & TCP_SYN)
        server = (flags & TCP_ACK) ? key.sport : key.dport;

    u64 now = bpf_ktime_get_ns();
    struct flow_val *val = flows.lookup(&key);
    if (!val) {
        struct flow_val fresh = {};
        fresh.first_seen_ns = now;
        fresh.server_port = server;
        fresh.server_known = server != 0;
        if (flows.insert(&key, &fresh) == 0)
            count(F_NEW_FLOWS);
        val = flows.lookup(&key);
        if (!val)
            return TC_ACT_UNSPEC;
    } else if (server) {
        val->server_port = server;
        val->server_known = 1;
    }
    __sync_fetch_and_add(&val->packets, 1);
    __sync_fetch_and_add(&val->bytes, skb->len);
    val->last_seen_ns = now;
    return TC_ACT_UNSPEC;
}

int flows_ingress(struct __sk_buff *skb)
{
    return account(skb, DIR_RECEIVE);
}

int flows_egress(struct __sk_buff *skb)
{
    return account(skb, DIR_TRANSMIT);
}

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
    u64 first_seen_ns;  // set once: tells a new flow from an old one under the same key
    u16 server_port;    // the accepting side's port, once a handshake was seen
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

struct vlan_hdr_ {
    u16 tci;
    u16 proto;
};

struct ipv4_hdr_ {
    u8 vihl;
    u8 tos;
    u16 len;
    u16 id;
    u16 frag;
    u8 ttl;
    u8 protocol;
    u16 check;
    u8 saddr[4];
    u8 daddr[4];
};

struct ipv6_hdr_ {
    u32 vtcfl;
    u16 len;
    u8 nexthdr;
    u8 hops;
    u8 saddr[16];
    u8 daddr[16];
};

struct ports_ {
    u16 sport;
    u16 dport;
    u32 seq;
    u32 ack;
    u8 off;
    u8 flags;
};

// Fills the key from the packet; returns the TCP flags byte (0 for UDP), or
// -1 when the packet is not TCP or UDP over IPv4/IPv6. Direct packet access:
// bpf_skb_load_bytes() costs about 40 ns a call here, several per packet.
static __always_inline int parse(struct __sk_buff *skb, struct flow_key *key)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    if (data + ETH_HLEN > end)
        return -1;
    u16 proto = ((struct ethhdr *)data)->h_proto;
    void *l3 = data + ETH_HLEN;
#pragma unroll
    for (int i = 0; i < 2; i++) {  // 802.1Q and 802.1ad tags left in the frame
        if (proto != htons(ETH_P_8021Q) && proto != htons(ETH_P_8021AD))
            break;
        struct vlan_hdr_ *vlan = l3;
        if ((void *)(vlan + 1) > end)
            return -1;
        proto = vlan->proto;
        l3 = vlan + 1;
    }

    u8 l4;
    void *l4h;
    if (proto == htons(ETH_P_IP)) {
        struct ipv4_hdr_ *ip = l3;
        if ((void *)(ip + 1) > end)
            return -1;
        l4 = ip->protocol;
        if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP)
            return -1;
        key->family = 4;
        key->protocol = l4;
        __builtin_memcpy(key->saddr, ip->saddr, 4);
        __builtin_memcpy(key->daddr, ip->daddr, 4);
        if (ip->frag & htons(0x1fff))
            return 0;  // a later fragment carries no ports
        l4h = l3 + (ip->vihl & 0x0f) * 4;
    } else if (proto == htons(ETH_P_IPV6)) {
        struct ipv6_hdr_ *ip6 = l3;
        if ((void *)(ip6 + 1) > end)
            return -1;
        l4 = ip6->nexthdr;
        if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP)
            return -1;
        key->family = 6;
        key->protocol = l4;
        __builtin_memcpy(key->saddr, ip6->saddr, 16);
        __builtin_memcpy(key->daddr, ip6->daddr, 16);
        l4h = ip6 + 1;
    } else {
        return -1;
    }

    struct ports_ *ports = l4h;
    if ((void *)&ports->seq > end) {
        count(F_UNPARSED);  // the transport header is not in the linear data
        return 0;
    }
    key->sport = ntohs(ports->sport);
    key->dport = ntohs(ports->dport);
    if (l4 != IPPROTO_TCP || (void *)(ports + 1) > end)
        return 0;
    return ports->flags;
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

    // No clock read per packet (it costs as much as the map update): user space
    // notices idle flows by their counters not moving.
    struct flow_val *val = flows.lookup(&key);
    if (!val) {
        struct flow_val fresh = {};
        fresh.first_seen_ns = bpf_ktime_get_ns();
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
    // A VLAN tag the kernel moved into skb metadata is still on the wire, and a
    // capture shows it: count its 4 bytes too.
    __sync_fetch_and_add(&val->bytes, skb->len + (skb->vlan_present ? 4 : 0));
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

// Packet headers shared by the TC classifiers, declared here rather than taken
// from kernel headers so that every program reads only packet bytes whose
// layout is fixed by the wire, never a kernel struct.

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/pkt_cls.h>

// The hook a classifier runs on, for bpf/flows.c and bpf/http.c and their loaders (which
// read these `#define NAME <integer>` lines through exporter/host/contract.py and name the
// directions after what follows DIR_, in lower case).
#define DIR_RECEIVE 0   // ingress
#define DIR_TRANSMIT 1  // egress

// Whose side of a request (HTTP) or query (DNS) this host, or the workload behind the
// interface, is; the loaders name them after what follows ROLE_, in lower case.
#define ROLE_SERVER 1  // the request arrived: this side answers
#define ROLE_CLIENT 2  // the request left: this side asked

// TCP header flags (tcp_hdr_.flags).
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

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

struct tcp_hdr_ {
    u16 sport;
    u16 dport;
    u32 seq;
    u32 ack;
    u8 doff;  // data offset in the upper 4 bits
    u8 flags;
};

// The network header after the Ethernet header and up to two VLAN tags left
// in the frame (802.1Q, 802.1ad); its ethertype in *proto. NULL if cut short.
static __always_inline void *ethernet_payload(void *data, void *end, u16 *proto)
{
    if (data + ETH_HLEN > end)
        return 0;
    *proto = ((struct ethhdr *)data)->h_proto;
    void *l3 = data + ETH_HLEN;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (*proto != htons(ETH_P_8021Q) && *proto != htons(ETH_P_8021AD))
            break;
        struct vlan_hdr_ *vlan = l3;
        if ((void *)(vlan + 1) > end)
            return 0;
        *proto = vlan->proto;
        l3 = vlan + 1;
    }
    return l3;
}

// The network header and its ethertype. Devices without a link-layer header (tun,
// WireGuard, ipip, sit, GRE: L3_DEVICE) start at the IP header, whose protocol the kernel
// keeps in skb->protocol; each program comes in both forms, and user space attaches the
// one the device's type asks for.
static __always_inline void *network_header(struct __sk_buff *skb, void *data, void *end,
                                            u16 *proto, int l3_device)
{
    if (!l3_device)
        return ethernet_payload(data, end, proto);
    if (data + 1 > end)
        return 0;
    *proto = skb->protocol;
    // The version nibble must agree, or this is not an IP header (framing we do not know).
    u8 version = *(u8 *)data >> 4;
    if ((*proto == htons(ETH_P_IP) && version != 4) ||
        (*proto == htons(ETH_P_IPV6) && version != 6))
        *proto = 0;
    return data;
}

// Whose a packet is: the cgroup (v2 id) of the local socket it belongs to, for the TC
// classifiers (bpf/flows.c, bpf/http.c). Only helpers are used: no kernel struct is read.
//
// - A packet a local socket sends carries it (skb->sk, on egress): its cgroup.
// - Else the socket of this network namespace at the packet's near end (its destination as
//   it arrives, its source as it leaves), found by a socket lookup.
// - Else, on a link whose far side is another namespace (a pod's host-side veth: user space
//   gives that namespace's id as this one knows it), the socket at the far end, there.
// - Else 0: traffic of no local workload (forwarded, or a socket already gone).
// A lookup costs about as much as the rest of a classifier run: callers ask once per flow
// or connection, never per packet.
//
// TC programs cannot ask a looked-up socket for its cgroup (bpf_sk_cgroup_id is not theirs),
// so each socket carries its owner in socket storage, written by workload_skb (cgroup_skb
// egress on the cgroup v2 root, where bpf_sk_cgroup_id is allowed) at the first packet the
// socket sends since the exporter started, and cloned to the sockets a listener accepts
// (a listener itself sends nothing: its handshakes leave from request sockets). Until then
// a lookup finds no owner, and the caller asks again at the next packets.
//
// The including program declares the storage, its workload_skb (bcc takes programs and
// rewrites map calls only in the program's own file) and, before including this file:
//     static __always_inline u64 *socket_owner(struct bpf_sock *sk)
// which returns the storage of a socket, if it has one.

// The cgroup of the socket a lookup finds for `tuple` (as an arriving packet has it:
// remote source, local destination) in the namespace `netns`; 0 if none.
static __always_inline u64 lookup_cgroup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple,
                                         u32 size, u8 protocol, u64 netns)
{
    struct bpf_sock *sk;
    if (protocol == IPPROTO_TCP)
        sk = bpf_skc_lookup_tcp(skb, tuple, size, netns, 0);
    else
        sk = bpf_sk_lookup_udp(skb, tuple, size, netns, 0);
    if (!sk)
        return 0;
    u64 cgroup = 0;
    struct bpf_sock *full = bpf_sk_fullsock(sk);  // none for request and time-wait sockets
    if (full) {
        u64 *owner = socket_owner(full);
        if (owner)
            cgroup = *owner;
    }
    bpf_sk_release(sk);
    return cgroup;
}

// The tuple of a packet from saddr:sport to daddr:dport (ports in host order), as the
// socket at its destination (`to_destination`) or at its source sees arrivals.
static __always_inline u32 arriving_tuple(struct bpf_sock_tuple *tuple, int ipv6,
                                          const u8 *saddr, const u8 *daddr, u16 sport,
                                          u16 dport, int to_destination)
{
    const u8 *remote = to_destination ? saddr : daddr;
    const u8 *local = to_destination ? daddr : saddr;
    u16 rport = to_destination ? sport : dport;
    u16 lport = to_destination ? dport : sport;
    if (ipv6) {
        __builtin_memcpy(tuple->ipv6.saddr, remote, 16);
        __builtin_memcpy(tuple->ipv6.daddr, local, 16);
        tuple->ipv6.sport = htons(rport);
        tuple->ipv6.dport = htons(lport);
        return sizeof(tuple->ipv6);
    }
    __builtin_memcpy(&tuple->ipv4.saddr, remote, 4);
    __builtin_memcpy(&tuple->ipv4.daddr, local, 4);
    tuple->ipv4.sport = htons(rport);
    tuple->ipv4.dport = htons(lport);
    return sizeof(tuple->ipv4);
}

// See the top of this file. `peer_netns` is the far side's namespace id, or -1.
static __always_inline u64 packet_cgroup(struct __sk_buff *skb, int ipv6, u8 protocol,
                                         const u8 *saddr, const u8 *daddr, u16 sport,
                                         u16 dport, u8 direction, s64 peer_netns)
{
    if (direction == DIR_TRANSMIT) {
        u64 sender = bpf_skb_cgroup_id(skb);
        if (sender)
            return sender;
    }
    struct bpf_sock_tuple tuple = {};
    int arriving = direction == DIR_RECEIVE;
    u32 size = arriving_tuple(&tuple, ipv6, saddr, daddr, sport, dport, arriving);
    u64 cgroup = lookup_cgroup(skb, &tuple, size, protocol, BPF_F_CURRENT_NETNS);
    if (cgroup || peer_netns < 0)
        return cgroup;
    size = arriving_tuple(&tuple, ipv6, saddr, daddr, sport, dport, !arriving);
    return lookup_cgroup(skb, &tuple, size, protocol, (u64)peer_netns);
}

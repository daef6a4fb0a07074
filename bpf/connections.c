// TCP connection lifecycle: opens, closes, failures and a lifetime histogram,
// aggregated in the kernel so that no per-connection work reaches user space.
//
// Portability rule for every program in bpf/: read only tracepoint arguments
// (their layout comes from tracefs at compile time), packet bytes and the contexts
// of cgroup-attached programs, never kernel-internal struct layouts. That is what lets the 6.1 fallback headers serve any kernel.
//
// Compile-time parameters (#defined by exporter/connections/loader.py):
//   NBUCKETS, BUCKET_INDEX(ns)  histogram bounds, as an unrolled comparison
//   MAX_SOCKS, MAX_SERIES        map bounds
//   LABEL_DIRECTION, LABEL_SERVER_PORT, LABEL_PEER, LABEL_PROCESS   0 or 1
//   LABEL_WORKLOAD               1 to key series by the local socket's cgroup too; then
//                                workload_ingress is attached to the cgroup v2 root
//   PEER_MASK4, PEER_MASK6       byte masks aggregating peer addresses
//   EMIT_EVENTS                  1 to publish each closed connection (log)
//   NRTT_BUCKETS, RTT_BUCKET_INDEX(us), RTT_SAMPLE_NS   the RTT histogram and how often a
//                                long-lived connection's RTT is sampled
//   DURATION_EXP, RTT_EXP        1 to count the histogram in exponential buckets too
//   EXP_SLOTS, EXP_INDEX(ns)     those buckets (bpf/include/exponential.h)

#include <linux/socket.h>
#include <uapi/linux/in.h>

#if LABEL_WORKLOAD
#include "packet.h"  // the handshake's headers, for workload_ingress
#endif
#include "connections.h"  // directions, failure reasons, counter indexes: shared with the loader
#include "counters.h"
#include "exponential.h"

#define S_ESTABLISHED 1
#define S_SYN_SENT 2
#define S_SYN_RECV 3
#define S_FIN_WAIT1 4
#define S_FIN_WAIT2 5
#define S_TIME_WAIT 6
#define S_CLOSE 7
#define S_CLOSE_WAIT 8
#define S_LAST_ACK 9
#define S_CLOSING 11

// A state only an established connection leaves: a transition out of it proves the
// connection was established, even if the kernel skipped the run that saw it become so.
#define WAS_ESTABLISHED(s) ((s) == S_ESTABLISHED || (s) == S_FIN_WAIT1 || (s) == S_FIN_WAIT2 || \
                            (s) == S_CLOSE_WAIT || (s) == S_LAST_ACK || (s) == S_CLOSING)

// Tests only: behave as if the kernel skipped every run for the ESTABLISHED transition.
#ifndef TEST_SKIP_ESTABLISHED
#define TEST_SKIP_ESTABLISHED 0
#endif

struct conn_key {
    u8 direction;
    u8 family;
    u8 overflow;
    u8 pad;
    u16 server_port;
    u16 pad2;
    u8 peer[16];
    char comm[16];
    u64 cgroup;  // the local socket's owner (cgroup v2 id), with LABEL_WORKLOAD; else 0
};

struct conn_val {
    u64 opened;
    u64 closed;
    u64 closes_unseen;  // established, then gone without a CLOSE we saw (see on_birth)
    u64 retransmits[NRETRANS];
    u64 resets_sent;
    u64 resets_received;
    u64 failures[NFAIL];
    u64 duration_sum_ns;
    u64 buckets[NBUCKETS + 1];
    u64 rtt_sum_us;
    u64 rtt_buckets[NRTT_BUCKETS + 1];  // smoothed RTT samples (see on_probe)
#if DURATION_EXP
    u64 duration_exp[EXP_SLOTS];
#endif
#if RTT_EXP
    u64 rtt_exp[EXP_SLOTS];
#endif
};

struct sock_info {
    u64 start_ns;
    s32 error;       // sk_err as reported, 0 if none
    u8 established;
    u8 failed;       // closed before ESTABLISHED; counted when destroyed
    u8 pad[2];
    u32 srtt_us;     // the kernel's smoothed RTT at the last ACK (tcp:tcp_probe), 0 if none
    u32 pad2;
    u64 rtt_due_ns;  // when a long-lived connection's next RTT sample is due
    struct conn_key key;
};

// A connect error and the CLOSE transition come from one kernel function on one CPU, in
// an order that depends on the kernel: since Linux 6.10 (and its stable backports) the
// error (sock:inet_sk_error_report) follows CLOSE; before, a timeout's error came first.
// The report carries no socket address, and the local port is already released when it
// follows, so each half waits in a per-CPU slot, keyed by the remote address and port, for
// the other: whichever comes second pairs them. A slot pairs only within PAIR_WINDOW_NS of
// being filled, and a failed close's slot is emptied when its socket is destroyed, so an
// error is never attached to an unrelated socket with the same remote address.
#define PAIR_WINDOW_NS 1000000ULL

struct pair_slot {
    u64 sk;    // failed_close: the socket that closed unestablished
    u64 ts;
    s32 error; // early_error: the error reported before its CLOSE
    u16 dport;
    u16 family;
    u8 daddr[16];
    u32 valid;
    u32 pad;
};

struct tuple {
    u8 saddr[16];
    u8 daddr[16];
    u16 sport;
    u16 dport;
    u16 family;
    u16 pad;
};

struct close_event {
    u64 duration_ns;
    u8 laddr[16];
    u8 raddr[16];
    u16 lport;
    u16 rport;
    u8 family;
    u8 direction;
    u8 pad[2];
    u64 cgroup;  // the local socket's owner, with LABEL_WORKLOAD; else 0
};

BPF_HASH(socks, u64, struct sock_info, MAX_SOCKS);
BPF_HASH(conn_stats, struct conn_key, struct conn_val, MAX_SERIES);
BPF_PERCPU_ARRAY(failed_close, struct pair_slot, 1);
// The socket whose established CLOSE came last on this CPU, with its labels: an abort
// (SO_LINGER 0) sends its reset right after the CLOSE that made us forget the socket.
struct closed_slot {
    u64 sk;
    struct conn_key key;
};
BPF_PERCPU_ARRAY(just_closed, struct closed_slot, 1);
BPF_PERCPU_ARRAY(early_error, struct pair_slot, 1);
// Never written: the zeroed value a new series starts from. conn_val grows with the
// buckets and passes the 512-byte stack at 64 bounds (config.MAX_BUCKETS).
BPF_PERCPU_ARRAY(zero_series, struct conn_val, 1);
BPF_ARRAY(counters, u64, NCOUNTERS);

#if LABEL_WORKLOAD
// A passive open completes in softirq, where no process is current. Each segment of a
// handshake is delivered to the listening socket first, whose cgroup is its owner's (and
// becomes the accepted socket's): workload_ingress, attached to the cgroup v2 root, keeps
// it by connection here, and on_birth takes it for the socket the handshake creates.
struct handshake_key {
    u8 local[16];
    u8 remote[16];
    u16 local_port;
    u16 remote_port;
    u16 family;
    u16 pad;
};
BPF_TABLE("lru_hash", struct handshake_key, u64, handshake_owner, 16384);
#endif

#if EMIT_EVENTS
BPF_RINGBUF_OUTPUT(close_events, 64);
#endif

// Normalises the socket's addresses: IPv4-mapped IPv6 becomes IPv4, so the
// same peer aggregates the same way whichever socket family carried it.
static __always_inline u8 fill_tuple(struct tuple *t, u16 family, u16 sport, u16 dport,
                                     const u8 *saddr4, const u8 *daddr4,
                                     const u8 *saddr6, const u8 *daddr6)
{
    t->sport = sport;
    t->dport = dport;
    if (family == AF_INET6) {
        int mapped = 1;
#pragma unroll
        for (int i = 0; i < 10; i++)
            if (daddr6[i] != 0)
                mapped = 0;
        if (daddr6[10] != 0xff || daddr6[11] != 0xff)
            mapped = 0;
        if (!mapped) {
            t->family = AF_INET6;
            __builtin_memcpy(t->saddr, saddr6, 16);
            __builtin_memcpy(t->daddr, daddr6, 16);
            return AF_INET6;
        }
    }
    t->family = AF_INET;
    __builtin_memcpy(t->saddr, saddr4, 4);
    __builtin_memcpy(t->daddr, daddr4, 4);
    return AF_INET;
}

static __always_inline int fail_reason(int err)
{
    switch (err) {
    case 111: /* ECONNREFUSED */
        return FAIL_REFUSED;
    case 110: /* ETIMEDOUT */
        return FAIL_TIMEOUT;
    case 104: /* ECONNRESET */
        return FAIL_RESET;
    default:
        return FAIL_OTHER;
    }
}

static __always_inline struct conn_val *series(struct conn_key *key)
{
    struct conn_val *val = conn_stats.lookup(key);
    if (val)
        return val;
    int first = 0;
    struct conn_val *zero = zero_series.lookup(&first);
    if (!zero)
        return 0;
    if (conn_stats.insert(key, zero) == 0)
        return conn_stats.lookup(key);
    // Another CPU may have inserted the same new series since the lookup (a burst of
    // connections to a new port): the insert failed, and the series is there.
    val = conn_stats.lookup(key);
    if (val)
        return val;
    // The series cap is reached: the overflow series (inserted by user space at start)
    // absorbs the connection instead of losing it.
    count(counters.lookup(&(int){C_SERIES_OVERFLOW}), 1);
    u8 direction = key->direction;
    __builtin_memset(key, 0, sizeof(*key));
    key->direction = direction;
    key->overflow = 1;
    return conn_stats.lookup(key);
}

static __always_inline void count_failure(struct sock_info *info)
{
    struct conn_val *val = series(&info->key);
    u32 r = fail_reason(info->error);
    if (val && r < NFAIL)
        __sync_fetch_and_add(&val->failures[r], 1);
}

#if LABEL_WORKLOAD
// The cgroup of the listener the handshake of `t` (an accepted socket's tuple) reached, 0
// if none was seen (a handshake older than the exporter); taken, as each is used once.
static __always_inline u64 handshake_cgroup(struct tuple *t)
{
    struct handshake_key key = {};
    __builtin_memcpy(key.local, t->saddr, 16);
    __builtin_memcpy(key.remote, t->daddr, 16);
    key.local_port = t->sport;
    key.remote_port = t->dport;
    key.family = t->family;
    u64 *cgroup = handshake_owner.lookup(&key);
    if (!cgroup)
        return 0;
    u64 found = *cgroup;
    handshake_owner.delete(&key);
    return found;
}

// cgroup_skb ingress at the cgroup v2 root: every segment delivered to a local socket.
// Only those a listener receives (handshakes) are looked at; every packet passes.
int workload_ingress(struct __sk_buff *skb)
{
    struct bpf_sock *sk = skb->sk;
    if (!sk || sk->state != BPF_TCP_LISTEN)
        return 1;
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct handshake_key key = {};
    struct tcp_hdr_ *tcp;
    if (skb->protocol == htons(ETH_P_IP)) {
        struct ipv4_hdr_ *ip = data;
        if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
            return 1;
        tcp = data + (ip->vihl & 0x0f) * 4;
        key.family = AF_INET;
        __builtin_memcpy(key.local, ip->daddr, 4);
        __builtin_memcpy(key.remote, ip->saddr, 4);
    } else if (skb->protocol == htons(ETH_P_IPV6)) {
        struct ipv6_hdr_ *ip6 = data;
        if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
            return 1;
        tcp = (void *)(ip6 + 1);
        // (An IPv4 peer of a dual-stack listener comes as IPv4, the family fill_tuple gives.)
        key.family = AF_INET6;
        __builtin_memcpy(key.local, ip6->daddr, 16);
        __builtin_memcpy(key.remote, ip6->saddr, 16);
    } else {
        return 1;
    }
    if ((void *)(tcp + 1) > end)
        return 1;
    key.local_port = ntohs(tcp->dport);
    key.remote_port = ntohs(tcp->sport);
    u64 cgroup = bpf_sk_cgroup_id(sk);
    handshake_owner.update(&key, &cgroup);
    return 1;
}
#endif

// The labels a connection of `t` (its own tuple: local source) has, as far as its direction
// and addresses give them; the workload and the process are the caller's to add.
static __always_inline void fill_key(struct conn_key *key, u8 direction, struct tuple *t,
                                     u8 family)
{
#if LABEL_DIRECTION
    key->direction = direction;
#endif
#if LABEL_SERVER_PORT
    key->server_port = direction == DIR_OUTBOUND ? t->dport : t->sport;
#endif
#if LABEL_PEER
    key->family = family;
    if (family == AF_INET) {
        const u8 mask[4] = PEER_MASK4;
#pragma unroll
        for (int i = 0; i < 4; i++)
            key->peer[i] = t->daddr[i] & mask[i];
    } else {
        const u8 mask[16] = PEER_MASK6;
#pragma unroll
        for (int i = 0; i < 16; i++)
            key->peer[i] = t->daddr[i] & mask[i];
    }
#endif
}

static __always_inline void on_birth(u64 sk, u8 direction, struct tuple *t, u8 family)
{
    // connect() may be retried on a socket whose previous attempt failed.
    struct sock_info *old = socks.lookup(&sk);
    if (old && old->failed)
        count_failure(old);
    // A new socket at the address of an established one: the old socket was
    // freed, and its CLOSE and destroy runs were skipped by the kernel (missed
    // runs). Its lifetime is unknown, so it is counted apart from `closed`.
    if (old && old->established) {
        struct conn_val *gone = series(&old->key);
        if (gone)
            __sync_fetch_and_add(&gone->closes_unseen, 1);
    }

    struct sock_info info = {};
    info.start_ns = bpf_ktime_get_ns();
    info.rtt_due_ns = info.start_ns + RTT_SAMPLE_NS;
    fill_key(&info.key, direction, t, family);
#if LABEL_WORKLOAD
    info.key.cgroup = direction == DIR_OUTBOUND ? bpf_get_current_cgroup_id()
                                                : handshake_cgroup(t);
#endif
#if LABEL_PROCESS
    // Only connect() runs in the process's context; passive opens complete
    // in softirq, where `current` is whoever was interrupted.
    if (direction == DIR_OUTBOUND)
        bpf_get_current_comm(&info.key.comm, sizeof(info.key.comm));
#endif
    if (socks.insert(&sk, &info) == 0) {
        count(counters.lookup(&(int){C_SOCKS_TRACKED}), 1);
    } else if (socks.update(&sk, &info) != 0) {
        count(counters.lookup(&(int){C_SOCKS_FULL}), 1);
    }
    // update() succeeding means the address was reused by a new socket
    // whose CLOSE we never saw; the tracked count is unchanged.
}

static __always_inline void on_established(struct sock_info *info)
{
    if (info->established)
        return;
    info->established = 1;
    struct conn_val *val = series(&info->key);
    if (val)
        __sync_fetch_and_add(&val->opened, 1);
}

// One sample of the connection's smoothed RTT into its series' histogram.
static __always_inline void add_rtt(struct sock_info *info)
{
    if (!info->srtt_us)
        return;
    struct conn_val *val = series(&info->key);
    if (!val)
        return;
    u32 b = RTT_BUCKET_INDEX((u64)info->srtt_us);
    if (b <= NRTT_BUCKETS)
        __sync_fetch_and_add(&val->rtt_buckets[b], 1);
#if RTT_EXP
    EXP_COUNT(val->rtt_exp, (u64)info->srtt_us * 1000);
#endif
    __sync_fetch_and_add(&val->rtt_sum_us, info->srtt_us);
}

static __always_inline void forget(u64 sk)
{
    if (socks.delete(&sk) == 0)
        count(counters.lookup(&(int){C_SOCKS_TRACKED}), -1);
}

// The slot if it was filled for this remote address and port within the window; emptied,
// as each half pairs once.
static __always_inline struct pair_slot *take_pair(struct pair_slot *slot, u16 family,
                                                   u16 dport, const u8 *daddr)
{
    if (!slot || !slot->valid || slot->family != family || slot->dport != dport ||
        bpf_ktime_get_ns() - slot->ts > PAIR_WINDOW_NS)
        return 0;
    u8 differ = 0;
#pragma unroll
    for (int i = 0; i < 16; i++)
        differ |= daddr[i] ^ slot->daddr[i];
    if (differ)
        return 0;
    slot->valid = 0;
    return slot;
}

static __always_inline void fill_pair(struct pair_slot *slot, u64 sk, s32 error, u16 family,
                                      u16 dport, const u8 *daddr)
{
    if (!slot)
        return;
    slot->sk = sk;
    slot->error = error;
    slot->ts = bpf_ktime_get_ns();
    slot->family = family;
    slot->dport = dport;
    __builtin_memcpy(slot->daddr, daddr, 16);
    slot->valid = 1;
}

// A connect error reported by the kernel: given to the socket whose unestablished CLOSE
// just came on this CPU, or kept for a CLOSE that follows.
static __always_inline void on_error_report(s32 error, struct tuple *t)
{
    int zero = 0;
    struct pair_slot *closed = take_pair(failed_close.lookup(&zero), t->family, t->dport,
                                         t->daddr);
    if (closed) {
        struct sock_info *info = socks.lookup(&closed->sk);
        if (info && info->failed)
            info->error = error;
        return;
    }
    fill_pair(early_error.lookup(&zero), 0, error, t->family, t->dport, t->daddr);
}

static __always_inline void on_close(void *ctx, u64 sk, struct sock_info *info, struct tuple *t)
{
    // An error reported just before this CLOSE is this socket's.
    int zero = 0;
    struct pair_slot *early = take_pair(early_error.lookup(&zero), t->family, t->dport,
                                        t->daddr);
    if (!info->established) {
        // Counted when the socket is destroyed (tcp:tcp_destroy_sock), when the reason,
        // if the kernel reports one after this transition, has arrived.
        info->failed = 1;
        if (early)
            info->error = early->error;
        else
            fill_pair(failed_close.lookup(&zero), sk, 0, t->family, t->dport, t->daddr);
        return;
    }

    u64 duration = bpf_ktime_get_ns() - info->start_ns;
    add_rtt(info);  // the RTT the connection had at its end
    struct conn_val *val = series(&info->key);
    if (val) {
        __sync_fetch_and_add(&val->closed, 1);
        __sync_fetch_and_add(&val->duration_sum_ns, duration);
        u32 b = BUCKET_INDEX(duration);
        if (b <= NBUCKETS)
            __sync_fetch_and_add(&val->buckets[b], 1);
#if DURATION_EXP
        EXP_COUNT(val->duration_exp, duration);
#endif
    }
#if EMIT_EVENTS
    struct close_event *ev = close_events.ringbuf_reserve(sizeof(struct close_event));
    if (ev) {
        ev->duration_ns = duration;
        __builtin_memcpy(ev->laddr, t->saddr, 16);
        __builtin_memcpy(ev->raddr, t->daddr, 16);
        ev->lport = t->sport;
        ev->rport = t->dport;
        ev->family = t->family;
        ev->direction = info->key.direction;
        ev->cgroup = info->key.cgroup;
        close_events.ringbuf_submit(ev, 0);
    } else {
        count(counters.lookup(&(int){C_EVENTS_LOST}), 1);
    }
#endif
    int first = 0;
    struct closed_slot *slot = just_closed.lookup(&first);
    if (slot) {
        slot->sk = sk;
        slot->key = info->key;
    }
    forget(sk);
}

static __always_inline void on_state(void *ctx, u64 sk, int oldstate, int newstate,
                                     struct tuple *t, u8 family)
{
    if (TEST_SKIP_ESTABLISHED && newstate == S_ESTABLISHED)
        return;
    if (newstate == S_SYN_SENT) {
        on_birth(sk, DIR_OUTBOUND, t, family);
        return;
    }
    if (newstate == S_SYN_RECV) {
        on_birth(sk, DIR_INBOUND, t, family);
        return;
    }
    struct sock_info *info = socks.lookup(&sk);
    if (!info)
        return; // opened before we started, or never tracked
    // An ESTABLISHED run the kernel skipped (see on_birth) is made up for late, when the
    // connection leaves a state only established ones have: counted opened, not failed.
    if (newstate == S_ESTABLISHED || WAS_ESTABLISHED(oldstate))
        on_established(info);
    if (newstate == S_CLOSE)
        on_close(ctx, sk, info, t);
}

struct addrs {
    u8 s4[4];
    u8 d4[4];
    u8 s6[16];
    u8 d6[16];
};

// The verifier forbids variable-offset reads of the tracepoint context, so
// address arrays are copied to the stack before they are inspected.
static __always_inline void read_addrs(struct addrs *a, const void *s4, const void *d4,
                                       const void *s6, const void *d6)
{
    bpf_probe_read_kernel(a->s4, 4, s4);
    bpf_probe_read_kernel(a->d4, 4, d4);
    bpf_probe_read_kernel(a->s6, 16, s6);
    bpf_probe_read_kernel(a->d6, 16, d6);
}

// Fills *t from the `args` of any of the tracepoints here (they share the
// family, ports and address fields, but each has its own args type, hence a
// macro); evaluates to the normalised family.
#define TUPLE_OF_ARGS(t) ({                                                        \
    struct addrs a_;                                                               \
    read_addrs(&a_, args->saddr, args->daddr, args->saddr_v6, args->daddr_v6);     \
    fill_tuple(t, args->family, args->sport, args->dport, a_.s4, a_.d4, a_.s6, a_.d6); \
})

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    struct tuple t = {};
    u8 family = TUPLE_OF_ARGS(&t);
    on_state(args, (u64)args->skaddr, args->oldstate, args->newstate, &t, family);
    return 0;
}

// The series a socket's retransmissions and resets count in: its own if we track it (or it
// closed just before, on this CPU), else the overflow series of no direction, which the
// sockets older than the exporter share (shown as direction="other").
static __always_inline struct conn_val *series_of_socket(u64 sk)
{
    struct sock_info *info = socks.lookup(&sk);
    if (info)
        return series(&info->key);
    int first = 0;
    struct closed_slot *slot = just_closed.lookup(&first);
    if (slot && slot->sk == sk && sk)
        return series(&slot->key);
    struct conn_key unknown = {};
    unknown.overflow = 1;
    return series(&unknown);
}

// An inbound connection's series from the listener's side of a tuple (local source), for
// what happens before a socket of ours exists: a SYN-ACK resent, a reset to a closed port.
static __always_inline struct conn_val *series_of_listener(struct tuple *t)
{
    struct conn_key key = {};
    fill_key(&key, DIR_INBOUND, t, t->family);
    return series(&key);
}

// Tests only: take a refused connect's report from tcp:tcp_receive_reset, which fires
// before CLOSE on every kernel, instead of sock:inet_sk_error_report, which follows it on
// this one: the order kernels before 6.10 had for timeouts, driven through the same code.
#ifndef TEST_ERROR_BEFORE_CLOSE
#define TEST_ERROR_BEFORE_CLOSE 0
#endif

TRACEPOINT_PROBE(tcp, tcp_receive_reset)
{
    u64 sk = (u64)args->skaddr;
    struct conn_val *val = series_of_socket(sk);
    if (val)
        __sync_fetch_and_add(&val->resets_received, 1);
#if TEST_ERROR_BEFORE_CLOSE
    struct sock_info *info = socks.lookup(&sk);
    if (!info)
        return 0;
    struct tuple t = {};
    TUPLE_OF_ARGS(&t);
    on_error_report(info->established ? 104 /* ECONNRESET */ : 111 /* ECONNREFUSED */, &t);
#endif
    return 0;
}

#if !TEST_ERROR_BEFORE_CLOSE
TRACEPOINT_PROBE(sock, inet_sk_error_report)
{
    if (args->protocol != IPPROTO_TCP)
        return 0;
    struct tuple t = {};
    TUPLE_OF_ARGS(&t);
    on_error_report(args->error, &t);
    return 0;
}
#endif

TRACEPOINT_PROBE(tcp, tcp_destroy_sock)
{
    u64 sk = (u64)args->skaddr;
    struct sock_info *info = socks.lookup(&sk);
    if (!info)
        return 0;
    if (info->established) {
        // Destroyed right after CLOSE, whose run the kernel skipped: the close
        // is counted here, microseconds late.
        struct tuple t = {};
        TUPLE_OF_ARGS(&t);
        on_close(args, sk, info, &t);
        return 0;
    }
    if (info->failed) {
        count_failure(info);
        // Its close no longer waits for an error: none may pair with it after this.
        int zero = 0;
        struct pair_slot *slot = failed_close.lookup(&zero);
        if (slot && slot->valid && slot->sk == sk)
            slot->valid = 0;
    }
    forget(sk);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    struct conn_val *val = series_of_socket((u64)args->skaddr);
    u32 kind = args->state == S_SYN_SENT ? RETRANS_SYN : RETRANS_DATA;
    if (val && kind < NRETRANS)
        __sync_fetch_and_add(&val->retransmits[kind], 1);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_synack)
{
    struct tuple t = {};
    TUPLE_OF_ARGS(&t);
    struct conn_val *val = series_of_listener(&t);
    if (val)
        __sync_fetch_and_add(&val->retransmits[RETRANS_SYNACK], 1);
    return 0;
}

// tcp:tcp_send_reset's `reason` is an enum (Linux 6.10+) that the 6.1 fallback headers
// lack; it is not read, so a stand-in of its size serves, under a name of its own so that
// headers which do have it keep theirs.
#define sk_rst_reason ebpf_net_rst_reason
enum ebpf_net_rst_reason { EBPF_NET_RST_REASON_ANY };

// The reset's own addresses are socket addresses (uapi struct sockaddr_in/_in6: family,
// port in network order, then the address), the sender's first.
struct reset_addr {
    u16 family;
    u16 port;
    u32 flowinfo_or_v4;
    u8 v6[16];
};

TRACEPOINT_PROBE(tcp, tcp_send_reset)
{
    u64 sk = (u64)args->skaddr;
    struct conn_val *val;
    if (sk) {
        val = series_of_socket(sk);
    } else {
        // No socket: the reply to a segment for a port nobody listens on (or a stale one).
        struct reset_addr local = {}, remote = {};
        bpf_probe_read_kernel(&local, sizeof(local), args->saddr);
        bpf_probe_read_kernel(&remote, sizeof(remote), args->daddr);
        struct tuple t = {};
        u8 v4l[4], v4r[4];
        __builtin_memcpy(v4l, &local.flowinfo_or_v4, 4);
        __builtin_memcpy(v4r, &remote.flowinfo_or_v4, 4);
        fill_tuple(&t, local.family, ntohs(local.port), ntohs(remote.port), v4l, v4r,
                   local.v6, remote.v6);
        val = series_of_listener(&t);
    }
    if (val)
        __sync_fetch_and_add(&val->resets_sent, 1);
    return 0;
}

// Every ACK an established connection processes (tcp_rcv_established): the kernel's smoothed
// RTT is kept, and sampled into the histogram at most every RTT_SAMPLE_NS (and at the close).
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    u64 sk = (u64)args->skaddr;
    struct sock_info *info = socks.lookup(&sk);
    if (!info || !info->established)
        return 0;
    info->srtt_us = args->srtt;
    u64 now = bpf_ktime_get_ns();
    if (now < info->rtt_due_ns)
        return 0;
    info->rtt_due_ns = now + RTT_SAMPLE_NS;
    add_rtt(info);
    return 0;
}

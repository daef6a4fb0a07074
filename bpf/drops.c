// Packets the kernel dropped, by its own reason: skb:kfree_skb fires for every socket buffer
// freed as a drop (consume_skb, a separate tracepoint, for the rest), with the reason the
// dropping code gave, the function that dropped it and the buffer's L3 protocol.
//
// Portability rule for every program in bpf/: read only tracepoint arguments (their layout
// comes from tracefs at compile time), packet bytes and the contexts of cgroup-attached
// programs, never kernel-internal struct layouts. The packet's transport protocol is not
// among the tracepoint's arguments, so the loader tells it from the reason and the function.
//
// Compile-time parameters (#defined by exporter/drops/loader.py):
//   MAX_KEYS   the bound of the `drops` map (distinct reason, function, L3 protocol)

// The tracepoint's `reason` is typed enum skb_drop_reason, which bcc needs complete to
// lay the arguments out: the headers define it (its numbering is not used: the loader
// names reasons from tracefs).
#if __has_include(<net/dropreason.h>)
#include <net/dropreason.h>
#else
#include <linux/skbuff.h>
#endif
#include "drops.h"  // counter indexes: shared with the loader
#include "counters.h"

struct drop_key {
    u64 location;  // the address in the kernel function that dropped it
    u32 reason;    // enum skb_drop_reason, numbered as this kernel's tracefs format says
    u16 protocol;  // the buffer's L3 protocol (ETH_P_*, host order, as the tracepoint gives)
    u16 pad;
};

BPF_HASH(drops, struct drop_key, u64, MAX_KEYS);
BPF_ARRAY(drop_counters, u64, NDROP_COUNTERS);

TRACEPOINT_PROBE(skb, kfree_skb)
{
    struct drop_key key = {};
    key.location = (u64)args->location;
    key.reason = args->reason;
    key.protocol = args->protocol;
    u64 zero = 0;
    u64 *n = drops.lookup_or_try_init(&key, &zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        count(drop_counters.lookup(&(int){D_KEYS_FULL}), 1);
    return 0;
}

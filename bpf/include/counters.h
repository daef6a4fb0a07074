// The self-metrics every program keeps about itself, in its BPF_ARRAY of u64 counters (one
// index each, #defined in the program's header: C_* in connections.h, F_* in flows.h, H_*
// in http.h), which its loader reads.
//
// Every count goes through count(), given the counter the program looked up in its array:
//     count(flow_counters.lookup(&(int){F_UNPARSED}), 1);
// The lookup is written at the call: bcc rewrites a map's calls only where the program's
// own file has them (not in a macro, an included header, or through a pointer to the map).

// Adds `delta` to the counter (none if the lookup found nothing), atomically: every CPU
// shares the array.
static __always_inline void count(u64 *counter, s64 delta)
{
    if (counter)
        __sync_fetch_and_add(counter, delta);
}

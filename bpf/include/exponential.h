// Exponential histograms: durations counted by powers of two of seconds, as Prometheus native
// histograms (schema 0) and OpenTelemetry exponential histograms (scale 0) have them, so that
// both sinks carry the kernel's counts with nothing re-bucketed (exporter/model/exponential.py).
//
// A histogram is an array of EXP_SLOTS u64 counts: slot 0 the zero bucket (a duration of 0),
// slot 1 + k the bucket (2^(i-1), 2^i] s with i = FIRST + k. The loader #defines EXP_SLOTS and
// EXP_INDEX(ns), a binary search over the bounds in nanoseconds rounded down (exponential.cflags).

// The slot of a duration in nanoseconds.
#define EXP_SLOT(d) ((d) ? 1 + EXP_INDEX(d) : 0)

// One duration into a histogram: `counts` is the array (shared by every CPU).
#define EXP_COUNT(counts, d) __sync_fetch_and_add(&(counts)[EXP_SLOT(d)], 1)

// What bpf/drops.c and exporter/drops/loader.py share. The loader reads the
// `#define NAME <integer>` lines here through exporter/host/contract.py: keep each on one
// line, with an integer literal as its value.

// Indexes into `drop_counters` (see counters.h): self-metrics the program keeps about itself.
#define D_KEYS_FULL 0  // drops not counted by their key because the map was full
#define NDROP_COUNTERS 1

// What bpf/flows.c and exporter/flows/ share. The loader reads the `#define NAME <integer>`
// lines here through exporter/host/contract.py: keep each on one line, with an integer
// literal as its value. The directions are packet.h's (DIR_*), shared with bpf/http.c.

// Indexes into `flow_counters` (see counters.h).
#define F_NEW_FLOWS 0   // entries inserted; with the live count, gives evictions
#define F_UNPARSED 1    // IP packets whose transport header could not be read or reached
#define F_UNCOUNTED 2   // packets of a new flow the full map found no room for
#define NF_COUNTERS 3

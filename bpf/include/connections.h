// What bpf/connections.c and exporter/connections/loader.py share. The loader reads the
// `#define NAME <integer>` lines here through exporter/host/contract.py: keep each on one
// line, with an integer literal as its value.

// A connection's direction (conn_key.direction, close_event.direction); the loader names
// them after what follows DIR_, in lower case.
#define DIR_INBOUND 1
#define DIR_OUTBOUND 2

// Why a connection failed: indexes into conn_val.failures. Named after what follows FAIL_,
// in lower case, they are exporter/model/snapshot.py's FAILURE_REASONS, in this order: the
// loader checks that at load.
#define FAIL_REFUSED 0
#define FAIL_TIMEOUT 1
#define FAIL_RESET 2
#define FAIL_OTHER 3
#define NFAIL 4

// Kinds of retransmission: indexes into conn_val.retransmits, named after what follows
// RETRANS_, in lower case (the `type` label).
#define RETRANS_DATA 0    // a segment of an opened connection (tcp:tcp_retransmit_skb)
#define RETRANS_SYN 1     // a SYN of a connect() (tcp:tcp_retransmit_skb in SYN_SENT)
#define RETRANS_SYNACK 2  // a listener's SYN-ACK (tcp:tcp_retransmit_synack)
#define NRETRANS 3

// Indexes into `counters` (see counters.h): self-metrics the program keeps about itself.
#define C_SOCKS_TRACKED 0
#define C_SOCKS_FULL 1
#define C_SERIES_OVERFLOW 2
#define C_EVENTS_LOST 3
#define NCOUNTERS 4

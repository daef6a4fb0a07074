// What bpf/dns.c and exporter/dns/ share. The loader reads the `#define NAME <integer>`
// lines here through exporter/host/contract.py: keep each on one line, with an integer
// literal as its value. The directions and roles are packet.h's (DIR_*, ROLE_*).

#define DNS_BUF 512          // room for the message bytes read to parse (a power of 2)
#define DNS_QUESTION_END 272 // the header (12), the longest name (255), type and class (4)
#define DNS_NAME_LEN 128     // query-name bytes (wire format) kept for events and labels
#define DNS_PACKET_LEN 512   // message bytes the `dns` tool gets
#define DNS_MAX_LABELS 128   // labels walked in a name (255 bytes hold at most 127)
#define DNS_TCP_MESSAGES 2   // messages parsed in one TCP segment (glibc sends A and AAAA)

// Header flags.
#define DNS_QR 0x8000        // a response
#define DNS_TC 0x0200        // truncated: the client retries over TCP

// flow_val.dns_tcp: where the next DNS message of a TCP flow starts (flow_val.dns_next).
#define DNS_TCP_PREFIX 1     // the sequence number where its length prefix starts
#define DNS_TCP_BARE 2       // the sequence number where it starts, its prefix sent before

// Series flags (dns_series_key.flags).
#define DNS_NAME_CUT 1       // the name was longer than DNS_NAME_LEN: cut
#define DNS_NAME_OTHER 2     // the name cap (dns.max_names) was reached: "other"

// Indexes into `dns_counters` (see counters.h).
#define D_MALFORMED 0        // not DNS, or cut short, on a DNS port
#define D_UNMATCHED 1        // an answer with no query outstanding
#define D_TRUNCATED 2        // an answer with the TC bit: not in the histograms
#define D_RETRIES 3          // a query repeating an outstanding one (same flow and id)
#define D_QUERIES_FULL 4     // a query the full query map found no room for
#define D_EVENTS_LOST 5
#define D_SERIES_OVERFLOW 6
#define ND_COUNTERS 7

// What bpf/http.c and exporter/http/ share. The loader reads the `#define NAME <integer>`
// lines here through exporter/host/contract.py: keep each on one line, with an integer
// literal as its value. The directions and roles are packet.h's (DIR_*, ROLE_*).

#define QLEN 4         // outstanding requests per connection (pipelining); a power of 2
#define PROBES 4       // places tried for a new connection before it counts as untracked
#define PATH_LEN 64
#define REASON_LEN 32
#define ROUTE_LEN 32
#define PACKET_LEN 1024

// Indexes into `http_counters` (see counters.h).
#define H_UNMATCHED 0     // a status line with no request outstanding
#define H_QUEUE_FULL 1    // a request beyond QLEN outstanding: not tracked
#define H_SHORT 2         // looked like a request/status line but was cut short
#define H_EVENTS_LOST 3
#define H_SERIES_OVERFLOW 4
#define H_CONNS_FULL 5
#define H_UNCONFIRMED 6   // requests on connections whose handshake was not seen
#define NH_COUNTERS 7

// Method codes, from 1 up without gaps; 0 is a method not listed. The loader names them
// after what follows M_ (METHODS in exporter/http/loader.py).
#define M_GET 1
#define M_POST 2
#define M_PUT 3
#define M_DELETE 4
#define M_HEAD 5
#define M_OPTIONS 6
#define M_PATCH 7
#define M_CONNECT 8
#define M_TRACE 9

// Micro-benchmark entry: `micro(op, iterations)` runs one engine operation `iterations` times in C and
// returns how many ran (or -errno when its fixture could not be built). perf/micro.ts times batches of
// it with benchmark.js, so what is measured is the operation, not the N-API call around it.
//
// The fixtures are private to this file and built on first use: a frame, or two or three TCP instances
// joined by an in-memory "wire" that delivers segments synchronously (pump). Nothing here runs on the
// engine thread or touches a device; the fixtures are freed by an environment cleanup hook.
#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "micro.h"

extern "C" {
#include "arena.h"
#include "ipout.h"
#include "tcp/tcp.h"
#include "wire/checksum.h"
#include "wire/eth.h"
#include "wire/ipv4.h"
#include "wire/tcp.h"
}

namespace {

constexpr cpb_ip4_t IP_A = 0x0a000001;  // 10.0.0.1: the client
constexpr cpb_ip4_t IP_B = 0x0a000002;  // 10.0.0.2: the server (and the adopting host C)
constexpr uint16_t PORT = 80;
constexpr size_t PAYLOAD = 64;
constexpr size_t BUFFERED = 64 * 1024;

volatile uint64_t g_sink;  // results go here so the compiler cannot drop the work

// ---- frames --------------------------------------------------------------------------------------

struct FrameFixture {
  uint8_t frame[1600];
  size_t len = 0;
  uint8_t out[1600];
  uint8_t csum_buf[1500];
  struct eth_repr eth{};
  struct ipv4_repr ip{};
  struct tcp_repr tcp{};
};

void frame_build(FrameFixture *f) {
  std::memset(&f->eth, 0, sizeof(f->eth));
  for (int i = 0; i < 6; i++) {
    f->eth.dst[i] = (uint8_t)(0x02 + i);
    f->eth.src[i] = (uint8_t)(0x12 + i);
  }
  f->eth.ethertype = 0x0800;
  std::memset(&f->tcp, 0, sizeof(f->tcp));
  f->tcp.sport = 40000;
  f->tcp.dport = PORT;
  f->tcp.seq = 1000;
  f->tcp.ack = 2000;
  f->tcp.flags = TCP_ACK | TCP_PSH;
  f->tcp.window = 512;
  f->tcp.opts.has_ts = true;
  f->tcp.opts.ts_val = 7;
  f->tcp.opts.ts_ecr = 9;
  size_t th = tcp_header_len(&f->tcp);
  std::memset(&f->ip, 0, sizeof(f->ip));
  f->ip.src = IP_A;
  f->ip.dst = IP_B;
  f->ip.proto = 6;
  f->ip.ttl = 64;
  f->ip.dont_fragment = true;
  f->ip.payload_len = (uint16_t)(th + PAYLOAD);
  int e = eth_emit(&f->eth, f->frame, sizeof(f->frame));
  int i = ipv4_emit(&f->ip, f->frame + e, sizeof(f->frame) - (size_t)e);
  uint8_t *seg = f->frame + e + i;
  tcp_emit_header(&f->tcp, seg, sizeof(f->frame) - (size_t)(e + i));
  std::memset(seg + th, 'x', PAYLOAD);
  tcp_fill_checksum(seg, th + PAYLOAD, IP_A, IP_B);
  f->len = (size_t)(e + i) + th + PAYLOAD;
  for (size_t k = 0; k < sizeof(f->csum_buf); k++) f->csum_buf[k] = (uint8_t)(k * 7 + 1);
}

// Ethernet + IPv4 + TCP parse of one 64-byte-payload segment, checksums verified: 0 per good frame.
int64_t frame_parse(FrameFixture *f, int64_t n) {
  uint64_t acc = 0;
  for (int64_t k = 0; k < n; k++) {
    struct eth_repr eth;
    const uint8_t *l3;
    size_t l3len;
    if (eth_parse(f->frame, f->len, &eth, &l3, &l3len) < 0) return -EINVAL;
    struct ipv4_repr ip;
    const uint8_t *l4;
    if (ipv4_parse(l3, l3len, &ip, &l4) < 0) return -EINVAL;
    struct tcp_repr tcp;
    if (tcp_parse(l4, ip.payload_len, ip.src, ip.dst, true, &tcp) < 0) return -EINVAL;
    acc += tcp.seq + tcp.payload_len;
  }
  g_sink = acc;
  return n;
}

// The same frame written header by header, payload copied, TCP checksum filled.
int64_t frame_emit(FrameFixture *f, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    int e = eth_emit(&f->eth, f->out, sizeof(f->out));
    int i = ipv4_emit(&f->ip, f->out + e, sizeof(f->out) - (size_t)e);
    uint8_t *seg = f->out + e + i;
    int th = tcp_emit_header(&f->tcp, seg, sizeof(f->out) - (size_t)(e + i));
    if (e < 0 || i < 0 || th < 0) return -EINVAL;
    std::memcpy(seg + th, f->frame + f->len - PAYLOAD, PAYLOAD);
    tcp_fill_checksum(seg, (size_t)th + PAYLOAD, IP_A, IP_B);
  }
  g_sink = f->out[f->len - 1];
  return n;
}

int64_t checksum(FrameFixture *f, size_t len, int64_t n) {
  uint64_t acc = 0;
  for (int64_t k = 0; k < n; k++) acc += csum_fold(csum_add((uint32_t)k, f->csum_buf, len));
  g_sink = acc;
  return n;
}

// ---- TCP instances on a synchronous in-memory wire -------------------------------------------------

struct Wire;

struct Host {
  Wire *wire = nullptr;
  cpb_ip4_t ip = 0;
  struct cpb_arena arena{};
  std::vector<uint8_t> tcp_mem;
  struct cpb_tcp *t = nullptr;
  uint8_t out[1600];
  cpb_ip4_t osrc = 0, odst = 0;
  bool drop = false;  // what it sends is discarded (timed loops: no allocation, no delivery)
  bool capture = false;
  std::vector<uint8_t> captured;  // the last segment sent while capture is set
};

struct Segment {
  cpb_ip4_t src, dst;
  std::vector<uint8_t> bytes;
};

struct Wire {
  std::deque<Segment> queue;
  std::vector<Host *> hosts;
  cpb_time_t now = 1000000;
};

uint8_t *host_begin(void *ctx, cpb_ip4_t src, cpb_ip4_t dst, size_t *cap) {
  Host *h = static_cast<Host *>(ctx);
  h->osrc = src;
  h->odst = dst;
  *cap = sizeof(h->out);
  return h->out;
}

void host_commit(void *ctx, size_t len) {
  Host *h = static_cast<Host *>(ctx);
  tcp_fill_checksum(h->out, len, h->osrc, h->odst);
  if (h->capture) {
    h->captured.assign(h->out, h->out + len);
    return;
  }
  if (h->drop) return;
  h->wire->queue.push_back(Segment{h->osrc, h->odst, std::vector<uint8_t>(h->out, h->out + len)});
}

int host_open(Host *h, Wire *w, cpb_ip4_t ip, uint32_t chunks) {
  h->wire = w;
  h->ip = ip;
  struct cpb_arena_config ac{};
  ac.slots = 16;
  ac.chunks = chunks;
  ac.try_hugepages = false;
  int rc = cpb_arena_create(&h->arena, &ac);
  if (rc != 0) return rc;
  struct tcp_config cfg;
  tcp_config_defaults(&cfg);
  cfg.local_ip = ip;
  cfg.max_flows = 16;
  std::memset(cfg.iss_secret, 7, sizeof(cfg.iss_secret));
  h->tcp_mem.assign(tcp_sizeof(), 0);
  h->t = reinterpret_cast<struct cpb_tcp *>(h->tcp_mem.data());
  struct cpb_ipout out{};
  out.ctx = h;
  out.begin = host_begin;
  out.commit = host_commit;
  rc = tcp_init(h->t, &h->arena, &cfg, &out);
  if (rc != 0) {
    cpb_arena_destroy(&h->arena);
    h->t = nullptr;
  }
  w->hosts.push_back(h);
  return rc;
}

void host_close(Host *h) {
  if (!h->t) return;
  tcp_fini(h->t);
  cpb_arena_destroy(&h->arena);
  h->t = nullptr;
}

void drain_events(Host *h) {
  struct tcp_event ev;
  while (tcp_next_event(h->t, &ev)) {
  }
}

// Delivers queued segments (and whatever they cause) until the wire is quiet; bounded.
void pump(Wire *w) {
  for (int steps = 0; steps < 100000 && !w->queue.empty(); steps++) {
    Segment s = std::move(w->queue.front());
    w->queue.pop_front();
    for (Host *h : w->hosts) {
      if (h->ip == s.dst && !h->drop) {
        tcp_input(h->t, s.src, s.dst, s.bytes.data(), s.bytes.size(), w->now);
        break;
      }
    }
    w->now += 10;
  }
}

// A connection from A to B: its id on each side. 0 on success.
int connect_pair(Wire *w, Host *a, Host *b, uint64_t listener, uint16_t sport, uint64_t *fa, uint64_t *fb) {
  int rc = tcp_connect(a->t, IP_B, PORT, sport, w->now, fa);
  if (rc != 0) return rc;
  pump(w);
  rc = tcp_accept(b->t, listener, fb);
  drain_events(a);
  drain_events(b);
  return rc;
}

struct TcpFixture {
  Wire wire;
  Host a, b, c;
  uint64_t listener = 0;
  // input fast path
  uint64_t fa = 0, fb = 0;
  std::vector<uint8_t> seg;  // A's captured data segment, replayed with a moving sequence number
  uint32_t seq0 = 0;
  uint64_t sent = 0;
  std::vector<uint8_t> rbuf;
  // snapshot + restore
  uint64_t fb_empty = 0, fb_full = 0;
  std::vector<uint8_t> snap;
  bool open = false;

  ~TcpFixture() {
    host_close(&a);
    host_close(&b);
    host_close(&c);
  }
};

int tcp_fixture_build(TcpFixture *f) {
  int rc;
  if ((rc = host_open(&f->a, &f->wire, IP_A, 512)) != 0) return rc;
  if ((rc = host_open(&f->b, &f->wire, IP_B, 512)) != 0) return rc;
  if ((rc = tcp_listen(f->b.t, PORT, 16, &f->listener)) != 0) return rc;
  if ((rc = connect_pair(&f->wire, &f->a, &f->b, f->listener, 40001, &f->fa, &f->fb)) != 0) return rc;
  tcp_setopt(f->a.t, f->fa, TCP_OPT_NODELAY, 1);
  // One 64-byte data segment from A, captured instead of sent: the template of the input loop.
  static const uint8_t data[PAYLOAD] = {0};
  f->a.capture = true;
  long n = tcp_send(f->a.t, f->fa, data, sizeof(data), f->wire.now);
  tcp_poll(f->a.t, f->wire.now);  // the output pass may run only here
  f->a.capture = false;
  if (n != (long)PAYLOAD) return -EPROTO;
  if (f->a.captured.size() < PAYLOAD + TCP_MIN_HDR_LEN) return -EBADMSG;
  f->seg = f->a.captured;
  f->seq0 = cpb_get_be32(f->seg.data() + 4);
  f->rbuf.assign(256 * 1024, 0);
  // Snapshot sources on B: one idle flow, one with 64 KiB unread; both frozen.
  uint64_t fa2, fa3;
  if ((rc = connect_pair(&f->wire, &f->a, &f->b, f->listener, 40002, &fa2, &f->fb_empty)) != 0) return rc;
  if ((rc = connect_pair(&f->wire, &f->a, &f->b, f->listener, 40003, &fa3, &f->fb_full)) != 0) return rc;
  std::vector<uint8_t> big(BUFFERED, 'y');
  size_t off = 0;
  for (int i = 0; i < 1000 && off < big.size(); i++) {
    long k = tcp_send(f->a.t, fa3, big.data() + off, big.size() - off, f->wire.now);
    if (k > 0) off += (size_t)k;
    pump(&f->wire);
    f->wire.now += 1000;
    tcp_poll(f->a.t, f->wire.now);
    tcp_poll(f->b.t, f->wire.now);
    pump(&f->wire);
  }
  drain_events(&f->a);
  drain_events(&f->b);
  struct tcp_flow_info fi;
  if (tcp_flow_info(f->b.t, f->fb_full, &fi) != 0 || fi.readable_bytes != BUFFERED) return -ENODATA;
  if ((rc = tcp_freeze(f->b.t, f->fb_empty, f->wire.now)) != 0) return rc;
  if ((rc = tcp_freeze(f->b.t, f->fb_full, f->wire.now)) != 0) return rc;
  // C adopts what B snapshots (it answers for B's address; what it sends goes nowhere).
  if ((rc = host_open(&f->c, &f->wire, IP_B, 512)) != 0) return rc;
  f->c.drop = true;
  f->b.drop = true;
  f->snap.assign(BUFFERED + 4096, 0);
  f->open = true;
  return 0;
}

// B takes A's next in-order 64-byte segment: checksum, lookup, PAWS, window checks, queueing, ACK
// decision. B's ACKs are discarded; its buffer is read out every 512 segments (part of the cost).
int64_t tcp_input_fast(TcpFixture *f, int64_t n) {
  uint8_t *s = f->seg.data();
  size_t len = f->seg.size();
  for (int64_t k = 0; k < n; k++) {
    cpb_put_be32(s + 4, f->seq0 + (uint32_t)(f->sent * PAYLOAD));
    cpb_put_be16(s + 16, 0);
    tcp_fill_checksum(s, len, IP_A, IP_B);
    f->wire.now += 1;
    tcp_input(f->b.t, IP_A, IP_B, s, len, f->wire.now);
    if (++f->sent % 512 == 0) {
      tcp_recv(f->b.t, f->fb, f->rbuf.data(), f->rbuf.size(), f->wire.now);
      drain_events(&f->b);
    }
  }
  return n;
}

// Snapshot of a frozen TCB on B, adopt on C, then freeze + release there (so C never fills up).
int64_t snapshot_restore(TcpFixture *f, uint64_t flow, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    long len = tcp_snapshot(f->b.t, flow, f->snap.data(), f->snap.size(), f->wire.now);
    if (len < 0) return len;
    uint64_t id;
    int rc = tcp_adopt(f->c.t, f->snap.data(), (size_t)len, f->wire.now, &id);
    if (rc != 0) return rc;
    if ((rc = tcp_freeze(f->c.t, id, f->wire.now)) != 0 || (rc = tcp_release(f->c.t, id, f->wire.now)) != 0) return rc;
    drain_events(&f->c);
  }
  return n;
}

// ---- the entry ----------------------------------------------------------------------------------

FrameFixture *g_frame = nullptr;
TcpFixture *g_tcp = nullptr;
bool g_hook = false;

void cleanup(void *) {
  delete g_frame;
  delete g_tcp;
  g_frame = nullptr;
  g_tcp = nullptr;
}

// micro(op, iterations) -> iterations run, or -errno (unknown op: -EINVAL; fixture failed: its error).
Napi::Value Micro(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsNumber()) return Napi::Number::New(env, -EINVAL);
  std::string op = info[0].As<Napi::String>().Utf8Value();
  int64_t n = info[1].As<Napi::Number>().Int64Value();
  if (n < 0) return Napi::Number::New(env, -EINVAL);
  if (!g_hook) {
    napi_add_env_cleanup_hook(env, cleanup, nullptr);
    g_hook = true;
  }
  if (op == "frame_parse" || op == "frame_emit" || op == "checksum_64" || op == "checksum_1460") {
    if (!g_frame) {
      g_frame = new FrameFixture();
      frame_build(g_frame);
    }
    int64_t r = op == "frame_parse" ? frame_parse(g_frame, n)
              : op == "frame_emit"  ? frame_emit(g_frame, n)
              : op == "checksum_64" ? checksum(g_frame, 64, n)
                                    : checksum(g_frame, 1460, n);
    return Napi::Number::New(env, (double)r);
  }
  if (op == "tcp_input" || op == "snapshot_restore_empty" || op == "snapshot_restore_64k") {
    if (!g_tcp) {
      g_tcp = new TcpFixture();
      int rc = tcp_fixture_build(g_tcp);
      if (rc != 0) {
        delete g_tcp;
        g_tcp = nullptr;
        return Napi::Number::New(env, rc < 0 ? rc : -rc);
      }
    }
    int64_t r = op == "tcp_input" ? tcp_input_fast(g_tcp, n)
              : snapshot_restore(g_tcp, op == "snapshot_restore_empty" ? g_tcp->fb_empty : g_tcp->fb_full, n);
    return Napi::Number::New(env, (double)r);
  }
  return Napi::Number::New(env, -EINVAL);
}

}  // namespace

void cpb_micro_register(Napi::Env env, Napi::Object exports) {
  exports.Set("micro", Napi::Function::New(env, Micro));
}

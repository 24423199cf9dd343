// N-API binding for one engine. Converts arguments, calls the engine under its lock, converts results.
// No protocol logic lives here: validation and defaults are runtime/'s job, errno values go back as
// negative numbers (or as an Error with .code for the constructor) and runtime/ maps them to typed errors.
#include <arpa/inet.h>
#include <napi.h>

#include <cstdio>
#include <string>
#include <vector>

#include "lane_wrap.h"
#include "micro.h"
#include "tls_wrap.h"
#include "wakeup.h"

extern "C" {
#include "dev/lbsteer.h"
#include "engine.h"
}

namespace {

std::string errno_code(int e) {
  switch (e) {
    case ENODEV: return "ENODEV";
    case ENOENT: return "ENOENT";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EBUSY: return "EBUSY";
    case ENOMEM: return "ENOMEM";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENOTSUP: return "ENOTSUP";
    case EMFILE: return "EMFILE";
    case EAGAIN: return "EAGAIN";
    default: return "E" + std::to_string(e);
  }
}

Napi::Error errno_error(Napi::Env env, int neg_errno, const std::string &msg) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, errno_code(-neg_errno)));
  err.Set("errno", Napi::Number::New(env, neg_errno));
  return err;
}

bool parse_ip(const std::string &s, cpb_ip4_t *out) {
  struct in_addr a;
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

std::string ip_str(cpb_ip4_t ip) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a;
  a.s_addr = htonl(ip);
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

bool parse_mac(const std::string &s, uint8_t mac[6]) {
  unsigned v[6];
  if (sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) return false;
  for (int i = 0; i < 6; i++) {
    if (v[i] > 255) return false;
    mac[i] = (uint8_t)v[i];
  }
  return true;
}

uint32_t num(const Napi::Object &o, const char *key, uint32_t dflt) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : dflt;
}

bool flag(const Napi::Object &o, const char *key, bool dflt) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : dflt;
}

Napi::Object flow_info_object(Napi::Env env, const struct tcp_flow_info &fi) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", (double)fi.id);
  o.Set("state", tcp_state_name(fi.state));
  o.Set("localAddress", ip_str(fi.local_ip));
  o.Set("localPort", fi.local_port);
  o.Set("remoteAddress", ip_str(fi.remote_ip));
  o.Set("remotePort", fi.remote_port);
  o.Set("sndUna", fi.snd_una);
  o.Set("sndNxt", fi.snd_nxt);
  o.Set("sndWnd", fi.snd_wnd);
  o.Set("rcvNxt", fi.rcv_nxt);
  o.Set("rcvWnd", fi.rcv_wnd);
  o.Set("sndWscale", fi.snd_wscale);
  o.Set("rcvWscale", fi.rcv_wscale);
  o.Set("timestamps", fi.ts_ok);
  o.Set("sack", fi.sack_ok);
  o.Set("nodelay", fi.nodelay);
  o.Set("keepalive", fi.keepalive);
  o.Set("mss", fi.mss);
  o.Set("cwnd", fi.cwnd);
  o.Set("ssthresh", fi.ssthresh);
  o.Set("srttUs", fi.srtt_us);
  o.Set("rttvarUs", fi.rttvar_us);
  o.Set("rtoUs", fi.rto_us);
  o.Set("unackedBytes", fi.unacked_bytes);
  o.Set("unsentBytes", fi.unsent_bytes);
  o.Set("readableBytes", fi.readable_bytes);
  o.Set("bytesIn", (double)fi.bytes_in);
  o.Set("bytesOut", (double)fi.bytes_out);
  o.Set("retransmits", (double)fi.retransmits);
  o.Set("frozen", fi.frozen);
  o.Set("heldSegments", fi.held_segs);
  return o;
}

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod("listen", &EngineWrap::Listen),
                           InstanceMethod("listenNative", &EngineWrap::ListenNative),
                           InstanceMethod("setSpinUs", &EngineWrap::SetSpinUs),
                           InstanceMethod("unlisten", &EngineWrap::Unlisten),
                           InstanceMethod("accept", &EngineWrap::Accept),
                           InstanceMethod("connect", &EngineWrap::Connect),
                           InstanceMethod("send", &EngineWrap::Send),
                           InstanceMethod("recv", &EngineWrap::Recv),
                           InstanceMethod("shutdown", &EngineWrap::Shutdown),
                           InstanceMethod("close", &EngineWrap::Close),
                           InstanceMethod("abort", &EngineWrap::Abort),
                           InstanceMethod("setOption", &EngineWrap::SetOption),
                           InstanceMethod("flowInfo", &EngineWrap::FlowInfo),
                           InstanceMethod("flows", &EngineWrap::Flows),
                           InstanceMethod("stats", &EngineWrap::Stats),
                           InstanceMethod("mac", &EngineWrap::Mac),
                           InstanceMethod("freeze", &EngineWrap::Freeze),
                           InstanceMethod("unfreeze", &EngineWrap::Unfreeze),
                           InstanceMethod("release", &EngineWrap::Release),
                           InstanceMethod("snapshot", &EngineWrap::Snapshot),
                           InstanceMethod("adopt", &EngineWrap::Adopt),
                           InstanceMethod("drainHeld", &EngineWrap::DrainHeld),
                           InstanceMethod("inject", &EngineWrap::Inject),
                           InstanceMethod("wakeTrace", &EngineWrap::WakeTrace),
                           InstanceMethod("pollEvents", &EngineWrap::PollEvents),
                           // the migration lane of native flows (lane_wrap.cc)
                           InstanceMethod("laneKey", &EngineWrap::Lane<&capy::LaneKey>),
                           InstanceMethod("laneDropKey", &EngineWrap::Lane<&capy::LaneDropKey>),
                           InstanceMethod("laneSteer", &EngineWrap::Lane<&capy::LaneSteer>),
                           InstanceMethod("laneMigrate", &EngineWrap::Lane<&capy::LaneMigrate>),
                           InstanceMethod("laneOutcome", &EngineWrap::Lane<&capy::LaneOutcome>),
                           InstanceMethod("laneListen", &EngineWrap::Lane<&capy::LaneListen>),
                           InstanceMethod("laneTake", &EngineWrap::Lane<&capy::LaneTake>),
                           InstanceMethod("laneStats", &EngineWrap::Lane<&capy::LaneStats>),
                           InstanceMethod("ref", &EngineWrap::Ref),
                           InstanceMethod("unref", &EngineWrap::Unref),
                           InstanceMethod("destroy", &EngineWrap::Destroy),
                           // TLS sessions of this engine's flows (tls_wrap.cc)
                           InstanceMethod("tlsCreate", &EngineWrap::Tls<&capy::TlsTable::Create>),
                           InstanceMethod("tlsHandshake", &EngineWrap::Tls<&capy::TlsTable::Handshake>),
                           InstanceMethod("tlsRecv", &EngineWrap::Tls<&capy::TlsTable::Recv>),
                           InstanceMethod("tlsSend", &EngineWrap::Tls<&capy::TlsTable::Send>),
                           InstanceMethod("tlsCloseNotify", &EngineWrap::Tls<&capy::TlsTable::CloseNotify>),
                           InstanceMethod("tlsKeyUpdate", &EngineWrap::Tls<&capy::TlsTable::KeyUpdate>),
                           InstanceMethod("tlsInfo", &EngineWrap::Tls<&capy::TlsTable::Info>),
                           InstanceMethod("tlsSnapshot", &EngineWrap::Tls<&capy::TlsTable::Snapshot>),
                           InstanceMethod("tlsAdopt", &EngineWrap::Tls<&capy::TlsTable::Adopt>),
                           InstanceMethod("tlsServername", &EngineWrap::Tls<&capy::TlsTable::Servername>),
                           InstanceMethod("tlsSetContext", &EngineWrap::Tls<&capy::TlsTable::SetContext>),
                           InstanceMethod("tlsLastError", &EngineWrap::Tls<&capy::TlsTable::LastError>),
                           InstanceMethod("tlsFree", &EngineWrap::Tls<&capy::TlsTable::FreeJs>),
                           InstanceMethod("tlsCount", &EngineWrap::Tls<&capy::TlsTable::Count>),
                       });
  }

  EngineWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Engine(options, onEvents)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    struct cpb_engine_config cfg;
    cpb_engine_config_defaults(&cfg);
    std::string device = o.Get("device").ToString().Utf8Value();
    if (device.size() >= sizeof(cfg.device)) {
      errno_error(env, -EINVAL, "device URI too long").ThrowAsJavaScriptException();
      return;
    }
    snprintf(cfg.device, sizeof(cfg.device), "%s", device.c_str());
    if (!parse_ip(o.Get("address").ToString().Utf8Value(), &cfg.stack.ip)) {
      errno_error(env, -EINVAL, "address is not an IPv4 address").ThrowAsJavaScriptException();
      return;
    }
    cfg.stack.prefix_len = (uint8_t)num(o, "prefixLength", 24);
    Napi::Value gw = o.Get("gateway");
    if (gw.IsString() && !parse_ip(gw.As<Napi::String>().Utf8Value(), &cfg.stack.gateway)) {
      errno_error(env, -EINVAL, "gateway is not an IPv4 address").ThrowAsJavaScriptException();
      return;
    }
    Napi::Value vip = o.Get("vip");
    if (vip.IsString() && !parse_ip(vip.As<Napi::String>().Utf8Value(), &cfg.stack.vip)) {
      errno_error(env, -EINVAL, "vip is not an IPv4 address").ThrowAsJavaScriptException();
      return;
    }
    Napi::Value mac = o.Get("mac");
    if (mac.IsString() && !parse_mac(mac.As<Napi::String>().Utf8Value(), cfg.stack.mac)) {
      errno_error(env, -EINVAL, "mac is not a MAC address").ThrowAsJavaScriptException();
      return;
    }
    cfg.arena.slots = num(o, "maxFlows", cfg.arena.slots);
    cfg.arena.chunks = num(o, "chunks", cfg.arena.chunks);
    cfg.tcp.max_flows = cfg.arena.slots;
    cfg.tcp.rcvbuf = num(o, "rcvbuf", cfg.tcp.rcvbuf);
    cfg.tcp.sndbuf = num(o, "sndbuf", cfg.tcp.sndbuf);
    cfg.tcp.mss = (uint16_t)num(o, "mss", cfg.tcp.mss);
    cfg.tcp.timestamps = flag(o, "timestamps", cfg.tcp.timestamps);
    cfg.tcp.sack = flag(o, "sack", cfg.tcp.sack);
    Napi::Value cc = o.Get("cc");
    if (cc.IsString() && cc.As<Napi::String>().Utf8Value() == "newreno") cfg.tcp.cc = TCP_CC_NEWRENO;
    if (o.Get("timeWaitMs").IsNumber()) cfg.tcp.time_wait_us = num(o, "timeWaitMs", 0) * 1000u;
    if (o.Get("delackMs").IsNumber()) cfg.tcp.delack_us = num(o, "delackMs", 0) * 1000u;
    cfg.spin_us = num(o, "spinUs", cfg.spin_us);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (ur) {
      size_t got = fread(cfg.tcp.iss_secret, 1, sizeof(cfg.tcp.iss_secret), ur);
      (void)got;
      fclose(ur);
    }

    on_events_ = Napi::Persistent(info[1].As<Napi::Function>());
    async_ctx_ = new Napi::AsyncContext(env, "capybara:engine");
    async_ = wakeup_new(env, &EngineWrap::OnAsync, this);
    if (!async_) {
      errno_error(env, -ENOMEM, "cannot create the wake-up handle").ThrowAsJavaScriptException();
      return;
    }

    char err[256] = "";
    int rc = cpb_engine_start(&engine_, &cfg, wakeup_send, async_, err, sizeof(err));
    if (rc != 0) {
      CloseAsync();
      errno_error(env, rc, err[0] ? err : strerror(-rc)).ThrowAsJavaScriptException();
      return;
    }
    napi_add_env_cleanup_hook(env, &EngineWrap::Cleanup, this);
    cleanup_hook_ = true;
  }

  ~EngineWrap() { Stop(); }

 private:
  static void OnAsync(void *arg) { static_cast<EngineWrap *>(arg)->Dispatch(); }

  // Drains pending events under the lock, then calls JS once with [type, id, err, ...].
  void Dispatch() {
    if (!engine_) return;
    dispatch_at_ = cpb_clock_now();
    std::vector<double> evs;
    cpb_engine_enter(engine_);
    struct tcp_event ev;
    while (cpb_engine_next_event(engine_, &ev)) {
      evs.push_back((double)ev.type);
      evs.push_back((double)ev.id);
      evs.push_back((double)ev.err);
    }
    cpb_engine_leave(engine_);
    if (evs.empty()) return;
    Napi::Env env = on_events_.Env();
    Napi::HandleScope scope(env);
    Napi::Array arr = Napi::Array::New(env, evs.size());
    for (size_t i = 0; i < evs.size(); i++) arr.Set((uint32_t)i, evs[i]);
    on_events_.MakeCallback(env.Global(), {arr}, *async_ctx_);
  }

  void CloseAsync() {
    if (!async_) return;
    wakeup_close(async_);
    async_ = nullptr;
  }

  void Stop() {
    tls_.Clear(); /* wipes every session's keys */
    if (engine_) {
      cpb_engine_stop(engine_);
      engine_ = nullptr;
    }
    CloseAsync();
    delete async_ctx_;
    async_ctx_ = nullptr;
  }

  static void Cleanup(void *arg) {
    EngineWrap *self = static_cast<EngineWrap *>(arg);
    self->cleanup_hook_ = false;
    if (self->engine_) {
      cpb_engine_stop(self->engine_);
      self->engine_ = nullptr;
    }
  }

  bool Alive(const Napi::CallbackInfo &info) {
    if (engine_) return true;
    errno_error(info.Env(), -EBADF, "engine destroyed").ThrowAsJavaScriptException();
    return false;
  }

  static uint64_t Id(const Napi::Value &v) { return (uint64_t)v.As<Napi::Number>().DoubleValue(); }

  Napi::Value Listen(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    uint64_t lid = 0;
    cpb_engine_enter(engine_);
    int rc = tcp_listen(cpb_engine_tcp(engine_), (uint16_t)info[0].As<Napi::Number>().Uint32Value(),
                        info[1].As<Napi::Number>().Uint32Value(), &lid);
    cpb_engine_leave(engine_);
    if (rc != 0) {
      errno_error(info.Env(), rc, rc == -EADDRINUSE ? "port already in use" : strerror(-rc)).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), (double)lid);
  }

  // A listener whose flows the engine serves itself with a native app (native/apps/): no events for them.
  Napi::Value ListenNative(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    std::string name = info[2].ToString().Utf8Value();
    const struct cpb_native_app *app = cpb_native_app_find(name.c_str());
    if (!app) {
      errno_error(info.Env(), -EINVAL, "unknown native app \"" + name + "\"").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    uint64_t lid = 0;
    cpb_engine_enter(engine_);
    int rc = cpb_engine_listen_native(engine_, (uint16_t)info[0].As<Napi::Number>().Uint32Value(),
                                      info[1].As<Napi::Number>().Uint32Value(), app, &lid);
    cpb_engine_leave(engine_);
    if (rc != 0) {
      errno_error(info.Env(), rc, rc == -EADDRINUSE ? "port already in use" : strerror(-rc)).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), (double)lid);
  }

  Napi::Value SetSpinUs(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_engine_set_spin_us(engine_, info[0].As<Napi::Number>().Uint32Value());
    return info.Env().Undefined();
  }

  Napi::Value Unlisten(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_time_t now = cpb_engine_enter(engine_);
    int rc = tcp_unlisten(cpb_engine_tcp(engine_), Id(info[0]), now);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), rc);
  }

  Napi::Value Accept(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    uint64_t fid = 0;
    cpb_engine_enter(engine_);
    int rc = tcp_accept(cpb_engine_tcp(engine_), Id(info[0]), &fid);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), rc == 0 ? (double)fid : (double)rc);
  }

  Napi::Value Connect(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_ip4_t dst;
    if (!parse_ip(info[0].ToString().Utf8Value(), &dst)) {
      errno_error(info.Env(), -EINVAL, "host is not an IPv4 address").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    uint64_t fid = 0;
    cpb_time_t now = cpb_engine_enter(engine_);
    int rc = tcp_connect(cpb_engine_tcp(engine_), dst, (uint16_t)info[1].As<Napi::Number>().Uint32Value(),
                         (uint16_t)(info.Length() > 2 ? info[2].As<Napi::Number>().Uint32Value() : 0), now, &fid);
    cpb_engine_leave(engine_);
    if (rc != 0) {
      errno_error(info.Env(), rc, std::string("connect failed: ") + strerror(-rc)).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    return Napi::Number::New(info.Env(), (double)fid);
  }

  Napi::Value Send(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
    cpb_time_t now = cpb_engine_enter(engine_);
    long n = tcp_send(cpb_engine_tcp(engine_), Id(info[0]), data.Data(), data.ByteLength(), now);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), (double)n);
  }

  Napi::Value Recv(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    size_t max = info[1].As<Napi::Number>().Uint32Value();
    if (max > scratch_.size()) scratch_.resize(max);
    cpb_time_t now = cpb_engine_enter(engine_);
    long n = tcp_recv(cpb_engine_tcp(engine_), Id(info[0]), scratch_.data(), max, now);
    cpb_engine_leave(engine_);
    if (n < 0) return Napi::Number::New(info.Env(), (double)n);
    return Napi::Buffer<uint8_t>::Copy(info.Env(), scratch_.data(), (size_t)n);
  }

  Napi::Value Simple(const Napi::CallbackInfo &info, int (*fn)(struct cpb_tcp *, uint64_t, cpb_time_t)) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_time_t now = cpb_engine_enter(engine_);
    int rc = fn(cpb_engine_tcp(engine_), Id(info[0]), now);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), rc);
  }
  Napi::Value Shutdown(const Napi::CallbackInfo &info) { return Simple(info, tcp_shutdown); }
  // A flow's TLS session goes with its handle (close, abort, release).
  Napi::Value Close(const Napi::CallbackInfo &info) { return SimpleFree(info, tcp_close); }
  Napi::Value Abort(const Napi::CallbackInfo &info) { return SimpleFree(info, tcp_abort); }
  Napi::Value SimpleFree(const Napi::CallbackInfo &info, int (*fn)(struct cpb_tcp *, uint64_t, cpb_time_t)) {
    Napi::Value r = Simple(info, fn);
    if (engine_ && r.IsNumber() && r.As<Napi::Number>().Int32Value() != -EBUSY) tls_.Free(Id(info[0]));
    return r;
  }
  template <Napi::Value (capy::TlsTable::*F)(const Napi::CallbackInfo &, struct cpb_engine *)>
  Napi::Value Tls(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    return (tls_.*F)(info, engine_);
  }

  Napi::Value SetOption(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    std::string name = info[1].ToString().Utf8Value();
    enum tcp_sockopt opt;
    if (name == "nodelay") opt = TCP_OPT_NODELAY;
    else if (name == "keepalive") opt = TCP_OPT_KEEPALIVE;
    else if (name == "keepidle") opt = TCP_OPT_KEEPIDLE_MS;
    else if (name == "rtoMinUs") opt = TCP_OPT_RTO_MIN_US;
    else return Napi::Number::New(info.Env(), -EINVAL);
    cpb_engine_enter(engine_);
    int rc = tcp_setopt(cpb_engine_tcp(engine_), Id(info[0]), opt, info[2].As<Napi::Number>().Uint32Value());
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), rc);
  }

  Napi::Value FlowInfo(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    struct tcp_flow_info fi;
    cpb_engine_enter(engine_);
    int rc = tcp_flow_info(cpb_engine_tcp(engine_), Id(info[0]), &fi);
    cpb_engine_leave(engine_);
    if (rc != 0) return info.Env().Null();
    return flow_info_object(info.Env(), fi);
  }

  Napi::Value Flows(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    std::vector<struct tcp_flow_info> all;
    cpb_engine_enter(engine_);
    tcp_foreach_flow(
        cpb_engine_tcp(engine_),
        [](void *ctx, const struct tcp_flow_info *fi) { static_cast<std::vector<struct tcp_flow_info> *>(ctx)->push_back(*fi); },
        &all);
    cpb_engine_leave(engine_);
    Napi::Array arr = Napi::Array::New(info.Env(), all.size());
    for (size_t i = 0; i < all.size(); i++) arr.Set((uint32_t)i, flow_info_object(info.Env(), all[i]));
    return arr;
  }

  Napi::Value Stats(const Napi::CallbackInfo &info);

  // ---- live migration: thin wrappers over native/tcp/tcp.h's freeze/snapshot/adopt/release ----
  Napi::Value Freeze(const Napi::CallbackInfo &info) { return Simple(info, tcp_freeze); }
  Napi::Value Unfreeze(const Napi::CallbackInfo &info) { return Simple(info, tcp_unfreeze); }
  Napi::Value Release(const Napi::CallbackInfo &info) { return SimpleFree(info, tcp_release); }

  // Buffer with the flow's TCP snapshot, or -errno.
  Napi::Value Snapshot(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    uint64_t id = Id(info[0]);
    cpb_time_t now = cpb_engine_enter(engine_);
    long need = tcp_snapshot_size(cpb_engine_tcp(engine_), id);
    long n = need;
    if (need > 0) {
      if ((size_t)need > scratch_.size()) scratch_.resize((size_t)need);
      n = tcp_snapshot(cpb_engine_tcp(engine_), id, scratch_.data(), (size_t)need, now);
    }
    cpb_engine_leave(engine_);
    if (n < 0) return Napi::Number::New(info.Env(), (double)n);
    Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(info.Env(), scratch_.data(), (size_t)n);
    memset(scratch_.data(), 0, (size_t)n); /* snapshots carry connection state: do not leave copies behind */
    return out;
  }

  // New flow id, or -errno (-EBADMSG, -EINVAL, -ENOSPC, -EEXIST).
  Napi::Value Adopt(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
    uint64_t fid = 0;
    cpb_time_t now = cpb_engine_enter(engine_);
    struct cpb_lane *lane = cpb_engine_lane(engine_);
    if (lane) cpb_lane_retire_stale(lane, data.Data(), data.ByteLength(), now);  // the flow is offered back
    int rc = tcp_adopt(cpb_engine_tcp(engine_), data.Data(), data.ByteLength(), now, &fid);
    if (lane) cpb_lane_after_adopt(lane, rc == 0 ? fid : 0, now);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), rc == 0 ? (double)fid : (double)rc);
  }

  // Array of [srcIp, dstIp, Buffer segment] for what arrived while the flow was frozen, or -errno.
  Napi::Value DrainHeld(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    struct Held {
      cpb_ip4_t src, dst;
      std::vector<uint8_t> seg;
    };
    std::vector<Held> held;
    cpb_engine_enter(engine_);
    int rc = tcp_held_drain(
        cpb_engine_tcp(engine_), Id(info[0]),
        [](void *ctx, cpb_ip4_t src, cpb_ip4_t dst, const uint8_t *seg, size_t len) {
          static_cast<std::vector<Held> *>(ctx)->push_back(Held{src, dst, std::vector<uint8_t>(seg, seg + len)});
        },
        &held);
    cpb_engine_leave(engine_);
    if (rc < 0) return Napi::Number::New(info.Env(), rc);
    Napi::Array arr = Napi::Array::New(info.Env(), held.size());
    for (size_t i = 0; i < held.size(); i++) {
      Napi::Array e = Napi::Array::New(info.Env(), 3);
      e.Set(0u, ip_str(held[i].src));
      e.Set(1u, ip_str(held[i].dst));
      e.Set(2u, Napi::Buffer<uint8_t>::Copy(info.Env(), held[i].seg.data(), held[i].seg.size()));
      arr.Set((uint32_t)i, e);
    }
    return arr;
  }

  // Feeds a TCP segment forwarded by a migration source into TCP input, as if it had arrived here.
  Napi::Value Inject(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_ip4_t src, dst;
    if (!parse_ip(info[0].ToString().Utf8Value(), &src) || !parse_ip(info[1].ToString().Utf8Value(), &dst))
      return Napi::Number::New(info.Env(), -EINVAL);
    Napi::Uint8Array seg = info[2].As<Napi::Uint8Array>();
    cpb_time_t now = cpb_engine_enter(engine_);
    tcp_input(cpb_engine_tcp(engine_), src, dst, seg.Data(), seg.ByteLength(), now);
    cpb_engine_leave(engine_);
    return Napi::Number::New(info.Env(), 0);
  }

  template <Napi::Value (*F)(const Napi::CallbackInfo &, struct cpb_engine *)>
  Napi::Value Lane(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    return F(info, engine_);
  }

  // Delivers what the engine has for JS now, without waiting for the wake-up to come round the event
  // loop: a migration target uses it to inject segments that arrived while it adopted, before it spends
  // its turn on the answer. Must not be called from inside the events callback (it would re-enter it).
  Napi::Value PollEvents(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    Dispatch();
    return info.Env().Undefined();
  }

  // [engine woke, round with events, notify, JS dispatch] on the monotonic clock in µs (migration tracing).
  Napi::Value WakeTrace(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    cpb_time_t t[3];
    cpb_engine_wake_trace(engine_, t);
    Napi::Array arr = Napi::Array::New(info.Env(), 4);
    for (uint32_t i = 0; i < 3; i++) arr.Set(i, (double)t[i]);
    arr.Set(3u, (double)dispatch_at_);
    return arr;
  }

  Napi::Value Mac(const Napi::CallbackInfo &info) {
    if (!Alive(info)) return info.Env().Undefined();
    char buf[24];
    const uint8_t *m = cpb_engine_stack(engine_)->cfg.mac;
    snprintf(buf, sizeof(buf), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return Napi::String::New(info.Env(), buf);
  }

  Napi::Value Ref(const Napi::CallbackInfo &info) {
    if (async_) wakeup_ref(async_, true);
    return info.Env().Undefined();
  }
  Napi::Value Unref(const Napi::CallbackInfo &info) {
    if (async_) wakeup_ref(async_, false);
    return info.Env().Undefined();
  }

  Napi::Value Destroy(const Napi::CallbackInfo &info) {
    if (cleanup_hook_) {
      napi_remove_env_cleanup_hook(info.Env(), &EngineWrap::Cleanup, this);
      cleanup_hook_ = false;
    }
    Stop();
    return info.Env().Undefined();
  }

  struct cpb_engine *engine_ = nullptr;
  wakeup *async_ = nullptr;
  Napi::AsyncContext *async_ctx_ = nullptr;
  Napi::FunctionReference on_events_;
  std::vector<uint8_t> scratch_;
  bool cleanup_hook_ = false;
  capy::TlsTable tls_;
  cpb_time_t dispatch_at_ = 0;
};

// Stats keys follow JS style (segs_in -> segsIn) so runtime/ can pass them through unchanged.
std::string camel(const char *snake) {
  std::string out;
  for (bool up = false; *snake; snake++) {
    if (*snake == '_') { up = true; continue; }
    out += up ? (char)toupper((unsigned char)*snake) : *snake;
    up = false;
  }
  return out;
}
#define SET(obj, s, field) obj.Set(camel(#field), (double)(s).field)

Napi::Value EngineWrap::Stats(const Napi::CallbackInfo &info) {
  if (!Alive(info)) return info.Env().Undefined();
  Napi::Env env = info.Env();
  struct tcp_stats ts;
  struct cpb_ip_stats is;
  struct cpb_dev_stats ds;
  struct cpb_arena_header ah;
  cpb_engine_enter(engine_);
  tcp_get_stats(cpb_engine_tcp(engine_), &ts);
  is = cpb_engine_stack(engine_)->stats;
  struct cpb_dev *dev = cpb_engine_dev(engine_);
  dev->ops->get_stats(dev, &ds);
  ah = *cpb_engine_arena(engine_)->hdr;
  cpb_engine_leave(engine_);

  Napi::Object tcp = Napi::Object::New(env);
  SET(tcp, ts, segs_in); SET(tcp, ts, segs_out); SET(tcp, ts, bytes_in); SET(tcp, ts, bytes_out);
  SET(tcp, ts, bad_segments); SET(tcp, ts, bad_checksums); SET(tcp, ts, no_listener_rsts); SET(tcp, ts, rsts_sent);
  SET(tcp, ts, rsts_received); SET(tcp, ts, active_opens); SET(tcp, ts, passive_opens); SET(tcp, ts, established);
  SET(tcp, ts, backlog_drops); SET(tcp, ts, flow_limit_drops); SET(tcp, ts, retransmits); SET(tcp, ts, rto_timeouts);
  SET(tcp, ts, fast_retransmits); SET(tcp, ts, sack_recoveries); SET(tcp, ts, dup_acks); SET(tcp, ts, ooo_segments);
  SET(tcp, ts, dup_segments); SET(tcp, ts, out_of_window); SET(tcp, ts, paws_drops); SET(tcp, ts, challenge_acks);
  SET(tcp, ts, zero_window_probes); SET(tcp, ts, keepalive_probes); SET(tcp, ts, delayed_acks); SET(tcp, ts, timeouts);
  SET(tcp, ts, chunk_exhausted); SET(tcp, ts, flows_current); SET(tcp, ts, listeners_current);
  SET(tcp, ts, frozen); SET(tcp, ts, unfrozen); SET(tcp, ts, released); SET(tcp, ts, adopted);
  SET(tcp, ts, adopt_rejects); SET(tcp, ts, held_segments); SET(tcp, ts, held_drops);
  SET(tcp, ts, syncookies_sent); SET(tcp, ts, syncookies_ok); SET(tcp, ts, syncookies_failed);

  Napi::Object ip = Napi::Object::New(env);
  SET(ip, is, frames_in); SET(ip, is, frames_out); SET(ip, is, frames_dropped_tx); SET(ip, is, not_for_us);
  SET(ip, is, bad_frames); SET(ip, is, unknown_ethertype); SET(ip, is, arp_in); SET(ip, is, arp_replies_sent);
  SET(ip, is, arp_requests_sent); SET(ip, is, arp_unresolved_drops); SET(ip, is, arp_parked); SET(ip, is, ipv4_in); SET(ip, is, ipv4_bad);
  SET(ip, is, ipv4_bad_checksum); SET(ip, is, ipv4_fragments_dropped); SET(ip, is, ipv4_unknown_proto);
  SET(ip, is, icmp_in); SET(ip, is, icmp_echo_replies); SET(ip, is, icmp_bad);

  Napi::Object dv = Napi::Object::New(env);
  SET(dv, ds, rx_frames); SET(dv, ds, rx_bytes); SET(dv, ds, tx_frames); SET(dv, ds, tx_bytes); SET(dv, ds, rx_dropped);
  SET(dv, ds, tx_dropped); SET(dv, ds, injected_loss); SET(dv, ds, injected_dup); SET(dv, ds, injected_reorder);
  SET(dv, ds, injected_corrupt); SET(dv, ds, injected_delay); SET(dv, ds, wakeups);
  SET(dv, ds, link_up); SET(dv, ds, link_speed_mbps); SET(dv, ds, port_rx_packets); SET(dv, ds, port_tx_packets);
  SET(dv, ds, port_rx_missed); SET(dv, ds, port_rx_errors); SET(dv, ds, port_tx_errors); SET(dv, ds, port_rx_nombuf);
  SET(dv, ds, rx_csum_offload); SET(dv, ds, rx_csum_bad);

  Napi::Object ar = Napi::Object::New(env);
  ar.Set("slots", ah.slots);
  ar.Set("slotsUsed", ah.slots_used);
  ar.Set("chunks", ah.chunks);
  ar.Set("chunksUsed", ah.chunks_used);
  ar.Set("slotSize", ah.slot_size);
  ar.Set("chunkSize", ah.chunk_size);
  ar.Set("bytes", (double)ah.total_size);
  ar.Set("hugepages", ah.hugepages != 0);

  Napi::Object out = Napi::Object::New(env);
  out.Set("tcp", tcp);
  out.Set("ip", ip);
  out.Set("dev", dv);
  out.Set("arena", ar);
  return out;
}

// lbOpen(pinnedMapPath) -> fd | -errno; lbRedirect(fd, src, sport, dst, dport, backend) -> 0 | -errno; lbClose(fd).
Napi::Value LbOpen(const Napi::CallbackInfo &info) {
  return Napi::Number::New(info.Env(), cpb_lb_open(info[0].ToString().Utf8Value().c_str()));
}

Napi::Value LbRedirect(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!parse_ip(info[1].ToString().Utf8Value(), &src) || !parse_ip(info[3].ToString().Utf8Value(), &dst))
    return Napi::Number::New(info.Env(), -EINVAL);
  int rc = cpb_lb_redirect(info[0].As<Napi::Number>().Int32Value(), src, (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                           (uint16_t)info[4].As<Napi::Number>().Uint32Value(), info[5].As<Napi::Number>().Uint32Value());
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value LbClose(const Napi::CallbackInfo &info) {
  cpb_lb_close(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

// memSteer(wire, src, sport, dst, dport, port) -> entries in the table | -errno (native/dev/dev.h).
Napi::Value MemSteer(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!parse_ip(info[1].ToString().Utf8Value(), &src) || !parse_ip(info[3].ToString().Utf8Value(), &dst))
    return Napi::Number::New(info.Env(), -EINVAL);
  int rc = cpb_mem_steer(info[0].ToString().Utf8Value().c_str(), src, (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                         (uint16_t)info[4].As<Napi::Number>().Uint32Value(), info[5].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), rc);
}

// Migration claims (native/dev/lbsteer.h cpb_lb_claim, dev.h cpb_mem_claim): the first claim of (flow, token)
// wins. lbClaim(fd, src, sport, dst, dport, token, backend) / memClaim(wire, ..., token, port) -> [rc, owner]:
// rc 0 (claimed now) or -EEXIST (owner holds it) or -errno. lbUnclaim / memUnclaim(..., token) -> 0 | -errno.
Napi::Value ClaimResult(Napi::Env env, int rc, int owner) {
  Napi::Array r = Napi::Array::New(env, 2);
  r.Set(0u, rc);
  r.Set(1u, owner);
  return r;
}

// A token is up to 53 bits from JS (runtime/migration/claim.ts claimToken).
uint64_t claim_token(const Napi::Value &v) { return (uint64_t)v.As<Napi::Number>().Int64Value(); }

bool claim_args(const Napi::CallbackInfo &info, cpb_ip4_t *src, cpb_ip4_t *dst) {
  return info.Length() >= 6 && parse_ip(info[1].ToString().Utf8Value(), src) && parse_ip(info[3].ToString().Utf8Value(), dst);
}

Napi::Value LbClaim(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!claim_args(info, &src, &dst) || info.Length() < 7) return ClaimResult(info.Env(), -EINVAL, -1);
  int32_t owner = -1;
  int rc = cpb_lb_claim(info[0].As<Napi::Number>().Int32Value(), src, (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                        (uint16_t)info[4].As<Napi::Number>().Uint32Value(), claim_token(info[5]),
                        info[6].As<Napi::Number>().Uint32Value(), &owner);
  return ClaimResult(info.Env(), rc, owner);
}

Napi::Value LbUnclaim(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!claim_args(info, &src, &dst)) return Napi::Number::New(info.Env(), -EINVAL);
  return Napi::Number::New(info.Env(), cpb_lb_unclaim(info[0].As<Napi::Number>().Int32Value(), src,
                                                      (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                                                      (uint16_t)info[4].As<Napi::Number>().Uint32Value(),
                                                      claim_token(info[5])));
}

Napi::Value MemClaim(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!claim_args(info, &src, &dst) || info.Length() < 7) return ClaimResult(info.Env(), -EINVAL, -1);
  int owner = -1;
  int rc = cpb_mem_claim(info[0].ToString().Utf8Value().c_str(), src, (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                         (uint16_t)info[4].As<Napi::Number>().Uint32Value(), claim_token(info[5]),
                         info[6].As<Napi::Number>().Int32Value(), &owner);
  return ClaimResult(info.Env(), rc, owner);
}

Napi::Value MemUnclaim(const Napi::CallbackInfo &info) {
  cpb_ip4_t src, dst;
  if (!claim_args(info, &src, &dst)) return Napi::Number::New(info.Env(), -EINVAL);
  return Napi::Number::New(info.Env(), cpb_mem_unclaim(info[0].ToString().Utf8Value().c_str(), src,
                                                       (uint16_t)info[2].As<Napi::Number>().Uint32Value(), dst,
                                                       (uint16_t)info[4].As<Napi::Number>().Uint32Value(),
                                                       claim_token(info[5])));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Init(env));
  exports.Set("lbOpen", Napi::Function::New(env, LbOpen));
  exports.Set("lbRedirect", Napi::Function::New(env, LbRedirect));
  exports.Set("lbClose", Napi::Function::New(env, LbClose));
  capy::InitTls(env, exports);
  exports.Set("memSteer", Napi::Function::New(env, MemSteer));
  exports.Set("lbClaim", Napi::Function::New(env, LbClaim));
  exports.Set("lbUnclaim", Napi::Function::New(env, LbUnclaim));
  exports.Set("memClaim", Napi::Function::New(env, MemClaim));
  exports.Set("memUnclaim", Napi::Function::New(env, MemUnclaim));
  cpb_micro_register(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(capybara, Init)

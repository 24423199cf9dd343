// See lane_wrap.h.
#include "lane_wrap.h"

#include <arpa/inet.h>

#include <cstring>
#include <string>

extern "C" {
#include "dev/lbsteer.h"
}

namespace capy {
namespace {

bool ip_arg(const Napi::Value &v, cpb_ip4_t *out) {
  if (!v.IsString()) return false;
  struct in_addr a;
  if (inet_pton(AF_INET, v.As<Napi::String>().Utf8Value().c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

// Copies exactly n bytes of a Uint8Array argument; false when it is not one of that length.
bool bytes_arg(const Napi::Value &v, uint8_t *out, size_t n) {
  if (!v.IsTypedArray()) return false;
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  if (a.ByteLength() != n) return false;
  std::memcpy(out, a.Data(), n);
  return true;
}

bool key_id_arg(const Napi::Value &v, uint64_t *out) {
  uint8_t b[8];
  if (!bytes_arg(v, b, 8)) return false;
  uint64_t id = 0;
  for (int i = 7; i >= 0; i--) id = (id << 8) | b[i];
  *out = id;
  return id != 0;
}

Napi::Value num(const Napi::CallbackInfo &info, double v) { return Napi::Number::New(info.Env(), v); }

}  // namespace

Napi::Value LaneKey(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  cpb_ip4_t peer;
  uint64_t id;
  struct cpb_lane_dir tx, rx;
  if (info.Length() < 7 || !ip_arg(info[0], &peer) || !key_id_arg(info[1], &id) || !bytes_arg(info[2], tx.key, 32) ||
      !bytes_arg(info[3], tx.iv, 12) || !bytes_arg(info[4], rx.key, 32) || !bytes_arg(info[5], rx.iv, 12) ||
      !info[6].IsNumber())
    return num(info, -EINVAL);
  cpb_engine_enter(e);
  int rc = cpb_lane_set_key(cpb_engine_lane(e), peer, id, &tx, &rx, info[6].As<Napi::Number>().Int32Value());
  cpb_engine_leave(e);
  explicit_bzero(&tx, sizeof(tx));
  explicit_bzero(&rx, sizeof(rx));
  return num(info, rc);
}

Napi::Value LaneDropKey(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  cpb_ip4_t peer;
  uint64_t id;
  if (info.Length() < 2 || !ip_arg(info[0], &peer) || !key_id_arg(info[1], &id)) return num(info, -EINVAL);
  cpb_engine_enter(e);
  int rc = cpb_lane_drop_key(cpb_engine_lane(e), peer, id);
  cpb_engine_leave(e);
  return num(info, rc);
}

Napi::Value LaneSteer(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  std::string kind = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (kind == "none") {
    cpb_engine_enter(e);
    cpb_lane_set_steering(cpb_engine_lane(e), nullptr);
    cpb_engine_leave(e);
    return num(info, 0);
  }
  if ((kind != "lb" && kind != "mem") || info.Length() < 3 || !info[1].IsString() || !info[2].IsNumber())
    return num(info, -EINVAL);
  std::string where = info[1].As<Napi::String>().Utf8Value();
  int32_t self = info[2].As<Napi::Number>().Int32Value();
  int fd = -1;
  if (kind == "lb" && (fd = cpb_lb_open(where.c_str())) < 0) return num(info, fd);
  cpb_engine_enter(e);
  int rc = kind == "lb" ? cpb_lane_steer_lb(cpb_engine_lane(e), fd, self) : cpb_lane_steer_mem(cpb_engine_lane(e), where.c_str(), self);
  cpb_engine_leave(e);
  if (rc != 0 && fd >= 0) cpb_lb_close(fd);
  return num(info, rc);
}

Napi::Value LaneMigrate(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  cpb_ip4_t peer;
  if (info.Length() < 5 || !info[0].IsNumber() || !ip_arg(info[1], &peer) || !info[2].IsNumber() || !info[3].IsNumber() ||
      !info[4].IsNumber())
    return num(info, -EINVAL);
  uint64_t flow = (uint64_t)info[0].As<Napi::Number>().DoubleValue();
  uint64_t mid = (uint64_t)info[2].As<Napi::Number>().DoubleValue();
  uint32_t epoch = info[3].As<Napi::Number>().Uint32Value();
  uint32_t budget = info[4].As<Napi::Number>().Uint32Value();
  // A flow served in JS: the record of its layers above TCP rides in the offer (mig/lanejs.h).
  bool js = info.Length() > 5 && info[5].IsTypedArray();
  Napi::Uint8Array rec = js ? info[5].As<Napi::Uint8Array>() : Napi::Uint8Array();
  cpb_time_t t0 = cpb_clock_now();
  cpb_time_t now = cpb_engine_enter(e);
  int rc = js ? cpb_engine_lane_migrate_js(e, flow, peer, mid, epoch, budget, rec.Data(), rec.ByteLength(), now)
              : cpb_lane_migrate(cpb_engine_lane(e), flow, peer, mid, epoch, budget, NULL, 0, now);
  cpb_time_t t2 = cpb_clock_now();
  cpb_engine_leave(e); /* the offer leaves from this thread now */
  cpb_time_t t3 = cpb_clock_now();
  // [rc, waiting for the engine lock, freeze + snapshot + seal, sending (the TX kick runs the frame through
  // the kernel's veth path on this thread)] in µs: the phases of the call.
  Napi::Array r = Napi::Array::New(info.Env(), 4);
  r.Set(0u, rc);
  r.Set(1u, (double)(now - t0));
  r.Set(2u, (double)(t2 - now));
  r.Set(3u, (double)(t3 - t2));
  return r;
}

Napi::Value LaneListen(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsBoolean()) return num(info, -EINVAL);
  uint32_t port = info[0].As<Napi::Number>().Uint32Value();
  if (port == 0 || port > 65535) return num(info, -EINVAL);
  cpb_engine_enter(e);
  int rc = cpb_lane_js_listen(cpb_engine_lane_js(e), (uint16_t)port, info[1].As<Napi::Boolean>().Value());
  cpb_engine_leave(e);
  return num(info, rc);
}

Napi::Value LaneTake(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  uint8_t *rec = nullptr;
  uint64_t flow = 0;
  cpb_engine_enter(e);
  long n = cpb_engine_lane_js_take(e, &flow, &rec);
  cpb_engine_leave(e);
  if (n < 0) return info.Env().Null();  // no JS flow adopted through the lane waits for its connection
  Napi::Array r = Napi::Array::New(info.Env(), 2);
  r.Set(0u, (double)flow);
  r.Set(1u, Napi::Buffer<uint8_t>::Copy(info.Env(), rec, (size_t)n));
  cpb_lane_js_free_record(rec, (size_t)n);
  return r;
}

Napi::Value LaneOutcome(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  if (info.Length() < 1 || !info[0].IsNumber()) return info.Env().Null();
  struct cpb_lane_outcome o;
  cpb_engine_enter(e);
  bool ok = cpb_lane_outcome(cpb_engine_lane(e), (uint64_t)info[0].As<Napi::Number>().DoubleValue(), &o);
  cpb_engine_leave(e);
  if (!ok) return info.Env().Null();
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("err", o.err);
  r.Set("answeredUs", o.answered_us);
  r.Set("targetAtUs", o.target_at_us);
  r.Set("forwarded", o.forwarded);
  r.Set("snapshotBytes", o.snapshot_bytes);
  return r;
}

Napi::Value LaneStats(const Napi::CallbackInfo &info, struct cpb_engine *e) {
  struct cpb_lane_stats s;
  cpb_engine_enter(e);
  cpb_lane_get_stats(cpb_engine_lane(e), &s);
  cpb_engine_leave(e);
  Napi::Object r = Napi::Object::New(info.Env());
#define F(name, js) r.Set(js, (double)s.name)
  F(offers_sent, "offersSent"); F(offers_resent, "offersResent"); F(answers_in, "answersIn");
  F(adopted_out, "adoptedOut"); F(rejected_out, "rejectedOut"); F(gave_back, "gaveBack");
  F(unanswered_released, "unansweredReleased"); F(offers_in, "offersIn"); F(adopted_in, "adoptedIn");
  F(rejected_in, "rejectedIn"); F(repeated_offers, "repeatedOffers"); F(late_offers, "lateOffers"); F(stale_copies, "staleCopies"); F(forwarded_out, "forwardedOut");
  F(forwarded_in, "forwardedIn"); F(forward_dropped, "forwardDropped"); F(forward_early, "forwardEarly"); F(forward_too_big, "forwardTooBig");
  F(bad_frames, "badFrames"); F(auth_failures, "authFailures"); F(replays, "replays");
  F(unknown_keys, "unknownKeys"); F(steer_errors, "steerErrors"); F(send_failures, "sendFailures");
#undef F
  return r;
}

}  // namespace capy

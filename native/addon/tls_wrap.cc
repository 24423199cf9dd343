// N-API binding of native/tls/session.h: SecureContext (an SSL_CTX built from PEM and options) and the
// per-flow session calls of an engine. Arguments in, engine lock around each call, results out; errno
// values go back as negative numbers, construction failures as an Error with .code and a sentence.
// Buffers that held key material (snapshots) are wiped before they are given back to the allocator.
#include "tls_wrap.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace capy {
namespace {

Napi::Error tls_error(Napi::Env env, int neg_errno, const std::string &msg) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, neg_errno == -ENOMEM ? "ENOMEM" : neg_errno == -EINVAL ? "EINVAL" : "ERR_TLS_NATIVE"));
  err.Set("errno", Napi::Number::New(env, neg_errno));
  return err;
}

uint64_t flow_id(const Napi::Value &v) { return (uint64_t)v.As<Napi::Number>().DoubleValue(); }

// A Buffer/Uint8Array option as bytes, or empty when absent.
std::string bytes_opt(const Napi::Object &o, const char *key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) return std::string();
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return std::string(reinterpret_cast<const char *>(a.Data()), a.ByteLength());
}

std::string str_opt(const Napi::Object &o, const char *key, bool *present) {
  Napi::Value v = o.Get(key);
  *present = v.IsString();
  return *present ? v.As<Napi::String>().Utf8Value() : std::string();
}

bool bool_opt(const Napi::Object &o, const char *key) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() && v.As<Napi::Boolean>().Value();
}

uint16_t u16_opt(const Napi::Object &o, const char *key) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? (uint16_t)v.As<Napi::Number>().Uint32Value() : 0;
}

void wipe(std::string &s) {
  if (!s.empty()) memset(&s[0], 0, s.size());
}

// ---- SecureContext ------------------------------------------------------------------------------

Napi::FunctionReference *g_ctx_ctor = nullptr;

class SecureContextWrap : public Napi::ObjectWrap<SecureContextWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "SecureContext", {InstanceMethod("free", &SecureContextWrap::FreeJs)});
  }

  // new SecureContext({ server, cert, key, ca, verifyPeer, alpn, minVersion, maxVersion, ciphers,
  //                     ciphersuites, sniCallback }): cert/key/ca/alpn are Uint8Arrays (PEM, wire ALPN).
  SecureContextWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SecureContextWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "SecureContext(options)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::string cert = bytes_opt(o, "cert"), key = bytes_opt(o, "key"), ca = bytes_opt(o, "ca"), alpn = bytes_opt(o, "alpn");
    bool have_ciphers = false, have_suites = false;
    std::string ciphers = str_opt(o, "ciphers", &have_ciphers), suites = str_opt(o, "ciphersuites", &have_suites);
    struct cpb_tls_ctx_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.server = bool_opt(o, "server");
    cfg.cert_pem = cert.empty() ? nullptr : cert.data();
    cfg.cert_len = cert.size();
    cfg.key_pem = key.empty() ? nullptr : key.data();
    cfg.key_len = key.size();
    cfg.ca_pem = ca.empty() ? nullptr : ca.data();
    cfg.ca_len = ca.size();
    cfg.verify_peer = bool_opt(o, "verifyPeer");
    cfg.alpn = alpn.empty() ? nullptr : reinterpret_cast<const uint8_t *>(alpn.data());
    cfg.alpn_len = alpn.size();
    cfg.min_version = u16_opt(o, "minVersion");
    cfg.max_version = u16_opt(o, "maxVersion");
    cfg.ciphers = have_ciphers ? ciphers.c_str() : nullptr;
    cfg.ciphersuites = have_suites ? suites.c_str() : nullptr;
    cfg.sni_callback = bool_opt(o, "sniCallback");
    char err[256] = "";
    int rc = cpb_tls_ctx_new(&ctx_, &cfg, err, sizeof(err));
    wipe(key); /* the private key now lives only inside the SSL_CTX */
    if (rc != 0) {
      ctx_ = nullptr;
      tls_error(env, rc, err[0] ? err : "cannot create the TLS context").ThrowAsJavaScriptException();
    }
  }

  ~SecureContextWrap() { Release(); }

  struct cpb_tls_ctx *ctx() const { return ctx_; }

 private:
  void Release() {
    if (ctx_) cpb_tls_ctx_free(ctx_); /* sessions made from it hold their own reference */
    ctx_ = nullptr;
  }
  Napi::Value FreeJs(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }
  struct cpb_tls_ctx *ctx_ = nullptr;
};

// The context behind a JS SecureContext, nullptr for null/undefined; sets *bad for anything else.
struct cpb_tls_ctx *ctx_of(const Napi::Value &v, bool *bad) {
  *bad = false;
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsObject() || !g_ctx_ctor || !v.As<Napi::Object>().InstanceOf(g_ctx_ctor->Value())) {
    *bad = true;
    return nullptr;
  }
  struct cpb_tls_ctx *c = SecureContextWrap::Unwrap(v.As<Napi::Object>())->ctx();
  if (!c) *bad = true; /* freed */
  return c;
}

Napi::Object info_object(Napi::Env env, const struct cpb_tls_info &ti) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("done", ti.done);
  o.Set("version", ti.version);
  o.Set("protocol", ti.protocol);
  o.Set("cipher", ti.cipher);
  o.Set("standardCipher", ti.standard_cipher);
  o.Set("alpn", ti.alpn);
  o.Set("servername", ti.servername);
  o.Set("recordsIn", (double)ti.records_in);
  o.Set("recordsOut", (double)ti.records_out);
  o.Set("keyUpdatesIn", (double)ti.key_updates_in);
  o.Set("keyUpdatesOut", (double)ti.key_updates_out);
  return o;
}

}  // namespace

// ---- TlsTable -------------------------------------------------------------------------------------

struct cpb_tls_sess *TlsTable::Find(uint64_t flow) const {
  auto it = sess_.find(flow);
  return it == sess_.end() ? nullptr : it->second;
}

void TlsTable::Free(uint64_t flow) {
  auto it = sess_.find(flow);
  if (it == sess_.end()) return;
  cpb_tls_sess_free(it->second); /* wipes keys and secrets */
  sess_.erase(it);
}

void TlsTable::Clear() {
  for (auto &kv : sess_) cpb_tls_sess_free(kv.second);
  sess_.clear();
  if (!scratch_.empty()) memset(scratch_.data(), 0, scratch_.size());
}

// tlsCreate(flowId, ctx, servername | null): 0, or throws (EEXIST, EINVAL, ENOMEM with a sentence).
Napi::Value TlsTable::Create(const Napi::CallbackInfo &info, struct cpb_engine *) {
  Napi::Env env = info.Env();
  uint64_t id = flow_id(info[0]);
  bool bad = false;
  struct cpb_tls_ctx *ctx = ctx_of(info[1], &bad);
  if (bad || !ctx) {
    tls_error(env, -EINVAL, "tlsCreate: not a live SecureContext").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (Find(id)) {
    tls_error(env, -EEXIST, "tlsCreate: the flow already has a TLS session").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string sni = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : std::string();
  struct cpb_tls_sess *s = nullptr;
  char err[256] = "";
  int rc = cpb_tls_sess_new(&s, ctx, sni.empty() ? nullptr : sni.c_str(), err, sizeof(err));
  if (rc != 0) {
    tls_error(env, rc, err[0] ? err : "cannot create the TLS session").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  sess_[id] = s;
  return Napi::Number::New(env, 0);
}

// tlsHandshake(flowId): 0 done, 1 again, 2 wants SNI, or -errno (-EPROTO: failed, alert sent).
Napi::Value TlsTable::Handshake(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  uint64_t id = flow_id(info[0]);
  struct cpb_tls_sess *s = Find(id);
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  cpb_time_t now = cpb_engine_enter(engine);
  int rc = cpb_tls_handshake(s, cpb_engine_tcp(engine), id, now);
  cpb_engine_leave(engine);
  return Napi::Number::New(info.Env(), rc);
}

// tlsRecv(flowId, max): Buffer of plaintext (length 0 = close_notify / EOF) or -errno.
Napi::Value TlsTable::Recv(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  uint64_t id = flow_id(info[0]);
  struct cpb_tls_sess *s = Find(id);
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  size_t max = info[1].As<Napi::Number>().Uint32Value();
  if (max > scratch_.size()) scratch_.resize(max);
  cpb_time_t now = cpb_engine_enter(engine);
  long n = cpb_tls_recv(s, cpb_engine_tcp(engine), id, scratch_.data(), max, now);
  cpb_engine_leave(engine);
  if (n < 0) return Napi::Number::New(info.Env(), (double)n);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(info.Env(), scratch_.data(), (size_t)n);
  memset(scratch_.data(), 0, (size_t)n); /* plaintext: no copy stays behind here */
  return out;
}

// tlsSend(flowId, data): plaintext bytes taken or -errno (-EAGAIN: no room for a record).
Napi::Value TlsTable::Send(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  uint64_t id = flow_id(info[0]);
  struct cpb_tls_sess *s = Find(id);
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  cpb_time_t now = cpb_engine_enter(engine);
  long n = cpb_tls_send(s, cpb_engine_tcp(engine), id, data.Data(), data.ByteLength(), now);
  cpb_engine_leave(engine);
  return Napi::Number::New(info.Env(), (double)n);
}

Napi::Value TlsTable::CloseNotify(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  uint64_t id = flow_id(info[0]);
  struct cpb_tls_sess *s = Find(id);
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  cpb_time_t now = cpb_engine_enter(engine);
  int rc = cpb_tls_close_notify(s, cpb_engine_tcp(engine), id, now);
  cpb_engine_leave(engine);
  return Napi::Number::New(info.Env(), rc);
}

// tlsKeyUpdate(flowId, requestPeer): 0 or -errno (-EPROTONOSUPPORT on TLS 1.2, -EAGAIN no room).
Napi::Value TlsTable::KeyUpdate(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  uint64_t id = flow_id(info[0]);
  struct cpb_tls_sess *s = Find(id);
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  bool request = info.Length() > 1 && info[1].ToBoolean().Value();
  cpb_time_t now = cpb_engine_enter(engine);
  int rc = cpb_tls_key_update(s, cpb_engine_tcp(engine), id, request, now);
  cpb_engine_leave(engine);
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value TlsTable::Info(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  struct cpb_tls_sess *s = Find(flow_id(info[0]));
  if (!s) return info.Env().Null();
  struct cpb_tls_info ti;
  memset(&ti, 0, sizeof(ti));
  cpb_engine_enter(engine);
  int rc = cpb_tls_info(s, &ti);
  cpb_engine_leave(engine);
  if (rc != 0) return info.Env().Null();
  ti.protocol[sizeof(ti.protocol) - 1] = 0;
  ti.cipher[sizeof(ti.cipher) - 1] = 0;
  ti.standard_cipher[sizeof(ti.standard_cipher) - 1] = 0;
  ti.alpn[sizeof(ti.alpn) - 1] = 0;
  ti.servername[sizeof(ti.servername) - 1] = 0;
  return info_object(info.Env(), ti);
}

// tlsSnapshot(flowId): Buffer with the "CTLS" record (keys inside: the caller wipes it) or -errno.
Napi::Value TlsTable::Snapshot(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  struct cpb_tls_sess *s = Find(flow_id(info[0]));
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  cpb_engine_enter(engine);
  long need = cpb_tls_snapshot_size(s);
  long n = need;
  if (need > 0) {
    if ((size_t)need > scratch_.size()) scratch_.resize((size_t)need);
    n = cpb_tls_snapshot(s, scratch_.data(), (size_t)need);
  }
  cpb_engine_leave(engine);
  if (n < 0) return Napi::Number::New(info.Env(), (double)n);
  Napi::Buffer<uint8_t> out = Napi::Buffer<uint8_t>::Copy(info.Env(), scratch_.data(), (size_t)n);
  memset(scratch_.data(), 0, (size_t)n); /* key material: do not leave a copy in the scratch buffer */
  return out;
}

// tlsAdopt(flowId, record): 0, or throws (EBADMSG framing, EINVAL a field, EEXIST, ENOMEM) with a sentence.
Napi::Value TlsTable::Adopt(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  Napi::Env env = info.Env();
  uint64_t id = flow_id(info[0]);
  if (!info[1].IsTypedArray()) {
    tls_error(env, -EINVAL, "tlsAdopt(flowId, bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (Find(id)) {
    tls_error(env, -EEXIST, "tlsAdopt: the flow already has a TLS session").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  struct cpb_tls_sess *s = nullptr;
  char err[256] = "";
  cpb_engine_enter(engine);
  int rc = cpb_tls_adopt(&s, data.Data(), data.ByteLength(), err, sizeof(err));
  cpb_engine_leave(engine);
  if (rc != 0) {
    tls_error(env, rc, std::string("TLS record refused: ") + (err[0] ? err : strerror(-rc))).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  sess_[id] = s;
  return Napi::Number::New(env, 0);
}

Napi::Value TlsTable::Servername(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  struct cpb_tls_sess *s = Find(flow_id(info[0]));
  if (!s) return info.Env().Null();
  cpb_engine_enter(engine);
  const char *name = cpb_tls_servername(s);
  std::string copy = name ? name : "";
  cpb_engine_leave(engine);
  if (!name) return info.Env().Null();
  return Napi::String::New(info.Env(), copy);
}

// tlsSetContext(flowId, ctx | null): after WANT_SNI, continue with ctx's certificate (null: the default).
Napi::Value TlsTable::SetContext(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  struct cpb_tls_sess *s = Find(flow_id(info[0]));
  if (!s) return Napi::Number::New(info.Env(), -ENOENT);
  bool bad = false;
  struct cpb_tls_ctx *ctx = ctx_of(info[1], &bad);
  if (bad) return Napi::Number::New(info.Env(), -EINVAL);
  cpb_engine_enter(engine);
  int rc = cpb_tls_sess_set_ctx(s, ctx);
  cpb_engine_leave(engine);
  return Napi::Number::New(info.Env(), rc);
}

Napi::Value TlsTable::LastError(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  struct cpb_tls_sess *s = Find(flow_id(info[0]));
  if (!s) return Napi::String::New(info.Env(), "");
  cpb_engine_enter(engine);
  const char *e = cpb_tls_last_error(s);
  std::string copy = e ? e : "";
  cpb_engine_leave(engine);
  return Napi::String::New(info.Env(), copy);
}

Napi::Value TlsTable::FreeJs(const Napi::CallbackInfo &info, struct cpb_engine *engine) {
  cpb_engine_enter(engine);
  Free(flow_id(info[0]));
  cpb_engine_leave(engine);
  return info.Env().Undefined();
}

Napi::Value TlsTable::Count(const Napi::CallbackInfo &info, struct cpb_engine *) {
  return Napi::Number::New(info.Env(), (double)sess_.size());
}

void InitTls(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = SecureContextWrap::Init(env);
  if (!g_ctx_ctor) {
    g_ctx_ctor = new Napi::FunctionReference(Napi::Persistent(ctor));
    napi_add_env_cleanup_hook(
        env,
        [](void *) {
          delete g_ctx_ctor;
          g_ctx_ctor = nullptr;
        },
        nullptr);
  }
  exports.Set("SecureContext", ctor);
}

}  // namespace capy

// N-API side of TLS (native/tls/session.h): secure contexts as a JS class, and one engine's TLS sessions
// by flow id. Like engine_wrap.cc it only converts arguments and calls native/tls under the engine lock;
// handshake driving, SNI and error mapping are runtime/'s job (runtime/tls*.ts).
#ifndef CPB_ADDON_TLS_WRAP_H
#define CPB_ADDON_TLS_WRAP_H
#include <napi.h>

#include <cstdint>
#include <unordered_map>
#include <vector>

extern "C" {
#include "engine.h"
#include "tls/session.h"
}

namespace capy {

// The sessions of one engine. A session lives from tlsCreate (or tlsAdopt) until tlsFree or until its
// flow is closed, aborted or released through the engine (EngineWrap calls Free), or the engine goes.
class TlsTable {
 public:
  TlsTable() = default;
  TlsTable(const TlsTable &) = delete;
  TlsTable &operator=(const TlsTable &) = delete;
  ~TlsTable() { Clear(); }

  void Free(uint64_t flow);
  void Clear();

  // JS entry points (Engine.prototype.tls*); `engine` is alive (EngineWrap checked it).
  Napi::Value Create(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Handshake(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Recv(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Send(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value CloseNotify(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value KeyUpdate(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Info(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Snapshot(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Adopt(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Servername(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value SetContext(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value LastError(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value FreeJs(const Napi::CallbackInfo &info, struct cpb_engine *engine);
  Napi::Value Count(const Napi::CallbackInfo &info, struct cpb_engine *engine);

 private:
  struct cpb_tls_sess *Find(uint64_t flow) const;
  std::unordered_map<uint64_t, struct cpb_tls_sess *> sess_;
  std::vector<uint8_t> scratch_;
};

// Registers the SecureContext class on exports.
void InitTls(Napi::Env env, Napi::Object exports);

}  // namespace capy

#endif

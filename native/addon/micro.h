// Micro-benchmark entry of the addon (micro.cc): registered by the module init in engine_wrap.cc.
#ifndef CPB_ADDON_MICRO_H
#define CPB_ADDON_MICRO_H
#include <napi.h>

// Adds `micro(op, iterations)` to the module's exports.
void cpb_micro_register(Napi::Env env, Napi::Object exports);

#endif

// A libuv async handle behind an opaque type. Kept apart from engine_wrap.cc because <uv.h> pulls in
// <netinet/tcp.h>, whose TCP_* state names collide with the engine's own.
#pragma once
#include <node_api.h>

struct wakeup;
// cb runs on the JS thread after one or more wakeup_send calls (coalesced).
wakeup *wakeup_new(napi_env env, void (*cb)(void *), void *arg);
void wakeup_send(void *w);  // thread-safe; void* so it fits the engine's notify callback
void wakeup_ref(wakeup *w, bool ref);
void wakeup_close(wakeup *w);  // no callback after this; frees the handle once libuv is done with it

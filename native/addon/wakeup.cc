// See wakeup.h.
#include "wakeup.h"

#include <uv.h>

struct wakeup {
  uv_async_t async;
  void (*cb)(void *);
  void *arg;
};

static void on_async(uv_async_t *h) {
  wakeup *w = reinterpret_cast<wakeup *>(h);
  if (w->cb) w->cb(w->arg);
}

wakeup *wakeup_new(napi_env env, void (*cb)(void *), void *arg) {
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) return nullptr;
  wakeup *w = new wakeup();
  w->cb = cb;
  w->arg = arg;
  if (uv_async_init(loop, &w->async, on_async) != 0) {
    delete w;
    return nullptr;
  }
  return w;
}

void wakeup_send(void *w) { uv_async_send(&static_cast<wakeup *>(w)->async); }

void wakeup_ref(wakeup *w, bool ref) {
  if (ref) uv_ref(reinterpret_cast<uv_handle_t *>(&w->async));
  else uv_unref(reinterpret_cast<uv_handle_t *>(&w->async));
}

void wakeup_close(wakeup *w) {
  w->cb = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(&w->async), [](uv_handle_t *h) { delete reinterpret_cast<wakeup *>(h); });
}

/* libFuzzer target for the TLS record layer and the CTLS snapshot. The first byte picks what the rest is:
 *   0: a stream of records opened against a fixed session state (one of six suites, by the second byte);
 *      the fuzzer cannot forge tags, so this exercises the header and length checks;
 *   1: a TLS 1.3 inner plaintext (content | type | padding) sealed with the writer's key and opened by
 *      the reader: padding stripping, inner type and size checks on authenticated bytes;
 *   2: bytes for cpb_tls_adopt (and, with the header repaired, for the field checks); whatever is
 *      accepted must re-encode to exactly those bytes and must seal and open a record with its keys.
 * Nothing may crash, leak or read out of bounds; an accepted snapshot must round-trip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/record.h"
#include "tls/session.h"

static const struct { uint16_t ver, suite; } suites[] = {
    {CPB_TLS13, 0x1301}, {CPB_TLS13, 0x1302}, {CPB_TLS13, 0x1303},
    {CPB_TLS12, 0xC02F}, {CPB_TLS12, 0xC02C}, {CPB_TLS12, 0xCCA8},
};
static struct cpb_tls_rec wr_state[6], rd_state[6];
static struct cpb_tls_evp evp_w, evp_r;
static uint8_t buf[CPB_TLS_MAX_RECORD + 64];
static uint8_t snap[CPB_TLS_SNAP_LEN];

static void setup(void) {
  static bool done;
  if (done) return;
  done = true;
  if (cpb_tls_evp_init(&evp_w) || cpb_tls_evp_init(&evp_r)) abort();
  for (int i = 0; i < 6; i++) {
    if (cpb_tls_rec_init(&wr_state[i], suites[i].ver, suites[i].suite, false) ||
        cpb_tls_rec_init(&rd_state[i], suites[i].ver, suites[i].suite, true))
      abort();
    if (suites[i].ver == CPB_TLS13) {
      uint8_t sec[48];
      for (int k = 0; k < 48; k++) sec[k] = (uint8_t)(k * 3 + i);
      cpb_tls_rec_set_secret(&wr_state[i], 1, sec);
      cpb_tls_rec_set_secret(&rd_state[i], 0, sec);
    } else {
      uint8_t ms[48], cr[32], sr[32];
      for (int k = 0; k < 48; k++) ms[k] = (uint8_t)(k + i);
      for (int k = 0; k < 32; k++) cr[k] = (uint8_t)k, sr[k] = (uint8_t)(k * 5);
      cpb_tls_rec_set_master(&wr_state[i], ms, cr, sr);
      cpb_tls_rec_set_master(&rd_state[i], ms, cr, sr);
    }
  }
}

static void open_stream(const uint8_t *p, size_t n) {
  if (n < 1) return;
  int k = p[0] % 6;
  p++, n--;
  struct cpb_tls_rec r = rd_state[k];
  cpb_tls_evp_rekey(&evp_r, 0);
  while (n >= 5) {
    uint8_t alert;
    long blen = cpb_tls_rec_check_hdr(&r, p, &alert);
    if (blen < 0) return;
    size_t total = 5 + (size_t)blen;
    if (total > n) return;
    memcpy(buf, p, total);
    uint8_t type, *content;
    long m = cpb_tls_rec_open(&r, &evp_r, buf, total, &type, &content, &alert);
    if (m >= 0 && (size_t)m > CPB_TLS_MAX_PLAIN) abort();
    p += total, n -= total;
  }
}

static void sealed_inner(const uint8_t *p, size_t n) {
  if (n < 2) return;
  int k = p[0] % 3; /* the TLS 1.3 suites */
  p++, n--;
  if (n > CPB_TLS_MAX_PLAIN + 1) n = CPB_TLS_MAX_PLAIN + 1;
  struct cpb_tls_rec w = wr_state[k], r = rd_state[k];
  cpb_tls_evp_rekey(&evp_w, 1);
  cpb_tls_evp_rekey(&evp_r, 0);
  /* seal p[0..n-2] with "type" p[n-1]: the inner plaintext is exactly the fuzz bytes */
  long rl = cpb_tls_rec_seal(&w, &evp_w, p[n - 1], p, n - 1, buf, sizeof(buf));
  if (rl < 0) return;
  uint8_t type, alert, *content;
  long m = cpb_tls_rec_open(&r, &evp_r, buf, (size_t)rl, &type, &content, &alert);
  if (m >= 0) {
    if ((size_t)m > n - 1 || type < CPB_TLS_CT_ALERT || type > CPB_TLS_CT_APPDATA) abort();
    if (memcmp(content, p, (size_t)m) != 0) abort();
  }
}

static void adopt(const uint8_t *p, size_t n, bool repair) {
  static uint8_t in[CPB_TLS_SNAP_LEN + 16];
  if (n > sizeof(in)) n = sizeof(in);
  memcpy(in, p, n);
  if (repair) {
    if (n < CPB_TLS_SNAP_LEN) {
      memset(in + n, 0, CPB_TLS_SNAP_LEN - n);
      n = CPB_TLS_SNAP_LEN;
    }
    n = CPB_TLS_SNAP_LEN;
    memcpy(in, "CTLS\x01\x00\x00\x00", 8);
    in[8] = CPB_TLS_SNAP_LEN & 0xff, in[9] = CPB_TLS_SNAP_LEN >> 8, in[10] = in[11] = 0;
    in[12] = CPB_TLS_SNAP_STATE_LEN & 0xff, in[13] = CPB_TLS_SNAP_STATE_LEN >> 8, in[14] = in[15] = 0;
  }
  struct cpb_tls_sess *s = NULL;
  char err[128];
  int rc = cpb_tls_adopt(&s, in, n, err, sizeof(err));
  if (rc != 0) {
    if (s) abort();
    return;
  }
  struct cpb_tls_info info;
  if (cpb_tls_info(s, &info) != 0 || !info.done) abort();
  if (cpb_tls_snapshot(s, snap, sizeof(snap)) != CPB_TLS_SNAP_LEN || memcmp(snap, in, CPB_TLS_SNAP_LEN) != 0) abort();
  cpb_tls_sess_free(s);
  /* the accepted state works as a record layer */
  struct cpb_tls_rec r;
  if (cpb_tls_rec_decode(&r, in, n) != 0) abort();
  struct cpb_tls_rec w = r;
  w.wr = r.rd;
  cpb_tls_evp_rekey(&evp_w, 1);
  cpb_tls_evp_rekey(&evp_r, 0);
  long rl = cpb_tls_rec_seal(&w, &evp_w, CPB_TLS_CT_APPDATA, "fuzz", 4, buf, sizeof(buf));
  if (rl > 0) {
    uint8_t type, alert, *content;
    if (cpb_tls_rec_open(&r, &evp_r, buf, (size_t)rl, &type, &content, &alert) != 4) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  if (size < 1) return 0;
  switch (data[0] % 3) {
  case 0: open_stream(data + 1, size - 1); break;
  case 1: sealed_inner(data + 1, size - 1); break;
  default:
    adopt(data + 1, size - 1, false);
    adopt(data + 1, size - 1, true);
    break;
  }
  return 0;
}

/* get-hit through the C ABI: cdn_cache_get + cdn_object_body + read a byte +
 * cdn_object_free, cycling over KEYS resident keys; and cdn_cache_get_copy
 * into a buffer. Prints the median ns per get over ROUNDS rounds; the Rust
 * twin is examples/ffi_get_bench.rs (ffi-tests/bench.sh runs both). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cdncore.h"

#define KEYS 1000
#define BODY 1024
#define ROUNDS 9

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long gets = argc > 1 ? atol(argv[1]) : 1000000;
  cdn_cache *c;
  if (cdn_cache_open((const uint8_t *)"mem=256m shards=8", 17, &c) != CDN_OK) return 1;
  static char keys[KEYS][48];
  static size_t lens[KEYS];
  uint8_t body[BODY];
  memset(body, 'x', sizeof body);
  for (int i = 0; i < KEYS; i++) {
    lens[i] = (size_t)snprintf(keys[i], sizeof keys[i], "bench.example.com/assets/%d.js", i);
    if (cdn_cache_insert(c, (const uint8_t *)keys[i], lens[i], body, BODY, 3600000) != CDN_OK) return 1;
  }
  double zc[ROUNDS], cp[ROUNDS];
  uint64_t sink = 0;
  static uint8_t buf[BODY];
  for (int r = 0; r < ROUNDS; r++) {
    double t0 = now_ns();
    for (long i = 0; i < gets; i++) {
      cdn_object *o;
      const uint8_t *d;
      size_t n;
      int k = (int)(i % KEYS);
      if (cdn_cache_get(c, (const uint8_t *)keys[k], lens[k], &o) != CDN_OK) return 2;
      cdn_object_body(o, &d, &n);
      sink += d[n - 1];
      cdn_object_free(o);
    }
    zc[r] = (now_ns() - t0) / gets;
    t0 = now_ns();
    for (long i = 0; i < gets; i++) {
      size_t n;
      int k = (int)(i % KEYS);
      if (cdn_cache_get_copy(c, (const uint8_t *)keys[k], lens[k], buf, sizeof buf, &n) != CDN_OK) return 3;
      sink += buf[n - 1];
    }
    cp[r] = (now_ns() - t0) / gets;
  }
  qsort(zc, ROUNDS, sizeof zc[0], cmp);
  qsort(cp, ROUNDS, sizeof cp[0], cmp);
  printf("c_get_zero_copy_ns %.1f\nc_get_copy_ns %.1f\n", zc[ROUNDS / 2], cp[ROUNDS / 2]);
  fprintf(stderr, "(sink %llu)\n", (unsigned long long)sink);
  cdn_cache_close(c);
  return 0;
}

/* Several pthreads hammering one cache: inserts, streaming writes, lookups,
 * fills and purges on a shared key space; every body read must belong to its
 * key. Then concurrent fills of one key must share a single getter call. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include "harness.h"

#define THREADS 6
#define KEYS 64

static int iterations = 4000; /* per thread; lowered under valgrind via argv */
static cdn_cache *cache;

static void key_of(unsigned i, char *buf, size_t n) { snprintf(buf, n, "t.com/d%u/k%u", i % 4, i); }

/* The body of key i: its key text repeated to a length that depends on i. */
static size_t body_of(unsigned i, uint8_t *buf, size_t cap) {
  char k[64];
  key_of(i, k, sizeof k);
  size_t kl = strlen(k), n = 100 + (i * 37) % 900;
  if (n > cap) n = cap;
  for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)k[j % kl];
  return n;
}

static int body_matches(unsigned i, const uint8_t *d, size_t n) {
  uint8_t want[1024];
  size_t wn = body_of(i, want, sizeof want);
  return n == wn && memcmp(d, want, n) == 0;
}

static int32_t getter(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  unsigned i = (unsigned)(uintptr_t)ud;
  (void)key, (void)key_len;
  uint8_t buf[1024];
  size_t n = body_of(i, buf, sizeof buf);
  if (cdn_writer_write(w, buf, n / 2) != CDN_OK) return 1;
  if (cdn_writer_write(w, buf + n / 2, n - n / 2) != CDN_OK) return 2;
  return cdn_writer_add_tag(w, (uint16_t)(i % 8)) == CDN_OK ? 0 : 3;
}

static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 1;
  uint8_t buf[1024];
  char k[64];
  for (int it = 0; it < iterations; it++) {
    seed = seed * 1103515245u + 12345u;
    unsigned i = (seed >> 8) % KEYS, op = (seed >> 20) % 100;
    key_of(i, k, sizeof k);
    if (op < 15) {
      size_t n = body_of(i, buf, sizeof buf);
      /* A purge racing the insert may win: dropped, never half-stored. */
      cdn_status st = cdn_cache_insert(cache, S(k), buf, n, 60000);
      CHECK(st == CDN_OK || st == CDN_PURGED_DURING_FILL);
    } else if (op < 25) {
      cdn_writer *w = NULL;
      size_t n = body_of(i, buf, sizeof buf);
      CHECK_OK(cdn_writer_new(cache, S(k), 60000, &w));
      CHECK_OK(cdn_writer_write(w, buf, n));
      CHECK_OK(cdn_writer_add_tag(w, (uint16_t)(i % 8)));
      cdn_status st = cdn_writer_commit(w);
      CHECK(st == CDN_OK || st == CDN_PURGED_DURING_FILL);
    } else if (op < 75) {
      cdn_object *o = NULL;
      cdn_status st = cdn_cache_get(cache, S(k), &o);
      CHECK(st == CDN_OK || st == CDN_NOT_FOUND);
      if (st == CDN_OK) {
        const uint8_t *d;
        size_t n;
        CHECK_OK(cdn_object_body(o, &d, &n));
        CHECK(body_matches(i, d, n));
        CHECK_OK(cdn_object_free(o));
      }
    } else if (op < 90) {
      cdn_object *o = NULL;
      cdn_status st = cdn_cache_fill(cache, S(k), getter, (void *)(uintptr_t)i, &o);
      /* Purges racing a fill may drop it three times in a row: rare, legal. */
      CHECK(st == CDN_OK || st == CDN_PURGED_DURING_FILL);
      if (st == CDN_OK) {
        const uint8_t *d;
        size_t n;
        CHECK_OK(cdn_object_body(o, &d, &n));
        CHECK(body_matches(i, d, n));
        CHECK_OK(cdn_object_free(o));
      }
    } else {
      cdn_purge_report r;
      switch (op % 4) {
        case 0: CHECK_OK(cdn_cache_purge_key(cache, S(k), &r)); break;
        case 1: CHECK_OK(cdn_cache_purge_tag(cache, (uint16_t)(i % 8), &r)); break;
        case 2: CHECK_OK(cdn_cache_purge_prefix(cache, S("t.com/d1/"), &r)); break;
        default: {
          cdn_counters c;
          CHECK_OK(cdn_cache_counters(cache, &c));
          CHECK(c.objects <= KEYS);
        }
      }
    }
  }
  return NULL;
}

/* Singleflight: a slow getter, many simultaneous fills of one key. */
static int slow_calls;
static pthread_barrier_t start;

static int32_t slow_getter(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  (void)ud;
  __atomic_add_fetch(&slow_calls, 1, __ATOMIC_SEQ_CST);
  struct timespec ts = {0, 200 * 1000 * 1000};
  nanosleep(&ts, NULL);
  return cdn_writer_write(w, key, key_len) == CDN_OK ? 0 : 1;
}

static void *fill_one(void *arg) {
  (void)arg;
  pthread_barrier_wait(&start);
  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_fill(cache, S("t.com/slow"), slow_getter, NULL, &o));
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 10 && memcmp(d, "t.com/slow", 10) == 0);
  CHECK_OK(cdn_object_free(o));
  return NULL;
}

int main(int argc, char **argv) {
  if (argc > 1) iterations = atoi(argv[1]);
  alarm(300); /* the whole test is bounded */
  CHECK_OK(cdn_cache_open(S("mem=4m shards=4"), &cache));
  pthread_t t[THREADS];
  for (uintptr_t i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, hammer, (void *)i);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  cdn_counters c;
  CHECK_OK(cdn_cache_counters(cache, &c));
  CHECK(c.hits + c.misses + c.stale_hits > 0 && c.inserts > 0 && c.purges > 0);

  pthread_barrier_init(&start, NULL, THREADS);
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, fill_one, NULL);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&start);
  CHECK(slow_calls == 1);
  CHECK_OK(cdn_cache_close(cache));
  return h_summary();
}

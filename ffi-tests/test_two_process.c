/* Two processes on one store: a forked writer inserts objects and keeps its
 * cache open; the parent, which opened the same store from the same config,
 * must then read every object byte for byte.
 *
 *   test_two_process CONFIG
 *
 * The store is whatever CONFIG names: with a block-tier config (issue 3)
 * both processes share it and the test passes; with a memory-only config
 * each process has its own cache and the reader must miss, so the test
 * fails (ffi-tests/run.sh checks both). Bounded by alarm(). */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "harness.h"

#define OBJECTS 200

static size_t body_of(int i, uint8_t *buf, size_t cap) {
  size_t n = 64 + (size_t)(i * 131) % 4000;
  if (n > cap) n = cap;
  for (size_t j = 0; j < n; j++) buf[j] = (uint8_t)(i * 7 + j);
  return n;
}

static void key_of(int i, char *k, size_t n) { snprintf(k, n, "two.proc/obj/%d", i); }

/* The writer: inserts OBJECTS objects, reports on `done`, stays open until
 * the reader says so on `finished`. Exit status 0 on success. */
static int writer(const char *cfg, int done, int finished) {
  cdn_cache *c;
  if (cdn_cache_open(S(cfg), &c) != CDN_OK) {
    fprintf(stderr, "writer: open: %s\n", cdn_last_error());
    return 1;
  }
  uint8_t buf[4096];
  char k[64];
  int bad = 0;
  for (int i = 0; i < OBJECTS; i++) {
    cdn_writer *w;
    key_of(i, k, sizeof k);
    size_t n = body_of(i, buf, sizeof buf);
    bad |= cdn_writer_new(c, S(k), 3600000, &w) != CDN_OK;
    if (bad) break;
    bad |= cdn_writer_write(w, buf, n / 2) != CDN_OK;
    bad |= cdn_writer_write(w, buf + n / 2, n - n / 2) != CDN_OK;
    bad |= cdn_writer_add_tag(w, 9) != CDN_OK;
    bad |= cdn_writer_commit(w) != CDN_OK;
  }
  if (bad) fprintf(stderr, "writer: %s\n", cdn_last_error());
  char byte = bad ? 'x' : 'k';
  if (write(done, &byte, 1) != 1) bad = 1;
  if (read(finished, &byte, 1) != 1) bad = 1;
  cdn_cache_close(c);
  return bad;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_two_process CONFIG\n");
    return 2;
  }
  alarm(120);
  int done[2], finished[2];
  if (pipe(done) || pipe(finished)) return 2;
  pid_t pid = fork();
  if (pid < 0) return 2;
  if (pid == 0) _exit(writer(argv[1], done[1], finished[0]));

  cdn_cache *c = NULL;
  CHECK_OK(cdn_cache_open(S(argv[1]), &c));
  char byte = 0;
  CHECK(read(done[0], &byte, 1) == 1 && byte == 'k');
  uint8_t want[4096], got[4096];
  char k[64];
  int found = 0;
  for (int i = 0; c && i < OBJECTS; i++) {
    key_of(i, k, sizeof k);
    size_t wn = body_of(i, want, sizeof want), n = 0;
    cdn_status st = cdn_cache_get_copy(c, S(k), got, sizeof got, &n);
    if (st == CDN_OK && n == wn && memcmp(got, want, n) == 0) found++;
  }
  CHECK(found == OBJECTS);
  if (found != OBJECTS) fprintf(stderr, "reader: %d of %d objects readable\n", found, OBJECTS);
  byte = 'f';
  CHECK(write(finished[1], &byte, 1) == 1);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (c) CHECK_OK(cdn_cache_close(c));
  return h_summary();
}

/* cdncache: a command-line file cache on libcdncore.
 *
 *   cdncache [CONFIG] < commands
 *
 * Reads one command per line from stdin (blank lines and # comments are
 * skipped) and runs it against one cache opened from CONFIG (default
 * "mem=64m"):
 *
 *   put KEY FILE [TTL_S] [tag=N] [skey=S] [group=G] [mask=M]   store a file
 *   get KEY                    HIT/STALE/MISS with size and metadata
 *   cat KEY                    write the body to stdout
 *   save KEY FILE              write the body to FILE
 *   fill KEY FILE              get KEY, reading FILE only on a miss
 *   rm KEY                     remove KEY
 *   purge KIND [ARG]           KIND: key prefix group tag skey mask regex all
 *   stats                      counters
 *
 * Build: cc cdncache.c -o cdncache $(pkg-config --cflags --libs cdncore)
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cdncore.h"

#define S(str) (const uint8_t *)(str), strlen(str)

static int fail(const char *what, cdn_status st) {
  fprintf(stderr, "%s: %s: %s\n", what, cdn_status_str(st), cdn_last_error());
  return 1;
}

/* Streams FILE into a writer in 64 KiB chunks. */
static cdn_status write_file(cdn_writer *w, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return CDN_NOT_FOUND;
  uint8_t chunk[65536];
  size_t got;
  cdn_status st = CDN_OK;
  while (st == CDN_OK && (got = fread(chunk, 1, sizeof chunk, f)) > 0)
    st = cdn_writer_write(w, chunk, got);
  fclose(f);
  return st;
}

/* Applies put options (tag=, skey=, group=, mask=, or a bare TTL). */
static cdn_status apply_opt(cdn_writer *w, const char *opt) {
  if (!strncmp(opt, "tag=", 4)) return cdn_writer_add_tag(w, (uint16_t)strtoul(opt + 4, NULL, 10));
  if (!strncmp(opt, "skey=", 5)) return cdn_writer_add_surrogate_key(w, S(opt + 5));
  if (!strncmp(opt, "group=", 6)) return cdn_writer_set_group(w, S(opt + 6));
  if (!strncmp(opt, "mask=", 5)) return cdn_writer_set_mask(w, strtoull(opt + 5, NULL, 0));
  return cdn_writer_set_ttl(w, strtoull(opt, NULL, 10) * 1000);
}

static int cmd_put(cdn_cache *c, char **arg, int n) {
  if (n < 3) { fprintf(stderr, "usage: put KEY FILE [TTL_S] [tag=N] ...\n"); return 1; }
  cdn_writer *w;
  cdn_status st = cdn_writer_new(c, S(arg[1]), 3600 * 1000, &w);
  if (st != CDN_OK) return fail("put", st);
  if ((st = write_file(w, arg[2])) == CDN_NOT_FOUND) {
    cdn_writer_abort(w);
    fprintf(stderr, "put: %s: %s\n", arg[2], strerror(errno));
    return 1;
  }
  for (int i = 3; i < n && st == CDN_OK; i++) st = apply_opt(w, arg[i]);
  if (st != CDN_OK) { cdn_writer_abort(w); return fail("put", st); }
  if ((st = cdn_writer_commit(w)) != CDN_OK) return fail("put", st);
  printf("stored %s\n", arg[1]);
  return 0;
}

static int cmd_get(cdn_cache *c, const char *key) {
  cdn_object *o;
  cdn_status st = cdn_cache_get(c, S(key), &o);
  if (st == CDN_NOT_FOUND) { printf("MISS %s\n", key); return 0; }
  if (st != CDN_OK) return fail("get", st);
  cdn_object_info info;
  cdn_object_get_info(o, &info);
  const uint16_t *tags;
  size_t ntags;
  cdn_object_tags(o, &tags, &ntags);
  printf("%s %s %" PRIu64 " bytes ttl=%" PRIu64 "s tags=", info.fresh ? "HIT" : "STALE", key,
         info.size, (info.expires_at_ms - info.stored_at_ms) / 1000);
  for (size_t i = 0; i < ntags; i++) printf("%s%u", i ? "," : "", tags[i]);
  printf("\n");
  cdn_object_free(o);
  return 0;
}

/* Writes the body of KEY to `out` without copying it out of the cache. */
static int cmd_cat(cdn_cache *c, const char *key, FILE *out) {
  cdn_object *o;
  cdn_status st = cdn_cache_get(c, S(key), &o);
  if (st != CDN_OK) return fail("cat", st);
  const uint8_t *body;
  size_t len;
  cdn_object_body(o, &body, &len);
  int bad = fwrite(body, 1, len, out) != len;
  cdn_object_free(o);
  return bad;
}

static int cmd_save(cdn_cache *c, const char *key, const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) { fprintf(stderr, "save: %s: %s\n", path, strerror(errno)); return 1; }
  int rc = cmd_cat(c, key, f);
  return fclose(f) != 0 || rc;
}

/* The getter of `fill`: reads the file named by userdata. */
static int32_t file_getter(void *userdata, const uint8_t *key, size_t key_len, cdn_writer *w) {
  (void)key, (void)key_len;
  printf("  (getter: reading %s)\n", (const char *)userdata);
  return write_file(w, userdata) == CDN_OK ? 0 : 1;
}

static int cmd_fill(cdn_cache *c, const char *key, const char *path) {
  cdn_object *o;
  cdn_status st = cdn_cache_fill(c, S(key), file_getter, (void *)path, &o);
  if (st != CDN_OK) return fail("fill", st);
  cdn_object_info info;
  cdn_object_get_info(o, &info);
  printf("filled %s %" PRIu64 " bytes\n", key, info.size);
  cdn_object_free(o);
  return 0;
}

static int cmd_purge(cdn_cache *c, const char *kind, const char *arg) {
  cdn_purge_report r;
  cdn_status st;
  if (!strcmp(kind, "all")) st = cdn_cache_purge_all(c, &r);
  else if (!arg) { fprintf(stderr, "purge %s needs an argument\n", kind); return 1; }
  else if (!strcmp(kind, "key")) st = cdn_cache_purge_key(c, S(arg), &r);
  else if (!strcmp(kind, "prefix")) st = cdn_cache_purge_prefix(c, S(arg), &r);
  else if (!strcmp(kind, "group")) st = cdn_cache_purge_group(c, S(arg), &r);
  else if (!strcmp(kind, "tag")) st = cdn_cache_purge_tag(c, (uint16_t)strtoul(arg, NULL, 10), &r);
  else if (!strcmp(kind, "skey")) st = cdn_cache_purge_surrogate_key(c, S(arg), &r);
  else if (!strcmp(kind, "mask")) st = cdn_cache_purge_mask(c, strtoull(arg, NULL, 0), &r);
  else if (!strcmp(kind, "regex")) st = cdn_cache_purge_regex(c, S(arg), &r);
  else { fprintf(stderr, "unknown purge kind %s\n", kind); return 1; }
  if (st != CDN_OK) return fail("purge", st);
  printf("purged %s%s%s (seq %" PRIu64 ")\n", kind, arg ? " " : "", arg ? arg : "", r.seq);
  return 0;
}

static int cmd_stats(cdn_cache *c) {
  cdn_counters k;
  cdn_status st = cdn_cache_counters(c, &k);
  if (st != CDN_OK) return fail("stats", st);
  printf("objects=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64 " inserts=%" PRIu64
         " purges=%" PRIu64 " bytes_used=%" PRIu64 "\n",
         k.objects, k.hits, k.misses, k.inserts, k.purges, k.bytes_used);
  return 0;
}

static int run(cdn_cache *c, char **a, int n) {
  if (!strcmp(a[0], "put")) return cmd_put(c, a, n);
  if (!strcmp(a[0], "stats")) return cmd_stats(c);
  if (n < 2) { fprintf(stderr, "%s: missing argument\n", a[0]); return 1; }
  if (!strcmp(a[0], "get")) return cmd_get(c, a[1]);
  if (!strcmp(a[0], "cat")) return cmd_cat(c, a[1], stdout);
  if (!strcmp(a[0], "purge")) return cmd_purge(c, a[1], n > 2 ? a[2] : NULL);
  if (!strcmp(a[0], "rm")) {
    cdn_status st = cdn_cache_remove(c, S(a[1]));
    printf("%s %s\n", st == CDN_OK ? "removed" : "absent", a[1]);
    return st != CDN_OK && st != CDN_NOT_FOUND;
  }
  if (n < 3) { fprintf(stderr, "%s: missing argument\n", a[0]); return 1; }
  if (!strcmp(a[0], "save")) return cmd_save(c, a[1], a[2]);
  if (!strcmp(a[0], "fill")) return cmd_fill(c, a[1], a[2]);
  fprintf(stderr, "unknown command %s\n", a[0]);
  return 1;
}

int main(int argc, char **argv) {
  const char *cfg = argc > 1 ? argv[1] : "mem=64m";
  if (cdn_abi_version() != CDN_ABI_VERSION) {
    fprintf(stderr, "libcdncore ABI %u, header %u\n", cdn_abi_version(), CDN_ABI_VERSION);
    return 2;
  }
  cdn_cache *c;
  cdn_status st = cdn_cache_open(S(cfg), &c);
  if (st != CDN_OK) return fail("open", st) + 1;
  char line[4096];
  int errors = 0;
  while (fgets(line, sizeof line, stdin)) {
    char *a[16];
    int n = 0;
    for (char *t = strtok(line, " \t\r\n"); t && n < 16 && t[0] != '#'; t = strtok(NULL, " \t\r\n"))
      a[n++] = t;
    if (n > 0) errors += run(c, a, n);
  }
  cdn_cache_close(c);
  return errors ? 1 : 0;
}

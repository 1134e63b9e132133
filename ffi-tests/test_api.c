/* Every function of cdncore.h, with its error paths: NULL handles and
 * buffers, zero and huge lengths, invalid config and regex, handles of the
 * wrong kind, double release. Outputs must stay untouched on failure. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include "harness.h"

#define HUGE_LEN ((size_t)-1)

static cdn_cache *open_ok(const char *cfg) {
  cdn_cache *c = NULL;
  CHECK_OK(cdn_cache_open(S(cfg), &c));
  CHECK(c != NULL);
  return c;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Is `key` cached (fresh or stale)? */
static int cached(cdn_cache *c, const char *key) {
  cdn_object *o = NULL;
  cdn_status st = cdn_cache_get(c, S(key), &o);
  if (st == CDN_OK) cdn_object_free(o);
  return st == CDN_OK;
}

static void test_version_and_status_names(void) {
  CHECK(cdn_abi_version() == CDN_ABI_VERSION);
  CHECK(strcmp(cdn_status_str(CDN_OK), "CDN_OK") == 0);
  CHECK(strcmp(cdn_status_str(CDN_INVALID_REGEX), "CDN_INVALID_REGEX") == 0);
  CHECK(strcmp(cdn_status_str(CDN_PANIC), "CDN_PANIC") == 0);
  CHECK(strcmp(cdn_status_str(CDN_IO_ERROR), "CDN_IO_ERROR") == 0);
  CHECK(strcmp(cdn_status_str(-1), "CDN_UNKNOWN") == 0);
  CHECK(strcmp(cdn_status_str(1000), "CDN_UNKNOWN") == 0);
}

static void test_open_errors(void) {
  cdn_cache *sentinel = (cdn_cache *)(uintptr_t)0x1234;
  cdn_cache *c = sentinel;
  CHECK_ST(cdn_cache_open(NULL, 0, &c), CDN_INVALID_ARGUMENT);
  CHECK(c == sentinel);
  CHECK_ST(cdn_cache_open(S("mem=16m"), NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_open(S("mem=12q"), &c), CDN_INVALID_CONFIG);
  CHECK(last_error_has("mem"));
  CHECK(c == sentinel);
  CHECK_ST(cdn_cache_open(S("colour=blue"), &c), CDN_INVALID_CONFIG);
  CHECK(last_error_has("colour"));
  CHECK_ST(cdn_cache_open(S("shards=0"), &c), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_cache_open((const uint8_t *)"mem=\xff\xfe", 6, &c), CDN_INVALID_CONFIG);
  CHECK(last_error_has("UTF-8"));
  /* A huge length is refused before a byte is read. */
  CHECK_ST(cdn_cache_open((const uint8_t *)"mem=1m", HUGE_LEN, &c), CDN_INVALID_CONFIG);
  CHECK(c == sentinel);
  /* Empty config: defaults. */
  CHECK_OK(cdn_cache_open((const uint8_t *)"", 0, &c));
  CHECK(c != sentinel);
  CHECK_OK(cdn_cache_close(c));
}

static void test_last_error(void) {
  cdn_cache *c = NULL;
  CHECK_ST(cdn_cache_open(S("mem=12q"), &c), CDN_INVALID_CONFIG);
  size_t msg_len = strlen(cdn_last_error());
  CHECK(msg_len > 0);
  size_t need = 0;
  CHECK_ST(cdn_last_error_copy(NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == msg_len + 1);
  char small[4];
  size_t n = 77;
  CHECK_ST(cdn_last_error_copy(small, sizeof small, &n), CDN_BUFFER_TOO_SMALL);
  CHECK(n == msg_len + 1);
  char *buf = malloc(need);
  CHECK_OK(cdn_last_error_copy(buf, need, &n));
  CHECK(n == msg_len);
  CHECK(strcmp(buf, cdn_last_error()) == 0);
  free(buf);
  CHECK_ST(cdn_last_error_copy(NULL, 10, &n), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_last_error_copy(small, sizeof small, NULL), CDN_INVALID_ARGUMENT);
  /* A successful call clears the message. */
  CHECK_OK(cdn_cache_open(S("mem=1m shards=1"), &c));
  CHECK(strcmp(cdn_last_error(), "") == 0);
  CHECK_OK(cdn_cache_close(c));
}

static void test_insert_get_copy(cdn_cache *c) {
  CHECK_OK(cdn_cache_insert(c, S("a.com/x"), S("hello world"), 60000));
  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_get(c, S("a.com/x"), &o));
  const uint8_t *body = NULL;
  size_t len = 0;
  CHECK_OK(cdn_object_body(o, &body, &len));
  CHECK(len == 11 && memcmp(body, "hello world", 11) == 0);
  const uint8_t *key = NULL;
  CHECK_OK(cdn_object_key(o, &key, &len));
  CHECK(len == 7 && memcmp(key, "a.com/x", 7) == 0);
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(info.fresh && info.status == 200 && info.size == 11);
  CHECK(info.expires_at_ms >= info.stored_at_ms + 60000);
  CHECK(info.header_count == 0 && info.tag_count == 0 && info.surrogate_key_count == 0);
  CHECK_OK(cdn_object_free(o));

  uint8_t buf[32];
  size_t n = 0;
  CHECK_OK(cdn_cache_get_copy(c, S("a.com/x"), buf, sizeof buf, &n));
  CHECK(n == 11 && memcmp(buf, "hello world", 11) == 0);
  n = 0;
  CHECK_ST(cdn_cache_get_copy(c, S("a.com/x"), buf, 5, &n), CDN_BUFFER_TOO_SMALL);
  CHECK(n == 11);
  n = 0;
  CHECK_ST(cdn_cache_get_copy(c, S("a.com/x"), NULL, 0, &n), CDN_BUFFER_TOO_SMALL);
  CHECK(n == 11);
  CHECK_ST(cdn_cache_get_copy(c, S("a.com/x"), NULL, 10, &n), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_get_copy(c, S("a.com/x"), buf, sizeof buf, NULL), CDN_INVALID_ARGUMENT);
  n = 99;
  CHECK_ST(cdn_cache_get_copy(c, S("a.com/none"), buf, sizeof buf, &n), CDN_NOT_FOUND);
  CHECK(n == 99);
  /* Empty body: size 0 fits a NULL buffer. */
  CHECK_OK(cdn_cache_insert(c, S("a.com/empty"), NULL, 0, 60000));
  CHECK_OK(cdn_cache_get_copy(c, S("a.com/empty"), NULL, 0, &n));
  CHECK(n == 0);
  CHECK_ST(cdn_cache_insert(c, S("a.com/bad"), NULL, 5, 60000), CDN_INVALID_ARGUMENT);
}

static void test_get_errors(cdn_cache *c) {
  cdn_object *sentinel = (cdn_object *)(uintptr_t)0x5678;
  cdn_object *o = sentinel;
  CHECK_ST(cdn_cache_get(NULL, S("a.com/x"), &o), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_get(c, NULL, 3, &o), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_get(c, (const uint8_t *)"k", 0, &o), CDN_INVALID_KEY);
  CHECK_ST(cdn_cache_get(c, (const uint8_t *)"k", HUGE_LEN, &o), CDN_INVALID_KEY);
  CHECK(last_error_has("over the limit"));
  CHECK_ST(cdn_cache_get(c, S("a.com/x"), NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_get(c, S("a.com/missing"), &o), CDN_NOT_FOUND);
  CHECK(o == sentinel);
  /* A handle of another kind, or zeroed memory, is not a cache. */
  uint64_t fake[8] = {0};
  CHECK_ST(cdn_cache_get((const cdn_cache *)fake, S("a.com/x"), &o), CDN_INVALID_HANDLE);
  cdn_object *real = NULL;
  CHECK_OK(cdn_cache_get(c, S("a.com/x"), &real));
  CHECK_ST(cdn_cache_get((const cdn_cache *)real, S("a.com/x"), &o), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_object_free((cdn_object *)c), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_cache_close((cdn_cache *)real), CDN_INVALID_HANDLE);
  CHECK_OK(cdn_object_free(real));
  CHECK(o == sentinel);
  /* Object accessors. */
  const uint8_t *d = NULL;
  size_t n = 0;
  CHECK_ST(cdn_object_body(NULL, &d, &n), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_object_body((const cdn_object *)fake, &d, &n), CDN_INVALID_HANDLE);
  CHECK_OK(cdn_object_free(NULL));
  cdn_object_info info;
  CHECK_ST(cdn_object_get_info(NULL, &info), CDN_INVALID_ARGUMENT);
  CHECK(cdn_cache_max_object(NULL) == 0);
  CHECK(cdn_cache_max_object((const cdn_cache *)fake) == 0);
  CHECK_ST(cdn_cache_remove(NULL, S("a.com/x")), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_insert(NULL, S("k"), S("v"), 1), CDN_INVALID_ARGUMENT);
  cdn_counters ctr;
  CHECK_ST(cdn_cache_counters(NULL, &ctr), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_counters(c, NULL), CDN_INVALID_ARGUMENT);
  uint64_t removed;
  CHECK_ST(cdn_cache_reclaim(NULL, &removed), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_reclaim(c, NULL), CDN_INVALID_ARGUMENT);
}

static void test_writer_metadata(cdn_cache *c) {
  cdn_writer *w = NULL;
  CHECK_OK(cdn_writer_new(c, S("b.com/news/1.html"), 30000, &w));
  CHECK_OK(cdn_writer_write(w, S("<h1>")));
  CHECK_OK(cdn_writer_write(w, (const uint8_t *)"", 0));
  CHECK_OK(cdn_writer_write(w, S("news</h1>")));
  CHECK_OK(cdn_writer_set_status(w, 203));
  CHECK_OK(cdn_writer_set_ttl(w, 90000));
  CHECK_OK(cdn_writer_set_stale(w, 5, 60));
  CHECK_OK(cdn_writer_set_etag(w, S("\"v1\"")));
  CHECK_OK(cdn_writer_set_last_modified(w, 1700000000));
  CHECK_OK(cdn_writer_add_tag(w, 7));
  CHECK_OK(cdn_writer_add_tag(w, 9));
  CHECK_OK(cdn_writer_add_surrogate_key(w, S("article-1")));
  CHECK_OK(cdn_writer_add_surrogate_key(w, S("front")));
  CHECK_OK(cdn_writer_set_group(w, S("tenant-a")));
  CHECK_OK(cdn_writer_set_mask(w, 0x5));
  CHECK_OK(cdn_writer_add_header(w, S("Content-Type"), S("text/html")));
  CHECK_OK(cdn_writer_add_header(w, S("X-Empty"), (const uint8_t *)"", 0));
  CHECK_OK(cdn_writer_commit(w));

  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_get(c, S("b.com/news/1.html"), &o));
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(info.status == 203 && info.fresh);
  CHECK(info.expires_at_ms == info.stored_at_ms + 90000);
  CHECK(info.stale_while_revalidate_s == 5 && info.stale_if_error_s == 60);
  CHECK(info.last_modified_s == 1700000000);
  CHECK(info.mask == 0x5 && info.size == 13 && info.checksum != 0);
  CHECK(info.header_count == 2 && info.tag_count == 2 && info.surrogate_key_count == 2);
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 13 && memcmp(d, "<h1>news</h1>", 13) == 0);
  CHECK_OK(cdn_object_etag(o, &d, &n));
  CHECK(n == 4 && memcmp(d, "\"v1\"", 4) == 0);
  CHECK_OK(cdn_object_group(o, &d, &n));
  CHECK(n == 8 && memcmp(d, "tenant-a", 8) == 0);
  const uint16_t *tags;
  CHECK_OK(cdn_object_tags(o, &tags, &n));
  CHECK(n == 2 && tags[0] == 7 && tags[1] == 9);
  CHECK_OK(cdn_object_surrogate_key(o, 1, &d, &n));
  CHECK(n == 5 && memcmp(d, "front", 5) == 0);
  d = NULL;
  CHECK_ST(cdn_object_surrogate_key(o, 2, &d, &n), CDN_NOT_FOUND);
  CHECK(d == NULL);
  const uint8_t *name, *value;
  size_t nl, vl;
  CHECK_OK(cdn_object_header(o, 0, &name, &nl, &value, &vl));
  CHECK(nl == 12 && memcmp(name, "Content-Type", 12) == 0);
  CHECK(vl == 9 && memcmp(value, "text/html", 9) == 0);
  CHECK_OK(cdn_object_header(o, 1, &name, &nl, &value, &vl));
  CHECK(nl == 7 && vl == 0);
  CHECK_ST(cdn_object_header(o, 2, &name, &nl, &value, &vl), CDN_NOT_FOUND);
  CHECK_ST(cdn_object_header(o, 0, NULL, &nl, &value, &vl), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_object_header_find(o, S("content-TYPE"), &value, &vl));
  CHECK(vl == 9 && memcmp(value, "text/html", 9) == 0);
  CHECK_ST(cdn_object_header_find(o, S("etag"), &value, &vl), CDN_NOT_FOUND);
  CHECK_ST(cdn_object_header_find(o, NULL, 3, &value, &vl), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_object_header_find(o, (const uint8_t *)"a", HUGE_LEN, &value, &vl), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_object_tags(o, NULL, &n), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_object_key(o, &d, NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_object_get_info(o, NULL), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_object_free(o));

  /* An object without etag or group. */
  CHECK_OK(cdn_cache_insert(c, S("b.com/plain"), S("p"), 60000));
  CHECK_OK(cdn_cache_get(c, S("b.com/plain"), &o));
  d = NULL;
  CHECK_ST(cdn_object_etag(o, &d, &n), CDN_NOT_FOUND);
  CHECK_ST(cdn_object_group(o, &d, &n), CDN_NOT_FOUND);
  CHECK(d == NULL);
  CHECK_OK(cdn_object_tags(o, &tags, &n));
  CHECK(n == 0 && tags != NULL);
  CHECK_OK(cdn_object_free(o));
}

static void test_writer_errors(cdn_cache *c) {
  cdn_writer *sentinel = (cdn_writer *)(uintptr_t)0x9abc;
  cdn_writer *w = sentinel;
  CHECK_ST(cdn_writer_new(NULL, S("k"), 1000, &w), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_new(c, NULL, 1, 1000, &w), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_new(c, S("k"), 1000, NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_new(c, (const uint8_t *)"k", 0, 1000, &w), CDN_INVALID_KEY);
  CHECK_ST(cdn_writer_new_sized(c, S("k"), 1000, UINT64_MAX, &w), CDN_TOO_LARGE);
  CHECK(w == sentinel);
  CHECK_ST(cdn_writer_write(NULL, S("x")), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_commit(NULL), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_writer_abort(NULL));

  /* Bad metadata and NULL data do not poison the writer. */
  CHECK_OK(cdn_writer_new(c, S("c.com/1"), 60000, &w));
  CHECK_ST(cdn_writer_write(w, NULL, 4), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_set_status(w, 42), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_add_header(w, (const uint8_t *)"", 0, S("v")), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_add_header(w, (const uint8_t *)"\xff", 1, S("v")), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_add_header(w, S("N"), NULL, 1), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_add_surrogate_key(w, (const uint8_t *)"", 0), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_add_surrogate_key(w, NULL, 0), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_set_etag(w, NULL, 2), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_writer_set_group(w, (const uint8_t *)"g", HUGE_LEN), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_writer_write(w, S("ok")));
  CHECK_OK(cdn_writer_commit(w));
  CHECK(cached(c, "c.com/1"));
  /* Released writers are refused, without touching freed memory. */
  CHECK_ST(cdn_writer_commit(w), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_writer_abort(w), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_writer_write(w, S("x")), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_writer_set_mask(w, 1), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_writer_abort((cdn_writer *)c), CDN_INVALID_HANDLE);

  /* A huge write fails for good; the commit reports it and frees. */
  CHECK_OK(cdn_writer_new(c, S("c.com/2"), 60000, &w));
  CHECK_OK(cdn_writer_write(w, S("abc")));
  CHECK_ST(cdn_writer_write(w, (const uint8_t *)"x", HUGE_LEN), CDN_TOO_LARGE);
  CHECK_ST(cdn_writer_write(w, S("more")), CDN_TOO_LARGE);
  CHECK_ST(cdn_writer_commit(w), CDN_TOO_LARGE);
  CHECK_ST(cdn_writer_abort(w), CDN_INVALID_HANDLE);
  CHECK(!cached(c, "c.com/2"));

  /* Declared sizes. */
  CHECK_OK(cdn_writer_new_sized(c, S("c.com/3"), 60000, 4, &w));
  CHECK_OK(cdn_writer_write(w, S("abc")));
  CHECK_ST(cdn_writer_commit(w), CDN_SIZE_MISMATCH);
  CHECK_OK(cdn_writer_new_sized(c, S("c.com/3"), 60000, 4, &w));
  CHECK_ST(cdn_writer_write(w, S("abcde")), CDN_SIZE_MISMATCH);
  CHECK_ST(cdn_writer_commit(w), CDN_SIZE_MISMATCH);
  CHECK(!cached(c, "c.com/3"));
  CHECK_OK(cdn_writer_new_sized(c, S("c.com/3"), 60000, 4, &w));
  CHECK_OK(cdn_writer_write(w, S("abcd")));
  CHECK_OK(cdn_writer_commit(w));
  CHECK(cached(c, "c.com/3"));

  /* Abort leaves no trace. */
  CHECK_OK(cdn_writer_new(c, S("c.com/4"), 60000, &w));
  CHECK_OK(cdn_writer_write(w, S("never")));
  CHECK_OK(cdn_writer_abort(w));
  CHECK(!cached(c, "c.com/4"));

  /* A purge during the write drops the body. */
  cdn_purge_report r;
  CHECK_OK(cdn_writer_new(c, S("c.com/5"), 60000, &w));
  CHECK_OK(cdn_writer_write(w, S("old")));
  CHECK_OK(cdn_cache_purge_key(c, S("c.com/5"), &r));
  CHECK_ST(cdn_writer_commit(w), CDN_PURGED_DURING_FILL);
  CHECK(!cached(c, "c.com/5"));

  /* Too large for the cache. */
  uint64_t max = cdn_cache_max_object(c);
  CHECK(max > 0);
  uint8_t *big = calloc(1, (size_t)max + 1);
  CHECK_ST(cdn_cache_insert(c, S("c.com/big"), big, (size_t)max + 1, 60000), CDN_TOO_LARGE);
  CHECK_OK(cdn_cache_insert(c, S("c.com/big"), big, (size_t)max, 60000));
  free(big);
  CHECK_ST(cdn_cache_insert(c, S("c.com/huge"), (const uint8_t *)"x", HUGE_LEN, 60000), CDN_TOO_LARGE);
}

static void test_stale_and_remove(cdn_cache *c) {
  CHECK_OK(cdn_cache_insert(c, S("d.com/s"), S("stale soon"), 1000));
  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_get_at(c, S("d.com/s"), now_ms() + 3600 * 1000, &o));
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(!info.fresh);
  CHECK_OK(cdn_object_free(o));
  CHECK_OK(cdn_cache_get_at(c, S("d.com/s"), 0, &o));
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(info.fresh);
  CHECK_OK(cdn_object_free(o));
  CHECK_OK(cdn_cache_remove(c, S("d.com/s")));
  CHECK_ST(cdn_cache_remove(c, S("d.com/s")), CDN_NOT_FOUND);
  CHECK_ST(cdn_cache_remove(c, (const uint8_t *)"x", 0), CDN_INVALID_KEY);
}

/* Stores `key` with a tag, surrogate key, group and mask. */
static void put_meta(cdn_cache *c, const char *key, uint16_t tag, const char *skey,
                     const char *group, uint64_t mask) {
  cdn_writer *w = NULL;
  CHECK_OK(cdn_writer_new(c, S(key), 60000, &w));
  CHECK_OK(cdn_writer_write(w, S(key)));
  CHECK_OK(cdn_writer_add_tag(w, tag));
  CHECK_OK(cdn_writer_add_surrogate_key(w, S(skey)));
  if (group) CHECK_OK(cdn_writer_set_group(w, S(group)));
  CHECK_OK(cdn_writer_set_mask(w, mask));
  CHECK_OK(cdn_writer_commit(w));
}

static void test_purges(void) {
  cdn_cache *c = open_ok("mem=16m shards=2");
  cdn_purge_report r, prev;
  memset(&prev, 0, sizeof prev);
#define FRESH_SET()                                      \
  do {                                                   \
    put_meta(c, "e.com/a/1", 1, "sk-a", "g1", 0x1);      \
    put_meta(c, "e.com/b/2", 2, "sk-b", NULL, 0x2);      \
    put_meta(c, "f.com/c/3", 3, "sk-c", "g1", 0x4);      \
  } while (0)
  FRESH_SET();
  CHECK_OK(cdn_cache_purge_key(c, S("e.com/a/1"), &r));
  CHECK(r.covered_known && r.covered == 1 && r.seq > prev.seq);
  prev = r;
  CHECK(!cached(c, "e.com/a/1") && cached(c, "e.com/b/2") && cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_prefix(c, S("e.com/b/"), &r));
  CHECK(!r.covered_known && r.seq == prev.seq + 1);
  prev = r;
  CHECK(cached(c, "e.com/a/1") && !cached(c, "e.com/b/2") && cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_group(c, S("g1"), &r));
  CHECK(!cached(c, "e.com/a/1") && cached(c, "e.com/b/2") && !cached(c, "f.com/c/3"));
  FRESH_SET();
  CHECK_OK(cdn_cache_purge_group(c, S("e.com"), &r)); /* default group: the host */
  CHECK(cached(c, "e.com/a/1") && !cached(c, "e.com/b/2") && cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_tag(c, 3, &r));
  CHECK(cached(c, "e.com/a/1") && cached(c, "e.com/b/2") && !cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_surrogate_key(c, S("sk-b"), &r));
  CHECK(cached(c, "e.com/a/1") && !cached(c, "e.com/b/2") && cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_mask(c, 0x5, &r));
  CHECK(!cached(c, "e.com/a/1") && cached(c, "e.com/b/2") && !cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_regex(c, S("^e\\.com/[ab]/"), &r));
  CHECK(!cached(c, "e.com/a/1") && !cached(c, "e.com/b/2") && cached(c, "f.com/c/3"));

  FRESH_SET();
  CHECK_OK(cdn_cache_purge_all(c, &r));
  CHECK(r.covered_known && r.covered == 3);
  CHECK(!cached(c, "e.com/a/1") && !cached(c, "e.com/b/2") && !cached(c, "f.com/c/3"));

  /* Reclaim sweeps purged objects. */
  FRESH_SET();
  CHECK_OK(cdn_cache_purge_tag(c, 1, &r));
  uint64_t removed = 99;
  CHECK_OK(cdn_cache_reclaim(c, &removed));
  cdn_counters ctr;
  CHECK_OK(cdn_cache_counters(c, &ctr));
  CHECK(ctr.objects == 2);
  CHECK(ctr.purges >= 10);
#undef FRESH_SET

  /* Errors. */
  memset(&r, 0xab, sizeof r);
  cdn_purge_report before = r;
  CHECK_ST(cdn_cache_purge_regex(c, S("(unclosed"), &r), CDN_INVALID_REGEX);
  CHECK(last_error_has("unclosed"));
  CHECK(memcmp(&r, &before, sizeof r) == 0);
  CHECK_ST(cdn_cache_purge_regex(c, (const uint8_t *)"\xff(", 2, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_regex(c, NULL, 0, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_mask(c, 0, &r), CDN_INVALID_PURGE);
  CHECK_ST(cdn_cache_purge_key(c, (const uint8_t *)"k", 0, &r), CDN_INVALID_KEY);
  CHECK_ST(cdn_cache_purge_key(c, (const uint8_t *)"k", HUGE_LEN, &r), CDN_INVALID_KEY);
  CHECK_ST(cdn_cache_purge_prefix(c, (const uint8_t *)"p", HUGE_LEN, &r), CDN_INVALID_PURGE);
  CHECK_ST(cdn_cache_purge_prefix(c, NULL, 1, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_group(c, NULL, 1, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_surrogate_key(c, (const uint8_t *)"\xc3", 1, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_tag(c, 1, NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_all(NULL, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_purge_all(c, NULL), CDN_INVALID_ARGUMENT);
  CHECK(memcmp(&r, &before, sizeof r) == 0);
  CHECK_OK(cdn_cache_close(c));
}

static void test_counters(void) {
  cdn_cache *c = open_ok("mem=8m shards=1");
  cdn_counters ctr;
  CHECK_OK(cdn_cache_insert(c, S("g.com/1"), S("12345"), 60000));
  cdn_object *o;
  CHECK_OK(cdn_cache_get(c, S("g.com/1"), &o));
  CHECK_OK(cdn_object_free(o));
  CHECK_ST(cdn_cache_get(c, S("g.com/2"), &o), CDN_NOT_FOUND);
  CHECK_OK(cdn_cache_counters(c, &ctr));
  CHECK(ctr.hits == 1 && ctr.misses == 1 && ctr.inserts == 1);
  CHECK(ctr.bytes_inserted == 5 && ctr.bytes_hit == 5 && ctr.objects == 1);
  CHECK(ctr.bytes_capacity == 8u << 20 && ctr.bytes_used > 5);
  CHECK_OK(cdn_cache_close(c));
}

/* Getters for cdn_cache_fill. */
struct fill_ctx {
  cdn_cache *cache;
  int calls;
  int rc;            /* what the getter returns */
  cdn_status inner;  /* status of a call the getter made on its own */
};

static int32_t getter_ok(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct fill_ctx *ctx = ud;
  ctx->calls++;
  if (cdn_writer_write(w, S("filled:")) != CDN_OK) return 10;
  if (cdn_writer_write(w, key, key_len) != CDN_OK) return 11;
  if (cdn_writer_add_tag(w, 42) != CDN_OK) return 12;
  if (cdn_writer_add_header(w, S("X-Filled"), S("yes")) != CDN_OK) return 13;
  return ctx->rc;
}

static int32_t getter_commits(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct fill_ctx *ctx = ud;
  (void)key, (void)key_len;
  ctx->calls++;
  cdn_writer_write(w, S("x"));
  ctx->inner = cdn_writer_commit(w);
  if (cdn_writer_abort(w) != CDN_INVALID_ARGUMENT) ctx->inner = CDN_ERROR;
  return 0;
}

static int32_t getter_reenters(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct fill_ctx *ctx = ud;
  ctx->calls++;
  cdn_object *o = NULL;
  ctx->inner = cdn_cache_fill(ctx->cache, key, key_len, getter_reenters, ud, &o);
  /* Another key from inside a getter is fine. */
  struct fill_ctx other = {ctx->cache, 0, 0, CDN_OK};
  if (cdn_cache_fill(ctx->cache, S("h.com/other"), getter_ok, &other, &o) != CDN_OK) return 20;
  cdn_object_free(o);
  cdn_writer_write(w, S("outer"));
  return 0;
}

static int32_t getter_too_big(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct fill_ctx *ctx = ud;
  (void)key, (void)key_len;
  ctx->calls++;
  uint64_t max = cdn_cache_max_object(ctx->cache);
  uint8_t *buf = calloc(1, (size_t)max + 1);
  ctx->inner = cdn_writer_write(w, buf, (size_t)max + 1);
  free(buf);
  return 0; /* ignores the failed write: the fill must still fail */
}

static void test_fill(void) {
  cdn_cache *c = open_ok("mem=8m shards=2 default_ttl=1m");
  struct fill_ctx ctx = {c, 0, 0, CDN_OK};
  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_fill(c, S("h.com/1"), getter_ok, &ctx, &o));
  CHECK(ctx.calls == 1);
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 14 && memcmp(d, "filled:h.com/1", 14) == 0);
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(info.fresh && info.tag_count == 1 && info.header_count == 1);
  CHECK(info.expires_at_ms == info.stored_at_ms + 60000);
  CHECK_OK(cdn_object_free(o));
  /* A hit does not call the getter. */
  CHECK_OK(cdn_cache_fill(c, S("h.com/1"), getter_ok, &ctx, &o));
  CHECK(ctx.calls == 1);
  CHECK_OK(cdn_object_free(o));
  /* After a purge, it does. */
  cdn_purge_report r;
  CHECK_OK(cdn_cache_purge_tag(c, 42, &r));
  CHECK_OK(cdn_cache_fill(c, S("h.com/1"), getter_ok, &ctx, &o));
  CHECK(ctx.calls == 2);
  CHECK_OK(cdn_object_free(o));

  /* A failing getter stores nothing. */
  struct fill_ctx bad = {c, 0, 7, CDN_OK};
  o = (cdn_object *)(uintptr_t)0x77;
  CHECK_ST(cdn_cache_fill(c, S("h.com/2"), getter_ok, &bad, &o), CDN_GETTER_FAILED);
  CHECK(last_error_has("7"));
  CHECK(o == (cdn_object *)(uintptr_t)0x77);
  CHECK(!cached(c, "h.com/2"));

  /* The getter may not commit or abort the lent writer. */
  struct fill_ctx com = {c, 0, 0, CDN_OK};
  CHECK_OK(cdn_cache_fill(c, S("h.com/3"), getter_commits, &com, &o));
  CHECK(com.inner == CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_object_free(o));

  /* Filling one's own key would deadlock: refused. */
  struct fill_ctx re = {c, 0, 0, CDN_OK};
  CHECK_OK(cdn_cache_fill(c, S("h.com/4"), getter_reenters, &re, &o));
  CHECK(re.inner == CDN_WOULD_DEADLOCK && re.calls == 1);
  CHECK(cached(c, "h.com/other"));
  CHECK_OK(cdn_object_free(o));

  /* Too large a body fails the fill even if the getter ignores the error. */
  struct fill_ctx big = {c, 0, 0, CDN_OK};
  CHECK_ST(cdn_cache_fill(c, S("h.com/5"), getter_too_big, &big, &o), CDN_TOO_LARGE);
  CHECK(big.inner == CDN_TOO_LARGE);
  CHECK(!cached(c, "h.com/5"));

  /* Argument checks. */
  CHECK_ST(cdn_cache_fill(c, S("h.com/6"), NULL, &ctx, &o), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_fill(NULL, S("h.com/6"), getter_ok, &ctx, &o), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_fill(c, NULL, 4, getter_ok, &ctx, &o), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_cache_fill(c, (const uint8_t *)"k", 0, getter_ok, &ctx, &o), CDN_INVALID_KEY);
  CHECK_ST(cdn_cache_fill(c, S("h.com/6"), getter_ok, &ctx, NULL), CDN_INVALID_ARGUMENT);
  CHECK(ctx.calls == 2);
  CHECK_OK(cdn_cache_close(c));
}

static void test_close_and_lifetimes(void) {
  cdn_cache *c = open_ok("mem=8m shards=1");
  CHECK_OK(cdn_cache_insert(c, S("i.com/keep"), S("survives close"), 60000));
  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_get(c, S("i.com/keep"), &o));
  cdn_writer *before = NULL, *w = NULL;
  CHECK_OK(cdn_writer_new(c, S("i.com/w"), 60000, &before));
  cdn_purge_report r;
  CHECK_OK(cdn_cache_purge_all(c, &r));
  CHECK_OK(cdn_writer_new(c, S("i.com/w"), 60000, &w));
  CHECK_OK(cdn_cache_close(c));
  CHECK_ST(cdn_cache_close(c), CDN_INVALID_HANDLE); /* double close */
  CHECK_OK(cdn_cache_close(NULL));
  /* The object and the writer outlive the cache handle. */
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 14 && memcmp(d, "survives close", 14) == 0);
  CHECK_OK(cdn_object_free(o));
  CHECK_OK(cdn_writer_write(w, S("late")));
  CHECK_OK(cdn_writer_commit(w));
  /* Born before the purge: dropped, even after close. */
  CHECK_ST(cdn_writer_commit(before), CDN_PURGED_DURING_FILL);
}

int main(void) {
  test_version_and_status_names();
  test_open_errors();
  test_last_error();
  cdn_cache *c = open_ok("mem=16m shards=2 max_key=1k");
  test_insert_get_copy(c);
  test_get_errors(c);
  test_writer_metadata(c);
  test_writer_errors(c);
  test_stale_and_remove(c);
  CHECK_OK(cdn_cache_close(c));
  test_purges();
  test_counters();
  test_fill();
  test_close_and_lifetimes();
  return h_summary();
}

/* The loader (peer fill), the peer wire helpers and the edge policies of
 * cdncore.h: every function, with its error paths (NULL arguments, bad
 * config text, small buffers, wrong or freed handles). Outputs must stay
 * untouched on failure. */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include "harness.h"

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---- loader ---------------------------------------------------------- */

struct peer_ctx {
  cdn_loader *loader;   /* for the re-entrant getter */
  cdn_cache *owner;     /* plays the owner node: its objects' meta headers */
  int gets, fetches;
  int fail_fetch;
  int getter_rc;
  cdn_status inner;
  char last_peer[32], last_addr[32];
  uint64_t last_timeout;
};

static int32_t getter(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct peer_ctx *c = ud;
  c->gets++;
  if (cdn_writer_write(w, S("origin:")) != CDN_OK) return 10;
  if (cdn_writer_write(w, key, key_len) != CDN_OK) return 11;
  return c->getter_rc;
}

static int32_t getter_reenters(void *ud, const uint8_t *key, size_t key_len, cdn_writer *w) {
  struct peer_ctx *c = ud;
  c->gets++;
  cdn_object *o = NULL;
  c->inner = cdn_loader_load(c->loader, key, key_len, false, &o, NULL);
  cdn_writer_write(w, S("outer"));
  return 0;
}

/* The owner's answer: its object's body, metadata via X-Rcdn-Meta. */
static int32_t fetch(void *ud, const uint8_t *id, size_t id_len, const uint8_t *addr,
                     size_t addr_len, const uint8_t *key, size_t key_len, uint64_t timeout_ms,
                     cdn_writer *w) {
  struct peer_ctx *c = ud;
  c->fetches++;
  snprintf(c->last_peer, sizeof c->last_peer, "%.*s", (int)id_len, (const char *)id);
  snprintf(c->last_addr, sizeof c->last_addr, "%.*s", (int)addr_len, (const char *)addr);
  c->last_timeout = timeout_ms;
  if (c->fail_fetch) return -1;
  cdn_writer *ow = NULL;
  if (cdn_writer_new(c->owner, key, key_len, 60000, &ow) != CDN_OK) return 1;
  cdn_writer_write(ow, S("peer:"));
  cdn_writer_write(ow, key, key_len);
  cdn_writer_add_tag(ow, 9);
  cdn_writer_add_header(ow, S("X-Owner"), S("b"));
  if (cdn_writer_commit(ow) != CDN_OK) return 2;
  cdn_object *o = NULL;
  if (cdn_cache_get(c->owner, key, key_len, &o) != CDN_OK) return 3;
  char hdr[1024];
  size_t n = 0;
  cdn_status st = cdn_object_meta_header(o, now_ms(), (uint8_t *)hdr, sizeof hdr, &n);
  const uint8_t *body;
  size_t body_len;
  if (st == CDN_OK) st = cdn_object_body(o, &body, &body_len);
  if (st == CDN_OK) st = cdn_writer_write(w, body, body_len);
  if (st == CDN_OK) st = cdn_writer_set_meta_header(w, (const uint8_t *)hdr, n, now_ms());
  cdn_object_free(o);
  return st == CDN_OK ? 0 : 4;
}

#define PEERS "a=127.0.0.1:1 b=127.0.0.1:2 c=127.0.0.1:3"

/* Finds a key "<prefix>/kN" owned by `who`. */
static void key_owned_by(cdn_loader *l, const char *who, const char *prefix, char *key,
                         size_t cap) {
  for (int i = 0; i < 10000; i++) {
    snprintf(key, cap, "%s/k%d", prefix, i);
    char id[8];
    size_t n = 0;
    if (cdn_loader_owner(l, S(key), (uint8_t *)id, sizeof id, &n) == CDN_OK &&
        strcmp(id, who) == 0)
      return;
  }
  key[0] = 0;
}

static void test_loader_errors(cdn_cache *c) {
  struct peer_ctx ctx = {0};
  cdn_loader *sentinel = (cdn_loader *)(uintptr_t)0x40, *l = sentinel;
  CHECK_ST(cdn_loader_new(NULL, NULL, 0, NULL, 0, getter, NULL, &ctx, NULL, &l),
           CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_new(c, NULL, 0, NULL, 0, NULL, NULL, &ctx, NULL, &l), CDN_INVALID_ARGUMENT);
  CHECK(last_error_has("getter"));
  CHECK_ST(cdn_loader_new(c, S("a b=x"), S("a"), getter, fetch, &ctx, NULL, &l),
           CDN_INVALID_CONFIG);
  CHECK(last_error_has("id=address"));
  CHECK_ST(cdn_loader_new(c, S(PEERS), S("z"), getter, fetch, &ctx, NULL, &l), CDN_INVALID_CONFIG);
  CHECK(last_error_has("not in the peer list"));
  CHECK_ST(cdn_loader_new(c, S("a=1 a=2"), S("a"), getter, fetch, &ctx, NULL, &l),
           CDN_INVALID_CONFIG);
  CHECK_ST(cdn_loader_new(c, S(PEERS), S("a"), getter, NULL, &ctx, NULL, &l),
           CDN_INVALID_ARGUMENT);
  CHECK(last_error_has("fetch"));
  CHECK_ST(cdn_loader_new(c, (const uint8_t *)"a=\xff", 3, S("a"), getter, fetch, &ctx, NULL, &l),
           CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_new(c, NULL, 5, NULL, 0, getter, NULL, &ctx, NULL, &l),
           CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_new(c, NULL, 0, NULL, 0, getter, NULL, &ctx, NULL, NULL),
           CDN_INVALID_ARGUMENT);
  CHECK(l == sentinel);
  /* A handle of another kind, NULLs, and a double free. */
  cdn_object *o = NULL;
  CHECK_ST(cdn_loader_load((const cdn_loader *)c, S("k"), false, &o, NULL), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_loader_load(NULL, S("k"), false, &o, NULL), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_loader_new(c, NULL, 0, NULL, 0, getter, NULL, &ctx, NULL, &l));
  CHECK_ST(cdn_loader_load(l, NULL, 3, false, &o, NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_load(l, (const uint8_t *)"", 0, false, &o, NULL), CDN_INVALID_KEY);
  CHECK_ST(cdn_loader_load(l, (const uint8_t *)"k", (size_t)-1, false, &o, NULL), CDN_INVALID_KEY);
  CHECK_ST(cdn_loader_load(l, S("k"), false, NULL, NULL), CDN_INVALID_ARGUMENT);
  CHECK(o == NULL);
  char id[8];
  size_t n = 0;
  CHECK_ST(cdn_loader_owner(l, S("k"), (uint8_t *)id, sizeof id, &n), CDN_NOT_FOUND);
  bool down = true;
  CHECK_OK(cdn_loader_peer_down(l, S("b"), &down));
  CHECK(!down);
  CHECK_ST(cdn_loader_peer_down(l, S("b"), NULL), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_get_counters(l, NULL), CDN_INVALID_ARGUMENT);
  cdn_purge_report r;
  CHECK_ST(cdn_loader_purge(l, 99, NULL, 0, 0, &r), CDN_INVALID_PURGE);
  CHECK_ST(cdn_loader_purge(l, CDN_PURGE_TAG, NULL, 0, 70000, &r), CDN_INVALID_PURGE);
  CHECK_ST(cdn_loader_purge(l, CDN_PURGE_REGEX, S("(unclosed"), 0, &r), CDN_INVALID_REGEX);
  CHECK_ST(cdn_loader_purge(l, CDN_PURGE_KEY, NULL, 0, 0, &r), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_loader_purge(l, CDN_PURGE_ALL, NULL, 0, 0, NULL), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_loader_free(l));
  CHECK_ST(cdn_loader_free(l), CDN_INVALID_HANDLE);
  CHECK_OK(cdn_loader_free(NULL));
}

static void test_loader_local(cdn_cache *c) {
  struct peer_ctx ctx = {0};
  cdn_loader *l = NULL;
  CHECK_OK(cdn_loader_new(c, NULL, 0, NULL, 0, getter, NULL, &ctx, NULL, &l));
  cdn_object *o = NULL;
  cdn_load_source src = CDN_LOAD_HOT;
  CHECK_OK(cdn_loader_load(l, S("one/a"), false, &o, &src));
  CHECK(src == CDN_LOAD_LOCAL && ctx.gets == 1);
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 12 && memcmp(d, "origin:one/a", 12) == 0);
  CHECK_OK(cdn_object_free(o));
  CHECK_OK(cdn_loader_load(l, S("one/a"), false, &o, &src));
  CHECK(src == CDN_LOAD_CACHE && ctx.gets == 1);
  CHECK_OK(cdn_object_free(o));
  /* Purge through the loader: the next load calls the getter again. */
  cdn_purge_report r;
  CHECK_OK(cdn_loader_purge(l, CDN_PURGE_PREFIX, S("one/"), 0, &r));
  CHECK_OK(cdn_loader_load(l, S("one/a"), false, &o, NULL));
  CHECK(ctx.gets == 2);
  CHECK_OK(cdn_object_free(o));
  /* Getter failure and re-entrance. */
  ctx.getter_rc = 7;
  o = NULL;
  CHECK_ST(cdn_loader_load(l, S("one/fail"), false, &o, NULL), CDN_GETTER_FAILED);
  CHECK(last_error_has("7") && o == NULL);
  CHECK_OK(cdn_loader_free(l));
  struct peer_ctx re = {0};
  CHECK_OK(cdn_loader_new(c, NULL, 0, NULL, 0, getter_reenters, NULL, &re, NULL, &l));
  re.loader = l;
  CHECK_OK(cdn_loader_load(l, S("one/re"), false, &o, NULL));
  CHECK(re.inner == CDN_WOULD_DEADLOCK && re.gets == 1);
  CHECK_OK(cdn_object_free(o));
  cdn_loader_counters k;
  CHECK_OK(cdn_loader_get_counters(l, &k));
  CHECK(k.local_loads == 1);
  CHECK_OK(cdn_loader_free(l));
}

static void test_loader_peers(cdn_cache *c) {
  struct peer_ctx ctx = {0};
  CHECK_OK(cdn_cache_open(S("mem=8m shards=2"), &ctx.owner));
  cdn_loader_options opt = {.down_ms = 100, .peer_timeout_ms = 1234};
  cdn_loader *l = NULL;
  CHECK_OK(cdn_loader_new(c, S(PEERS), S("a"), getter, fetch, &ctx, &opt, &l));
  char kb[32], kb2[32], kb3[32], ka[32];
  key_owned_by(l, "b", "site", kb, sizeof kb);
  CHECK(kb[0] != 0);
  key_owned_by(l, "a", "site", ka, sizeof ka);
  CHECK(ka[0] != 0);
  char id[2];
  size_t need = 0;
  CHECK_ST(cdn_loader_owner(l, S(kb), (uint8_t *)id, 1, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == 2);
  /* Owned by b: asked of b, never of the origin; metadata carried over. */
  cdn_object *o = NULL;
  cdn_load_source src = CDN_LOAD_CACHE;
  CHECK_OK(cdn_loader_load(l, S(kb), false, &o, &src));
  CHECK(src == CDN_LOAD_PEER && ctx.fetches == 1 && ctx.gets == 0);
  CHECK(strcmp(ctx.last_peer, "b") == 0 && strcmp(ctx.last_addr, "127.0.0.1:2") == 0);
  CHECK(ctx.last_timeout == 1234);
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o, &info));
  CHECK(info.fresh && info.tag_count == 1 && info.header_count == 1);
  CHECK(info.expires_at_ms - info.stored_at_ms == 60000);
  const uint8_t *d;
  size_t n;
  CHECK_OK(cdn_object_body(o, &d, &n));
  CHECK(n == 5 + strlen(kb) && memcmp(d, "peer:", 5) == 0);
  CHECK_OK(cdn_object_free(o));
  /* Owned here: the getter. */
  CHECK_OK(cdn_loader_load(l, S(ka), false, &o, &src));
  CHECK(src == CDN_LOAD_LOCAL && ctx.gets == 1);
  CHECK_OK(cdn_object_free(o));
  /* From a peer: never forwarded. */
  key_owned_by(l, "b", "other", kb2, sizeof kb2);
  CHECK(kb2[0] != 0);
  CHECK_OK(cdn_loader_load(l, S(kb2), true, &o, &src));
  CHECK(src == CDN_LOAD_LOCAL && ctx.fetches == 1 && ctx.gets == 2);
  CHECK_OK(cdn_object_free(o));
  /* A failing owner: loaded locally, marked down, then back. */
  key_owned_by(l, "b", "third", kb3, sizeof kb3);
  CHECK(kb3[0] != 0);
  ctx.fail_fetch = 1;
  CHECK_OK(cdn_loader_load(l, S(kb3), false, &o, &src));
  CHECK(src == CDN_LOAD_LOCAL && ctx.fetches == 2 && ctx.gets == 3);
  CHECK_OK(cdn_object_free(o));
  bool down = false;
  CHECK_OK(cdn_loader_peer_down(l, S("b"), &down));
  CHECK(down);
  ctx.fail_fetch = 0;
  for (int i = 0; i < 200 && down; i++) {
    sleep_ms(10);
    CHECK_OK(cdn_loader_peer_down(l, S("b"), &down));
  }
  CHECK(!down);
  cdn_purge_report r;
  CHECK_OK(cdn_loader_purge(l, CDN_PURGE_ALL, NULL, 0, 0, &r));
  CHECK_OK(cdn_loader_load(l, S(kb3), false, &o, &src));
  CHECK(src == CDN_LOAD_PEER && ctx.fetches == 3);
  CHECK_OK(cdn_object_free(o));
  cdn_loader_counters k;
  CHECK_OK(cdn_loader_get_counters(l, &k));
  CHECK(k.peer_errors == 1 && k.peer_loads == 2 && k.local_loads == 3);
  CHECK_OK(cdn_loader_free(l));
  CHECK_OK(cdn_cache_close(ctx.owner));
}

/* ---- wire helpers ----------------------------------------------------- */

static void test_wire(cdn_cache *c) {
  char seg[64];
  size_t n = 0, need = 0;
  CHECK_OK(cdn_peer_key_encode(S("/a b?c"), (uint8_t *)seg, sizeof seg, &n));
  CHECK(n == strlen(seg) && strchr(seg, '/') == NULL);
  CHECK_ST(cdn_peer_key_encode(S("/a b?c"), NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == n + 1);
  char key[64];
  CHECK_OK(cdn_peer_key_decode((const uint8_t *)seg, n, (uint8_t *)key, sizeof key, &n));
  CHECK(n == 6 && memcmp(key, "/a b?c", 6) == 0);
  CHECK_ST(cdn_peer_key_decode(S("!!"), (uint8_t *)key, sizeof key, &n), CDN_INVALID_KEY);
  CHECK_ST(cdn_peer_key_decode(S(""), (uint8_t *)key, sizeof key, &n), CDN_INVALID_KEY);
  CHECK_ST(cdn_peer_key_encode(NULL, 1, (uint8_t *)seg, sizeof seg, &n), CDN_INVALID_ARGUMENT);

  cdn_object *o = NULL;
  CHECK_OK(cdn_cache_insert(c, S("w/1"), S("body"), 30000));
  CHECK_OK(cdn_cache_get(c, S("w/1"), &o));
  CHECK_ST(cdn_object_meta_header(o, now_ms(), NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  char *hdr = malloc(need);
  CHECK_OK(cdn_object_meta_header(o, now_ms(), (uint8_t *)hdr, need, &n));
  CHECK(n + 1 == need && strncmp(hdr, "2.", 2) == 0);
  CHECK_ST(cdn_object_meta_header(NULL, 0, (uint8_t *)hdr, need, &n), CDN_INVALID_ARGUMENT);
  cdn_writer *w = NULL;
  CHECK_OK(cdn_writer_new(c, S("w/2"), 1000, &w));
  CHECK_ST(cdn_writer_set_meta_header(w, S("3.AAAA"), 0), CDN_INVALID_ARGUMENT);
  CHECK(last_error_has("version"));
  CHECK_ST(cdn_writer_set_meta_header(w, (const uint8_t *)hdr, n - 3, 0), CDN_INVALID_ARGUMENT);
  char saved = hdr[5];
  hdr[5] = saved == 'A' ? 'B' : 'A';
  CHECK_ST(cdn_writer_set_meta_header(w, (const uint8_t *)hdr, n, 0), CDN_INVALID_ARGUMENT);
  hdr[5] = saved;
  CHECK_ST(cdn_writer_set_meta_header(w, (const uint8_t *)hdr, (size_t)-1, 0),
           CDN_INVALID_ARGUMENT);
  /* Intact: the writer takes the 30 s TTL instead of its 1 s. */
  CHECK_OK(cdn_writer_set_meta_header(w, (const uint8_t *)hdr, n, now_ms()));
  CHECK_OK(cdn_writer_write(w, S("x")));
  CHECK_OK(cdn_writer_commit(w));
  cdn_object *o2 = NULL;
  CHECK_OK(cdn_cache_get(c, S("w/2"), &o2));
  cdn_object_info info;
  CHECK_OK(cdn_object_get_info(o2, &info));
  CHECK(info.expires_at_ms - info.stored_at_ms == 30000);
  cdn_object_free(o2);
  cdn_object_free(o);
  free(hdr);
}

/* ---- hotlink ---------------------------------------------------------- */

static const char *HOTLINK_JSON =
    "[{\"domain\": \"img.example.com\", \"allow\": [\"example.com\", \"*.example.com\"],"
    "  \"allow_empty\": false},"
    " {\"domain\": \"dl.example.com\", \"secret\": \"k3y\","
    "  \"redirect\": \"https://example.com/hl.png\", \"allow\": [\"example.com\"]}]";

static cdn_hotlink_request hreq(const char *host, const char *path, const char *referer) {
  cdn_hotlink_request r = {0};
  r.host = (const uint8_t *)host, r.host_len = strlen(host);
  r.path = (const uint8_t *)path, r.path_len = strlen(path);
  if (referer) r.referer = (const uint8_t *)referer, r.referer_len = strlen(referer);
  return r;
}

static void test_hotlink(void) {
  cdn_hotlink *h = NULL;
  CHECK_ST(cdn_hotlink_new(S("[{\"domain\": 5}]"), true, &h), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_hotlink_new(S("[{\"domain\": \"a\", \"allow\": [\"~(\"]}]"), true, &h),
           CDN_INVALID_CONFIG);
  CHECK_ST(cdn_hotlink_new(NULL, 0, true, &h), CDN_INVALID_ARGUMENT);
  CHECK(h == NULL);
  CHECK_OK(cdn_hotlink_new(S(HOTLINK_JSON), true, &h));
  cdn_hotlink_decision d = CDN_HOTLINK_ALLOW;
  char detail[128];
  size_t n = 0;
  cdn_hotlink_request r = hreq("img.example.com", "/a.png", "https://www.example.com/page");
  CHECK_OK(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_ALLOW && n == 0 && detail[0] == 0);
  r = hreq("img.example.com", "/a.png", "https://evil.org/");
  CHECK_OK(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_FORBIDDEN && strcmp(detail, "referer not allowed") == 0);
  r = hreq("img.example.com", "/a.png", NULL);
  CHECK_OK(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_FORBIDDEN && strcmp(detail, "empty referer") == 0);
  r = hreq("unknown.org", "/a.png", NULL);
  CHECK_OK(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_FORBIDDEN);
  /* Signed URLs: good, expired, bad. */
  char tok[64];
  CHECK_OK(cdn_hotlink_sign(S("k3y"), S("/f.zip"), 1000, (uint8_t *)tok, sizeof tok, &n));
  size_t need = 0;
  CHECK_ST(cdn_hotlink_sign(S("k3y"), S("/f.zip"), 1000, (uint8_t *)tok, 4, &need),
           CDN_BUFFER_TOO_SMALL);
  CHECK(need == n + 1);
  r = hreq("dl.example.com", "/f.zip", NULL);
  r.token = (const uint8_t *)tok, r.token_len = n;
  r.expires = (const uint8_t *)"1000", r.expires_len = 4;
  CHECK_OK(cdn_hotlink_check(h, &r, 999, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_ALLOW);
  CHECK_OK(cdn_hotlink_check(h, &r, 1001, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_EXPIRED);
  r.expires = (const uint8_t *)"2000";
  CHECK_OK(cdn_hotlink_check(h, &r, 999, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_FORBIDDEN && strcmp(detail, "bad signature") == 0);
  /* A violation on a domain with a redirect URL. */
  r.expires = (const uint8_t *)"1000";
  r.referer = (const uint8_t *)"https://evil.org/", r.referer_len = 17;
  CHECK_OK(cdn_hotlink_check(h, &r, 999, &d, (uint8_t *)detail, sizeof detail, &n));
  CHECK(d == CDN_HOTLINK_REDIRECT && strcmp(detail, "https://example.com/hl.png") == 0);
  /* Too small a detail buffer: needed size, decision untouched. */
  d = CDN_HOTLINK_ALLOW;
  CHECK_ST(cdn_hotlink_check(h, &r, 999, &d, (uint8_t *)detail, 5, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == strlen("https://example.com/hl.png") + 1 && d == CDN_HOTLINK_ALLOW);
  /* Bad arguments. */
  CHECK_ST(cdn_hotlink_check(h, NULL, 0, &d, (uint8_t *)detail, sizeof detail, &n),
           CDN_INVALID_ARGUMENT);
  r.host = NULL;
  CHECK_ST(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n),
           CDN_INVALID_ARGUMENT);
  r = hreq("img.example.com", "/a.png", "\xff\xfe");
  CHECK_ST(cdn_hotlink_check(h, &r, 0, &d, (uint8_t *)detail, sizeof detail, &n),
           CDN_INVALID_ARGUMENT);
  CHECK(last_error_has("UTF-8"));
  CHECK_ST(cdn_hotlink_check((const cdn_hotlink *)&r, &r, 0, &d, (uint8_t *)detail,
                             sizeof detail, &n),
           CDN_INVALID_HANDLE);
  CHECK_OK(cdn_hotlink_free(h));
  CHECK_ST(cdn_hotlink_free(h), CDN_INVALID_HANDLE);
  CHECK_OK(cdn_hotlink_free(NULL));
}

/* ---- guard ------------------------------------------------------------ */

static void test_guard(void) {
  cdn_guard_config cfg = {5.0, 1000.0, 1000, 16, 60000};
  cdn_guard *g = NULL;
  cdn_guard_config bad = cfg;
  bad.block_rps = 1.0;
  CHECK_ST(cdn_guard_new(&bad, S("s"), 0, &g), CDN_INVALID_CONFIG);
  CHECK(last_error_has("block"));
  CHECK_ST(cdn_guard_new(&cfg, (const uint8_t *)"", 0, 0, &g), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_guard_new(&cfg, S("s"), 0, NULL), CDN_INVALID_ARGUMENT);
  CHECK(g == NULL);
  CHECK_OK(cdn_guard_new(NULL, S("s"), 0, &g));
  CHECK_OK(cdn_guard_free(g));
  uint64_t t = 1000000;
  CHECK_OK(cdn_guard_new(&cfg, S("s3cret"), t, &g));
  cdn_guard_verdict v = CDN_GUARD_BLOCK;
  char tok[CDN_GUARD_TOKEN_MAX], challenge[CDN_GUARD_TOKEN_MAX] = "";
  size_t n = 0, clen = 0;
  int passes = 0, challenges = 0;
  for (int i = 0; i < 10; i++) {
    CHECK_OK(cdn_guard_check(g, S("/hot.iso"), NULL, 0, t, &v, (uint8_t *)tok, sizeof tok, &n));
    if (v == CDN_GUARD_PASS) passes++;
    if (v == CDN_GUARD_CHALLENGE) {
      challenges++;
      memcpy(challenge, tok, n + 1);
      clen = n;
    }
  }
  CHECK(passes == 4 && challenges == 6 && clen > 0);
  /* The browser comes back with the token: passes; a forged one: blocked. */
  CHECK_OK(cdn_guard_check(g, S("/hot.iso"), (const uint8_t *)challenge, clen, t, &v,
                           (uint8_t *)tok, sizeof tok, &n));
  CHECK(v == CDN_GUARD_PASS);
  CHECK_OK(cdn_guard_check(g, S("/hot.iso"), S("1.forged"), t, &v, (uint8_t *)tok, sizeof tok,
                           &n));
  CHECK(v == CDN_GUARD_BLOCK);
  /* Another URL is unaffected; after an idle window the flag is lifted. */
  CHECK_OK(cdn_guard_check(g, S("/cold"), NULL, 0, t, &v, (uint8_t *)tok, sizeof tok, &n));
  CHECK(v == CDN_GUARD_PASS);
  CHECK_OK(cdn_guard_check(g, S("/hot.iso"), NULL, 0, t + 5000, &v, (uint8_t *)tok, sizeof tok,
                           &n));
  CHECK(v == CDN_GUARD_PASS);
  cdn_guard_counters k;
  size_t flagged = 99;
  CHECK_OK(cdn_guard_get_counters(g, &k, &flagged));
  CHECK(k.challenged == 6 && k.challenge_passed == 1 && k.challenge_failed == 1);
  CHECK(k.lifted == 1 && flagged == 0);
  /* Small token buffer: refused before counting. */
  size_t need = 0;
  CHECK_ST(cdn_guard_check(g, S("/x"), NULL, 0, t, &v, (uint8_t *)tok, 8, &need),
           CDN_BUFFER_TOO_SMALL);
  CHECK(need == CDN_GUARD_TOKEN_MAX);
  CHECK_ST(cdn_guard_check(g, NULL, 3, NULL, 0, t, &v, (uint8_t *)tok, sizeof tok, &n),
           CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_guard_get_counters(g, NULL, &flagged), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_guard_free(g));
  CHECK_ST(cdn_guard_free(g), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_guard_get_counters(g, &k, &flagged), CDN_INVALID_HANDLE);
}

/* ---- scheduler -------------------------------------------------------- */

static const char *TABLE =
    "node a http://127.0.0.1:8081\n"
    "node b http://127.0.0.1:8082\n"
    "node c http://127.0.0.1:8083  # spare\n"
    "zone north 10.0.0.0/8 2001:db8::/32\n"
    "zone south 192.168.1.10-192.168.1.99\n"
    "levels north a\n"
    "levels south b c\n";

static void test_scheduler(void) {
  cdn_scheduler *s = NULL;
  CHECK_ST(cdn_scheduler_new(S("zone z 10.0.0.0/33\n"), &s), CDN_INVALID_CONFIG);
  CHECK(last_error_has("line 1"));
  CHECK_ST(cdn_scheduler_new(S("node a ftp://x\n"), &s), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_scheduler_new(NULL, 0, &s), CDN_INVALID_ARGUMENT);
  CHECK(s == NULL);
  CHECK_OK(cdn_scheduler_new(S(TABLE), &s));
  char url[64];
  size_t n = 0;
  CHECK_OK(cdn_scheduler_pick(s, S("10.1.2.3"), 0, (uint8_t *)url, sizeof url, &n));
  CHECK(strcmp(url, "http://127.0.0.1:8081") == 0 && n == strlen(url));
  CHECK_OK(cdn_scheduler_zone(s, S("2001:db8::7"), (uint8_t *)url, sizeof url, &n));
  CHECK(strcmp(url, "north") == 0);
  CHECK_OK(cdn_scheduler_zone(s, S("192.168.1.50"), (uint8_t *)url, sizeof url, &n));
  CHECK(strcmp(url, "south") == 0);
  CHECK_ST(cdn_scheduler_zone(s, S("8.8.8.8"), (uint8_t *)url, sizeof url, &n), CDN_NOT_FOUND);
  /* a unhealthy: a north client goes to another healthy node. */
  CHECK_OK(cdn_scheduler_set_state(s, S("a"), false, 0.0));
  for (uint64_t r = 0; r < 8; r++) {
    CHECK_OK(cdn_scheduler_pick(s, S("10.9.9.9"), r, (uint8_t *)url, sizeof url, &n));
    CHECK(strcmp(url, "http://127.0.0.1:8081") != 0);
  }
  /* b overloaded: south goes to its second level, c. */
  CHECK_OK(cdn_scheduler_set_state(s, S("b"), true, 0.95));
  CHECK_OK(cdn_scheduler_pick(s, S("192.168.1.10"), 1, (uint8_t *)url, sizeof url, &n));
  CHECK(strcmp(url, "http://127.0.0.1:8083") == 0);
  CHECK_ST(cdn_scheduler_set_state(s, S("zz"), true, 0.0), CDN_NOT_FOUND);
  size_t need = 0;
  CHECK_ST(cdn_scheduler_pick(s, S("10.1.2.3"), 0, NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == strlen("http://127.0.0.1:808x") + 1);
  CHECK_ST(cdn_scheduler_pick(s, S("10.1.2"), 0, (uint8_t *)url, sizeof url, &n),
           CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_scheduler_pick(s, S("10.1.2.3"), 0, (uint8_t *)url, sizeof url, NULL),
           CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_scheduler_free(s));
  CHECK_ST(cdn_scheduler_free(s), CDN_INVALID_HANDLE);
  /* No nodes: serve locally. */
  CHECK_OK(cdn_scheduler_new(S("# empty\n"), &s));
  CHECK_ST(cdn_scheduler_pick(s, S("10.1.2.3"), 0, (uint8_t *)url, sizeof url, &n),
           CDN_NOT_FOUND);
  CHECK_OK(cdn_scheduler_free(s));
}

/* ---- traffic and request log ------------------------------------------ */

static void test_traffic(void) {
  cdn_traffic *t = NULL;
  CHECK_ST(cdn_traffic_new(0, 2, 60000, &t), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_traffic_new(8, 0, 60000, &t), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_traffic_new(8, 2, 10, &t), CDN_INVALID_CONFIG);
  CHECK_ST(cdn_traffic_new(8, 2, 60000, NULL), CDN_INVALID_ARGUMENT);
  CHECK(t == NULL);
  CHECK_OK(cdn_traffic_new(8, 2, 60000, &t));
  uint64_t now = 1700000000000ull;
  cdn_traffic_sample hit = {.status = 200, .bytes_sent = 100, .cache = CDN_CACHE_HIT};
  cdn_traffic_sample miss = {.status = 404, .bytes_sent = 10, .cache = CDN_CACHE_MISS,
                             .origin_bytes = 10, .origin_ms = 3};
  for (int i = 0; i < 3; i++) CHECK_OK(cdn_traffic_record(t, S("a.com"), &hit, now));
  CHECK_OK(cdn_traffic_record(t, S("b.com"), &miss, now));
  cdn_traffic_sample bad = hit;
  bad.cache = 99;
  CHECK_ST(cdn_traffic_record(t, S("a.com"), &bad, now), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_traffic_record(t, S("a.com"), NULL, now), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_traffic_record(t, NULL, 2, &hit, now), CDN_INVALID_ARGUMENT);
  size_t need = 0, n = 0;
  CHECK_ST(cdn_traffic_json(t, now, NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  char *json = malloc(need);
  CHECK_OK(cdn_traffic_json(t, now, (uint8_t *)json, need, &n));
  CHECK(n + 1 == need && strlen(json) == n);
  CHECK(strstr(json, "\"a.com\"") && strstr(json, "\"b.com\""));
  CHECK(strstr(json, "\"requests\":4") && strstr(json, "\"requests\":3"));
  free(json);
  CHECK_ST(cdn_traffic_prometheus(t, NULL, 0, &need), CDN_BUFFER_TOO_SMALL);
  char *prom = malloc(need);
  CHECK_OK(cdn_traffic_prometheus(t, (uint8_t *)prom, need, &n));
  CHECK(strstr(prom, "# TYPE rcdn_requests_total counter\n"));
  CHECK(strstr(prom, "rcdn_requests_total{domain=\"a.com\"} 3\n"));
  CHECK(strstr(prom, "rcdn_status_4xx_total{domain=\"b.com\"} 1\n"));
  CHECK(strstr(prom, "rcdn_bytes_sent_total{domain=\"_all\"} 310\n"));
  free(prom);
  CHECK_ST(cdn_traffic_json(t, now, NULL, 5, &n), CDN_INVALID_ARGUMENT);
  CHECK_OK(cdn_traffic_free(t));
  CHECK_ST(cdn_traffic_free(t), CDN_INVALID_HANDLE);
  CHECK_ST(cdn_traffic_prometheus(t, NULL, 0, &need), CDN_INVALID_HANDLE);
}

static void test_reqlog(void) {
  cdn_reqlog_entry e = {0};
  e.time_ms = 5;
  e.key = (const uint8_t *)"a.com/x", e.key_len = 7;
  e.client = (const uint8_t *)"127.0.0.1", e.client_len = 9;
  e.user_agent = (const uint8_t *)"curl \"q\"", e.user_agent_len = 8;
  e.cache_status = (const uint8_t *)"HIT", e.cache_status_len = 3;
  e.status = 200, e.bytes_sent = 10, e.duration_ms = 2;
  e.node = (const uint8_t *)"n1", e.node_len = 2;
  e.data = (const uint8_t *)"{\"uid\":42}", e.data_len = 10;
  e.data_type = (const uint8_t *)"json", e.data_type_len = 4;
  char line[512];
  size_t n = 0, need = 0;
  CHECK_OK(cdn_reqlog_line(&e, (uint8_t *)line, sizeof line, &n));
  CHECK(n == strlen(line) && line[0] == '{' && line[n - 1] == '}');
  CHECK(strstr(line, "\"data\":{\"uid\":42}") && strstr(line, "curl \\\"q\\\""));
  CHECK(strstr(line, "\"cache_status\":\"HIT\"") && !strchr(line, '\n'));
  /* Data absent; bad UTF-8 in the client; small buffer; NULL entry. */
  e.data = NULL, e.data_len = 0;
  CHECK_OK(cdn_reqlog_line(&e, (uint8_t *)line, sizeof line, &n));
  CHECK(!strstr(line, "\"data\""));
  CHECK_ST(cdn_reqlog_line(&e, (uint8_t *)line, 4, &need), CDN_BUFFER_TOO_SMALL);
  CHECK(need == n + 1);
  e.client = (const uint8_t *)"\xff";
  e.client_len = 1;
  CHECK_ST(cdn_reqlog_line(&e, (uint8_t *)line, sizeof line, &n), CDN_INVALID_ARGUMENT);
  e.client = NULL, e.client_len = 3;
  CHECK_ST(cdn_reqlog_line(&e, (uint8_t *)line, sizeof line, &n), CDN_INVALID_ARGUMENT);
  CHECK_ST(cdn_reqlog_line(NULL, (uint8_t *)line, sizeof line, &n), CDN_INVALID_ARGUMENT);
}

int main(void) {
  cdn_cache *c = NULL;
  CHECK_OK(cdn_cache_open(S("mem=16m shards=2 default_ttl=1m"), &c));
  test_loader_errors(c);
  test_loader_local(c);
  test_loader_peers(c);
  test_wire(c);
  test_hotlink();
  test_guard();
  test_scheduler();
  test_traffic();
  test_reqlog();
  CHECK_OK(cdn_cache_close(c));
  return h_summary();
}

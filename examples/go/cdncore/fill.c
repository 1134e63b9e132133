// The C side of Cache.Fill: hands the exported Go getter to cdn_cache_fill.
// (A file of its own: a cgo preamble may not define functions when the
// package uses //export.)
#include "cdncore.h"
#include "_cgo_export.h"

enum cdn_status cdn_go_fill(const cdn_cache *c, const uint8_t *key, size_t key_len,
                       uintptr_t handle, cdn_object **out) {
  return cdn_cache_fill(c, key, key_len, (cdn_getter)cdnGoGetter, (void *)handle, out);
}

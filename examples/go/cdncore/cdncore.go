// Package cdncore is a small cgo binding of libcdncore (cdncore.h): open a
// cache, insert and stream objects, look them up without copying, purge,
// and fill on a miss with a Go getter (one getter call per key at a time).
//
// It finds the library with pkg-config (`#cgo pkg-config: cdncore`): set
// PKG_CONFIG_PATH to the install's lib/pkgconfig when it is not in a
// default location.
package cdncore

/*
#cgo pkg-config: cdncore
#include <stdlib.h>
#include "cdncore.h"

enum cdn_status cdn_go_fill(const cdn_cache *c, const uint8_t *key, size_t key_len,
                       uintptr_t handle, cdn_object **out);
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// Error is a failed call: the library's status and message.
type Error struct {
	Status  int
	Name    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Name, e.Message) }

// Status values callers commonly test for.
const (
	StatusNotFound         = int(C.CDN_NOT_FOUND)
	StatusInvalidConfig    = int(C.CDN_INVALID_CONFIG)
	StatusInvalidRegex     = int(C.CDN_INVALID_REGEX)
	StatusInvalidKey       = int(C.CDN_INVALID_KEY)
	StatusTooLarge         = int(C.CDN_TOO_LARGE)
	StatusGetterFailed     = int(C.CDN_GETTER_FAILED)
	StatusInvalidHandle    = int(C.CDN_INVALID_HANDLE)
	StatusPurgedDuringFill = int(C.CDN_PURGED_DURING_FILL)
)

// ErrNotFound is returned (wrapped in *Error) for a cache miss.
var ErrNotFound = errors.New("not cached")

func check(st C.enum_cdn_status) error {
	if st == C.CDN_OK {
		return nil
	}
	return &Error{
		Status:  int(st),
		Name:    C.GoString(C.cdn_status_str(C.int32_t(st))),
		Message: C.GoString(C.cdn_last_error()),
	}
}

// IsStatus reports whether err is an *Error with this status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

var zero [1]byte

// ptr returns a C pointer to b's bytes (a valid pointer also when b is empty).
func ptr(b []byte) *C.uint8_t {
	if len(b) == 0 {
		return (*C.uint8_t)(unsafe.Pointer(&zero[0]))
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0]))
}

// Cache is an open cache; safe for concurrent use.
type Cache struct{ c *C.cdn_cache }

// Open opens a cache from the config text ("mem=64m shards=8 ...").
func Open(config string) (*Cache, error) {
	var c *C.cdn_cache
	b := []byte(config)
	if err := check(C.cdn_cache_open(ptr(b), C.size_t(len(b)), &c)); err != nil {
		return nil, err
	}
	return &Cache{c}, nil
}

// Close closes the cache. Closing twice returns an error.
func (c *Cache) Close() error {
	err := check(C.cdn_cache_close(c.c))
	return err
}

// Insert stores body under key, fresh for ttlMs milliseconds.
func (c *Cache) Insert(key, body []byte, ttlMs uint64) error {
	return check(C.cdn_cache_insert(c.c, ptr(key), C.size_t(len(key)), ptr(body), C.size_t(len(body)), C.uint64_t(ttlMs)))
}

// Object is a looked-up object. Its Body aliases library memory: valid until Free.
type Object struct{ o *C.cdn_object }

// Get looks key up; a miss is an error with StatusNotFound.
func (c *Cache) Get(key []byte) (*Object, error) {
	var o *C.cdn_object
	if err := check(C.cdn_cache_get(c.c, ptr(key), C.size_t(len(key)), &o)); err != nil {
		return nil, err
	}
	return &Object{o}, nil
}

// GetCopy returns a copy of the body of key (no object to free).
func (c *Cache) GetCopy(key []byte) ([]byte, error) {
	var need C.size_t
	st := C.cdn_cache_get_copy(c.c, ptr(key), C.size_t(len(key)), nil, 0, &need)
	if st == C.CDN_OK {
		return []byte{}, nil
	}
	if st != C.CDN_BUFFER_TOO_SMALL {
		return nil, check(st)
	}
	for {
		buf := make([]byte, int(need))
		st = C.cdn_cache_get_copy(c.c, ptr(key), C.size_t(len(key)), ptr(buf), C.size_t(len(buf)), &need)
		if st != C.CDN_BUFFER_TOO_SMALL { // replaced meanwhile by a bigger body: retry
			if err := check(st); err != nil {
				return nil, err
			}
			return buf[:int(need)], nil
		}
	}
}

// Body returns the body without copying; valid until Free.
func (o *Object) Body() []byte {
	var d *C.uint8_t
	var n C.size_t
	if check(C.cdn_object_body(o.o, &d, &n)) != nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(d)), int(n))
}

// Info is an object's scalar metadata.
type Info struct {
	Status      int
	Fresh       bool
	StoredAtMs  uint64
	ExpiresAtMs uint64
	Size        uint64
	Tags        []uint16
}

// Info returns the object's metadata.
func (o *Object) Info() (Info, error) {
	var i C.cdn_object_info
	if err := check(C.cdn_object_get_info(o.o, &i)); err != nil {
		return Info{}, err
	}
	var t *C.uint16_t
	var n C.size_t
	if err := check(C.cdn_object_tags(o.o, &t, &n)); err != nil {
		return Info{}, err
	}
	tags := append([]uint16(nil), unsafe.Slice((*uint16)(unsafe.Pointer(t)), int(n))...)
	return Info{int(i.status), bool(i.fresh), uint64(i.stored_at_ms), uint64(i.expires_at_ms), uint64(i.size), tags}, nil
}

// Header returns the first header value with this name.
func (o *Object) Header(name string) (string, bool) {
	b := []byte(name)
	var v *C.uint8_t
	var n C.size_t
	if C.cdn_object_header_find(o.o, ptr(b), C.size_t(len(b)), &v, &n) != C.CDN_OK {
		return "", false
	}
	return C.GoStringN((*C.char)(unsafe.Pointer(v)), C.int(n)), true
}

// Free releases the object; its Body must not be used afterwards.
func (o *Object) Free() error {
	err := check(C.cdn_object_free(o.o))
	o.o = nil
	return err
}

// Writer streams an object into the cache (or, inside a getter, into a fill).
type Writer struct{ w *C.cdn_writer }

// NewWriter starts a streaming insert, fresh for ttlMs milliseconds.
func (c *Cache) NewWriter(key []byte, ttlMs uint64) (*Writer, error) {
	var w *C.cdn_writer
	if err := check(C.cdn_writer_new(c.c, ptr(key), C.size_t(len(key)), C.uint64_t(ttlMs), &w)); err != nil {
		return nil, err
	}
	return &Writer{w}, nil
}

// Write appends body bytes (io.Writer).
func (w *Writer) Write(p []byte) (int, error) {
	if err := check(C.cdn_writer_write(w.w, ptr(p), C.size_t(len(p)))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// AddTag adds an integer purge tag.
func (w *Writer) AddTag(tag uint16) error { return check(C.cdn_writer_add_tag(w.w, C.uint16_t(tag))) }

// AddSurrogateKey adds a surrogate key.
func (w *Writer) AddSurrogateKey(k string) error {
	b := []byte(k)
	return check(C.cdn_writer_add_surrogate_key(w.w, ptr(b), C.size_t(len(b))))
}

// AddHeader adds a header to replay.
func (w *Writer) AddHeader(name, value string) error {
	n, v := []byte(name), []byte(value)
	return check(C.cdn_writer_add_header(w.w, ptr(n), C.size_t(len(n)), ptr(v), C.size_t(len(v))))
}

// SetTTL sets the freshness lifetime in milliseconds.
func (w *Writer) SetTTL(ms uint64) error { return check(C.cdn_writer_set_ttl(w.w, C.uint64_t(ms))) }

// Commit makes the object visible (and releases the writer).
func (w *Writer) Commit() error { return check(C.cdn_writer_commit(w.w)) }

// Abort drops the object (and releases the writer).
func (w *Writer) Abort() error { return check(C.cdn_writer_abort(w.w)) }

// Getter produces the object for key on a miss, writing it to w.
type Getter func(key []byte, w *Writer) error

//export cdnGoGetter
func cdnGoGetter(userdata unsafe.Pointer, key *C.uint8_t, keyLen C.size_t, w *C.cdn_writer) (rc C.int32_t) {
	// A Go panic must not unwind through the library's C frames.
	defer func() {
		if recover() != nil {
			rc = 2
		}
	}()
	g := cgo.Handle(uintptr(userdata)).Value().(Getter)
	k := C.GoBytes(unsafe.Pointer(key), C.int(keyLen))
	if err := g(k, &Writer{w}); err != nil {
		return 1
	}
	return 0
}

// Fill returns the object for key, calling get on a miss. Concurrent fills
// of one key share a single get call.
func (c *Cache) Fill(key []byte, get Getter) (*Object, error) {
	h := cgo.NewHandle(get)
	defer h.Delete()
	var o *C.cdn_object
	if err := check(C.cdn_go_fill(c.c, ptr(key), C.size_t(len(key)), C.uintptr_t(h), &o)); err != nil {
		return nil, err
	}
	return &Object{o}, nil
}

// PurgeReport says what a purge did.
type PurgeReport struct {
	Seq          uint64
	Covered      uint64 // valid when CoveredKnown
	CoveredKnown bool
}

func report(r C.cdn_purge_report, st C.enum_cdn_status) (PurgeReport, error) {
	if err := check(st); err != nil {
		return PurgeReport{}, err
	}
	return PurgeReport{uint64(r.seq), uint64(r.covered), bool(r.covered_known)}, nil
}

// PurgeKey purges one key.
func (c *Cache) PurgeKey(key []byte) (PurgeReport, error) {
	var r C.cdn_purge_report
	st := C.cdn_cache_purge_key(c.c, ptr(key), C.size_t(len(key)), &r)
	return report(r, st)
}

// PurgePrefix purges every key with this prefix.
func (c *Cache) PurgePrefix(p []byte) (PurgeReport, error) {
	var r C.cdn_purge_report
	st := C.cdn_cache_purge_prefix(c.c, ptr(p), C.size_t(len(p)), &r)
	return report(r, st)
}

// PurgeTag purges every object carrying tag.
func (c *Cache) PurgeTag(tag uint16) (PurgeReport, error) {
	var r C.cdn_purge_report
	st := C.cdn_cache_purge_tag(c.c, C.uint16_t(tag), &r)
	return report(r, st)
}

// PurgeSurrogateKey purges every object carrying this surrogate key.
func (c *Cache) PurgeSurrogateKey(k string) (PurgeReport, error) {
	var r C.cdn_purge_report
	b := []byte(k)
	st := C.cdn_cache_purge_surrogate_key(c.c, ptr(b), C.size_t(len(b)), &r)
	return report(r, st)
}

// PurgeRegex purges every key matching the regex.
func (c *Cache) PurgeRegex(re string) (PurgeReport, error) {
	var r C.cdn_purge_report
	b := []byte(re)
	st := C.cdn_cache_purge_regex(c.c, ptr(b), C.size_t(len(b)), &r)
	return report(r, st)
}

// PurgeAll purges everything.
func (c *Cache) PurgeAll() (PurgeReport, error) {
	var r C.cdn_purge_report
	st := C.cdn_cache_purge_all(c.c, &r)
	return report(r, st)
}

// Counters is a snapshot of the cache's counters (a subset of cdn_counters).
type Counters struct {
	Hits, StaleHits, Misses, Inserts, Evictions, Purged, Purges, Objects, BytesUsed uint64
}

// Counters returns a snapshot of the counters.
func (c *Cache) Counters() (Counters, error) {
	var k C.cdn_counters
	if err := check(C.cdn_cache_counters(c.c, &k)); err != nil {
		return Counters{}, err
	}
	return Counters{uint64(k.hits), uint64(k.stale_hits), uint64(k.misses), uint64(k.inserts),
		uint64(k.evictions), uint64(k.purged), uint64(k.purges), uint64(k.objects), uint64(k.bytes_used)}, nil
}

// ABIVersion is the loaded library's ABI version; HeaderABIVersion the header's.
func ABIVersion() uint32       { return uint32(C.cdn_abi_version()) }
func HeaderABIVersion() uint32 { return uint32(C.CDN_ABI_VERSION) }

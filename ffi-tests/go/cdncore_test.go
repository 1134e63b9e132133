// Tests of libcdncore through cgo (the binding in examples/go/cdncore).
package ffitests

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"rcdn.local/cdnexample/cdncore"
)

func open(t *testing.T, cfg string) *cdncore.Cache {
	t.Helper()
	c, err := cdncore.Open(cfg)
	if err != nil {
		t.Fatalf("open %q: %v", cfg, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestABIVersionMatchesHeader(t *testing.T) {
	if cdncore.ABIVersion() != cdncore.HeaderABIVersion() {
		t.Fatalf("library ABI %d, header %d", cdncore.ABIVersion(), cdncore.HeaderABIVersion())
	}
}

func TestInvalidConfigIsAnErrorWithItsMessage(t *testing.T) {
	_, err := cdncore.Open("mem=12q")
	if !cdncore.IsStatus(err, cdncore.StatusInvalidConfig) {
		t.Fatalf("want invalid config, got %v", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("mem")) {
		t.Fatalf("message does not name the key: %v", err)
	}
}

func TestInsertGetPurge(t *testing.T) {
	c := open(t, "mem=16m shards=2")
	if err := c.Insert([]byte("go.dev/a"), []byte("alpha"), 60000); err != nil {
		t.Fatal(err)
	}
	obj, err := c.Get([]byte("go.dev/a"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(obj.Body()); got != "alpha" {
		t.Fatalf("body %q", got)
	}
	info, err := obj.Info()
	if err != nil || !info.Fresh || info.Size != 5 || info.Status != 200 {
		t.Fatalf("info %+v %v", info, err)
	}
	obj.Free()
	if b, err := c.GetCopy([]byte("go.dev/a")); err != nil || string(b) != "alpha" {
		t.Fatalf("copy %q %v", b, err)
	}
	r, err := c.PurgeKey([]byte("go.dev/a"))
	if err != nil || !r.CoveredKnown || r.Covered != 1 {
		t.Fatalf("purge %+v %v", r, err)
	}
	if _, err := c.Get([]byte("go.dev/a")); !cdncore.IsStatus(err, cdncore.StatusNotFound) {
		t.Fatalf("want not found, got %v", err)
	}
	if _, err := c.Get(nil); !cdncore.IsStatus(err, cdncore.StatusInvalidKey) {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := c.PurgeRegex("(unclosed"); !cdncore.IsStatus(err, cdncore.StatusInvalidRegex) {
		t.Fatalf("bad regex: %v", err)
	}
}

func TestWriterMetadataAndTagPurge(t *testing.T) {
	c := open(t, "mem=16m shards=2")
	w, err := c.NewWriter([]byte("go.dev/b"), 60000)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "hello %s", "writer")
	for _, e := range []error{w.AddTag(5), w.AddSurrogateKey("doc"), w.AddHeader("Content-Type", "text/plain"), w.SetTTL(120000)} {
		if e != nil {
			t.Fatal(e)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); !cdncore.IsStatus(err, cdncore.StatusInvalidHandle) {
		t.Fatalf("abort after commit: %v", err)
	}
	obj, err := c.Get([]byte("go.dev/b"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := obj.Info()
	if v, ok := obj.Header("content-type"); !ok || v != "text/plain" || string(obj.Body()) != "hello writer" ||
		len(info.Tags) != 1 || info.Tags[0] != 5 || info.ExpiresAtMs-info.StoredAtMs != 120000 {
		t.Fatalf("object %q %+v %q", obj.Body(), info, v)
	}
	obj.Free()
	if _, err := c.PurgeSurrogateKey("doc"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get([]byte("go.dev/b")); !cdncore.IsStatus(err, cdncore.StatusNotFound) {
		t.Fatalf("want purged, got %v", err)
	}
}

func TestConcurrentFillsShareOneGetterCall(t *testing.T) {
	c := open(t, "mem=16m shards=4")
	var calls int64
	get := func(key []byte, w *cdncore.Writer) error {
		atomic.AddInt64(&calls, 1)
		time.Sleep(200 * time.Millisecond)
		_, err := w.Write(append([]byte("v:"), key...))
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			obj, err := c.Fill([]byte("go.dev/slow"), get)
			if err != nil {
				errs <- err
				return
			}
			if string(obj.Body()) != "v:go.dev/slow" {
				errs <- fmt.Errorf("body %q", obj.Body())
			}
			obj.Free()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := atomic.LoadInt64(&calls); n != 1 {
		t.Fatalf("getter ran %d times, want 1", n)
	}
}

func TestFailingGetterStoresNothing(t *testing.T) {
	c := open(t, "mem=16m shards=2")
	_, err := c.Fill([]byte("go.dev/fail"), func([]byte, *cdncore.Writer) error { return errors.New("origin down") })
	if !cdncore.IsStatus(err, cdncore.StatusGetterFailed) {
		t.Fatalf("want getter failed, got %v", err)
	}
	if _, err := c.Get([]byte("go.dev/fail")); !cdncore.IsStatus(err, cdncore.StatusNotFound) {
		t.Fatalf("a failed fill was stored: %v", err)
	}
}

func TestPanickingGetterIsAFailedFill(t *testing.T) {
	c := open(t, "mem=16m shards=2")
	_, err := c.Fill([]byte("go.dev/panic"), func([]byte, *cdncore.Writer) error { panic("boom") })
	if !cdncore.IsStatus(err, cdncore.StatusGetterFailed) {
		t.Fatalf("want getter failed, got %v", err)
	}
	obj, err := c.Fill([]byte("go.dev/panic"), func(k []byte, w *cdncore.Writer) error {
		_, err := w.Write([]byte("recovered"))
		return err
	})
	if err != nil || string(obj.Body()) != "recovered" {
		t.Fatalf("cache unusable after a panicking getter: %v", err)
	}
	obj.Free()
}

func TestManyGoroutinesHammerOneCache(t *testing.T) {
	c := open(t, "mem=4m shards=4")
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				key := []byte(fmt.Sprintf("go.dev/k%d", (i*7+g)%50))
				switch i % 5 {
				case 0:
					// A purge racing the insert may win: dropped, never half-stored.
					err := c.Insert(key, key, 60000)
					if err != nil && !cdncore.IsStatus(err, cdncore.StatusPurgedDuringFill) {
						t.Error(err)
						return
					}
				case 4:
					c.PurgePrefix([]byte("go.dev/k1"))
				default:
					obj, err := c.Get(key)
					if err == nil {
						if !bytes.Equal(obj.Body(), key) {
							t.Errorf("key %s has body %q", key, obj.Body())
						}
						obj.Free()
					} else if !cdncore.IsStatus(err, cdncore.StatusNotFound) {
						t.Error(err)
						return
					}
				}
			}
		}(g)
	}
	wg.Wait()
	k, err := c.Counters()
	if err != nil || k.Inserts == 0 || k.Hits == 0 || k.Purges == 0 {
		t.Fatalf("counters %+v %v", k, err)
	}
}

func TestDoubleCloseIsRefused(t *testing.T) {
	c, err := cdncore.Open("mem=1m shards=1")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); !cdncore.IsStatus(err, cdncore.StatusInvalidHandle) {
		t.Fatalf("second close: %v", err)
	}
}

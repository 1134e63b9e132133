// cdnexample: serves files through a libcdncore cache from many goroutines.
// Each file is read by the getter once, however many goroutines ask for it
// at the same time; a tag purge makes the next request read it again.
//
//	PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig go run . FILE...
package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"rcdn.local/cdnexample/cdncore"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cdnexample FILE...")
		os.Exit(2)
	}
	if cdncore.ABIVersion() != cdncore.HeaderABIVersion() {
		fmt.Fprintln(os.Stderr, "libcdncore ABI mismatch")
		os.Exit(2)
	}
	cache, err := cdncore.Open("mem=64m shards=4 default_ttl=5m")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cache.Close()
	var reads int64
	getter := func(key []byte, w *cdncore.Writer) error {
		atomic.AddInt64(&reads, 1)
		body, err := os.ReadFile(string(key))
		if err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
		return w.AddTag(1)
	}
	serveAll := func() {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, path := range os.Args[1:] {
					obj, err := cache.Fill([]byte(path), getter)
					if err != nil {
						fmt.Fprintln(os.Stderr, path, err)
						continue
					}
					_ = len(obj.Body()) // zero-copy view of the cached bytes
					obj.Free()
				}
			}()
		}
		wg.Wait()
	}
	serveAll()
	fmt.Printf("8 goroutines x %d files: %d file reads\n", len(os.Args)-1, atomic.LoadInt64(&reads))
	if _, err := cache.PurgeTag(1); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	serveAll()
	c, _ := cache.Counters()
	fmt.Printf("after a tag purge: %d file reads; hits=%d misses=%d objects=%d\n",
		atomic.LoadInt64(&reads), c.Hits, c.Misses, c.Objects)
}

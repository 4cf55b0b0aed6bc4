package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// cacheSize is how many servers the last-known-good cache keeps.
const cacheSize = 16

// cacheFile is the JSON layout of Config.CachePath.
type cacheFile struct {
	Version int       `json:"version"`
	SavedAt time.Time `json:"saved_at"`
	Servers []Server  `json:"servers"`
}

// cache is the last-known-good list: servers dispatchers offered, the most
// recently new first. It is kept in memory and, when path is set, in a file
// replaced atomically on every change.
type cache struct {
	path string

	mu      sync.Mutex
	list    []Server
	written time.Time // last file write; zero before the first
	dirty   bool      // list holds changes the file does not
}

// cacheWriteEvery bounds how often the cache file is rewritten: with more
// servers than the cache holds, almost every answer changes the list, and
// each write is an fsync. A change not yet written goes out with the next
// answer after the interval.
const cacheWriteEvery = 5 * time.Second

// loadCache reads path. A missing file is an empty cache; an unreadable or
// corrupt one is an empty cache and an error to report.
func loadCache(path string) (*cache, error) {
	c := &cache{path: path}
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read cache: %w", err)
	}
	var f cacheFile
	if err := json.Unmarshal(b, &f); err != nil {
		return c, fmt.Errorf("read cache %s: %w", path, err)
	}
	for _, s := range f.Servers {
		if s.check() == nil && len(c.list) < cacheSize {
			c.list = append(c.list, s)
		}
	}
	return c, nil
}

// servers returns a copy of the cached servers, in order.
func (c *cache) servers() []Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Server(nil), c.list...)
}

// remember puts the servers of one answer in front of the list unless the
// list already holds all of them, so a dispatcher that keeps offering the
// same servers causes no writes. A server whose address changed is
// replaced. The file is rewritten at most every cacheWriteEvery.
func (c *cache) remember(got []Server, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	known := true
	for _, s := range got {
		if !contains(c.list, s) {
			known = false
			break
		}
	}
	if !known {
		next := append(make([]Server, 0, cacheSize), got[:min(len(got), cacheSize)]...)
		for _, s := range c.list {
			if len(next) == cacheSize {
				break
			}
			if !sameIDOrAddr(next, s) {
				next = append(next, s)
			}
		}
		c.list, c.dirty = next, true
	}
	if !c.dirty || c.path == "" || (!c.written.IsZero() && now.Sub(c.written) < cacheWriteEvery) {
		return nil
	}
	c.written, c.dirty = now, false
	b, err := json.Marshal(cacheFile{Version: 1, SavedAt: now.UTC(), Servers: c.list})
	if err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	return writeFileAtomic(c.path, b)
}

func contains(list []Server, s Server) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sameIDOrAddr(list []Server, s Server) bool {
	for _, x := range list {
		if x.ID == s.ID || x.Addr == s.Addr {
			return true
		}
	}
	return false
}

// writeFileAtomic replaces path with data so that a reader, or a crash at
// any moment, sees either the old file or the whole new one: it writes a
// temporary file in the same directory, fsyncs it, renames it over path and
// fsyncs the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write cache: sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write cache: %w", err)
	}
	// The rename is durable once the directory is synced. Some file systems
	// cannot sync a directory; the data is written either way.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

package arpd

import (
	"container/list"
	"net/netip"
)

// lru is a bounded map from addresses to V; the least recently touched
// entry is evicted when a put would exceed max. Not safe for concurrent use.
type lru[V any] struct {
	max int
	m   map[netip.Addr]*list.Element
	l   list.List // front: most recent
}

type lruItem[V any] struct {
	k netip.Addr
	v V
}

func newLRU[V any](max int) *lru[V] {
	c := &lru[V]{max: max, m: make(map[netip.Addr]*list.Element)}
	c.l.Init()
	return c
}

func (c *lru[V]) len() int { return len(c.m) }

// get returns a pointer to k's value (valid until the entry is removed),
// without changing its recency.
func (c *lru[V]) get(k netip.Addr) (*V, bool) {
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	return &e.Value.(*lruItem[V]).v, true
}

// touch marks k most recently used and reports whether it is present.
func (c *lru[V]) touch(k netip.Addr) bool {
	e, ok := c.m[k]
	if ok {
		c.l.MoveToFront(e)
	}
	return ok
}

// put sets k to v, marks it most recently used and reports whether another
// entry was evicted to make room.
func (c *lru[V]) put(k netip.Addr, v V) (evicted bool) {
	if e, ok := c.m[k]; ok {
		e.Value.(*lruItem[V]).v = v
		c.l.MoveToFront(e)
		return false
	}
	if c.max > 0 && len(c.m) >= c.max {
		old := c.l.Back()
		c.l.Remove(old)
		delete(c.m, old.Value.(*lruItem[V]).k)
		evicted = true
	}
	c.m[k] = c.l.PushFront(&lruItem[V]{k: k, v: v})
	return evicted
}

func (c *lru[V]) del(k netip.Addr) bool {
	e, ok := c.m[k]
	if ok {
		c.l.Remove(e)
		delete(c.m, k)
	}
	return ok
}

// oldest returns the least recently used entry.
func (c *lru[V]) oldest() (netip.Addr, *V, bool) {
	e := c.l.Back()
	if e == nil {
		return netip.Addr{}, nil, false
	}
	it := e.Value.(*lruItem[V])
	return it.k, &it.v, true
}

func (c *lru[V]) clear() {
	c.m = make(map[netip.Addr]*list.Element)
	c.l.Init()
}

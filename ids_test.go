package bgtask

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
)

func TestIDPoolMakesDistinctVersion4IDs(t *testing.T) {
	var p idPool
	seen := make(map[uuid.UUID]bool)
	for range 1000 {
		id := p.newID()
		assert.Equal(t, uuid.Version(4), id.Version())
		assert.Equal(t, uuid.RFC4122, id.Variant())
		assert.False(t, seen[id], "repeated id")
		seen[id] = true
	}
}

func TestIDPoolsAreSeededApart(t *testing.T) {
	var a, b idPool
	assert.NotEqual(t, a.newID(), b.newID())
}

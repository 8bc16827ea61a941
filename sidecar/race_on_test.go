//go:build race

package main

// raceEnabled: the race detector multiplies memory use (shadow memory), so
// memory bounds are not asserted under it.
const raceEnabled = true

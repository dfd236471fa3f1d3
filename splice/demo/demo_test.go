package demo

import (
	"bytes"
	"testing"
)

func TestBodyIsDeterministicAndSensitive(t *testing.T) {
	a, b := Body(100000), Body(100000)
	if !bytes.Equal(a, b) || len(a) != 100000 {
		t.Fatal("Body is not deterministic")
	}
	if bytes.Equal(Body(1000), a[:1000]) {
		t.Error("bodies of different sizes share a prefix: a body cut short would still match")
	}
	swapped := append([]byte(nil), a...)
	swapped[10], swapped[11] = swapped[11], swapped[10]
	if swapped[10] != swapped[11] && Sum(swapped) == Sum(a) {
		t.Error("two swapped bytes keep the hash")
	}
}

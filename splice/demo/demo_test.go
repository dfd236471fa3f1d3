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
	i := 10
	for i < len(a)-1 && a[i] == a[i+1] {
		i++
	}
	swapped := append([]byte(nil), a...)
	swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
	if bytes.Equal(swapped, a) || Sum(swapped) == Sum(a) {
		t.Error("two swapped bytes keep the body or its hash")
	}
}

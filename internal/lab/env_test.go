package lab

import (
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	var bad []string
	orig := badEnv
	badEnv = func(name, value, want string) { bad = append(bad, name+"="+value) }
	t.Cleanup(func() { badEnv = orig })

	t.Setenv("LAB_D", "90s")
	t.Setenv("LAB_N", "42")
	t.Setenv("LAB_S", "x")
	t.Setenv("LAB_EMPTY", "")
	if d := EnvDuration("LAB_D", time.Second); d != 90*time.Second {
		t.Errorf("EnvDuration: %v", d)
	}
	if n := EnvInt("LAB_N", 1); n != 42 {
		t.Errorf("EnvInt: %d", n)
	}
	if s := EnvString("LAB_S", "y"); s != "x" {
		t.Errorf("EnvString: %q", s)
	}
	if d, n, s := EnvDuration("LAB_EMPTY", time.Minute), EnvInt("LAB_UNSET", 7), EnvString("LAB_UNSET", "d"); d != time.Minute || n != 7 || s != "d" {
		t.Errorf("defaults: %v %d %q", d, n, s)
	}
	if len(bad) != 0 {
		t.Fatalf("good values reported bad: %v", bad)
	}
	t.Setenv("LAB_D", "90")
	t.Setenv("LAB_N", "4x")
	EnvDuration("LAB_D", 0)
	EnvInt("LAB_N", 0)
	if len(bad) != 2 || bad[0] != "LAB_D=90" || bad[1] != "LAB_N=4x" {
		t.Errorf("bad values reported %v, want LAB_D=90 and LAB_N=4x", bad)
	}
}

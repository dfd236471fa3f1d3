package main

import "testing"

// The veth run rewrites only its block; the lo run keeps every marked block
// before "How to run".
func TestBlocks(t *testing.T) {
	lo := "# Benchmarks\n\n## Targets\n\nx\n\n" + howToRun + "\nrun it\n"
	v1 := replaceBlock(lo, vethBlock, "## On a veth pair\n\none\n")
	want := "# Benchmarks\n\n## Targets\n\nx\n\n<!-- begin veth -->\n## On a veth pair\n\none\n<!-- end veth -->\n\n" + howToRun + "\nrun it\n"
	if v1 != want {
		t.Fatalf("first veth run:\n%s\nwant:\n%s", v1, want)
	}
	notes := v1 + "<!-- begin notes -->\nby hand\n<!-- end notes -->\n"
	v2 := replaceBlock(notes, vethBlock, "## On a veth pair\n\ntwo\n")
	if got := markedBlocks(v2); len(got) != 2 || got[0] != "<!-- begin veth -->\n## On a veth pair\n\ntwo\n<!-- end veth -->\n" ||
		got[1] != "<!-- begin notes -->\nby hand\n<!-- end notes -->\n" {
		t.Fatalf("second veth run: blocks %q", got)
	}
	// A new lo document keeps both, before How to run.
	doc := lo
	for _, b := range markedBlocks(v2) {
		doc = insertBefore(doc, howToRun, b+"\n")
	}
	if got := markedBlocks(doc); len(got) != 2 {
		t.Fatalf("lo run: blocks %q in\n%s", got, doc)
	}
	if i, j := len(doc)-len(howToRun+"\nrun it\n"), len(doc); doc[i:j] != howToRun+"\nrun it\n" {
		t.Fatalf("lo run: How to run is not last:\n%s", doc)
	}
	// No document yet: a title and the block.
	if got := replaceBlock("", vethBlock, "s\n"); got != "# Benchmarks\n\n<!-- begin veth -->\ns\n<!-- end veth -->\n\n" {
		t.Fatalf("new document: %q", got)
	}
}

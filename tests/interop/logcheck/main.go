// logcheck verifies ax-broker checkpoints and proofs with Go's golang.org/x/mod/sumdb
// packages: note (C2SP signed notes) and tlog (RFC 6962 trees). It is an independent
// implementation: nothing here comes from ax-broker. Input: JSON on stdin. Output: one
// line per check, "ok <what>" or "FAIL <what>: <error>"; exit 1 if anything failed.
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Index    int64    `json:"index"`
	Size     int64    `json:"tree_size"`
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
}

type consistency struct {
	From  int64    `json:"from"`
	To    int64    `json:"to"`
	Proof []string `json:"proof"`
}

type input struct {
	VerifierKey string        `json:"vkey"`
	Checkpoints []string      `json:"checkpoints"`
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
}

func hash(text string) tlog.Hash {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		panic("bad hash " + text)
	}
	var h tlog.Hash
	copy(h[:], raw)
	return h
}

func hashes(texts []string) []tlog.Hash {
	out := make([]tlog.Hash, len(texts))
	for i, t := range texts {
		out[i] = hash(t)
	}
	return out
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Println("FAIL input:", err)
		os.Exit(1)
	}
	verifier, err := note.NewVerifier(in.VerifierKey)
	if err != nil {
		fmt.Println("FAIL verifier key:", err)
		os.Exit(1)
	}
	failed := false
	roots := map[int64]tlog.Hash{}
	for _, text := range in.Checkpoints {
		n, err := note.Open([]byte(text), note.VerifierList(verifier))
		if err != nil {
			fmt.Println("FAIL checkpoint:", err)
			failed = true
			continue
		}
		lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
		size, err := strconv.ParseInt(lines[1], 10, 64)
		if err != nil || lines[0] != verifier.Name() {
			fmt.Println("FAIL checkpoint body:", n.Text)
			failed = true
			continue
		}
		roots[size] = hash(lines[2])
		fmt.Printf("ok checkpoint %d\n", size)
	}
	for _, p := range in.Inclusion {
		root, known := roots[p.Size]
		if !known {
			fmt.Printf("FAIL inclusion %d: no checkpoint of size %d\n", p.Index, p.Size)
			failed = true
			continue
		}
		if err := tlog.CheckRecord(hashes(p.Proof), p.Size, root, p.Index, hash(p.LeafHash)); err != nil {
			fmt.Printf("FAIL inclusion %d in %d: %v\n", p.Index, p.Size, err)
			failed = true
			continue
		}
		fmt.Printf("ok inclusion %d in %d\n", p.Index, p.Size)
	}
	for _, p := range in.Consistency {
		oldRoot, okOld := roots[p.From]
		newRoot, okNew := roots[p.To]
		if !okOld || !okNew {
			fmt.Printf("FAIL consistency %d->%d: missing checkpoint\n", p.From, p.To)
			failed = true
			continue
		}
		if err := tlog.CheckTree(hashes(p.Proof), p.To, newRoot, p.From, oldRoot); err != nil {
			fmt.Printf("FAIL consistency %d->%d: %v\n", p.From, p.To, err)
			failed = true
			continue
		}
		fmt.Printf("ok consistency %d->%d\n", p.From, p.To)
	}
	if failed {
		os.Exit(1)
	}
}

// tilecheck mirrors an ax-broker log through its C2SP tlog-tiles and checks it with Go's
// golang.org/x/mod/sumdb/tlog: the tiles must be valid for the signed checkpoint (tlog's
// TileHashReader proves each one it reads), every record's entry must hash to the leaf the
// broker names, and every inclusion and consistency proof the broker serves must be the one
// tlog computes from the tiles and must verify. Nothing here comes from ax-broker.
// Input: JSON on stdin. Output: one line per group of checks, "ok ..." or "FAIL ...";
// exit 1 if anything failed.
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type input struct {
	URL         string   `json:"url"`
	VerifierKey string   `json:"vkey"`
	Checkpoint  string   `json:"checkpoint"`
	Older       []string `json:"older"`
}

// c2sp is a TileReader over the broker's /v1/log/tile/ endpoint; C2SP paths are Go's
// without the height (always 8).
type c2sp struct {
	base  string
	reads int
}

func (c *c2sp) Height() int { return 8 }

func (c *c2sp) get(path string) ([]byte, error) {
	response, err := http.Get(c.base + path)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(response.Body)
	if err != nil {
		return nil, err
	}
	if response.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d", path, response.StatusCode)
	}
	return body, nil
}

func (c *c2sp) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := c.get(strings.Replace(t.Path(), "tile/8/", "tile/", 1))
		if err != nil {
			return nil, err
		}
		c.reads++
		out[i] = data
	}
	return out, nil
}

func (c *c2sp) SaveTiles(tiles []tlog.Tile, data [][]byte) {}

func decodeHash(text string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != tlog.HashSize {
		return h, fmt.Errorf("bad hash %q", text)
	}
	copy(h[:], raw)
	return h, nil
}

func open(text string, verifier note.Verifier) (tlog.Tree, error) {
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		return tlog.Tree{}, err
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || lines[0] != verifier.Name() {
		return tlog.Tree{}, fmt.Errorf("checkpoint body %q", n.Text)
	}
	root, err := decodeHash(lines[2])
	return tlog.Tree{N: size, Hash: root}, err
}

type proofAnswer struct {
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
}

func (c *c2sp) proof(path string) (proofAnswer, []tlog.Hash, error) {
	var answer proofAnswer
	body, err := c.get(path)
	if err != nil {
		return answer, nil, err
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return answer, nil, err
	}
	out := make([]tlog.Hash, len(answer.Proof))
	for i, text := range answer.Proof {
		if out[i], err = decodeHash(text); err != nil {
			return answer, nil, err
		}
	}
	return answer, out, nil
}

func same(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// entries reads every C2SP entry bundle of a tree of size n: each entry is a big-endian
// 16-bit length and the bytes.
func (c *c2sp) entries(n int64) ([][]byte, error) {
	var out [][]byte
	for start := int64(0); start < n; start += 256 {
		width := n - start
		if width > 256 {
			width = 256
		}
		path := tlog.Tile{H: 8, L: 0, N: start / 256, W: int(width)}.Path()
		data, err := c.get(strings.Replace(path, "tile/8/0/", "tile/entries/", 1))
		if err != nil {
			return nil, err
		}
		for i := int64(0); i < width; i++ {
			if len(data) < 2 {
				return nil, fmt.Errorf("bundle %d is short", start/256)
			}
			size := int(binary.BigEndian.Uint16(data))
			if len(data) < 2+size {
				return nil, fmt.Errorf("bundle %d is short", start/256)
			}
			out = append(out, data[2:2+size])
			data = data[2+size:]
		}
		if len(data) != 0 {
			return nil, fmt.Errorf("bundle %d has %d bytes too many", start/256, len(data))
		}
	}
	return out, nil
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
	tree, err := open(in.Checkpoint, verifier)
	if err != nil {
		fmt.Println("FAIL checkpoint:", err)
		os.Exit(1)
	}
	reader := &c2sp{base: in.URL + "/v1/log/"}
	hashes := tlog.TileHashReader(tree, reader)
	failed := false
	fail := func(format string, args ...any) {
		fmt.Printf("FAIL "+format+"\n", args...)
		failed = true
	}

	entries, err := reader.entries(tree.N)
	if err != nil {
		fail("entries: %v", err)
	}
	included := 0
	for i := int64(0); i < tree.N; i++ {
		answer, served, err := reader.proof(fmt.Sprintf("proof/inclusion?index=%d&size=%d", i, tree.N))
		if err != nil {
			fail("inclusion %d: %v", i, err)
			continue
		}
		leaf, err := decodeHash(answer.LeafHash)
		if err != nil {
			fail("inclusion %d: %v", i, err)
			continue
		}
		if entries != nil && tlog.RecordHash(entries[i]) != leaf {
			fail("entry %d does not hash to its leaf", i)
		}
		computed, err := tlog.ProveRecord(tree.N, i, hashes)
		if err != nil {
			fail("inclusion %d from tiles: %v", i, err)
			continue
		}
		if !same(computed, served) {
			fail("inclusion %d: the served proof is not the one the tiles give", i)
			continue
		}
		if err := tlog.CheckRecord(served, tree.N, tree.Hash, i, leaf); err != nil {
			fail("inclusion %d: %v", i, err)
			continue
		}
		included++
	}
	fmt.Printf("ok inclusion %d of %d\n", included, tree.N)

	consistent := 0
	for m := int64(1); m < tree.N; m++ {
		_, served, err := reader.proof(fmt.Sprintf("proof/consistency?from=%d&to=%d", m, tree.N))
		if err != nil {
			fail("consistency %d: %v", m, err)
			continue
		}
		computed, err := tlog.ProveTree(tree.N, m, hashes)
		if err != nil || !same(computed, served) {
			fail("consistency %d->%d: the served proof is not the one the tiles give (%v)", m, tree.N, err)
			continue
		}
		old, err := tlog.TreeHash(m, hashes)
		if err == nil {
			err = tlog.CheckTree(served, tree.N, tree.Hash, m, old)
		}
		if err != nil {
			fail("consistency %d->%d: %v", m, tree.N, err)
			continue
		}
		consistent++
	}
	fmt.Printf("ok consistency %d of %d\n", consistent, tree.N-1)

	for _, text := range in.Older {
		older, err := open(text, verifier)
		if err != nil {
			fail("older checkpoint: %v", err)
			continue
		}
		_, served, err := reader.proof(fmt.Sprintf("proof/consistency?from=%d&to=%d", older.N, tree.N))
		if err == nil {
			err = tlog.CheckTree(served, tree.N, tree.Hash, older.N, older.Hash)
		}
		if err != nil {
			fail("signed %d->%d: %v", older.N, tree.N, err)
			continue
		}
		fmt.Printf("ok signed %d->%d\n", older.N, tree.N)
	}
	fmt.Printf("ok tiles read %d\n", reader.reads)
	if failed {
		os.Exit(1)
	}
}

// cosigcheck verifies witness cosignatures on ax-broker checkpoints with an independent
// implementation: golang.org/x/mod/sumdb/note parses and checks the signed note (the log's
// Ed25519 signature), and the C2SP tlog-cosignature Ed25519 "cosignature/v1" rule is written
// here from the spec, on Go's crypto/ed25519: key ID SHA-256(name || "\n" || 0x04 || key)[:4],
// signature = u64 big-endian timestamp || Ed25519 over
// "cosignature/v1\ntime <timestamp>\n" || checkpoint body. Nothing comes from ax-broker.
// Input: JSON on stdin. Output: "ok <size> <witness>..." or "FAIL ..." per note; exit 1 if
// anything failed.
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

type input struct {
	LogKey      string   `json:"log_vkey"`
	WitnessKeys []string `json:"witness_vkeys"`
	Notes       []string `json:"notes"`
}

// cosigVerifier is a note.Verifier for one witness's cosignature/v1 key.
type cosigVerifier struct {
	name string
	hash uint32
	key  ed25519.PublicKey
}

func (v *cosigVerifier) Name() string    { return v.name }
func (v *cosigVerifier) KeyHash() uint32 { return v.hash }

func (v *cosigVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	timestamp := binary.BigEndian.Uint64(sig[:8])
	if timestamp == 0 || timestamp > 1<<63-1 {
		return false
	}
	var signed bytes.Buffer
	fmt.Fprintf(&signed, "cosignature/v1\ntime %d\n", timestamp)
	signed.Write(msg)
	return ed25519.Verify(v.key, signed.Bytes(), sig[8:])
}

func newCosigVerifier(vkey string) (*cosigVerifier, error) {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("malformed witness key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != 0x04 {
		return nil, errors.New("not an Ed25519 cosignature/v1 key")
	}
	h := sha256.New()
	h.Write([]byte(parts[0] + "\n"))
	h.Write(raw)
	id := binary.BigEndian.Uint32(h.Sum(nil)[:4])
	declared, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil || uint32(declared) != id {
		return nil, errors.New("witness key id does not match its name and key")
	}
	return &cosigVerifier{name: parts[0], hash: id, key: ed25519.PublicKey(raw[1:])}, nil
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Println("FAIL input:", err)
		os.Exit(1)
	}
	logKey, err := note.NewVerifier(in.LogKey)
	if err != nil {
		fmt.Println("FAIL log key:", err)
		os.Exit(1)
	}
	verifiers := []note.Verifier{logKey}
	for _, vkey := range in.WitnessKeys {
		v, err := newCosigVerifier(vkey)
		if err != nil {
			fmt.Println("FAIL witness key:", err)
			os.Exit(1)
		}
		verifiers = append(verifiers, v)
	}
	failed := false
	for _, text := range in.Notes {
		n, err := note.Open([]byte(text), note.VerifierList(verifiers...))
		if err != nil {
			fmt.Println("FAIL note:", err)
			failed = true
			continue
		}
		logSigned := false
		var witnesses []string
		for _, sig := range n.Sigs {
			if sig.Name == logKey.Name() && sig.Hash == logKey.KeyHash() {
				logSigned = true
			} else {
				witnesses = append(witnesses, sig.Name)
			}
		}
		if !logSigned {
			fmt.Println("FAIL note: no signature by the log's key")
			failed = true
			continue
		}
		sort.Strings(witnesses)
		size := strings.Split(n.Text, "\n")[1]
		fmt.Printf("ok %s %s\n", size, strings.Join(witnesses, " "))
	}
	if failed {
		os.Exit(1)
	}
}

package runtime

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// InspectModel checks, without reading the weights, that Load can open
// path: a known synthetic:NAME; a Hugging Face folder whose config.json
// describes a supported model (the same checks as Load, naming the field)
// and whose weights are there (model.safetensors with a valid header, or
// model.safetensors.index.json and every shard it names); a GGUF file whose
// header, metadata and tensor infos LoadGGUF accepts; or a llama2.c
// checkpoint whose header is valid and whose size matches it. It returns the
// tokenizer file beside the model that Load would use ("" when there is
// none, and for synthetic models).
func InspectModel(path string) (tokenizer string, err error) {
	if name, ok := strings.CutPrefix(path, "synthetic:"); ok {
		base, seed, hasSeed := strings.Cut(name, "@")
		if _, known := syntheticConfigs[base]; !known {
			return "", fmt.Errorf("unknown synthetic model %q (have %s)", name, strings.Join(SyntheticNames(), ", "))
		}
		if hasSeed {
			var s uint64
			if _, err := fmt.Sscan(seed, &s); err != nil {
				return "", fmt.Errorf("synthetic model %q: bad seed %q", name, seed)
			}
		}
		return "", nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("model %s: %w", path, unwrapPathError(err))
	}
	if st.IsDir() {
		if err := inspectHF(path); err != nil {
			return "", err
		}
		return findTokenizer(path, true), nil
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("model %s: not a regular file or a folder", path)
	}
	if isGGUFFile(path) {
		return inspectGGUF(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("llama2.c: %w", err)
	}
	defer f.Close()
	if _, err := readLlama2CHeader(path, f, st.Size()); err != nil {
		return "", err
	}
	return findTokenizer(path, false), nil
}

// inspectHF checks a Hugging Face folder's config and that its weight files
// are present.
func inspectHF(dir string) error {
	cfgPath := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("model %s: a folder without config.json (want a Hugging Face model folder, a llama2.c .bin or synthetic:NAME)", dir)
		}
		return fmt.Errorf("hf model %s: %w", dir, err)
	}
	if _, err := parseHFConfig(cfgPath, data); err != nil {
		return err
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); err == nil {
		return inspectIndex(index)
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err != nil {
		return fmt.Errorf("hf model %s: neither model.safetensors nor model.safetensors.index.json found", dir)
	}
	return inspectSafetensors(single)
}

// inspectIndex checks that a shard index parses and every shard exists.
func inspectIndex(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("safetensors index: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("safetensors index %s: %w", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return fmt.Errorf("safetensors index %s: weight_map is missing or empty", path)
	}
	seen := map[string]bool{}
	for name, shard := range idx.WeightMap {
		if shard == "" || !filepath.IsLocal(shard) {
			return fmt.Errorf("safetensors index %s: tensor %q maps to %q, not a file in the index's folder", path, name, shard)
		}
		if seen[shard] {
			continue
		}
		seen[shard] = true
		if err := inspectSafetensors(filepath.Join(filepath.Dir(path), shard)); err != nil {
			return fmt.Errorf("safetensors index %s: %w", path, err)
		}
	}
	return nil
}

// inspectSafetensors reads and checks a safetensors file's header only.
func inspectSafetensors(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	size := st.Size()
	if size < 8 {
		return fmt.Errorf("safetensors %s: file has %d bytes, too short for the 8-byte header length", path, size)
	}
	var lenBuf [8]byte
	if err := readAtFull(f, lenBuf[:], 0); err != nil {
		return fmt.Errorf("safetensors %s: reading header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) || n > maxSafetensorsHeader {
		return fmt.Errorf("safetensors %s: header length %d does not fit the file's %d bytes (not a safetensors file?)", path, n, size)
	}
	header := make([]byte, n)
	if err := readAtFull(f, header, 8); err != nil {
		return fmt.Errorf("safetensors %s: reading header: %w", path, err)
	}
	if _, err := parseSafetensorsHeader(header, size-8-int64(n)); err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return nil
}

// unwrapPathError drops the operation and path of an *os.PathError (the
// caller names the path).
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

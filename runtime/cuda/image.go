package cuda

import (
	"bytes"
	"debug/elf"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// imageKernels lists the kernels (global functions) of a compiled image:
// the global and weak (an instantiated template) function symbols of a
// CUBIN but the compiler's helpers, the .entry names of PTX. Modules
// look a kernel up only in the part that holds it: a failed
// cuModuleGetFunction is an API error compute-sanitizer reports.
func imageKernels(img []byte) ([]string, error) {
	if !bytes.HasPrefix(img, []byte(elf.ELFMAG)) {
		var names []string
		for _, m := range ptxEntry.FindAllSubmatch(img, -1) {
			names = append(names, string(m[1]))
		}
		return names, nil
	}
	// CUBINs carry their own ELF version (ident and header); debug/elf
	// reads only version 1.
	img = slices.Clone(img)
	if len(img) > 24 {
		img[elf.EI_VERSION] = byte(elf.EV_CURRENT)
		copy(img[20:24], []byte{1, 0, 0, 0})
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("cuda: CUBIN: %w", err)
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("cuda: CUBIN symbols: %w", err)
	}
	var names []string
	for _, s := range syms {
		// NVRTC 13 also leaves its arithmetic helpers as global functions
		// ($__internal_N_$__cuda_sm20_div_u64, ...); they are no kernels.
		if b := elf.ST_BIND(s.Info); elf.ST_TYPE(s.Info) == elf.STT_FUNC && (b == elf.STB_GLOBAL || b == elf.STB_WEAK) && !strings.HasPrefix(s.Name, "$") {
			names = append(names, s.Name)
		}
	}
	return names, nil
}

// ptxEntry matches a kernel's declaration in PTX: .entry, visible or weak
// (an instantiated template).
var ptxEntry = regexp.MustCompile(`(?m)^\s*(?:\.(?:visible|weak)\s+)?\.entry\s+([A-Za-z_$][\w$]*)`)

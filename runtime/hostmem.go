package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// HostMemory reports the process's resident memory now (VmRSS) and at its
// peak (VmHWM, the high-water mark since it started), in bytes, from
// /proc/self/status: memory of a mapped file counts while its pages are
// mapped in. It is an error where /proc is not there (not Linux).
func HostMemory() (rss, peak int64, err error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, fmt.Errorf("host memory: %w", err)
	}
	return parseProcStatus(data)
}

// parseProcStatus reads VmRSS and VmHWM (in kB) from the text of
// /proc/self/status.
func parseProcStatus(data []byte) (rss, peak int64, err error) {
	var haveRSS, havePeak bool
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("host memory: /proc/self/status: %s is %q, want a number of kB", key, strings.TrimSpace(val))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("host memory: /proc/self/status: %s is %q, want a number of kB", key, strings.TrimSpace(val))
		}
		if key == "VmRSS" {
			rss, haveRSS = n<<10, true
		} else {
			peak, havePeak = n<<10, true
		}
	}
	if !haveRSS || !havePeak {
		return 0, 0, fmt.Errorf("host memory: /proc/self/status has no VmRSS or VmHWM line")
	}
	return rss, peak, nil
}

// HostAvailable is the memory the host can still give processes without
// swapping (MemAvailable of /proc/meminfo), 0 where it cannot tell.
func HostAvailable() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	return parseMemAvailable(data)
}

// parseMemAvailable reads MemAvailable (kB) from /proc/meminfo's text.
func parseMemAvailable(data []byte) int64 {
	for _, line := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(line, "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0
		}
		return kb << 10
	}
	return 0
}

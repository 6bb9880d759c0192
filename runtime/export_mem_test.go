package runtime

import "testing"

// RSSFileForTest is the process's resident memory of mapped files, for the
// tests of package runtime_test (see rssFile).
func RSSFileForTest(t testing.TB) int64 { t.Helper(); return rssFile(t) }

// Package tasks holds the evaluation tasks of kvbench (streaming perplexity,
// passkey retrieval, needle in a haystack, RULER's synthetic tasks) and the
// text preparation they share.
package tasks

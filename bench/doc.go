// Package bench runs kvbench suites: the suite file (strict YAML), the plan
// (the matrix of cells), the runner (progress, resume, failures recorded) and
// the engine that drives a model under a cache policy for the tasks.
package bench

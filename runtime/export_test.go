package runtime

// SetMaxBatchRows sets the most rows of one Batch pass, for tests of steps
// that take several passes, and returns the function that restores it.
func SetMaxBatchRows(n int) (restore func()) {
	old := maxBatchRows
	maxBatchRows = n
	return func() { maxBatchRows = old }
}

// SetPhases turns the pass timing (KVBENCH_PHASES) on or off and returns
// the function that restores it.
func SetPhases(on bool) (restore func()) {
	old := phasesOn
	phasesOn = on
	return func() { phasesOn = old }
}

// SetPhasesDevice turns the device's part of the pass timing
// (KVBENCH_PHASES=device) on or off and returns the function that restores
// it.
func SetPhasesDevice(on bool) (restore func()) {
	old := phasesDevice
	phasesDevice = on
	return func() { phasesDevice = old }
}

// InterleaveHeadsForTest is interleaveHeads.
func InterleaveHeadsForTest(t *Tensor, hd int) (*Tensor, error) { return interleaveHeads(t, hd) }

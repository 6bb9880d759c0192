package cuda

// The polled merge (attn_merge_poll in attention.cu): a split row's blocks
// write their partials as tagged words, each a float32 value beside the
// launch's epoch (RH_EPOCH), and block 0 of the row reads them again until
// every word carries the epoch, then merges. The counted merge (arrive_last)
// puts a fence-ordered atomic and then a round of loads between a row's last
// partial and its output; the polled one a single trip through the L2.
//
// It waits inside the kernel for other blocks of the same launch, so it is
// taken only where the whole grid is resident at once (a merger never waits
// on a block that cannot start), never inside a recorded graph (the epoch
// goes by value and must change every launch), and only where one round of
// loads covers a thread's chunks (pollChunks).

// pollPM is PM in attention.cu: the most chunks a thread of the polled
// merge reads, in one round of loads.
const pollPM = 4

// pollChunks is the most chunks a row of vg virtual heads of hd channels
// may have for the polled merge: its 128 threads take float4 columns, the
// columns' groups split the chunks, pollPM chunks a thread at most, and
// never more than one merge group (mergeGroup).
func pollChunks(vg, hd int) int {
	q := vg * hd / 4
	cg := 1
	if q < attnThreads {
		cg = attnThreads / q
	}
	return min(pollPM*cg, mergeGroup)
}

// pollState is the polled merge's switch ($KVBENCH_ATTN_POLL=off: the
// counted merge; readSwitches), its last epoch and its tagged partials
// (outputs, then maxima and sums), apart from b.part and b.ml so that no
// word another merge wrote can carry an epoch.
type pollState struct {
	off   bool
	epoch uint32
	buf   scratch
}

// pollFor reports whether an Attend whose rows merge in the kernel, with
// nchunks chunks of vg virtual heads of hd channels over nsrows split rows,
// a grid of resident blocks per multiprocessor, may merge them polled.
func (b *Backend) pollFor(vg, hd, nchunks, nsrows, resident int) bool {
	return !b.poll.off && !b.capturing && nchunks > 1 && nchunks <= pollChunks(vg, hd) && nchunks*nsrows <= resident*b.D.SMs
}

// pollParts returns the tagged partials' room, oWords outputs then
// mlWords maxima and sums (8 bytes a word), and the call's epoch. A grown
// buffer is zeroed (no word in it carries an epoch), and so is the buffer
// when the epochs wrap.
func (b *Backend) pollParts(oWords, mlWords int64) (o, ml Ptr, ep uint32) {
	old := b.poll.buf.p
	p := b.grow(&b.poll.buf, span(oWords*8)+mlWords*8)
	b.poll.epoch++
	if p != old || b.poll.epoch == 0 {
		b.launch("be_zero", Dim3{blocks(b.poll.buf.bytes / 4), 1, 1}, Dim3{256, 1, 1}, p, b.poll.buf.bytes/4)
		if b.poll.epoch == 0 {
			b.poll.epoch = 1
		}
	}
	return p, p.Add(span(oWords * 8)), b.poll.epoch
}

package cuda

import "testing"

// TestQuestScorePages checks the pages a block of be_quest_score stages
// against its shared memory (quest_score_block in backend_quest.cu: QS_FLOATS +
// QS_NT words): float32 bounds in rows of 2*hd+1 words, bf16 bounds in
// rows of 2*hd+2 values, two a word; at most a page a thread, and bf16
// bounds at least twice the pages of float32 ones where the threads allow.
func TestQuestScorePages(t *testing.T) {
	const words = 8192 + questScoreThreads
	for _, hd := range []int{32, 64, 96, 128, 256} {
		f, b := questScorePages(hd, kvF32), questScorePages(hd, kvBF16)
		if f < 1 || b < 1 || f > questScoreThreads || b > questScoreThreads {
			t.Errorf("hd %d: %d and %d pages a block, want 1 to %d", hd, f, b, questScoreThreads)
		}
		if used := f * (2*hd + 1); used > words {
			t.Errorf("hd %d, float32 bounds: %d pages take %d words of shared memory, more than %d", hd, f, used, words)
		}
		if used := (b*(2*hd+2) + 1) / 2; used > words {
			t.Errorf("hd %d, bf16 bounds: %d pages take %d words of shared memory, more than %d", hd, b, used, words)
		}
		if want := min(questScoreThreads, 2*f); b < want {
			t.Errorf("hd %d: bf16 bounds %d pages a block, want at least %d (twice float32's %d, at most a page a thread)", hd, b, want, f)
		}
	}
}

package policies

// pyramidkv is snapkv with a budget per layer that decreases linearly with
// depth (PyramidKV, Zefan-Cai/KVCache-Factory): the same observation window,
// pooling and selection, but layer l keeps pyramidBudget(...) prefix tokens
// plus the window. Budget is the average capacity k.

func init() {
	Register(Spec{Name: "pyramidkv", Doc: "snapkv with per-layer budgets that shrink linearly with depth (average `capacity`)",
		Params: append(snapParamDocs(), ParamDoc{"beta", "20", "the last layer's budget is about (capacity - window) / beta"}),
		New: func(p Params) (Policy, error) {
			return newSnapKV("pyramidkv", p, true)
		}})
}

// pyramidBudget is the number of prefix tokens (the window excluded) layer l
// of layers keeps after a prompt of n >= k tokens, for average capacity k
// and window w, following PyramidKVCluster.update_kv of the reference
// (Zefan-Cai/PyramidKV and KVCache-Factory, pyramidkv_utils.py) with its
// integer arithmetic:
//
//	min = (k-w) // beta;  max = 2(k-w) - min
//	if max >= n-w: max = n-w; min = 2(k-w) - max
//	steps = (max - min) // (layers - 1);  budget_l = max - l*steps
//
// steps is floored before it multiplies l, so the last layer keeps at least
// min and the layers' mean exceeds k-w by less than (layers-1)/2 tokens (all operands are non-negative when n >= k,
// so Go's truncating division equals Python's //). As in the reference, a
// prompt shorter than 2(k-w) gets the uniform SnapKV budget k-w at every
// layer, so the clipped branch only applies to 2(k-w) <= n <= 2(k-w)-min+w.
// A one-layer model (where the reference divides by zero) gets k-w.
func pyramidBudget(k, w, beta, layers, n, l int) int {
	kw := k - w
	if n < 2*kw || layers < 2 {
		return kw
	}
	lo := kw / beta
	hi := 2*kw - lo
	if hi >= n-w {
		hi = n - w
		lo = 2*kw - hi
	}
	steps := (hi - lo) / (layers - 1)
	return hi - l*steps
}

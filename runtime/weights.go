package runtime

import "fmt"

// LayerWeights are the tensors of one transformer block, every matrix stored
// [out, in] row-major.
type LayerWeights struct {
	AttnNorm   *Tensor // [dim]
	Wq         *Tensor // [heads*head_dim, dim]
	Wk         *Tensor // [kv_heads*head_dim, dim]
	Wv         *Tensor // [kv_heads*head_dim, dim]
	Wo         *Tensor // [dim, heads*head_dim]
	Bq, Bk, Bv *Tensor // [heads*head_dim], [kv_dim], [kv_dim]; nil without QKVBias
	QNorm      *Tensor // [head_dim] RMSNorm weight of each query head; nil without QKNorm
	KNorm      *Tensor // [head_dim] RMSNorm weight of each key head; nil without QKNorm
	MLPNorm    *Tensor // [dim]
	Gate       *Tensor // [hidden, dim] (w1)
	Up         *Tensor // [hidden, dim] (w3)
	Down       *Tensor // [dim, hidden] (w2)
}

// Weights are all tensors of a model.
type Weights struct {
	Embed  *Tensor // [vocab, dim]
	Layers []LayerWeights
	Norm   *Tensor // [dim], the final RMSNorm
	Output *Tensor // [vocab, dim]; the same pointer as Embed when tied
}

// Model is a loaded model: its configuration and weights, where it came from,
// and the tokenizer file found beside it ("" when none).
type Model struct {
	Config    Config
	Weights   Weights
	Source    string // path or synthetic:NAME
	Tokenizer string // path of the tokenizer beside the model, if any
}

// Check verifies that every tensor is present with the shape the config
// implies and holds that many elements, so a forward pass can never index out
// of range.
func (m *Model) Check() error {
	c := m.Config
	if err := c.Validate(); err != nil {
		return err
	}
	w := &m.Weights
	if err := checkTensor("embedding", w.Embed, c.Vocab, c.Dim); err != nil {
		return err
	}
	if err := checkTensor("final norm", w.Norm, c.Dim); err != nil {
		return err
	}
	if err := checkTensor("output head", w.Output, c.Vocab, c.Dim); err != nil {
		return err
	}
	if len(w.Layers) != c.Layers {
		return fmt.Errorf("have %d layers of weights, config says %d", len(w.Layers), c.Layers)
	}
	for i := range w.Layers {
		l := &w.Layers[i]
		errs := []error{
			checkTensor("attention norm", l.AttnNorm, c.Dim),
			checkTensor("q projection", l.Wq, c.QDim(), c.Dim),
			checkTensor("k projection", l.Wk, c.KVDim(), c.Dim),
			checkTensor("v projection", l.Wv, c.KVDim(), c.Dim),
			checkTensor("o projection", l.Wo, c.Dim, c.QDim()),
			checkTensor("mlp norm", l.MLPNorm, c.Dim),
			checkTensor("gate projection", l.Gate, c.Hidden, c.Dim),
			checkTensor("up projection", l.Up, c.Hidden, c.Dim),
			checkTensor("down projection", l.Down, c.Dim, c.Hidden),
		}
		if c.QKVBias {
			errs = append(errs,
				checkTensor("q bias", l.Bq, c.QDim()),
				checkTensor("k bias", l.Bk, c.KVDim()),
				checkTensor("v bias", l.Bv, c.KVDim()))
		}
		if c.QKNorm {
			errs = append(errs,
				checkTensor("q norm", l.QNorm, c.HeadDim),
				checkTensor("k norm", l.KNorm, c.HeadDim))
		}
		for _, err := range errs {
			if err != nil {
				return fmt.Errorf("layer %d %w", i, err)
			}
		}
	}
	return nil
}

func checkTensor(name string, t *Tensor, shape ...int) error {
	if err := t.CheckShape(shape...); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	n, have := t.Len(), len(t.F32)
	if t.DType != F32 {
		have = len(t.U16)
	}
	if have != n {
		return fmt.Errorf("%s: tensor %s holds %d elements, shape %v needs %d", name, t.Name, have, t.Shape, n)
	}
	return nil
}

// ParamCount is the number of distinct parameters (a tied head counted once).
func (m *Model) ParamCount() int64 {
	var n int64
	seen := map[*Tensor]bool{}
	add := func(t *Tensor) {
		if t != nil && !seen[t] {
			seen[t] = true
			n += int64(t.Len())
		}
	}
	add(m.Weights.Embed)
	add(m.Weights.Norm)
	add(m.Weights.Output)
	for i := range m.Weights.Layers {
		l := &m.Weights.Layers[i]
		for _, t := range []*Tensor{l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.Bq, l.Bk, l.Bv, l.QNorm, l.KNorm, l.MLPNorm, l.Gate, l.Up, l.Down} {
			add(t)
		}
	}
	return n
}

// rowSlice returns rows [from, to) of the matrix t (a fused projection split
// at load), sharing its data, named after t and part.
func rowSlice(t *Tensor, part string, from, to int) (*Tensor, error) {
	if len(t.Shape) != 2 || from < 0 || to > t.Shape[0] || from > to {
		return nil, fmt.Errorf("tensor %s of shape %v has no rows [%d, %d)", t.Name, t.Shape, from, to)
	}
	cols := t.Shape[1]
	s := &Tensor{Name: t.Name + "[" + part + "]", DType: t.DType, Shape: []int{to - from, cols}, mem: t.mem}
	have := len(t.F32)
	if t.DType != F32 {
		have = len(t.U16)
	}
	if have != t.Len() {
		return nil, fmt.Errorf("tensor %s holds %d elements, shape %v needs %d", t.Name, have, t.Shape, t.Len())
	}
	if t.DType == F32 {
		s.F32 = t.F32[from*cols : to*cols : to*cols]
	} else {
		s.U16 = t.U16[from*cols : to*cols : to*cols]
	}
	return s, nil
}

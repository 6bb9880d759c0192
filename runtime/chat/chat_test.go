package chat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func render(t *testing.T, src string, vars map[string]any) string {
	t.Helper()
	tm, err := Parse("unit", src)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	out, err := tm.Render(vars)
	if err != nil {
		t.Fatalf("Render(%q): %v", src, err)
	}
	return out
}

func TestRenderUnits(t *testing.T) {
	msgs := []Message{{"system", "  sys  "}, {"user", "hi"}, {"assistant", "yo"}}
	vars := map[string]any{"messages": msgs, "bos_token": "<s>", "add_generation_prompt": true, "n": 7, "xs": []any{1, 2, 3}}
	cases := []struct{ src, want string }{
		{"a{{ 'b' }}c", "abc"},
		{"{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 3 }}", "7|3|-4|1|2|3.5|8"},
		{"{{ 'a' + 'b' ~ 1 ~ none ~ true }}", "ab1NoneTrue"},
		{"{{ bos_token }}{% for m in messages %}[{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ m.role }}={{ m['content'] }}]{% endfor %}",
			"<s>[01TrueFalse3system=  sys  ][12FalseFalse3user=hi][23FalseTrue3assistant=yo]"},
		{"{% if n == 7 and not false %}y{% elif n > 3 %}z{% else %}w{% endif %}", "y"},
		{"{% if n != 7 or 'x' in 'xyz' %}in{% endif %}{% if 4 not in xs %}!{% endif %}", "in!"},
		{"{% if n < 3 %}a{% elif n >= 7 %}b{% else %}c{% endif %}", "b"},
		{"{% set x = 'q' %}{{ x }}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}", "qq"}, // loops scope set
		{"{% set ns = namespace(v=0) %}{% for i in xs %}{% set ns.v = ns.v + i %}{% endfor %}{{ ns.v }}", "6"},
		{"{% set ns = namespace() %}{% set ns.index = 1 %}{{ ns.index }}", "1"},
		{"{{ messages[1:] | length }}{{ messages[-1].role }}{{ xs[::-1] }}{{ 'hello'[1:3] }}{{ xs[:-1] }}", "2assistant[3, 2, 1]el[1, 2]"},
		{"{{ messages[0].content | trim }}|{{ messages[0].content.strip() }}|{{ ' x '.lstrip() }}|{{ 'xxay'.rstrip('y') }}", "sys|sys|x |xxa"},
		{"{{ 'Ab' | upper }}{{ 'Ab' | lower }}{{ undefined_thing | default('d') }}{{ '' | default('e', true) }}", "ABabde"},
		{"{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}", "['hi']"},
		{"{{ messages | rejectattr('role', 'equalto', 'user') | list | length }}", "2"},
		{"{{ {'a': 1, 'b': [true, none, 'x\"y'], 'c': 1.5} | tojson }}", `{"a": 1, "b": [true, null, "x\"y"], "c": 1.5}`},
		{"{{ {'a': [1]} | tojson(indent=2) }}", "{\n  \"a\": [\n    1\n  ]\n}"},
		{"{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}{{ v }}{% endfor %}{% for k, v in {'c': 3}.items() %}{{ k }}{{ v }}{% endfor %}", "a1b2c3"},
		{"{% for i in xs if i != 2 %}{{ i }}{{ loop.index }}{% endfor %}", "1132"},
		{"{% for i in [] %}x{% else %}empty{% endfor %}", "empty"},
		{"{% for i in xs %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}", "1"},
		{"{{ 'yes' if n == 7 else 'no' }}{{ 'a' if false }}", "yes"},
		{"{% if x is defined %}d{% endif %}{% if not x is defined %}u{% endif %}{% if none is none %}n{% endif %}{% if 'x' is string %}s{% endif %}{% if n is not string %}t{% endif %}", "unst"},
		{"{% if xs is iterable and {} is mapping and n is divisibleby(7) and n is odd %}ok{% endif %}", "ok"},
		{"{{ ['a', 'b'] | join(', ') }}{{ ['x', 'code_interpreter'] | reject('equalto', 'code_interpreter') | join(',') }}", "a, bx"},
		{"{{ 'a</think>b'.split('</think>')[-1] }}{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}", "bTrueTrue"},
		{"{{ \"it's\" }}{{ 'say \"hi\"\\n' }}", "it'ssay \"hi\"\n"},
		{"{{ messages[0] }}", "{'role': 'system', 'content': '  sys  '}"},
		{"{{ [1, 'a'] }}{{ 1.0 }}{{ 0.1 + 0.2 }}{{ 1e-05 }}", "[1, 'a']1.00.300000000000000041e-05"},
		{"{{ 'a' }}{# a comment #}{{ 'b' }}", "ab"},
		{"{% generation %}g{% endgeneration %}", "g"},
		{"{{ undefined_var }}|{{ undefined_var | length }}|{% for x in undefined_var %}x{% endfor %}", "|0|"},
		{"{{ messages[0]['nope'] is defined }}{{ messages[0].nope is defined }}{{ 'abc'.content is defined }}", "FalseFalseFalse"},
		{"{{ messages[0] == {'role': 'system', 'content': '  sys  '} }}", "True"},
		{"{{ range(3) | list }}{{ 'x' * 3 }}", "[0, 1, 2]xxx"},
	}
	for _, c := range cases {
		if got := render(t, c.src, vars); got != c.want {
			t.Errorf("%s\n got %q\nwant %q", c.src, got, c.want)
		}
	}
}

// TestWhitespace checks the whitespace control transformers configures:
// trim_blocks, lstrip_blocks, - on either side, and no trailing newline.
func TestWhitespace(t *testing.T) {
	cases := []struct{ src, want string }{
		{"a\n{% if true %}\nb\n{% endif %}\nc\n", "a\nb\nc"},
		{"a\n    {% if true %}\n    b\n    {% endif %}\nc", "a\n    b\nc"},
		{"a  {%- if true -%}  b  {%- endif -%}  c", "abc"},
		{"a \n {{- 'x' -}} \n b", "axb"},
		{"a\n  {{ 'x' }}\n", "a\n  x"},         // lstrip_blocks leaves {{ }} alone; one trailing newline dropped
		{"x {% if true %}y{% endif %}", "x y"}, // not at line start: kept
		{"a\n  {#- c #}\nb", "ab"},
		{"a\n  {# c #}\nb", "a\nb"},
		{"{% if true +%}\nz{%+ endif %}", "\nz"},
		{"a\n\n", "a\n"},
	}
	for _, c := range cases {
		if got := render(t, c.src, nil); got != c.want {
			t.Errorf("%q\n got %q\nwant %q", c.src, got, c.want)
		}
	}
}

// TestErrors checks that unsupported syntax and bad values are errors that
// name the template and the place, and that raise_exception surfaces.
func TestErrors(t *testing.T) {
	parseErrs := []struct{ src, want string }{
		{"{% macro f() %}{% endmacro %}", "line 1 col 4: unsupported statement {% macro %}"},
		{"a\n{% if x %}", "end of template before {% endif %}"},
		{"{{ x | nosuch }}", ""}, // unknown filters fail at render time
		{"{{ 'abc }}", "line 1 col 4: string literal is never closed"},
		{"{{ x ? y }}", "line 1 col 6: unexpected character '?'"},
		{"{% set x %}b{% endset %}", "block set"},
		{"{% endif %}", "unexpected {% endif %}"},
		{"{{ a b }}", "line 1 col 6: unexpected \"b\""},
		{"{% raw %}x{% endraw %}", "unsupported statement {% raw %}"},
		{"{{ x", "tag is never closed"},
	}
	for _, c := range parseErrs {
		_, err := Parse("t.jinja", c.src)
		if c.want == "" {
			if err != nil {
				t.Errorf("Parse(%q): %v", c.src, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "chat template t.jinja") {
			t.Errorf("Parse(%q) = %v, want an error naming t.jinja with %q", c.src, err, c.want)
		}
	}
	renderErrs := []struct{ src, want string }{
		{"{{ x | nosuch }}", "line 1 col 8: unknown filter \"nosuch\""},
		{"\n{{ 'a' + 1 }}", "line 2 col 8: unsupported operand types for +: str and int"},
		{"{{ nope.attr }}", "nope is undefined"},
		{"{{ nope() }}", "nope is undefined, not a function"},
		{"{{ loop.cycle }}", "loop is undefined"},
		{"{% for a, b in [1] %}{% endfor %}", "cannot unpack"},
		{"{{ x is nosuchtest }}", "unknown test"},
		{"{% set s = 'a' %}{% set s.b = 1 %}", "not a namespace"},
		{"{{ 1 // 0 }}", "modulo by zero"},
	}
	for _, c := range renderErrs {
		tm, err := Parse("t.jinja", c.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.src, err)
			continue
		}
		_, err = tm.Render(nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "chat template t.jinja") {
			t.Errorf("Render(%q) = %v, want an error naming t.jinja with %q", c.src, err, c.want)
		}
	}
	tm, err := Parse("t.jinja", "a{{ raise_exception('roles must alternate') }}")
	if err != nil {
		t.Fatal(err)
	}
	_, err = tm.Render(nil)
	var re *RaiseError
	if !errors.As(err, &re) || re.Message != "roles must alternate" {
		t.Errorf("raise_exception gave %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if tm, err := Find(dir); err != nil || tm != nil {
		t.Fatalf("Find(empty dir) = %v, %v; want nil, nil", tm, err)
	}
	write("tokenizer_config.json", `{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"}`)
	if tm, err := Find(dir); err != nil || tm != nil {
		t.Fatalf("Find(config without template) = %v, %v; want nil, nil", tm, err)
	}
	write("tokenizer_config.json", `{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
		"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}D{{ eos_token }}"}]}`)
	tm, err := Find(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tm.Apply(nil, true); got != "<s>D</s>" {
		t.Errorf("named default template rendered %q", got)
	}
	write("chat_template.jinja", "J{{ bos_token }}\n")
	if tm, err = Find(dir); err != nil {
		t.Fatal(err)
	}
	if got, _ := tm.Apply(nil, true); got != "J<s>" {
		t.Errorf("chat_template.jinja rendered %q", got)
	}
	write("bad.json", `{"chat_template": 3}`)
	if _, err := Load(filepath.Join(dir, "bad.json")); err == nil || !strings.Contains(err.Error(), "bad.json") {
		t.Errorf("Load(bad.json) = %v, want an error naming it", err)
	}
	write("none.json", `{"bos_token": "<s>"}`)
	if _, err := Load(filepath.Join(dir, "none.json")); err == nil || !strings.Contains(err.Error(), "no chat_template") {
		t.Errorf("Load(none.json) = %v, want no chat_template", err)
	}
}

package tasks

// The vocabulary of the RULER tasks: plain English adjectives, nouns and
// verbs written for kvbench. NIAH keys are adjective-noun pairs ("quiet-
// harbor"); common words extraction samples single words (and, past the
// list, noun-noun compounds); variable names and coded words are random
// letters and need no list.

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
)

const rulerAdjectiveText = `
able absent abundant active afraid ancient angry annual anxious arctic ashamed awake
basic bitter blank bold bored brave brief bright brisk broad broken bumpy busy
calm careful casual central cheap cheerful chief chilly civil classic clean clever
close cloudy clumsy coastal cold complex cool correct cosy crazy crisp crooked
cruel curious cute damp dark dear decent deep dense direct dirty distant dizzy
double dry dull dusty eager early eastern easy elegant empty endless equal even
exact exotic faint fair faithful false famous fancy fast fierce final fine firm
flat fluffy foggy fond formal fragile free frequent fresh friendly frozen full
funny gentle giant glad global golden good graceful grand grateful great green
grumpy guilty handsome happy hardy harsh hasty healthy heavy helpful hidden high
hollow honest hot huge humble hungry icy idle ill immense innocent jolly juicy
keen kind large late lazy legal level light little lively local lonely long
loose loud lovely loyal lucky lunar mad magic major mellow merry mild minor
misty modern modest moist murky narrow nasty native neat nervous new nice noble
noisy normal odd old open orange ordinary pale patient peaceful perfect plain
pleasant plump polite poor popular precious pretty proud public pure purple
quick quiet rapid rare raw ready real red regular rich right rigid ripe rough
round royal rude rural rusty sacred sad safe salty sandy scarce secret serious
shallow sharp shiny short shy silent silly simple sincere sleepy slim slow small
smart smooth snowy soft solar solid sour spare spicy splendid square stable
steady steep sticky stiff still stormy straight strange strict striped strong
sudden sunny super sweet swift tall tame tender thick thin thirsty tidy tiny
tired tough tropical true twin ugly unique upper urban useful vague valid vast
velvet vivid warm wary weak wealthy weary western wet white whole wicked wide
wild windy wise witty wooden woolly young zealous
`

const rulerNounText = `
acorn actor airport album anchor angle animal ankle answer apple apron arch
arena arrow artist atlas attic autumn avenue badge bakery balcony ball balloon
banana band banjo bank barn barrel basket bathtub beach beacon bean bear beard
bed bee bell belt bench berry bicycle bird biscuit blanket blossom boat bone
book boot border bottle boulder bowl box bracelet branch bread breeze brick
bridge broom brook brush bubble bucket budget buffalo bugle building bullet
bundle butter button cabin cable cactus cake camel camera camp canal candle
canoe canyon captain card carpet carrot castle cat cattle cave cellar chair
chalk channel chapter cheese cherry chess chicken chimney church circle circus
citizen city claim cliff clock cloud clover coach coast coat coffee coin collar
college comet compass cookie copper corner cottage cotton council country cousin
crayon creek cricket crown crystal cup curtain cushion dancer daisy dawn deer
desert desk diamond dinner doctor dog dolphin donkey door dragon drawer dream
dress drum duck eagle earth elbow engine envelope falcon farm feather fence
ferry field finger fire fish flag flame flute forest fork fountain fox frog
fruit galaxy garden garlic gate giraffe glacier glass globe glove goat gold
grape grass guitar hammer harbor harvest hat hawk heart helmet hill hive honey
horizon horse hotel house island ivory jacket jar jelly jewel journey jungle
kettle key kingdom kitchen kite kitten ladder lake lamp lantern lawn leaf lemon
letter library lighthouse lily lion lizard lobster locket lumber magnet mango
map maple marble market meadow melon mirror moon mountain mouse museum needle
nest net ocean office olive onion orchard otter owl oyster paddle palace panda
paper parcel parrot path peach peanut pearl pebble pencil pepper piano pickle
picture pillow pilot pine planet plate pocket poem pond potato pottery puppet
puzzle quilt rabbit radio rainbow raven ribbon river road robot rocket roof
rope rose saddle sail salmon sandal satellite scarf school scissors season
shadow shell ship shoe shovel signal silver singer sky sled snail snow soap
soldier song spider spoon squirrel stable stage star station statue stone
storm story stove stream street sugar suitcase summit sun sunset swan sweater
table teacher temple tent thunder ticket tiger timber toast tomato tower town
tractor train treasure tree trumpet tulip tunnel turtle umbrella valley vase
village violin volcano wagon wallet walnut wave whale wheat wheel whistle
window winter wizard wolf yacht yard zebra
`

const rulerVerbText = `
accept add admire allow answer arrive ask bake balance bathe beg behave believe
belong bless blink boil borrow bounce breathe build burn bury calculate carry
carve catch celebrate change charge chase cheer chew clap climb collect comb
compare complain connect consider cough count crawl cross cry dance decide
deliver depend describe deserve destroy develop dig discover dive divide double
drag dream drink drive drop dry earn eat educate embrace enjoy enter escape
examine excite explain explore fasten fetch fill find fix float flow fold follow
forgive gather gaze glow grab grow guard guess guide hang happen harvest hatch
heal hear help hide hike hold hope hover hum hunt hurry imagine improve invent
invite jog join joke juggle jump kick kneel knit knock laugh launch learn lend
lift listen live lock look love manage march marry measure melt mend mix move
nod notice obey observe offer open order own paint pause peel perform pick plan
plant play polish pour pray prefer prepare print promise protect pull punch
push question race rain reach read relax remain remember repair repeat reply
rescue rest return ride ring rinse roar roll row rub run rush sail scatter
scream search shake share shine shiver shout sing sink sip skate sketch ski
sleep slide smell smile sneeze sniff sow spark speak spill spin splash spray
sprint squeeze stack stare start stay steer stir stitch stretch study swim
swing talk taste teach tease thank think throw tickle tie trace travel trust
tug turn twist type unfold unlock vanish visit wait walk wander want warn wash
watch wave weave whisper whistle win wink wish wonder work worry wrap write
yawn yell zoom
`

// rulerVocab is the parsed vocabulary, built once.
var rulerVocab = sync.OnceValue(func() struct{ adjectives, nouns, words []string } {
	adj := strings.Fields(rulerAdjectiveText)
	nouns := strings.Fields(rulerNounText)
	verbs := strings.Fields(rulerVerbText)
	seen := map[string]bool{}
	var words []string
	for _, list := range [][]string{nouns, adj, verbs} {
		for _, w := range list {
			if !seen[w] {
				seen[w] = true
				words = append(words, w)
			}
		}
	}
	return struct{ adjectives, nouns, words []string }{adj, nouns, words}
})

// RulerKeyWord draws a NIAH key of the "words" kind: an adjective and a
// noun of kvbench's vocabulary joined by a hyphen ("quiet-harbor").
func RulerKeyWord(r *rand.Rand) string {
	v := rulerVocab()
	return v.adjectives[r.IntN(len(v.adjectives))] + "-" + v.nouns[r.IntN(len(v.nouns))]
}

// rulerWordStream lists distinct words in a seeded random order: every word
// of the vocabulary (nouns, adjectives and verbs) first, then as many
// noun-noun compounds ("harborlantern") as asked for. A prefix of the
// stream does not depend on how long it grows, so prompts built with more
// words only add words.
type rulerWordStream struct {
	r     *rand.Rand
	words []string
	seen  map[string]bool
	avoid []string // compounds containing one of these are skipped
}

func newRulerWordStream(r *rand.Rand) *rulerWordStream {
	v := rulerVocab()
	words := append([]string(nil), v.words...)
	r.Shuffle(len(words), func(i, j int) { words[i], words[j] = words[j], words[i] })
	seen := make(map[string]bool, len(words))
	for _, w := range words {
		seen[w] = true
	}
	return &rulerWordStream{r: r, words: words, seen: seen}
}

// rulerMaxWords is the most words a stream gives: the vocabulary and half
// the noun-noun compounds (so that drawing an unused compound stays quick).
func rulerMaxWords() int {
	v := rulerVocab()
	return len(v.words) + len(v.nouns)*(len(v.nouns)-1)/2
}

// take returns the first n words of the stream; n must not exceed
// rulerMaxWords().
func (s *rulerWordStream) take(n int) []string {
	if n > rulerMaxWords() {
		panic(fmt.Sprintf("tasks: %d words asked of a stream of at most %d", n, rulerMaxWords()))
	}
	nouns := rulerVocab().nouns
	for len(s.words) < n {
		i, j := s.r.IntN(len(nouns)), s.r.IntN(len(nouns))
		w := nouns[i] + nouns[j]
		if i == j || s.seen[w] || s.contains(w) {
			continue
		}
		s.seen[w] = true
		s.words = append(s.words, w)
	}
	return s.words[:n]
}

// contains reports whether w holds one of the words to avoid.
func (s *rulerWordStream) contains(w string) bool {
	for _, a := range s.avoid {
		if strings.Contains(w, a) {
			return true
		}
	}
	return false
}

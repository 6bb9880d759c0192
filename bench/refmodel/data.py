"""Training sequences for kvbench's reference model (standard library only).

Half of each batch is plain text (windows of the training novels), half retrieval
sequences in the wording of kvbench's own tasks (tasks/passkey.go, tasks/needle.go,
tasks/ruler_gen.go): a pass key hidden in filler, a "best thing to do in CITY" fact
hidden in a novel, "special magic numbers" with one asked, and a random span of text
repeated later (induction). Every sequence starts with BOS. Answer tokens carry a
larger loss weight, padding none.
"""

import random

import bpe

BOS, EOS, PAD = 1, 2, 2

# tasks/passkey.go
PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. "
                 "Find it and memorize them. I will quiz you about the important information there.")
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_QUESTION = "What is the pass key? The pass key is"

CITIES = ("San Francisco,Paris,Tokyo,Cairo,Lima,Oslo,Madrid,Nairobi,Sydney,Toronto,Dublin,Prague,Vienna,"
          "Lisbon,Seoul,Mumbai,Havana,Athens,Boston,Chicago,Denver,Seattle,Montreal,Berlin,Munich,Rome,"
          "Venice,Naples,Kyoto,Osaka,Manila,Jakarta,Hanoi,Bangkok,Delhi,Lagos,Accra,Dakar,Tunis,Quito,"
          "Bogota,Santiago,Caracas,Helsinki,Warsaw,Krakow,Budapest,Zagreb,Sofia,Riga,Tallinn,Vilnius,"
          "Glasgow,Cardiff,Belfast,Edinburgh,Geneva,Zurich,Milan,Florence,Seville,Porto,Marseille,Lyon").split(",")
VERBS = ("eat,buy,drink,find,watch,paint,read,share,cook,carry,photograph,sketch,order,try,taste,collect,"
         "borrow,feed,follow,climb").split(",")
THINGS = ("a sandwich,a bowl of soup,fresh bread,hot coffee,a cold lemonade,the ducks,an old map,a paper kite,"
          "a book of poems,the sunset,a plate of oysters,a slice of cake,the street musicians,the tall ships,"
          "the morning market,a bag of cherries,the old bridge,a glass of cider,the fishing boats,a pot of tea").split(",")
ACTS = ("sit in,walk along,rest in,wander through,relax in,picnic in,linger in,stroll around,read in,nap in").split(",")
PLACES = ("Dolores Park,the harbour,the botanical garden,the old town,the cathedral square,the river bank,"
          "the central market,the hill gardens,the quiet cemetery,the lighthouse park,the north beach,"
          "the palace lawns,the university quad,the flower market,the canal path").split(",")
WHENS = ("on a sunny day,at dawn,after the rain,in the evening,on a Sunday,in early spring,at noon,"
         "before the crowds arrive,in late autumn,on a windy afternoon").split(",")
WORDS = ("apple,river,stone,cloud,silver,tiger,maple,violet,anchor,candle,meadow,harbor,falcon,copper,"
         "lantern,orchard,pepper,saddle,thunder,willow,amber,badger,cobalt,dragon,ember,fossil,garnet,hazel,"
         "ivory,jasper,kettle,lemon,marble,nectar,onyx,pebble,quartz,raven,spruce,tulip").split(",")


def passkey_prompt(key, before, after):
    """tasks/passkey.go's prompt: the intro, before and after (filler or
    text; an int is that many filler sentences) around the key line, the
    question."""
    k = str(key)
    f = lambda x: " ".join([PASSKEY_FILLER] * x) if isinstance(x, int) else x
    line = "The pass key is " + k + ". Remember it. " + k + " is the pass key."
    return "\n".join([PASSKEY_INTRO, f(before), line, f(after), PASSKEY_QUESTION])


class Maker:
    """Makes batches of token sequences of one length."""

    def __init__(self, encoder, books, seed):
        self.enc = encoder
        self.books = [t for _, t in books]  # texts
        self.ids = [encoder.encode(t) for t in self.books]  # their tokens
        self.weights = [len(t) for t in self.books]
        self.rng = random.Random(seed)
        self.filler = encoder.encode(PASSKEY_FILLER + " ")

    def text_window(self, n):
        """n consecutive tokens of a random training novel."""
        ids = self.rng.choices(self.ids, weights=self.weights)[0]
        at = self.rng.randrange(0, len(ids) - n)
        return ids[at:at + n]

    def text_chars(self, n):
        """About n characters of a random novel, starting at a sentence."""
        t = self.rng.choices(self.books, weights=self.weights)[0]
        at = self.rng.randrange(0, len(t) - n - 200)
        i = t.find(". ", at)
        at = i + 2 if 0 <= i < at + 200 else at
        return t[at:at + n]

    def finish(self, prompt, answer, length, weight=8.0):
        """BOS, the prompt and the weighted answer, padded to length (None when
        it does not fit)."""
        p = [BOS] + self.enc.encode(prompt)
        a = self.enc.encode(answer) + [EOS]
        if len(p) + len(a) > length:
            return None
        ids = p + a + [PAD] * (length - len(p) - len(a))
        w = [1.0] * len(p) + [weight] * len(a) + [0.0] * (length - len(p) - len(a))
        w[0] = 0.0  # nothing predicts BOS
        return ids, w

    def key_end(self, n):
        """0 or n for a fifth of the passkey prompts (the key right after the
        intro or right before the question: where a uniform depth rarely
        lands and where the model missed), else None (any depth)."""
        r = self.rng.random()
        return 0 if r < 0.12 else n if r < 0.2 else None

    def passkey(self, length):
        """kvbench's passkey prompt (filler or novel text), key as answer."""
        key = self.rng.randint(1, 50000) if self.rng.random() < 0.8 else self.rng.randint(1, 999999)
        k = str(key)
        budget = self.rng.randint(length // 3, length - 16)
        if self.rng.random() < 0.75:
            units = max(0, (budget - 80) // len(self.filler))
            before = self.key_end(units)
            if before is None:
                before = self.rng.randint(0, units)
            prompt = passkey_prompt(key, before, units - before)
        else:
            text = self.text_chars(int(max(budget - 80, 0) * 3.2))
            cut = self.key_end(len(text))
            if cut is None:
                cut = int(self.rng.random() * len(text))
            prompt = passkey_prompt(key, text[:cut], text[cut:])
        return self.finish(prompt, " " + k + ".", length)

    def activity(self):
        r = self.rng
        return "%s %s and %s %s %s" % (r.choice(VERBS), r.choice(THINGS), r.choice(ACTS), r.choice(PLACES), r.choice(WHENS))

    def needle(self, length):
        """A "best thing to do in CITY" fact in a novel; the question asks it
        back in tasks/needle.go's shape (haystack, blank line, question,
        " Answer:"); the answer repeats the fact."""
        city = self.rng.choice(CITIES)
        fact = "The best thing to do in %s is %s." % (city, self.activity())
        budget = self.rng.randint(length // 3, length - 48)
        hay = self.text_chars(int(budget * 3.2))
        p = int(self.rng.random() * len(hay))
        i = hay.rfind(". ", 0, p)
        p = i + 2 if i >= 0 else 0
        hay = hay[:p] + fact + " " + hay[p:]
        prompt = hay + "\n\nWhat is the best thing to do in %s? Answer:" % city
        return self.finish(prompt, " " + fact, length)

    def magic(self, length):
        """RULER's needle-in-a-haystack wording: one to four "special magic
        numbers" for different keys in filler or a novel, one asked."""
        r = self.rng
        keys = r.sample(WORDS, 8)
        n = r.randint(1, 4)
        needles = ["One of the special magic numbers for %s-%s is: %d." % (keys[2 * j], keys[2 * j + 1], r.randint(1000000, 9999999))
                   for j in range(n)]
        budget = r.randint(length // 3, length - 64)
        if r.random() < 0.5:
            units = max(1, (budget - 60 * n) // len(self.filler))
            sents = [PASSKEY_FILLER] * units
        else:
            text = self.text_chars(int(max(budget - 60 * n, 50) * 3.2))
            sents = text.split(". ")
        for nd in needles:
            sents.insert(r.randint(0, len(sents)), nd)
        ask = r.randrange(n)
        key = "%s-%s" % (keys[2 * ask], keys[2 * ask + 1])
        value = needles[ask].rsplit(" ", 1)[1].rstrip(".")
        intro = ("A special magic number is hidden within the following text. Make sure to memorize it. "
                 "I will quiz you about the number afterwards.\n")
        q = ("\nWhat is the special magic number for %s mentioned in the provided text? "
             "The special magic number for %s mentioned in the provided text is") % (key, key)
        return self.finish(intro + " ".join(sents) + q, " " + value + ".", length)

    def induction(self, length):
        """A window of text with one random span copied later; the copy
        (after its first token) carries the answer weight."""
        r = self.rng
        ids = [BOS] + self.text_window(length - 1)
        s = r.randint(16, min(128, length // 4))
        a = r.randint(1, length - 2 * s - 1)
        b = r.randint(a + s, length - s)
        ids[b:b + s] = ids[a:a + s]
        w = [1.0] * length
        w[0] = 0.0
        for j in range(b + 1, b + s):
            w[j] = 8.0
        return ids, w

    def retrieval(self, length):
        kinds = (self.passkey, self.needle, self.magic, self.induction)
        while True:
            out = self.rng.choices(kinds, weights=(0.35, 0.25, 0.2, 0.2))[0](length)
            if out is not None:
                return out

    def batch(self, length, rows):
        """rows sequences of length tokens (half text, half retrieval):
        (ids, weights), each a list of rows."""
        ids, ws = [], []
        for j in range(rows):
            if j % 2 == 0:
                x, w = [BOS] + self.text_window(length - 1), [0.0] + [1.0] * (length - 1)
            else:
                x, w = self.retrieval(length)
            ids.append(x)
            ws.append(w)
        return ids, ws

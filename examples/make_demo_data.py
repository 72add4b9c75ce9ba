"""Regenerate ``alpaca_demo.json`` and ``sharegpt_demo.json``.

All text here was written for this project (Apache-2.0, like the repository).
Records are composed from hand-written lists; the arithmetic, conversions and
list tasks compute their answers, so they are right by construction. The
output is deterministic: running this script twice gives identical files.

    python examples/make_demo_data.py            # writes next to this script
    python examples/make_demo_data.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rec(instruction: str, output: str, input: str = "") -> dict[str, str]:
    return {"instruction": instruction, "input": input, "output": output}


# --------------------------------------------------------------------------
# Alpaca: general knowledge (empty input)
# --------------------------------------------------------------------------

GENERAL = [
    rec(
        "Why is the sky blue?",
        "Sunlight contains every colour of visible light. When it passes through the atmosphere, it "
        "bumps into nitrogen and oxygen molecules that are much smaller than the wavelength of the "
        "light. Such small particles scatter short wavelengths far more strongly than long ones (this "
        "is called Rayleigh scattering), so blue light is sent off in all directions while red and "
        "yellow light mostly carry straight on. When you look at any part of the sky away from the "
        "Sun, you are seeing that scattered blue light. Violet is scattered even more, but the Sun "
        "emits less of it and our eyes are less sensitive to it, so the sky looks blue rather than "
        "purple.",
    ),
    rec(
        "Explain how a refrigerator keeps food cold.",
        "A refrigerator does not create cold; it moves heat from the inside to the outside.\n\n"
        "1. A liquid refrigerant flows through coils inside the fridge. It is kept at low pressure, "
        "so it boils at a very low temperature and absorbs heat from the food compartment as it "
        "evaporates.\n"
        "2. The compressor, usually at the bottom back of the unit, squeezes the warm vapour. "
        "Compressing a gas raises its temperature.\n"
        "3. The hot, high-pressure gas passes through the coils on the back of the fridge, where it "
        "gives its heat to the kitchen air and condenses back into a liquid.\n"
        "4. The liquid goes through an expansion valve, its pressure drops, and the cycle starts "
        "again.\n\n"
        "That is why the back of a fridge feels warm: it is releasing the heat taken from your food.",
    ),
    rec(
        "What causes the seasons on Earth?",
        "The seasons are caused by the tilt of Earth's axis, about 23.4 degrees, not by changes in "
        "our distance from the Sun. As Earth orbits, first one hemisphere and then the other leans "
        "towards the Sun. The hemisphere tilted towards the Sun gets sunlight at a steeper angle and "
        "for more hours each day, so it has summer; the other hemisphere gets slanting light and "
        "short days, so it has winter.",
    ),
    rec(
        "Name three renewable sources of energy.",
        "1. Solar power\n2. Wind power\n3. Hydroelectric power",
    ),
    rec(
        "What is the difference between weather and climate?",
        "Weather is the state of the atmosphere at a particular place and time: today's "
        "temperature, rain or wind. Climate is the typical pattern of weather in a region averaged "
        "over a long period, usually thirty years or more. A simple way to remember it: climate is "
        "what you expect, weather is what you get.",
    ),
    rec(
        "Give me four tips for getting better sleep.",
        "- Keep a regular schedule, going to bed and getting up at the same time every day, even "
        "at weekends.\n"
        "- Make the bedroom dark, quiet and slightly cool.\n"
        "- Avoid caffeine after early afternoon and heavy meals late in the evening.\n"
        "- Put screens away for the last half hour before bed and do something calm instead, such "
        "as reading a paper book.",
    ),
    rec("Who wrote the novel 'Pride and Prejudice'?", "Jane Austen. It was first published in 1813."),
    rec(
        "What is photosynthesis?",
        "Photosynthesis is the process by which plants, algae and some bacteria use the energy of "
        "light to turn carbon dioxide and water into glucose, releasing oxygen as a by-product. It "
        "takes place mainly in the chloroplasts of leaf cells, where the green pigment chlorophyll "
        "captures the light.",
    ),
    rec(
        "How does a vaccine train the immune system?",
        "A vaccine shows the immune system a harmless version or piece of a germ, such as an "
        "inactivated virus, a weakened one, a single protein, or instructions for making that "
        "protein. The body reacts as if it had met the real thing: B cells make antibodies that fit "
        "the germ's surface, and T cells learn to recognise infected cells. Most of these cells die "
        "off after the response, but some become long-lived memory cells. If the real germ turns up "
        "later, the memory cells recognise it quickly and the body can fight it off before it "
        "causes serious illness. Some vaccines need booster doses because that memory fades over "
        "time or because the germ changes.",
    ),
    rec(
        "Describe the water cycle in a few sentences.",
        "The Sun heats water in oceans, lakes and rivers, and some of it evaporates into water "
        "vapour. As the vapour rises it cools and condenses into tiny droplets that form clouds. "
        "When the droplets grow heavy enough they fall as rain, snow or hail. The water then flows "
        "over the ground or soaks into it, eventually returning to rivers and the sea, and the "
        "cycle begins again.",
    ),
    rec(
        "What is the capital of Australia?",
        "The capital of Australia is Canberra. Many people guess Sydney or Melbourne, but Canberra "
        "was purpose-built as a compromise between those two rival cities and became the seat of "
        "government in 1927.",
    ),
    rec(
        "Why do we have leap years?",
        "A year on Earth, measured from one spring equinox to the next, lasts about 365.2422 days. "
        "A calendar of exactly 365 days would drift by almost a quarter of a day every year, so "
        "we add an extra day, 29 February, every fourth year. That slightly over-corrects, so "
        "century years are not leap years unless they are divisible by 400. That is why 2000 was a "
        "leap year but 1900 was not.",
    ),
    rec(
        "Suggest a name for a small bakery that specialises in sourdough.",
        "Here are a few ideas:\n- The Patient Loaf\n- Wild Rise Bakery\n- Crumb & Crust\n"
        '- Starter Culture\n\nMy favourite is "The Patient Loaf", because sourdough is all about '
        "slow fermentation.",
    ),
    rec(
        "What are the main differences between a virus and a bacterium?",
        "Size: bacteria are typically a few micrometres long, while most viruses are 10 to 100 "
        "times smaller.\n\n"
        "Structure: a bacterium is a complete single cell with a membrane, ribosomes and its own "
        "metabolism. A virus is just genetic material wrapped in a protein coat, sometimes with a "
        "fatty envelope.\n\n"
        "Reproduction: bacteria divide on their own. Viruses cannot reproduce by themselves; they "
        "must get inside a host cell and hijack its machinery.\n\n"
        "Treatment: antibiotics can kill many bacteria but have no effect on viruses, which are "
        "handled with vaccines or specific antiviral drugs.\n\n"
        "Good or bad: many bacteria are harmless or even helpful, like those in our gut. Viruses "
        "that infect humans are less often useful to us, although some viruses that attack "
        "bacteria are being studied as medicines.",
    ),
    rec("How many bones are in the adult human body?", "An adult human skeleton has 206 bones."),
    rec(
        "Explain what inflation means in economics, as if to a twelve-year-old.",
        "Inflation means that prices in general go up over time, so the same amount of money buys "
        "less than before. Imagine a chocolate bar costs 1 euro this year. If inflation is 5%, next "
        "year the same bar might cost 1.05 euros. Your euro hasn't disappeared, but it can buy a "
        "little less. A small amount of inflation is normal; it becomes a problem when prices rise "
        "much faster than people's pay.",
    ),
    rec(
        "Plan a simple three-day itinerary for a first visit to Lisbon.",
        "Day 1 – Historic centre\n"
        "Start in Baixa and walk up to the Castelo de São Jorge for views over the river. Wander "
        "down through the narrow streets of Alfama and have dinner at a small tasca, ideally one "
        "with live fado.\n\n"
        "Day 2 – Belém\n"
        "Take tram 15 to Belém. Visit the Jerónimos Monastery and the Torre de Belém, then queue "
        "for a pastel de nata at the famous bakery nearby. In the afternoon, see the MAAT museum by "
        "the water.\n\n"
        "Day 3 – Sintra\n"
        "Catch the train from Rossio station to Sintra (about 40 minutes). Book the Pena Palace in "
        "advance and leave time for the gardens of Quinta da Regaleira. Get back to Lisbon for a "
        "sunset drink at a miradouro such as Santa Catarina.\n\n"
        "Tip: wear comfortable shoes. Lisbon is very hilly and the pavements of polished stone can "
        "be slippery.",
    ),
    rec(
        "Recommend a beginner-friendly houseplant and explain how to care for it.",
        "A pothos (Epipremnum aureum) is one of the easiest plants to keep.\n\n"
        "- Light: bright, indirect light is best, but it tolerates quite shady corners.\n"
        "- Water: water when the top few centimetres of soil are dry, roughly once a week in "
        "summer and less in winter. Drooping leaves mean it is thirsty; yellow leaves usually mean "
        "too much water.\n"
        "- Feeding: a diluted liquid fertiliser once a month in spring and summer is plenty.\n"
        "- Bonus: cuttings root easily in a glass of water, so you can grow new plants for free.\n\n"
        "Note that pothos is mildly toxic to cats and dogs, so keep it out of their reach.",
    ),
    rec(
        "What does the acronym 'GPS' stand for and how does it work?",
        "GPS stands for Global Positioning System. About thirty satellites orbit Earth, each "
        "broadcasting its position and the precise time from an onboard atomic clock. A receiver "
        "on the ground picks up signals from several satellites and measures how long each signal "
        "took to arrive. Since the signals travel at the speed of light, those delays give the "
        "distance to each satellite, and with four or more satellites the receiver can work out "
        "its own latitude, longitude, altitude and the exact time.",
    ),
    rec(
        "What is the tallest mountain in the world?",
        "Mount Everest, on the border between Nepal and China, is the tallest mountain above sea "
        "level at 8,849 metres. Measured from base to summit, Mauna Kea in Hawaii is taller, but "
        "most of it lies under the ocean.",
    ),
    rec(
        "Give a one-sentence description of the French Revolution.",
        "The French Revolution (1789–1799) was a period of radical upheaval in which the French "
        "overthrew their absolute monarchy, proclaimed a republic founded on ideas of liberty and "
        "equality, and went through years of political violence that ended with Napoleon's rise to "
        "power.",
    ),
    rec(
        "What is a haiku? Include an example.",
        "A haiku is a short Japanese poetic form of three lines with five, seven and five "
        "syllables, traditionally about nature or a season. For example:\n\n"
        "Cold rain on the roof\nthe kettle begins to sing\nno one else is home",
    ),
    rec(
        "List the planets of the solar system in order from the Sun.",
        "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune.",
    ),
    rec(
        "Is a tomato a fruit or a vegetable?",
        "Botanically, a tomato is a fruit, because it develops from the flower and contains the "
        "seeds. In the kitchen it is usually treated as a vegetable, since it is savoury and used "
        "in main dishes rather than desserts.",
    ),
]

# --------------------------------------------------------------------------
# Alpaca: arithmetic word problems with computed answers
# --------------------------------------------------------------------------


def money(x: float) -> str:
    return f"{x:.2f}"


def arithmetic() -> list[dict[str, str]]:
    out = []
    for name, n, price, bill in [("Maya", 3, 2.40, 10), ("Tomás", 5, 1.75, 20)]:
        total = n * price
        change = bill - total
        out.append(
            rec(
                f"{name} buys {n} notebooks at ${money(price)} each and pays with a ${bill} bill. "
                f"How much change does {name} get?",
                f"The notebooks cost {n} × ${money(price)} = ${money(total)}. "
                f"The change is ${bill} − ${money(total)} = ${money(change)}.",
            )
        )
    for dist, hours in [(240, 3), (405, 4.5)]:
        speed = dist / hours
        out.append(
            rec(
                f"A train travels {dist} km in {hours:g} hours. What is its average speed?",
                f"Average speed = distance ÷ time = {dist} km ÷ {hours:g} h = {speed:g} km/h.",
            )
        )
    for flour, serves, want in [(300, 4, 6), (450, 6, 10)]:
        need = flour * want / serves
        out.append(
            rec(
                f"A recipe needs {flour} g of flour for {serves} servings. How much flour do I need "
                f"for {want} servings?",
                f"For one serving you need {flour} ÷ {serves} = {flour / serves:g} g. "
                f"For {want} servings: {flour / serves:g} × {want} = {need:g} g of flour.",
            )
        )
    for reader, per_day, pages in [("Leo", 25, 320), ("Aiko", 40, 400)]:
        days = math.ceil(pages / per_day)
        if pages % per_day:
            detail = (
                f"{pages} ÷ {per_day} = {pages / per_day:g}, so after {days - 1} full days there are "
                f"still {pages - per_day * (days - 1)} pages left, which takes one more day."
            )
        else:
            detail = f"{pages} ÷ {per_day} = {days} exactly."
        out.append(
            rec(
                f"{reader} reads {per_day} pages a day. How many days will it take to finish a "
                f"{pages}-page book?",
                f"{detail} {reader} needs {days} days.",
            )
        )
    for pct, base in [(15, 80), (7.5, 240), (120, 35)]:
        value = pct * base / 100
        out.append(
            rec(
                f"What is {pct:g}% of {base}?",
                f"{pct:g}% of {base} = {pct:g} ÷ 100 × {base} = {value:g}.",
            )
        )
    for w, length in [(7, 12), (2.5, 4)]:
        out.append(
            rec(
                f"A rectangle is {w:g} cm wide and {length:g} cm long. What are its area and perimeter?",
                f"Area = {w:g} × {length:g} = {w * length:g} cm².\n"
                f"Perimeter = 2 × ({w:g} + {length:g}) = {2 * (w + length):g} cm.",
            )
        )
    for a, b in [(84, 126), (391, 299)]:
        out.append(
            rec(
                f"Find the greatest common divisor of {a} and {b}.",
                _gcd_steps(a, b),
            )
        )
    return out


def _gcd_steps(a: int, b: int) -> str:
    lines = ["Using the Euclidean algorithm:"]
    x, y = max(a, b), min(a, b)
    while y:
        q, r = divmod(x, y)
        lines.append(f"{x} = {q} × {y} + {r}")
        x, y = y, r
    lines.append(f"The last non-zero remainder is {x}, so gcd({a}, {b}) = {x}.")
    return "\n".join(lines)


def primes() -> list[dict[str, str]]:
    out = []
    for n in (91, 97):
        factors = [d for d in range(2, math.isqrt(n) + 1) if n % d == 0]
        if factors:
            d = factors[0]
            answer = f"No. {n} = {d} × {n // d}, so it has divisors other than 1 and itself."
        else:
            answer = (
                f"Yes. √{n} is about {math.sqrt(n):.1f}, and {n} is not divisible by any of the primes "
                f"up to that ({', '.join(str(p) for p in (2, 3, 5, 7) if p <= math.isqrt(n))}), "
                f"so {n} is prime."
            )
        out.append(rec(f"Is {n} a prime number?", answer))
    return out


# --------------------------------------------------------------------------
# Alpaca: unit conversions
# --------------------------------------------------------------------------

CONVERSIONS = [
    # (quantity, unit from, unit to, factor, exact?, the factor in words)
    (5, "miles", "kilometres", 1.609344, True, "1 mile = 1.609344 km"),
    (12, "inches", "centimetres", 2.54, True, "1 inch = 2.54 cm"),
    (3, "US cups", "millilitres", 236.588, False, "1 US cup ≈ 236.588 mL"),
    (70, "kilograms", "pounds", 2.20462, False, "1 kg ≈ 2.20462 lb"),
    (2.5, "hours", "seconds", 3600, True, "1 hour = 3,600 seconds"),
    (500, "megabytes", "gigabytes", 0.001, True, "1 GB = 1,000 MB"),
]


def minus(x: float, fmt: str = "g") -> str:
    """A number with a typographic minus sign."""
    return format(x, fmt).replace("-", "−")


def conversions() -> list[dict[str, str]]:
    out = []
    phrasings = ["Convert {q} {a} to {b}.", "How many {b} are in {q} {a}?", "Express {q} {a} in {b}."]
    for i, (q, a, b, factor, exact, why) in enumerate(CONVERSIONS):
        value = q * factor
        shown = f"{value:,.2f}".rstrip("0").rstrip(".")
        eq = "=" if exact and round(value, 2) == value else "≈"
        out.append(
            rec(
                phrasings[i % len(phrasings)].format(q=f"{q:g}", a=a, b=b),
                f"Since {why}, {q:g} {a} = {q:g} × {factor:,} {eq} {shown} {b}.",
            )
        )
    for f in (72, -40):
        c = (f - 32) * 5 / 9
        eq = "=" if c == round(c) else "≈"
        out.append(
            rec(
                f"Convert {minus(f)} °F to Celsius.",
                f"°C = (°F − 32) × 5/9 = ({minus(f)} − 32) × 5/9 {eq} {minus(round(c, 1))} °C."
                + (" This is the one temperature where both scales agree." if f == c else ""),
            )
        )
    return out


# --------------------------------------------------------------------------
# Alpaca: code
# --------------------------------------------------------------------------

CODE = [
    rec(
        "Write a Python function that checks whether a string is a palindrome, ignoring case and spaces.",
        "```python\n"
        "def is_palindrome(text: str) -> bool:\n"
        '    cleaned = "".join(ch.lower() for ch in text if not ch.isspace())\n'
        "    return cleaned == cleaned[::-1]\n"
        "```\n\n"
        'For example, `is_palindrome("Never odd or even")` returns `True`.',
    ),
    rec(
        "Write FizzBuzz in Python for the numbers 1 to 100.",
        "```python\n"
        "for n in range(1, 101):\n"
        "    if n % 15 == 0:\n"
        '        print("FizzBuzz")\n'
        "    elif n % 3 == 0:\n"
        '        print("Fizz")\n'
        "    elif n % 5 == 0:\n"
        '        print("Buzz")\n'
        "    else:\n"
        "        print(n)\n"
        "```\n\n"
        "Checking 15 first matters: a number divisible by 15 is also divisible by 3 and 5.",
    ),
    rec(
        "Write an SQL query that returns the five customers who placed the most orders.",
        "```sql\n"
        "SELECT c.id, c.name, COUNT(o.id) AS order_count\n"
        "FROM customers AS c\n"
        "JOIN orders AS o ON o.customer_id = c.id\n"
        "GROUP BY c.id, c.name\n"
        "ORDER BY order_count DESC\n"
        "LIMIT 5;\n"
        "```",
        "Tables: customers(id, name, email) and orders(id, customer_id, created_at, total).",
    ),
    rec(
        "Write a debounce function in JavaScript.",
        "```javascript\n"
        "function debounce(fn, waitMs) {\n"
        "  let timer = null;\n"
        "  return function (...args) {\n"
        "    clearTimeout(timer);\n"
        "    timer = setTimeout(() => fn.apply(this, args), waitMs);\n"
        "  };\n"
        "}\n\n"
        "// Usage: only search once the user has stopped typing for 300 ms.\n"
        'input.addEventListener("input", debounce(runSearch, 300));\n'
        "```\n\n"
        "Each call cancels the pending timer and starts a new one, so `fn` runs only after the calls "
        "stop for `waitMs` milliseconds.",
    ),
    rec(
        "Give a shell command that counts the lines in all Python files under the current directory.",
        "```bash\nfind . -name '*.py' -print0 | xargs -0 cat | wc -l\n```\n\n"
        "`-print0` and `xargs -0` keep file names with spaces intact.",
    ),
    rec(
        "Explain what this code does.",
        "It builds a dictionary that counts how often each word appears in `text`. The text is "
        "lower-cased and split on whitespace; `counts.get(word, 0)` returns the current count, or "
        '0 for a new word, and adds one. For `text = "the cat saw the dog"` the result is '
        "`{'the': 2, 'cat': 1, 'saw': 1, 'dog': 1}`. The standard library's "
        "`collections.Counter(text.lower().split())` does the same in one line.",
        "counts = {}\nfor word in text.lower().split():\n    counts[word] = counts.get(word, 0) + 1",
    ),
    rec(
        "Find and fix the bug in this function.",
        "The bug is `best = 0`. For a list that holds only negative numbers, such as `[-3, -7]`, "
        "no value is greater than 0, so the function returns 0, which is not even in the list. "
        "Start from the first element instead, and decide what an empty list should do. Fixed "
        "version:\n\n"
        "```python\n"
        "def largest(values):\n"
        "    if not values:\n"
        '        raise ValueError("largest() of an empty list")\n'
        "    best = values[0]\n"
        "    for v in values[1:]:\n"
        "        if v > best:\n"
        "            best = v\n"
        "    return best\n"
        "```",
        "def largest(values):\n    best = 0\n    for v in values:\n        if v > best:\n"
        "            best = v\n    return best",
    ),
    rec(
        "Write a regular expression that matches dates in the form YYYY-MM-DD.",
        "`^\\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\\d|3[01])$`\n\n"
        "It checks that the month is 01–12 and the day 01–31. It does not know that February has "
        "no 30th, so for real validation parse the string with a date library afterwards.",
    ),
    rec(
        "Rewrite this loop as a list comprehension.",
        "```python\nsquares = [n * n for n in numbers if n % 2 == 0]\n```",
        "squares = []\nfor n in numbers:\n    if n % 2 == 0:\n        squares.append(n * n)",
    ),
    rec(
        "What is the time complexity of binary search, and why?",
        "O(log n). Each comparison discards half of the remaining elements, so after k steps "
        "only n / 2^k candidates are left. The search ends when that reaches 1, which happens "
        "after about log₂ n steps. For a sorted list of a million items that is only about 20 "
        "comparisons.",
    ),
    rec(
        "How do I undo my last git commit but keep the changes?",
        "Run `git reset --soft HEAD~1`. The commit is removed, but its changes stay staged, so you "
        "can edit them and commit again. Use `git reset HEAD~1` (a mixed reset) instead if you "
        "want the changes unstaged. If you have already pushed the commit, prefer `git revert`, "
        "which adds a new commit undoing it without rewriting shared history.",
    ),
    rec(
        "Write a Rust function that returns the largest element of a slice of integers.",
        "```rust\n"
        "fn largest(values: &[i32]) -> Option<i32> {\n"
        "    values.iter().copied().max()\n"
        "}\n\n"
        "fn main() {\n"
        '    println!("{:?}", largest(&[3, 9, 4])); // Some(9)\n'
        '    println!("{:?}", largest(&[]));        // None\n'
        "}\n"
        "```\n\n"
        "Returning `Option` makes the empty-slice case explicit instead of panicking.",
    ),
    rec(
        "Write a Python script that reads a CSV file called sales.csv and prints the average of the "
        "'amount' column.",
        "```python\n"
        "import csv\n\n"
        'with open("sales.csv", newline="", encoding="utf-8") as f:\n'
        '    amounts = [float(row["amount"]) for row in csv.DictReader(f)]\n\n'
        "if amounts:\n"
        '    print(f"Average amount: {sum(amounts) / len(amounts):.2f}")\n'
        "else:\n"
        '    print("No rows found.")\n'
        "```",
    ),
]

# --------------------------------------------------------------------------
# Alpaca: definitions
# --------------------------------------------------------------------------

DEFINITIONS = [
    # (term, the term with its article, definition)
    ("algorithm", "an algorithm", "a finite, well-defined sequence of steps for solving a problem."),
    (
        "opportunity cost",
        "opportunity cost",
        "the value of the best alternative you give up when you choose.",
    ),
    (
        "metaphor",
        "a metaphor",
        "a figure of speech that describes something by saying it *is* something else.",
    ),
    ("entropy", "entropy", "a measure of disorder: how many microscopic arrangements fit a system's state."),
    ("latency", "latency", "the delay between sending a request and the response starting to arrive."),
    ("biodiversity", "biodiversity", "the variety of life in a place, from genes to species to ecosystems."),
    ("prime number", "a prime number", "a whole number greater than 1 whose only divisors are 1 and itself."),
    ("déjà vu", "déjà vu", "the uncanny feeling of having already lived through the present moment."),
    ("API", "an API", "a defined set of rules that lets one program request services from another."),
    (
        "compound interest",
        "compound interest",
        "interest earned on the original sum and on interest already added.",
    ),
]

DEFINITION_PHRASES = [
    ("Define the term '{t}'.", "{A} is {d}"),
    ("What is {a}?", "{A} is {d}"),
    ("Give a short definition of {a}.", "{T}: {d}"),
    ("In one sentence, what does '{t}' mean?", "'{T}' means {d}"),
]


def definitions() -> list[dict[str, str]]:
    out = []
    for i, (term, with_article, d) in enumerate(DEFINITIONS):
        q, ans = DEFINITION_PHRASES[i % len(DEFINITION_PHRASES)]
        cap = with_article[0].upper() + with_article[1:]
        t_cap = term[0].upper() + term[1:] if "{T}:" in ans else term
        out.append(rec(q.format(t=term, a=with_article), ans.format(A=cap, T=t_cap, d=d)))
    return out


# --------------------------------------------------------------------------
# Alpaca: rewriting (with input)
# --------------------------------------------------------------------------

REWRITES = [
    rec(
        "Rewrite the following sentence in the passive voice.",
        "The report was finished by the committee on Friday.",
        "The committee finished the report on Friday.",
    ),
    rec(
        "Make this sentence more formal.",
        "Could you please send me the documents at your earliest convenience?",
        "Hey, can you send me those docs ASAP?",
    ),
    rec(
        "Correct the grammar in the following sentence.",
        "Neither of the students has finished their homework.",
        "Neither of the students have finished there homework.",
    ),
    rec(
        "Shorten this sentence without losing its meaning.",
        "We postponed the meeting because most of the team was ill.",
        "Due to the fact that the majority of the members of the team were unwell, we made the "
        "decision to postpone the meeting until a later date.",
    ),
    rec(
        "Rewrite this sentence so that a seven-year-old could understand it.",
        "Some animals sleep through the whole winter because there isn't much food to find.",
        "Certain species enter a state of hibernation during winter to conserve energy when food "
        "resources are scarce.",
    ),
    rec(
        "Rewrite the sentence in the active voice.",
        "The chef prepared the soup with fresh herbs.",
        "The soup was prepared with fresh herbs by the chef.",
    ),
    rec(
        "Make this sentence sound more enthusiastic.",
        "We can't wait to see you at the café on Saturday! ☕",
        "We will see you at the café on Saturday.",
    ),
    rec(
        "Paraphrase the following sentence.",
        "Practising a little every day helps you learn a language faster than one long session a week.",
        "Short daily practice is more effective for language learning than a single long weekly session.",
    ),
    rec(
        "Fix the spelling mistakes in this text.",
        "I definitely received your message, and I will recommend the restaurant to my colleagues.",
        "I definately recieved your mesage, and I will recomend the restaurant to my collegues.",
    ),
    rec(
        "Rewrite the sentence to avoid the cliché.",
        "The new intern learned the routine within a week.",
        "The new intern learned the ropes in no time at all.",
    ),
]

# --------------------------------------------------------------------------
# Alpaca: summaries (with input)
# --------------------------------------------------------------------------

SUMMARIES = [
    rec(
        "Summarise the following paragraph in one sentence.",
        "The town library's longer opening hours and free workshops have roughly doubled visits "
        "in a year, especially among teenagers and older residents.",
        "When the town library extended its opening hours last spring, few people expected much to "
        "change. Yet in the twelve months since, the number of visits has almost doubled. Staff "
        "credit the evening hours, which suit people who work during the day, and a new programme "
        "of free workshops on everything from coding to watercolour painting. Teenagers now use "
        "the upstairs room as a quiet place to study after school, and a group of retired "
        "residents meets every Thursday to help newcomers fill in official forms.",
    ),
    rec(
        "Summarise this text in two or three bullet points.",
        '- Honeybees communicate the location of food with a "waggle dance".\n'
        "- The angle of the dance gives the direction relative to the Sun, and its length gives "
        "the distance.\n"
        "- Other bees use this information to fly straight to the flowers.",
        "When a forager honeybee finds a good patch of flowers, she returns to the hive and "
        "performs what researchers call the waggle dance. She runs in a straight line while "
        "shaking her body, then loops back and repeats. The angle of that straight run, compared "
        "with vertical, tells the other bees the direction of the food relative to the Sun. The "
        "longer the waggle lasts, the farther away the food is. Bees that follow the dance can "
        "then fly almost directly to the flowers, even if they are several kilometres away.",
    ),
    rec(
        "Give a short summary of the email below.",
        "The Tuesday project meeting moves to Thursday at 10:00 in room 4B; send agenda items by "
        "Wednesday noon.",
        "Hi all,\n\nBecause several of us are at the supplier visit on Tuesday, I'm moving our "
        "weekly project meeting to Thursday at 10:00. We'll use room 4B instead of the usual one, "
        "as that's being repainted. If you have anything for the agenda, please send it to me by "
        "Wednesday at noon so I can circulate it in advance.\n\nThanks,\nPriya",
    ),
    rec(
        "Summarise the main argument of this passage.",
        "The author argues that remote work succeeds when teams write things down, because written "
        "decisions and notes replace the informal hallway conversations that offices rely on.",
        "Most debates about remote work focus on productivity, but the real difference lies in how "
        "information moves. In an office, a surprising amount of knowledge travels through "
        "overheard conversations and quick questions at someone's desk. Remote teams lose that "
        "channel entirely. The ones that thrive compensate by writing things down: decisions are "
        "recorded with their reasons, meetings produce short notes, and questions are asked in "
        "public channels where the answers can be found later. Teams that skip this step often "
        "feel that remote work 'doesn't work for us', when the actual problem is that information "
        "no longer reaches the people who need it.",
    ),
    rec(
        "Summarise the plot of this story in one sentence.",
        "A lighthouse keeper who has been alone for years finds a message in a bottle, answers it, "
        "and slowly builds a friendship with a stranger across the sea.",
        "For eleven years Elin had kept the lighthouse on Skarv Island with no company but the "
        "gulls and the supply boat that came once a month. One grey morning she found a green "
        "bottle wedged between the rocks, and inside, a note written in careful pencil: 'If anyone "
        "reads this, tell me what the weather is like where you are.' Elin laughed, then wrote "
        "back, describing the fog. She threw the bottle as far as she could. Months later, another "
        "one arrived. Over the following years, letter by letter, the two strangers told each "
        "other about storms, books, and the small events of their lives.",
    ),
    rec(
        "Summarise the key facts in this product description.",
        "A 750 mL insulated steel bottle that keeps drinks cold for 24 hours or hot for 12, is "
        "dishwasher-safe, weighs 340 g and comes in four colours.",
        "Meet the TrailMate bottle: 750 mL of double-walled stainless steel that keeps your water "
        "icy for a full 24 hours, or your tea hot for 12. The powder-coated finish won't slip out "
        "of your hand, the leak-proof lid is dishwasher-safe, and at just 340 g it won't weigh "
        "down your pack. Available in forest green, slate, sand and sunset orange.",
    ),
]

# --------------------------------------------------------------------------
# Alpaca: translations (with input)
# --------------------------------------------------------------------------

FRENCH = [
    ("Where is the nearest train station?", "Où est la gare la plus proche ?"),
    (
        "I would like a coffee and a croissant, please.",
        "Je voudrais un café et un croissant, s'il vous plaît.",
    ),
    ("The museum is closed on Mondays.", "Le musée est fermé le lundi."),
    (
        "We had a wonderful holiday by the sea.",
        "Nous avons passé de merveilleuses vacances au bord de la mer.",
    ),
    ("Could you speak more slowly?", "Pourriez-vous parler plus lentement ?"),
    ("My sister is a teacher in Québec.", "Ma sœur est enseignante au Québec."),
    ("It is very hot today; let's go to the beach.", "Il fait très chaud aujourd'hui ; allons à la plage."),
    ("The meeting was moved to Thursday afternoon.", "La réunion a été déplacée à jeudi après-midi."),
]

CHINESE = [
    ("Good morning! How are you?", "早上好！你好吗？"),
    ("Thank you very much for your help.", "非常感谢你的帮助。"),
]


def translations() -> list[dict[str, str]]:
    heads = [
        "Translate the following sentence into French.",
        "Translate this into French.",
        "How would you say this in French?",
    ]
    out = [rec(heads[i % len(heads)], fr, en) for i, (en, fr) in enumerate(FRENCH)]
    out += [rec("Translate the following sentence into Simplified Chinese.", zh, en) for en, zh in CHINESE]
    out.append(
        rec(
            "What does this phrase mean, and how is it pronounced?",
            '你好 (nǐ hǎo) means "hello" in Mandarin Chinese. Literally it is "you good". It is '
            'pronounced roughly "nee how", with a falling-rising tone on both syllables; in '
            "practice the first syllable changes to a rising tone before the second.",
            "你好",
        )
    )
    out.append(
        rec(
            "Translate this French sentence into English.",
            "The bakery on the corner sells the best bread in the neighbourhood.",
            "La boulangerie du coin vend le meilleur pain du quartier.",
        )
    )
    return out


# --------------------------------------------------------------------------
# Alpaca: writing (empty input)
# --------------------------------------------------------------------------

WRITING = [
    rec(
        "Write a haiku about autumn.",
        "Maple leaves let go\neach one a small red letter\nmailed to the cold ground",
    ),
    rec(
        "Write a short, polite email asking a professor for a one-week extension on an essay.",
        "Subject: Request for a short extension on the history essay\n\n"
        "Dear Professor Okafor,\n\n"
        "I am writing to ask whether I could have a one-week extension on the essay due this "
        "Friday. I was ill for most of last week and fell behind with my reading, and I would "
        "rather hand in careful work than rush it. I have attached my outline to show where I am.\n\n"
        "If an extension is possible, I would submit the essay by next Friday. Thank you for "
        "considering my request.\n\n"
        "Kind regards,\nSam Reyes",
    ),
    rec(
        "Write a product description for a reusable beeswax food wrap.",
        "Say goodbye to cling film. Our beeswax wraps are made from organic cotton coated in "
        "beeswax, tree resin and jojoba oil. Warm one in your hands and it moulds around a bowl, "
        "half a lemon or a wedge of cheese, then holds its shape as it cools. Rinse in cool, soapy "
        "water and it is ready to use again, for up to a year. When it finally wears out, cut it "
        "into strips and add it to your compost.",
    ),
    rec(
        "Write the opening paragraph of a mystery story set in a snowed-in mountain hotel.",
        "By the third morning the snow had reached the ground-floor windows, and the telephone "
        "line had been dead since the night before. Fourteen guests sat in the dining room of the "
        "Hotel Edelweiss, pretending to read or to eat, each watching the others over the rims of "
        "their coffee cups. Nobody had mentioned the empty chair at the end of the long table. "
        "Nobody needed to. Herr Lindqvist had been seen going up to his room at ten o'clock, and "
        "his door was still locked from the inside.",
    ),
    rec(
        "Write a limerick about a cat who hates Mondays.",
        "A tabby who lived in Montrose\nWould wake every Monday and doze;\nShe'd yawn at the "
        "light,\nRefuse every bite,\nThen sleep on her owner's clean clothes.",
    ),
    rec(
        "Write a short social media post announcing a school bake sale, with a couple of emoji.",
        "🎉 Bake sale this Saturday! 🧁 Cupcakes, brownies, lemon tarts and more, all homemade by "
        "our Year 6 families. 10am–1pm in the school hall, every penny goes to the new library "
        "books. Bring a friend and an appetite! 📚",
    ),
    rec(
        "Write a two-sentence toast for a friend's wedding.",
        "To Ana and Luís: may your home always be as full of laughter as tonight is, and may you "
        "never run out of things to say to each other. Raise your glasses, everyone, to the happy "
        "couple!",
    ),
    rec(
        "Write a short motivational message for someone starting to learn to code.",
        "Every programmer you admire once stared at an error message they didn't understand. "
        "Confusion is not a sign that you're bad at this; it's what learning feels like from the "
        "inside. Write small programs, break them, fix them, and be patient with yourself. In a "
        "few months you'll look back at today's puzzles and smile.",
    ),
    rec(
        "Write a four-line poem about the sea, rhyming AABB.",
        "The tide comes in with silver light,\nit hums a low song through the night;\nit takes "
        "our footprints, grain by grain,\nand gives the shore back clean again.",
    ),
]

# --------------------------------------------------------------------------
# Alpaca: classification and extraction (with input)
# --------------------------------------------------------------------------


def classification() -> list[dict[str, str]]:
    out = [
        rec(
            "Classify the sentiment of this review as positive, negative or neutral.",
            "Negative.",
            "The room was clean but tiny, the Wi-Fi dropped every ten minutes, and breakfast was "
            "cold. I won't be coming back.",
        ),
        rec(
            "Classify the sentiment of this review as positive, negative or neutral.",
            "Positive.",
            "Honestly the best ramen I've had outside Japan. The broth was rich and the staff were "
            "lovely. 🍜",
        ),
        rec(
            "Classify each animal as a mammal, bird, reptile or fish.",
            "- Dolphin: mammal\n- Penguin: bird\n- Gecko: reptile\n- Salmon: fish\n- Bat: mammal",
            "dolphin, penguin, gecko, salmon, bat",
        ),
        rec(
            "Extract all the dates mentioned in the text.",
            "- 3 March 2021\n- 14 July\n- 1 January 2024",
            "The company was founded on 3 March 2021. Its first product launched on 14 July, and "
            "the new pricing takes effect on 1 January 2024.",
        ),
        rec(
            "Find the odd one out and explain why.",
            "Carrot. It is a root vegetable, while the others are fruits.",
            "apple, banana, carrot, cherry",
        ),
        rec(
            "Extract the email addresses from the text.",
            "info@example.org, j.martin@example.com",
            "For general questions write to info@example.org; for press enquiries contact Julie "
            "Martin (j.martin@example.com) or call the office.",
        ),
        rec(
            "Convert this list into a JSON array of objects with 'name' and 'age' keys.",
            '[\n  {"name": "Zoë", "age": 34},\n  {"name": "Kwame", "age": 27},\n'
            '  {"name": "Mei", "age": 41}\n]',
            "Zoë, 34\nKwame, 27\nMei, 41",
        ),
        rec(
            "Identify the main topic of this headline.",
            "Technology and the environment: recycling electronic waste.",
            "City opens first repair café to keep old laptops and phones out of landfill",
        ),
    ]
    for nums in ([42, 7, 19, 3, 88, 23], [5.5, -2, 0, 13, 1.25]):
        text = ", ".join(f"{n:g}" for n in nums)
        out.append(
            rec(
                "Sort these numbers from smallest to largest.",
                ", ".join(f"{n:g}" for n in sorted(nums)),
                text,
            )
        )
    for sentence in (
        "Packing data carefully saves a surprising amount of training time.",
        "The quick brown fox jumps over the lazy dog.",
    ):
        words = sentence.split()
        out.append(
            rec(
                "How many words are in this sentence?",
                f"The sentence has {len(words)} words.",
                sentence,
            )
        )
    return out


# --------------------------------------------------------------------------
# Alpaca: maths explained (empty input)
# --------------------------------------------------------------------------

MATHS = [
    rec("Solve for x: 2x + 7 = 19.", "Subtract 7 from both sides: 2x = 12. Divide by 2: x = 6."),
    rec(
        "What is the derivative of f(x) = x³ + 2x?",
        "Differentiate term by term with the power rule: f'(x) = 3x² + 2.",
    ),
    rec(
        "Explain the Pythagorean theorem with an example.",
        "In a right-angled triangle, the square of the hypotenuse (the side opposite the right "
        "angle) equals the sum of the squares of the other two sides: a² + b² = c².\n\n"
        "Example: if the two shorter sides are 3 cm and 4 cm, then c² = 9 + 16 = 25, so the "
        "hypotenuse is c = 5 cm. Builders have long used this 3-4-5 triangle to check that a "
        "corner is square.",
    ),
    rec("Simplify the fraction 18/24.", "The greatest common divisor of 18 and 24 is 6, so 18/24 = 3/4."),
    rec(
        "What is the probability of rolling a total of 7 with two fair six-sided dice?",
        "There are 6 × 6 = 36 equally likely outcomes. Six of them give 7: (1,6), (2,5), (3,4), "
        "(4,3), (5,2), (6,1). So the probability is 6/36 = 1/6, about 16.7%.",
    ),
    rec(
        "Why can't you divide by zero?",
        'Division asks "what number times the divisor gives the dividend?" For 6 ÷ 2 the answer '
        "is 3 because 3 × 2 = 6. For 6 ÷ 0 we would need a number that, multiplied by 0, gives 6, "
        "but anything times 0 is 0, so no such number exists. For 0 ÷ 0 every number would work, "
        "so there is no single answer either. That is why division by zero is left undefined.",
    ),
]


def alpaca_records() -> list[dict[str, str]]:
    groups = [
        GENERAL,
        arithmetic(),
        primes(),
        conversions(),
        CODE,
        definitions(),
        REWRITES,
        SUMMARIES,
        translations(),
        WRITING,
        classification(),
        MATHS,
    ]
    # interleave the groups so neighbouring records differ in kind and length
    out: list[dict[str, str]] = []
    longest = max(len(g) for g in groups)
    for i in range(longest):
        for g in groups:
            if i < len(g):
                out.append(g[i])
    return out


# --------------------------------------------------------------------------
# ShareGPT
# --------------------------------------------------------------------------


def H(text: str) -> dict[str, str]:
    return {"from": "human", "value": text}


def G(text: str) -> dict[str, str]:
    return {"from": "gpt", "value": text}


def S(text: str) -> dict[str, str]:
    return {"from": "system", "value": text}


SINGLE = [
    [
        H("Why do onions make you cry?"),
        G(
            "Cutting an onion breaks its cells and releases enzymes that produce a volatile "
            "sulphur compound, syn-propanethial-S-oxide. When it reaches your eyes it irritates "
            "the nerves there, and your tear glands respond by flushing it away. Chilling the onion "
            "first and using a sharp knife, which crushes fewer cells, both help."
        ),
    ],
    [
        H("Convert 0.375 to a fraction."),
        G("0.375 = 375/1000. Dividing top and bottom by 125 gives 3/8."),
    ],
    [
        H("What's a good way to remember the order of the planets?"),
        G(
            'A classic mnemonic is "My Very Educated Mother Just Served Us Nachos": Mercury, '
            "Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune. Making up your own silly "
            "sentence often works even better, because you'll remember the joke."
        ),
    ],
    [
        H("Can you explain what a hash table is?"),
        G(
            "A hash table stores key–value pairs so that you can find a value by its key very "
            "quickly. It keeps an array of slots called buckets. To store a pair, it runs the key "
            "through a hash function, which turns it into a number, and uses that number to pick a "
            "bucket. To look a key up later, it hashes the key again and goes straight to the same "
            "bucket instead of searching the whole collection.\n\n"
            "Two different keys can land in the same bucket; this is a collision. Common fixes are "
            "to keep a small list in each bucket or to probe for the next free slot. With a good "
            "hash function and enough buckets, inserts and lookups take constant time on average. "
            "Python's `dict` and JavaScript's `Map` are hash tables."
        ),
    ],
    [
        H("How long should I boil an egg if I want a runny yolk?"),
        G(
            "For a large egg straight from the fridge, lower it into water that is already boiling "
            "and cook it for 6 minutes, then put it in cold water for a minute to stop the cooking. "
            "You'll get a set white and a soft, runny yolk. Add about 30 seconds for very large eggs."
        ),
    ],
    [
        H("What's the difference between 'affect' and 'effect'?"),
        G(
            'In most sentences, "affect" is a verb and "effect" is a noun. The weather affects '
            "my mood; the weather has an effect on my mood. A handy memory aid: Affect is the "
            'Action, Effect is the End result. (There is a less common verb "to effect", meaning '
            'to bring about, as in "to effect change".)'
        ),
    ],
    [
        H("Give me a quick stretching routine I can do at my desk."),
        G(
            "Here's a five-minute routine:\n\n"
            "1. Neck tilts: drop your ear towards each shoulder, 20 seconds per side.\n"
            "2. Shoulder rolls: ten slow rolls backwards, then ten forwards.\n"
            "3. Seated twist: sit tall, turn your upper body to the right holding the chair back, "
            "20 seconds, then the left.\n"
            "4. Wrist stretch: arm out, palm up, gently pull the fingers back with the other hand.\n"
            "5. Figure-four: ankle on the opposite knee, lean slightly forward to stretch the hip.\n\n"
            "Move slowly and stop if anything hurts."
        ),
    ],
    [
        H("Why does bread go stale?"),
        G(
            "Mostly not because it dries out. When bread bakes, the starch absorbs water and its "
            "crystals break down, which makes the crumb soft. As the bread cools and sits, the "
            "starch slowly recrystallises, squeezing water out and making the crumb firm and "
            "crumbly. That process, called retrogradation, is fastest at fridge temperatures, which "
            "is why bread goes stale faster in the fridge than on the counter. Briefly reheating "
            "stale bread reverses it for a while."
        ),
    ],
    [
        H("How do I center a div horizontally and vertically with CSS?"),
        G(
            "The simplest modern way is flexbox on the parent:\n\n"
            "```css\n"
            ".parent {\n"
            "  display: flex;\n"
            "  justify-content: center; /* horizontal */\n"
            "  align-items: center;     /* vertical */\n"
            "  min-height: 100vh;\n"
            "}\n"
            "```\n\n"
            "With grid it's even shorter: `display: grid; place-items: center;`."
        ),
    ],
    [
        H("Tell me a fun fact about octopuses."),
        G(
            "An octopus has three hearts and blue blood. Two hearts pump blood through the gills "
            "and the third sends it round the rest of the body, and their blood uses a copper-based "
            "molecule, haemocyanin, instead of iron-based haemoglobin. Oh, and the plural can be "
            '"octopuses"; "octopi" is a popular but mistaken Latin-style guess. 🐙'
        ),
    ],
    [
        H("Write a Python one-liner that flattens a list of lists."),
        G(
            "```python\nflat = [item for sub in nested for item in sub]\n```\n\n"
            "For example, `[[1, 2], [3], [4, 5]]` becomes `[1, 2, 3, 4, 5]`. "
            "`itertools.chain.from_iterable(nested)` does the same lazily."
        ),
    ],
    [
        H("How do noise-cancelling headphones work?"),
        G(
            "Small microphones on the ear cups listen to the sound around you. A chip inverts that "
            "sound wave, turning every peak into a trough, and plays the inverted wave through the "
            "speakers along with your music. When the two waves meet at your ear they cancel out. "
            "This works best for steady low-pitched noise such as engine hum; sudden or high-pitched "
            "sounds are handled mostly by the padding of the ear cups."
        ),
    ],
    [
        H("What should I pack for a weekend hiking trip with one night in a hut?"),
        G(
            "- Broken-in boots and two pairs of wool socks\n"
            "- Layers: base layer, fleece, waterproof jacket and trousers\n"
            "- Hat and gloves, even in summer if you're going high\n"
            "- Map, compass or offline maps, and a charged phone\n"
            "- Water (at least 2 litres) and snacks; check whether the hut serves meals\n"
            "- Sleeping-bag liner, earplugs, head torch\n"
            "- Small first-aid kit, sunscreen, blister plasters\n"
            "- Cash, since many huts don't take cards\n\n"
            "Tell someone your route and when you expect to be back."
        ),
    ],
    [
        H("How do you say 'cheers' in German?"),
        G('"Prost!" In a more formal setting you may also hear "Zum Wohl!"'),
    ],
    [
        H("What's the difference between a list and a tuple in Python?"),
        G(
            "Both are ordered sequences, but a list is mutable and a tuple is not. You can append "
            "to, remove from and change items of a list; a tuple stays as it was created. Because "
            "they can't change, tuples can be dictionary keys or set members (if their items are "
            "hashable), and they signal intent: use a tuple for a fixed record such as "
            "`(latitude, longitude)` and a list for a collection that grows."
        ),
    ],
    [
        H("¿Cuál es la capital de Perú?"),
        G("La capital de Perú es Lima, fundada en 1535 junto al río Rímac."),
    ],
    [
        H("用一句话介绍一下长城。"),
        G("长城是中国古代修建的巨大防御工程，绵延数千公里，是世界上最著名的建筑之一。"),
    ],
    [
        H("Can you recommend a board game for four players who don't play many games?"),
        G(
            "Try Ticket to Ride. The rules take five minutes to explain: you collect coloured cards "
            "and use them to claim train routes between cities. Turns are quick, there's a little "
            "tension when someone takes the route you wanted, and a game lasts about an hour. If "
            "your group likes word games instead, Codenames is another easy favourite."
        ),
    ],
    [
        H("Explain recursion in one paragraph."),
        G(
            "Recursion is when a function solves a problem by calling itself on a smaller version "
            "of the same problem. Every recursive function needs a base case, a version so small "
            "it can be answered directly, and a recursive step that moves towards it. For example, "
            "the factorial of 5 is 5 times the factorial of 4, which is 4 times the factorial of 3, "
            "and so on until the factorial of 1, which is simply 1. Without a base case, the "
            "function would call itself forever."
        ),
    ],
    [
        H("What's a good name for a grey kitten? 🐱"),
        G(
            "A few ideas: Ash, Pebble, Smokey, Earl Grey, Misty, Pewter or Nimbus. If the kitten is "
            'a bit of a character, "Dumpling" never fails. 😺'
        ),
    ],
    [
        H("Is it safe to look at a partial solar eclipse?"),
        G(
            "No, not with the naked eye or ordinary sunglasses. Even when most of the Sun is "
            "covered, the visible part is bright enough to damage your retina, and it doesn't "
            "hurt while it happens. Use certified eclipse glasses (ISO 12312-2) or project the "
            "image through a pinhole onto a piece of card."
        ),
    ],
    [
        H("Quick question: is it 'fewer' or 'less' items?"),
        G(
            '"Fewer items". Use "fewer" with things you can count (fewer apples, fewer '
            'mistakes) and "less" with amounts you measure (less water, less time). Supermarket '
            'signs saying "10 items or less" are common, but "fewer" is the traditional choice.'
        ),
    ],
]

WITH_SYSTEM = [
    [
        S("You are a concise assistant. Answer in at most two sentences."),
        H("What is machine learning?"),
        G(
            "Machine learning is a way of building software that learns patterns from examples "
            "instead of following hand-written rules. Given enough data, such a program can make "
            "predictions or decisions about new cases it has never seen."
        ),
    ],
    [
        S(
            "You are a friendly French tutor. Reply in simple French and give the English "
            "translation in brackets."
        ),
        H("Comment dit-on 'apple' en français ?"),
        G('On dit « une pomme ». (We say "une pomme".)'),
        H("Et 'strawberry' ?"),
        G(
            "C'est « une fraise ». J'adore les fraises en été ! "
            '(It\'s "une fraise". I love strawberries in summer!)'
        ),
    ],
    [
        S("You are a helpful coding assistant. Use Python unless the user asks for another language."),
        H("How do I read a JSON file?"),
        G(
            "```python\nimport json\n\n"
            'with open("data.json", encoding="utf-8") as f:\n'
            "    data = json.load(f)\n```\n\n"
            "`data` is now ordinary Python objects: dicts, lists, strings and numbers."
        ),
        H("And how do I write it back out, nicely indented?"),
        G(
            "```python\n"
            'with open("data.json", "w", encoding="utf-8") as f:\n'
            "    json.dump(data, f, indent=2, ensure_ascii=False)\n```\n\n"
            "`ensure_ascii=False` keeps characters like é or 中 readable instead of escaping them."
        ),
    ],
    [
        S("You are a customer support assistant for Spoke & Chain, a small bicycle shop."),
        H("Hi, my gears keep slipping when I pedal hard. What can I do?"),
        G(
            "Sorry to hear that! Slipping under load is most often caused by a stretched chain or "
            "a gear cable that has lost tension. Two quick checks:\n\n"
            "1. Shift to the smallest rear cog and turn the barrel adjuster on the derailleur half "
            "a turn anticlockwise, then test again.\n"
            "2. If the bike has done more than about 3,000 km on the same chain, it is probably worn.\n\n"
            "If neither helps, bring it in and we'll measure the chain for free."
        ),
        H("How much does a new chain cost?"),
        G(
            "A standard 8- to 10-speed chain is usually between 20 and 35 euros, plus 10 euros for "
            "fitting. If the cassette is worn too, we'll show you before replacing anything."
        ),
        H("Great, thanks. Do I need an appointment?"),
        G("No appointment needed for chain swaps. Drop by any weekday; it usually takes about 20 minutes."),
    ],
    [
        S("You are a pirate. Stay in character no matter what."),
        H("What's the weather like today?"),
        G(
            "Arr, I be a humble sea dog without a window, matey! Peer at the sky yerself: grey "
            "clouds to the west mean ye'd best stow the washing before the squall hits."
        ),
        H("Okay, can you recommend a book?"),
        G("Treasure Island, o' course! Long John Silver be the finest rogue ever put to paper. Yo ho!"),
    ],
    [
        S("Answer only with a JSON object. Do not add any other text."),
        H("Give me the name and 2021 census population of the largest city in Canada."),
        G('{"city": "Toronto", "population_2021": 2794356}'),
    ],
    [
        S(
            "You are a patient maths tutor. Guide the student with questions and hints instead of "
            "giving the answer straight away."
        ),
        H("I need to solve 3x − 5 = 16 and I'm stuck."),
        G("No problem! What could you do to both sides to get the 3x on its own?"),
        H("Add 5? Then it's 3x = 21."),
        G("Exactly. One step left: how do you get x by itself from 3x?"),
        H("Divide by 3, so x = 7!"),
        G("Well done! You can check it: 3 × 7 − 5 = 21 − 5 = 16. ✔"),
    ],
    [
        S("You summarise text as three short bullet points."),
        H(
            "Summarise: Urban gardens are spreading in many cities. Residents turn empty lots and "
            "rooftops into vegetable beds, which provides fresh food in neighbourhoods with few "
            "shops. Studies suggest the gardens also cool the streets on hot days and bring "
            "neighbours together, although finding secure long-term access to land remains the "
            "biggest challenge."
        ),
        G(
            "- Residents are turning empty lots and rooftops into vegetable gardens.\n"
            "- The gardens supply fresh food, cool streets and strengthen communities.\n"
            "- Securing land for the long term is the main difficulty."
        ),
    ],
]

MULTI = [
    [
        H("I'm going to Kyoto for three days in November. What shouldn't I miss?"),
        G(
            "November is a lovely time: the maple leaves turn red. Don't miss:\n\n"
            "- Fushimi Inari shrine, with thousands of orange torii gates. Go early in the morning "
            "to avoid the crowds.\n"
            "- Kiyomizu-dera, a wooden temple on the hillside with great autumn views.\n"
            "- Arashiyama's bamboo grove, and Tenryū-ji's garden next to it.\n"
            "- An evening walk through Gion, the old geisha district.\n"
            "- Tōfuku-ji, one of the best spots for autumn colours."
        ),
        H("How should I get around?"),
        G(
            "Buses and trains cover almost everything. Get an IC card such as ICOCA at the station "
            "and top it up; it works on buses, subways and JR trains. Buses can be crowded in "
            "autumn, so for Fushimi Inari and Arashiyama the train is faster."
        ),
        H("Any food I should try?"),
        G(
            "Try yudōfu (simmered tofu) near Nanzen-ji, a kaiseki meal if your budget allows, "
            "matcha sweets in Uji, and the street food at Nishiki Market. 🍵"
        ),
    ],
    [
        H("My Python script crashes with KeyError: 'email'. What does that mean?"),
        G(
            "It means the code tried to read `something['email']` from a dictionary that has no "
            "key called `'email'`. Typically one of your records is missing that field, or it is "
            "spelled differently (for example `'Email'`). Could you share the line that fails?"
        ),
        H("It's `print(user['email'])` inside a loop over users from an API."),
        G(
            "Then at least one user object has no email. You can skip or default it:\n\n"
            "```python\nfor user in users:\n"
            "    email = user.get('email')\n"
            "    if email is None:\n"
            "        print(f\"user {user.get('id')} has no email\")\n"
            "        continue\n"
            "    print(email)\n```\n\n"
            "`dict.get` returns `None` instead of raising when the key is missing."
        ),
        H("Thanks, that fixed it!"),
        G(
            "Glad to hear it! Logging the ids of users without an email is worth keeping, "
            "so you notice if it grows."
        ),
    ],
    [
        H("Can you give me a simple pancake recipe?"),
        G(
            "Makes about 8 pancakes:\n\n"
            "- 200 g plain flour\n- 2 tsp baking powder\n- 1 tbsp sugar\n- a pinch of salt\n"
            "- 1 egg\n- 300 mL milk\n- 2 tbsp melted butter\n\n"
            "Whisk the dry ingredients, then whisk in the egg, milk and butter until just smooth. "
            "Cook ladlefuls in a lightly oiled pan over medium heat until bubbles appear, flip, and "
            "cook for another minute."
        ),
        H("How would I make them vegan?"),
        G(
            "Replace the egg with 1 tbsp ground flaxseed mixed with 3 tbsp water (leave it 5 "
            "minutes to thicken), use oat or soy milk, and melted coconut oil instead of butter. "
            "Add a splash of vinegar to the milk; it helps the pancakes rise."
        ),
        H("Can I make the batter the night before?"),
        G(
            "You can, but baking powder loses some of its lift overnight, so the pancakes come out "
            "flatter. A good compromise is to mix the dry and wet ingredients in separate bowls and "
            "combine them in the morning."
        ),
    ],
    [
        H("What's the difference between git merge and git rebase?"),
        G(
            "Both bring the changes of one branch into another. `git merge` creates a merge commit "
            "that ties the two histories together and keeps every commit as it happened. "
            "`git rebase` replays your commits on top of the other branch, producing a straight "
            "line of history as if you had started your work later."
        ),
        H("So which should I use?"),
        G(
            "A common rule: rebase your own local feature branch onto `main` to tidy it before "
            "sharing, and merge when combining branches that others already use. Never rebase "
            "commits that other people have pulled, because it rewrites their history."
        ),
    ],
    [
        H("Write a short cover letter opening for a junior data analyst job."),
        G(
            "Dear Hiring Manager,\n\n"
            "I was excited to see the Junior Data Analyst opening at Northwind Logistics. During my "
            "degree in economics I discovered that my favourite part of every project was cleaning "
            "messy data and finding the story hidden in it, and in my internship at a regional "
            "retailer I built a weekly sales dashboard in SQL and Power BI that the store managers "
            "still use today. I would love to bring the same curiosity and care to your team."
        ),
        H("Can you make it shorter and a bit less formal?"),
        G(
            "Hi there,\n\n"
            "I'd love to join Northwind Logistics as a Junior Data Analyst. I studied economics, "
            "love turning messy data into clear answers, and during my internship I built a sales "
            "dashboard that store managers still use every week."
        ),
    ],
    [
        H("I want to start running. I can barely run for two minutes. Where do I begin?"),
        G(
            "Start with run–walk intervals three times a week, with a rest day in between:\n\n"
            "- Week 1: 1 minute running, 2 minutes walking, repeated 8 times.\n"
            "- Week 2: 2 minutes running, 2 minutes walking, 6 times.\n"
            "- Week 3: 3 minutes running, 90 seconds walking, 6 times.\n\n"
            "Run slowly enough that you could still talk. Speed comes later; right now you are "
            "teaching your body the habit."
        ),
        H("My knees hurt a bit after the second session. Should I stop?"),
        G(
            "Mild soreness around the muscles is normal; sharp pain or pain in the joint itself is "
            "not. Take an extra rest day, run on softer ground such as a park path, and make sure "
            "your shoes aren't worn out. If the pain continues or gets worse, see a doctor or "
            "physiotherapist before carrying on."
        ),
        H("Okay. How long until I can run 5 km?"),
        G(
            "Most beginners can run 5 km without stopping after about eight to ten weeks of steady "
            "training. Some take longer, and that's completely fine."
        ),
    ],
    [
        H("Explain the different SQL joins."),
        G(
            "- INNER JOIN: only rows that have a match in both tables.\n"
            "- LEFT JOIN: every row of the left table, with matching right-table columns, or NULL "
            "where there is no match.\n"
            "- RIGHT JOIN: the mirror image, every row of the right table.\n"
            "- FULL OUTER JOIN: every row from both tables, with NULLs filling the gaps.\n"
            "- CROSS JOIN: every combination of rows from the two tables."
        ),
        H("Give me an example of when I'd use a LEFT JOIN."),
        G(
            "Listing all customers together with their orders, including customers who have never "
            "ordered anything:\n\n"
            "```sql\nSELECT c.name, o.id AS order_id\nFROM customers AS c\n"
            "LEFT JOIN orders AS o ON o.customer_id = c.id;\n```\n\n"
            "Customers without orders appear with `order_id` set to NULL. An INNER JOIN would "
            "silently leave them out."
        ),
        H("And how do I find only the customers who never ordered?"),
        G(
            "Keep the LEFT JOIN and filter on the NULL:\n\n"
            "```sql\nSELECT c.name\nFROM customers AS c\n"
            "LEFT JOIN orders AS o ON o.customer_id = c.id\nWHERE o.id IS NULL;\n```"
        ),
    ],
    [
        H("I'm choosing between a 13-inch and a 15-inch laptop for university. Thoughts?"),
        G(
            "It depends on how often you'll carry it. A 13-inch laptop usually weighs around "
            "1.2 kg and fits any bag, which matters if you move between lectures all day. A 15-inch "
            "screen is more comfortable for long writing sessions or spreadsheets, but the laptop "
            "is heavier and the battery often lasts less. What will you mainly use it for?"
        ),
        H("Mostly note-taking and essays, some light photo editing."),
        G(
            "Then I'd lean towards the 13-inch. Note-taking and essays need portability more than "
            "screen space, and for photo editing at home you could plug in an inexpensive external "
            "monitor. Aim for at least 16 GB of memory and a battery rated for a full day."
        ),
    ],
    [
        H("Could you check this sentence? 'Me and him goes to the library every tuesdays.'"),
        G(
            'Corrected: "He and I go to the library every Tuesday."\n\n'
            '- Use subject pronouns "he and I" as the subject of the sentence.\n'
            '- A plural subject takes "go", not "goes".\n'
            '- "Every" is followed by a singular noun: "every Tuesday".\n'
            "- Days of the week are capitalised in English."
        ),
        H("Why 'he and I' and not 'I and he'?"),
        G(
            "Both are grammatical, but by convention English speakers put themselves last when "
            'listing people, as a matter of politeness: "my friend and I", "she and I".'
        ),
    ],
    [
        H("What's the best way to learn to touch-type?"),
        G(
            "Use a free typing tutor for 15 minutes a day and focus on accuracy before speed. Keep "
            "your fingers on the home row (ASDF and JKL;), don't look at the keyboard, and accept "
            "being slow for the first couple of weeks. Most people who practise daily reach their "
            "old speed in about a month and then overtake it."
        ),
        H("Should I switch to a different keyboard layout like Dvorak while I'm at it?"),
        G(
            "Probably not. Studies don't show a big speed advantage, and QWERTY is on every "
            "computer you'll borrow. Learning to touch-type properly on QWERTY gives you most of "
            "the benefit."
        ),
    ],
    [
        H("Tell me about the Eiffel Tower."),
        G(
            "The Eiffel Tower was built by Gustave Eiffel's company for the 1889 World's Fair in "
            "Paris, marking the centenary of the French Revolution. It is about 330 m tall and was "
            "the tallest structure in the world until 1930. Many Parisian artists hated it at "
            "first, but it became the symbol of the city."
        ),
        H("Can you climb it?"),
        G(
            "Yes. You can walk the 674 steps to the second floor, which is a good way to skip the "
            "lift queues, and then take a lift to the summit. Book tickets online in advance in "
            "high season."
        ),
        H("How do you pronounce 'Champ de Mars'?"),
        G('Roughly "shahn duh marss": the "p" is silent and the "n" is nasal rather than fully pronounced.'),
    ],
    [
        H("Can you help me name my fantasy novel? It's about a cartographer who maps a magical forest."),
        G(
            "Some ideas:\n\n- The Cartographer of Hollowmere\n- Ink and Root\n"
            "- The Forest That Wasn't on the Map\n- Lines Through the Greenwood\n- Uncharted Leaves"
        ),
        H("I like 'Ink and Root'. Can you write a one-line blurb for it?"),
        G(
            "When the forest starts rewriting her maps overnight, young cartographer Wren must "
            "find out what it is trying to tell her before the paths close for good."
        ),
    ],
    [
        H("What causes hiccups?"),
        G(
            "Hiccups are sudden involuntary contractions of the diaphragm, the muscle under your "
            "lungs. Each contraction pulls air in sharply, and the vocal cords snap shut, making "
            'the "hic" sound. Common triggers are eating too fast, fizzy drinks, or a sudden '
            "change in temperature."
        ),
        H("Do any of the home remedies actually work?"),
        G(
            "Evidence is thin, but holding your breath for a few seconds or sipping cold water "
            "slowly may help by interrupting the reflex. Most hiccups stop on their own within a "
            "few minutes; if they last more than two days, see a doctor."
        ),
    ],
    [
        H("I have 20 minutes to prepare a 5-minute talk about our team's quarter. Help!"),
        G(
            "Don't panic, five minutes is just three points. Use this structure:\n\n"
            "1. One sentence on the goal of the quarter.\n"
            '2. Three results, each with one number ("shipped X", "cut Y by 20%").\n'
            "3. One problem you hit and what you learned.\n"
            "4. What's next, in one sentence.\n\n"
            "What were your main results?"
        ),
        H("We launched the new search page, halved support tickets about login, and hired two people."),
        G(
            "Great material. A possible script:\n\n"
            '"This quarter we set out to make the product easier to use. We launched the new '
            "search page, we cut login support tickets in half, and we grew the team by two. Our "
            "biggest lesson was that small fixes to sign-in mattered more than big features. Next "
            "quarter we'll bring the same focus to onboarding.\"\n\n"
            "Read it aloud twice and you're ready."
        ),
    ],
    [
        H("Which is heavier, a kilogram of feathers or a kilogram of steel?"),
        G("Neither: they both weigh one kilogram. The feathers just take up far more space."),
        H("Ha, okay. What about a pound of feathers and a kilogram of steel?"),
        G("The kilogram of steel, since one kilogram is about 2.2 pounds."),
    ],
    [
        H("Explain what an index does in a database."),
        G(
            "An index is a separate data structure, usually a B-tree, that keeps the values of one "
            "or more columns sorted together with pointers to their rows. Like the index at the "
            "back of a book, it lets the database jump to matching rows instead of scanning the "
            "whole table."
        ),
        H("Why not index every column then?"),
        G(
            "Each index takes disk space and has to be updated on every insert, update and delete, "
            "so too many indexes slow down writes. Add indexes for the columns you filter, join or "
            "sort on often, and check with EXPLAIN that your queries actually use them."
        ),
    ],
    [
        H("Wie spät ist es in Tokio, wenn es in Berlin 9 Uhr morgens ist?"),
        G(
            "Im Winter ist es in Tokio dann 17 Uhr, weil Japan der mitteleuropäischen Zeit 8 "
            "Stunden voraus ist. Während der Sommerzeit in Deutschland beträgt der Unterschied nur "
            "7 Stunden, also 16 Uhr."
        ),
        H("Thanks! Can you answer in English next time?"),
        G("Of course! From now on I'll reply in English."),
    ],
    [
        H("My sourdough starter smells like nail-polish remover. Is it ruined?"),
        G(
            "Not at all. That acetone smell means the yeast and bacteria are hungry and have run "
            "out of food. Discard all but a spoonful, feed it with equal weights of flour and water, "
            "and feed it twice a day for a couple of days. The smell should turn pleasantly sour "
            "again."
        ),
        H("How do I know when it's ready to bake with?"),
        G(
            "A healthy starter roughly doubles within 4 to 8 hours of feeding and has a domed, "
            "bubbly top. A quick test: drop a teaspoon into water. If it floats, it's ready."
        ),
        H("And can I keep it in the fridge?"),
        G(
            "Yes. In the fridge it only needs feeding about once a week. Take it out the day before "
            "baking and give it one or two feeds at room temperature to wake it up."
        ),
    ],
    [
        H("What's the difference between RAM and storage?"),
        G(
            "RAM is the computer's short-term working memory: fast, but it forgets everything when "
            "the power goes off. Storage, an SSD or hard drive, keeps your files permanently but is "
            "slower. Programs are loaded from storage into RAM while you use them."
        ),
        H("So will more RAM make my laptop faster?"),
        G(
            "Only if you're running out of it. If you often have many browser tabs and apps open "
            "and the laptop slows down, more RAM helps a lot. If you rarely use what you have, "
            "extra RAM won't change much; a faster SSD or processor would matter more."
        ),
    ],
    [
        H("Help me write a haiku about Monday mornings."),
        G("Alarm clock again\nthe coffee machine and I\nboth groan as we start"),
        H("Ha! Now one about Friday afternoons."),
        G("Inbox finally\nquiet as the low sun slants\nacross empty desks"),
        H("Can you make the Friday one more cheerful?"),
        G("Laptop lid clicks shut\nthe whole weekend opens up\nlike a bright window ☀️"),
    ],
]


def tutoring() -> list[list[dict[str, str]]]:
    out = []
    for a, b in [(17, 24), (23, 19), (36, 45)]:
        tens, ones = divmod(b, 10)
        out.append(
            [
                H(f"What is {a} × {b}?"),
                G(f"{a} × {b} = {a * b}."),
                H("How can I work that out in my head?"),
                G(
                    f"Split {b} into {tens * 10} + {ones}. Then {a} × {tens * 10} = {a * tens * 10} and "
                    f"{a} × {ones} = {a * ones}. Add them: {a * tens * 10} + {a * ones} = {a * b}."
                ),
                H("And how do I check the answer?"),
                G(f"Divide back: {a * b} ÷ {b} = {a}, so the product is right."),
            ]
        )
    return out


def savings() -> list[list[dict[str, str]]]:
    out = []
    for principal, rate, years, extra in [(1000, 3, 5, 100), (5000, 4.5, 10, 500)]:
        final = principal * (1 + rate / 100) ** years
        with_extra = principal * (1 + rate / 100) ** years + sum(
            extra * (1 + rate / 100) ** (years - k) for k in range(1, years + 1)
        )
        out.append(
            [
                H(
                    f"If I put {principal:,} euros in a savings account at {rate:g}% interest a year, "
                    f"compounded yearly, how much will I have after {years} years?"
                ),
                G(
                    f"Use A = P × (1 + r)^n = {principal:,} × {1 + rate / 100:g}^{years} ≈ "
                    f"{final:,.2f} euros. That's {final - principal:,.2f} euros of interest."
                ),
                H(f"What if I also add {extra} euros at the end of every year?"),
                G(
                    f"Each top-up earns interest for the years left after it is paid in. Adding them "
                    f"all up, you'd have about {with_extra:,.2f} euros after {years} years, of which "
                    f"{principal + extra * years:,} euros are your own deposits."
                ),
            ]
        )
    return out


VOCAB = [
    ("la bibliothèque", "the library", "Je vais à la bibliothèque pour étudier.", "Où est la bibliothèque ?"),
    ("le parapluie", "the umbrella", "N'oublie pas ton parapluie, il pleut !", "As-tu vu mon parapluie ?"),
    (
        "épanoui",
        "fulfilled, blossoming",
        "Elle semble épanouie dans son nouveau travail.",
        "Es-tu épanoui ici ?",
    ),
    (
        "la flânerie",
        "a leisurely stroll",
        "Une flânerie le long de la Seine, quel plaisir.",
        "On fait une flânerie ?",
    ),
]


def vocab() -> list[list[dict[str, str]]]:
    out = []
    for word, meaning, example, question in VOCAB:
        out.append(
            [
                S("You help English speakers learn French vocabulary."),
                H(f"What does « {word} » mean?"),
                G(f'« {word.capitalize()} » means "{meaning}". Example: {example}'),
                H("Can you use it in a question?"),
                G(f"Sure: « {question} »"),
            ]
        )
    return out


def temperatures() -> list[list[dict[str, str]]]:
    out = []
    for c in (25, -5):
        f = c * 9 / 5 + 32
        k = c + 273.15
        out.append(
            [
                H(f"What is {c} °C in Fahrenheit?"),
                G(f"°F = °C × 9/5 + 32, so {c} °C = {f:g} °F."),
                H("And in kelvin?"),
                G(f"Add 273.15: {c} °C = {k:.2f} K."),
            ]
        )
    return out


#: deliberately odd records, at fixed positions, to show packer's policies
ODD = {
    "odd-starts-with-gpt": [
        G("Hello! How can I help you today?"),
        H("What is the longest river in Africa?"),
        G("The Nile, at roughly 6,650 km, is the longest river in Africa."),
    ],
    "odd-empty-value": [
        H("Tell me a joke about computers."),
        G(""),
    ],
    "odd-unknown-role": [
        H("Describe a sunset over the desert."),
        {"from": "narrator", "value": "The assistant pauses, looking for the right words."},
        G("The sand turns copper, then rose, as the sun sinks and the first stars appear."),
    ],
}
ODD_POSITIONS = {"odd-starts-with-gpt": 12, "odd-empty-value": 29, "odd-unknown-role": 47}


def sharegpt_records() -> list[dict]:
    groups = [SINGLE, WITH_SYSTEM, MULTI, tutoring(), savings(), vocab(), temperatures()]
    convs: list[list[dict[str, str]]] = []
    longest = max(len(g) for g in groups)
    for i in range(longest):
        for g in groups:
            if i < len(g):
                convs.append(g[i])
    records: list[dict] = [{"id": f"demo-{i:03d}", "conversations": c} for i, c in enumerate(convs)]
    for name, pos in sorted(ODD_POSITIONS.items(), key=lambda kv: kv[1]):
        records.insert(pos, {"id": name, "conversations": ODD[name]})
    return records


def write_json(path: Path, data: list) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    alpaca = alpaca_records()
    sharegpt = sharegpt_records()
    write_json(args.out / "alpaca_demo.json", alpaca)
    write_json(args.out / "sharegpt_demo.json", sharegpt)
    print(f"alpaca_demo.json: {len(alpaca)} records; sharegpt_demo.json: {len(sharegpt)} records")
    for name, pos in ODD_POSITIONS.items():
        assert sharegpt[pos]["id"] == name
        print(f"  odd record {name!r} at index {pos}")


if __name__ == "__main__":
    main()

"""Regenerate ``dpo_demo.jsonl``: preference pairs in TRL's explicit-prompt conversational shape.

All text here was written for this project (Apache-2.0, like the repository). Each pair asks a question whose
answer is computed (arithmetic, sorting, unit conversion, counting), so the chosen answer is right by
construction and the rejected one is wrong by construction; some prompts have a system message or an earlier
exchange, and many pairs share the opening words of their answers (the part packer stores once). Deterministic:
running this script twice gives identical files.

    python examples/make_dpo_demo.py            # writes next to this script
    python examples/make_dpo_demo.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "grape", "melon", "cherry", "lemon", "mango"]
SYSTEMS = ["You are a careful assistant. Answer in one sentence.", "Answer briefly and show the result."]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def arithmetic(r: random.Random) -> tuple[str, str, str]:
    a, b = r.randint(2, 99), r.randint(2, 99)
    op, value = r.choice([("plus", a + b), ("minus", a - b), ("times", a * b)])
    wrong = value + r.choice([-10, -2, -1, 1, 2, 10])
    return f"What is {a} {op} {b}?", f"{a} {op} {b} is {value}.", f"{a} {op} {b} is {wrong}."


def sorting(r: random.Random) -> tuple[str, str, str]:
    words = r.sample(NAMES, r.randint(3, 6))
    right = sorted(words)
    wrong = right[:]
    i = r.randrange(len(wrong) - 1)
    wrong[i], wrong[i + 1] = wrong[i + 1], wrong[i]
    return (f"Sort these words alphabetically: {', '.join(words)}.", "In alphabetical order: " + ", ".join(right) + ".",
            "In alphabetical order: " + ", ".join(wrong) + ".")


def conversion(r: random.Random) -> tuple[str, str, str]:
    km = r.randint(1, 40)
    return (f"How many metres are there in {km} kilometres?", f"There are {km * 1000} metres in {km} kilometres.",
            f"There are {km * 100} metres in {km} kilometres.")


def counting(r: random.Random) -> tuple[str, str, str]:
    word = r.choice(NAMES)
    letter = r.choice(sorted(set(word)))
    n = word.count(letter)
    return (f"How many times does the letter '{letter}' appear in the word '{word}'?",
            f"The letter '{letter}' appears {n} time{'s' if n != 1 else ''} in '{word}'.",
            f"The letter '{letter}' appears {n + 1} times in '{word}'.")


def pairs(n: int, seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    makers = [arithmetic, sorting, conversion, counting]
    out = []
    for i in range(n):
        question, chosen, rejected = makers[i % len(makers)](r)
        prompt = [user(question)]
        if i % 5 == 1:
            prompt.insert(0, {"role": "system", "content": r.choice(SYSTEMS)})
        if i % 7 == 3:  # an earlier exchange: a multi-turn prompt
            q0, a0, _ = arithmetic(r)
            prompt = [user(q0), assistant(a0), *prompt]
        out.append({"prompt": prompt, "chosen": [assistant(chosen)], "rejected": [assistant(rejected)]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dpo_demo.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs(240)), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
